"""``jaxww.fit_power_law``: the public power-law fit of spectra with any leading axes.

The exact scan of :mod:`jaxww.fit.scan`, jitted over the batch, with its goodness-of-fit
test on request (:mod:`jaxww.fit.bootstrap`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxww.fit import bootstrap as _bootstrap
from jaxww.fit import estimators as _estimators
from jaxww.fit.batching import as_spectra, map_spectra
from jaxww.fit.scan import PowerLawFit, fit_batch
from jaxww.fit.tail import EVALS_THRESH


@functools.partial(jax.jit, static_argnames=("thresh",))
def _fit(evals, xmin_max, thresh):
    return map_spectra(fit_batch, evals, xmin_max, thresh)


@functools.partial(jax.jit, static_argnames=("estimator", "thresh"))
def _fit_by(evals, estimator, xmin_max, thresh):
    return map_spectra(_estimators.fit_rows, evals, estimator, xmin_max, thresh)


def fit_power_law(evals, *, xmin_max=None, thresh=EVALS_THRESH, bootstrap: int = 0, key=None,
                  estimator: str = "csn") -> PowerLawFit | _bootstrap.PowerLawTest:
    """Fit a power law ``p(x) ~ x**-alpha`` to the tail of each spectrum in ``evals``.

    The exact Clauset-Shalizi-Newman scan: every kept eigenvalue but the largest is a
    candidate ``xmin``; each gets its maximum-likelihood exponent and KS distance; the
    candidate with the smallest distance wins (the first on a tie). Values ``<= thresh``
    and non-finite values are left out, so zero padding is harmless.

    Args:
      evals: eigenvalues, shape ``(..., n)``, any order. Leading axes are a batch of
        independent spectra fitted in one vectorised call.
      xmin_max: only candidates ``xmin <= xmin_max`` are considered (None: all).
      thresh: eigenvalues at or below this are dropped before the fit.
      bootstrap: number of replicas of the Clauset-Shalizi-Newman goodness-of-fit
        test (0: none); see :func:`jaxww.bootstrap_power_law`.
      key: ``jax.random`` key of the replicas (required with ``bootstrap``).
      estimator: how the tail is chosen: ``"csn"`` (this scan), ``"hill_median"``
        (TempBalance's), ``"alpha_mid"`` or ``"alpha_peak"`` (AlphaPruning's); their exact
        definitions and sources: :mod:`jaxww.fit.estimators`. ``bootstrap`` tests the
        ``"csn"`` fit only.

    Returns:
      A :class:`PowerLawFit` whose fields have shape ``evals.shape[:-1]``. A failed
      fit has ``status != FIT_OK`` and NaN in the float fields. With ``bootstrap``, a
      :class:`jaxww.PowerLawTest`: this fit (``.fit``; its fields also read directly,
      ``.alpha``) with ``p_value``, ``alpha_ci_low`` and ``alpha_ci_high``.

    Example:
      >>> import numpy as np, jaxww
      >>> x = (1 - np.random.default_rng(0).random(2000)) ** (-1 / 2.5)  # Pareto, alpha=3.5
      >>> round(float(jaxww.fit_power_law(x).alpha), 1)
      3.5

    References:
      A. Clauset, C. R. Shalizi, M. E. J. Newman, "Power-law distributions in
      empirical data", SIAM Review 51 (2009).
    """
    _estimators.check_estimator(estimator, xmin_max)
    if estimator != "csn":
        if bootstrap:
            raise ValueError(f"bootstrap tests the 'csn' fit; it cannot be combined with estimator={estimator!r}")
        evals = as_spectra(evals, "fit_power_law")
        bound = np.inf if xmin_max is None else float(xmin_max)
        return _fit_by(evals, estimator, jnp.asarray(bound, evals.dtype), float(thresh))
    if _bootstrap.check_bootstrap(bootstrap, key):
        return _bootstrap.bootstrap_power_law(evals, bootstrap=bootstrap, key=key,
                                              xmin_max=xmin_max, thresh=thresh)
    evals = as_spectra(evals, "fit_power_law")
    bound = np.inf if xmin_max is None else float(xmin_max)
    return _fit(evals, jnp.asarray(bound, evals.dtype), float(thresh))
