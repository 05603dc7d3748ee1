"""``jaxww.fit_power_law``: the public power-law fit of spectra with any leading axes.

The exact scan of :mod:`jaxww.fit.scan`: in NumPy on a concrete host array (nothing
compiled, the input's precision kept), jitted over the batch otherwise (under a trace, or
a ``jax.Array`` on an accelerator); with its goodness-of-fit test on request (:mod:`jaxww.fit.bootstrap`).
"""

from __future__ import annotations

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from jaxww.fit import bootstrap as _bootstrap
from jaxww.fit import estimators as _estimators
from jaxww.fit.batching import as_spectra, map_spectra
from jaxww.fit.scan import CANDIDATE_RULES, PowerLawFit, fit_batch, fit_host
from jaxww.fit.tail import EVALS_THRESH

#: Input dtypes fitted in NumPy on the host (others, e.g. bfloat16, go through XLA).
_HOST_DTYPES = (np.float32, np.float64)


@functools.partial(jax.jit, static_argnames=("estimator", "thresh"))
def _fit_by(evals, estimator, xmin_max, thresh):
    return map_spectra(_estimators.fit_rows, evals, estimator, xmin_max, thresh)


@functools.partial(jax.jit, static_argnames=("thresh", "candidates"))
def _fit(evals, xmin_max, thresh, candidates):
    return map_spectra(fit_batch, evals, xmin_max, thresh, candidates)


def _host_input(evals, xmin_max):
    """``evals`` as a NumPy array when the fit runs on the host, else None.

    On the host: concrete (no tracer among ``evals`` and ``xmin_max``), and not a
    ``jax.Array`` on an accelerator; float32 or float64 (ints become float32, as in
    :func:`jaxww.fit.batching.as_spectra`; other floats go through XLA).
    """
    if isinstance(evals, jax.core.Tracer) or isinstance(xmin_max, jax.core.Tracer):
        return None
    if isinstance(evals, jax.Array) and any(d.platform != "cpu" for d in evals.devices()):
        return None
    x = np.asarray(evals)
    if x.dtype.kind in "iub":
        x = x.astype(np.float32)
    if x.dtype not in _HOST_DTYPES:
        return None
    if x.ndim == 0 or x.shape[-1] == 0:
        as_spectra(x, "fit_power_law")   # raises its ValueError
    return x


def _fit_traced(evals, xmin_max, thresh, candidates):
    """The jitted fit; warns when a float64 input becomes float32 on the way in."""
    if (not isinstance(evals, jax.Array) and np.asarray(evals).dtype == np.float64
            and not jax.config.jax_enable_x64):
        warnings.warn("fit_power_law: float64 eigenvalues are fitted in float32 under a traced "
                      "xmin_max; pass a concrete xmin_max or set jax_enable_x64 to keep float64",
                      stacklevel=3)
    evals = as_spectra(evals, "fit_power_law")
    bound = np.inf if xmin_max is None else xmin_max
    return _fit(evals, jnp.asarray(bound, evals.dtype), float(thresh), candidates)


def fit_power_law(evals, *, xmin_max=None, thresh=EVALS_THRESH, candidates: str = "sorted",
                  bootstrap: int = 0, key=None, estimator: str = "csn"
                  ) -> PowerLawFit | _bootstrap.PowerLawTest:
    """Fit a power law ``p(x) ~ x**-alpha`` to the tail of each spectrum in ``evals``.

    The Clauset-Shalizi-Newman method: each candidate ``xmin`` gets the
    maximum-likelihood exponent of the values from it on and their KS distance (the
    empirical CDF counted by sorted position, as ``plfit.m`` does); the candidate with the
    smallest distance wins (the first, the smallest ``xmin``, on a tie). The candidates:

    * ``"sorted"`` (default, weightwatcher 0.7.7's rule and ``analyze``'s): every sorted
      kept value but the largest. With tied values a tail can start inside a run of them
      and then holds only part of the run (``n_tail < num_pl_spikes``). Fewer than 20
      kept values: weightwatcher's small-sample variant (``1 + (n - 1) / sum ln``, tails
      of at least 8 values).
    * ``"distinct"``: each distinct value but the largest, its tail every value ``>=`` it
      (Clauset's ``plfit.m`` for continuous data; no small-sample variant). The two rules
      agree on data without ties of at least 20 values.

    Values ``<= thresh`` and non-finite values are left out, so zero padding is harmless.
    On a concrete host array (NumPy, or a ``jax.Array`` on the CPU) the fit runs in NumPy in the input's precision (float64 stays float64
    without ``jax_enable_x64``), compiles nothing and costs ``O(candidates x distinct
    values)``; under ``jit``/``grad`` or on an accelerator it is the traced scan
    (differentiable in the eigenvalues, the chosen tail held fixed).

    Args:
      evals: eigenvalues, shape ``(..., n)``, any order. Leading axes are a batch of
        independent spectra fitted in one vectorised call.
      xmin_max: only candidates ``xmin <= xmin_max`` are considered (None: all).
      thresh: eigenvalues at or below this are dropped before the fit.
      candidates: ``"sorted"`` or ``"distinct"`` (above).
      bootstrap: number of replicas of the Clauset-Shalizi-Newman goodness-of-fit
        test (0: none); see :func:`jaxww.bootstrap_power_law`.
      key: ``jax.random`` key of the replicas (required with ``bootstrap``).
      estimator: how the tail is chosen: ``"csn"`` (this scan), ``"hill_median"``
        (TempBalance's), ``"alpha_mid"`` or ``"alpha_peak"`` (AlphaPruning's); their exact
        definitions and sources: :mod:`jaxww.fit.estimators`. ``bootstrap`` tests the
        ``"csn"`` fit only.

    Returns:
      A :class:`PowerLawFit` whose fields have shape ``evals.shape[:-1]`` (NumPy arrays
      from the host fit, ``jax.Array`` from the traced one). A failed fit has
      ``status != FIT_OK`` and NaN in the float fields. With ``bootstrap``, a
      :class:`jaxww.PowerLawTest`: this fit (``.fit``; its fields also read directly,
      ``.alpha``) with ``p_value``, ``alpha_ci_low`` and ``alpha_ci_high``.

    Raises:
      ValueError: an unknown ``candidates``, no eigenvalue, or a bad ``bootstrap``.

    Example:
      >>> import numpy as np, jaxww
      >>> x = (1 - np.random.default_rng(0).random(2000)) ** (-1 / 2.5)  # Pareto, alpha=3.5
      >>> round(float(jaxww.fit_power_law(x).alpha), 1)
      3.5

    References:
      A. Clauset, C. R. Shalizi, M. E. J. Newman, "Power-law distributions in
      empirical data", SIAM Review 51 (2009).
    """
    if candidates not in CANDIDATE_RULES:
        raise ValueError(f"candidates must be one of {CANDIDATE_RULES}, got {candidates!r}")
    _estimators.check_estimator(estimator, xmin_max)
    if estimator != "csn":
        if bootstrap or candidates != "sorted":
            raise ValueError(f"bootstrap and candidates= refine the 'csn' fit; they cannot be combined "
                             f"with estimator={estimator!r}")
        evals = as_spectra(evals, "fit_power_law")
        bound = np.inf if xmin_max is None else float(xmin_max)
        return _fit_by(evals, estimator, jnp.asarray(bound, evals.dtype), float(thresh))
    if _bootstrap.check_bootstrap(bootstrap, key):
        if candidates != "sorted":
            raise ValueError("bootstrap= runs with candidates='sorted' only; fit with "
                             "candidates='distinct' without bootstrap")
        return _bootstrap.bootstrap_power_law(evals, bootstrap=bootstrap, key=key,
                                              xmin_max=xmin_max, thresh=thresh)
    host = _host_input(evals, xmin_max)
    if host is None:
        return _fit_traced(evals, xmin_max, thresh, candidates)
    bound = np.inf if xmin_max is None else float(xmin_max)
    return map_spectra(lambda flat: fit_host(flat, bound, float(thresh), candidates), host)
