"""The fit stage: eigenvalue spectra in, power-law tails and spectral metrics out.

One job per module, listed in import order (each imports only those above it, and
``jaxww.defaults``):

* :mod:`~jaxww.fit.tail` -- the Clauset-Shalizi-Newman tail core for one spectrum:
  keep and sort (``prepare``), score every candidate ``xmin`` (``candidates``), pick
  the winner, the maximum-likelihood exponent; the ``FIT_*`` status codes; the
  differentiable training-time estimates built on it (``TailSpec``, ``estimate``).
* :mod:`~jaxww.fit.runs` -- the host scan in NumPy over runs of tied values
  (``candidates_host``).
* :mod:`~jaxww.fit.batching` -- spectra with leading batch axes: ``as_spectra`` checks
  the input, ``map_spectra`` runs a ``(B, n)`` function and reshapes back.
* :mod:`~jaxww.fit.scan` -- the exact scan of a ``(B, n)`` batch (``PowerLawFit``):
  traceable (``fit_batch``, ``fit_rows``, ``map_tails``) and NumPy on the host
  (``fit_host``).
* :mod:`~jaxww.fit.bootstrap` -- the goodness-of-fit test (``bootstrap_power_law``).
* :mod:`~jaxww.fit.powerlaw` -- ``fit_power_law``, the public fit (with the test on
  request). To change the power-law fit: the formulas are in ``tail``, the batching in
  ``scan``, the public options here.
* :mod:`~jaxww.fit.fingers` -- ``fit_fingers``: fits that discount the largest values.
* :mod:`~jaxww.fit.estimators` -- the papers' tail estimators (``estimator=``:
  ``"hill_median"``, ``"alpha_mid"``, ``"alpha_peak"``; ``"csn"`` is the scan).
* :mod:`~jaxww.fit.tpl` -- ``fit_truncated_power_law``.
* :mod:`~jaxww.fit.distributions` -- ``compare_distributions``: likelihood ratios of
  the tail against other laws.
* :mod:`~jaxww.fit.mp` -- the Marchenko-Pastur bulk and its Tracy-Widom spikes.
* :mod:`~jaxww.fit.detx` -- the ``det X = 1`` tail.
* :mod:`~jaxww.fit.metrics` -- per-layer spectral metrics and the verdict
  (``spectral_metrics``, ``warning``).
"""
