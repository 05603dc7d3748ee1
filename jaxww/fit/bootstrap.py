"""Goodness of fit and uncertainty of the power-law tail by semi-parametric bootstrap.

The test of Clauset, Shalizi and Newman (2009, section 4.1). With ``n`` kept
eigenvalues, the fit's ``xmin``, ``alpha`` and KS distance ``D`` and ``n_tail``
values ``>= xmin``, each of ``B`` replicas holds ``n`` values, each independently

* with probability ``n_tail / n`` a draw of the fitted power law,
  ``xmin * (1 - u) ** (-1 / (alpha - 1))`` with ``u ~ U[0, 1)`` (so the tail's share is
  binomial), else
* a value drawn uniformly, with replacement, from the eigenvalues below ``xmin``;

every replica is refitted with the same exact scan (:mod:`jaxww.fit.scan`), ``xmin``
included, giving ``D_b`` and ``alpha_b``. Then

.. math::

    p = \\frac{\\#\\{b : D_b \\ge D\\}}{\\#\\{b : \\text{replica fit succeeded}\\}}, \\qquad
    [\\alpha_{lo}, \\alpha_{hi}] = \\text{2.5 and 97.5 percentiles of } \\alpha_b .

A small ``p`` (CSN: ``p <= 0.1``) rejects the power law. The interval is a
parametric-bootstrap percentile interval: the spread of the exponent that the fitted
model itself produces, ``xmin`` refitted each time (it is meaningful where the test
does not reject). All replicas of all spectra are fitted in one vectorised call.

``min_tail`` holds every fit (the data's and each replica's) to tails of at least
that many values; see ``docs/bootstrap.md`` for what the test can and cannot detect
with and without it.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxww.fit.batching import as_spectra, map_spectra
from jaxww.fit.scan import PowerLawFit, fit_rows
from jaxww.fit.tail import EVALS_THRESH, FIT_OK

#: Two-sided level of the alpha interval.
CI_LEVEL = 0.95


class PowerLawTest(NamedTuple):
    """A power-law fit and its bootstrap test (every field batch-shaped).

    The fit's fields read directly too: ``t.alpha`` is ``t.fit.alpha`` (likewise
    ``xmin``, ``xmax``, ``D``, ``sigma``, ``num_pl_spikes``, ``num_fit``, ``status``).

    Attributes:
      fit: the tested :class:`jaxww.PowerLawFit` (what ``fit_power_law`` gives without
        ``bootstrap``).
      p_value: goodness-of-fit p-value (NaN when the fit or every replica failed).
      alpha_ci_low, alpha_ci_high: 95% bootstrap interval of alpha.
    """

    fit: PowerLawFit
    p_value: jax.Array
    alpha_ci_low: jax.Array
    alpha_ci_high: jax.Array

    def __getattr__(self, name):
        if name in PowerLawFit._fields:
            return getattr(self.fit, name)
        raise AttributeError(f"'PowerLawTest' object has no attribute {name!r}")


def semi_parametric_replicas(key, x, xmin, alpha, num, thresh=EVALS_THRESH):
    """``num`` replicas of one spectrum under its fitted power law (see the module docstring).

    Args:
      key: a ``jax.random`` key.
      x: ``(n,)`` spectrum, any order, zero-padded; values ``<= thresh`` are not data.
      xmin, alpha: the fitted tail.
      num: number of replicas (static).
      thresh: the fit's threshold.

    Returns:
      ``(num, n)`` replicas, each with as many data values as ``x`` (zero-padded).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> x = jnp.arange(1.0, 101.0)
      >>> semi_parametric_replicas(jax.random.key(0), x, 50.0, 3.0, 4).shape
      (4, 100)
    """
    n = x.shape[0]
    keep = jnp.isfinite(x) & (x > thresh)
    k = keep.sum()
    body = jnp.sort(jnp.where(keep & (x < xmin), x, jnp.inf))
    n_body = (keep & (x < xmin)).sum()
    k_tail, k_val, k_body = jax.random.split(key, 3)
    in_tail = jax.random.uniform(k_tail, (num, n), x.dtype) * k >= n_body
    u = jax.random.uniform(k_val, (num, n), x.dtype)
    tail = xmin * (1.0 - u) ** (-1.0 / (alpha - 1.0))
    idx = jnp.floor(jax.random.uniform(k_body, (num, n), x.dtype) * n_body).astype(jnp.int32)
    draw = jnp.where(in_tail, tail, body[jnp.clip(idx, 0, n - 1)])
    return jnp.where(jnp.arange(n) < k, draw, 0.0)


def _tail_bound(x, xmin_max, min_tail, thresh):
    """Largest allowed ``xmin`` of each row: ``xmin_max`` and, with ``min_tail``, the
    ``min_tail``-th largest kept value (``-inf`` when there are fewer)."""
    if min_tail is None:
        return jnp.broadcast_to(xmin_max, x.shape[:-1])
    if min_tail > x.shape[-1]:
        return jnp.full(x.shape[:-1], -jnp.inf, x.dtype)
    keep = jnp.isfinite(x) & (x > thresh)
    top = jnp.sort(jnp.where(keep, x, -jnp.inf), axis=-1)[..., x.shape[-1] - min_tail]
    return jnp.minimum(xmin_max, top)


def _fit(x, xmin_max, min_tail, thresh):
    bound = _tail_bound(x, xmin_max, min_tail, thresh)
    return fit_rows(x, bound, jnp.full(x.shape[:-1], thresh, x.dtype))


def bootstrap_batch(keys, evals, num, xmin_max, min_tail=None, thresh=EVALS_THRESH):
    """Fit and bootstrap test of a ``(L, n)`` batch of spectra (traceable).

    Args:
      keys: ``(L,)`` random keys, one per spectrum.
      evals: ``(L, n)`` spectra, any order, zero-padded.
      num: replicas per spectrum (static).
      xmin_max: scalar bound on ``xmin`` (``inf``: none).
      min_tail: ``None`` or the smallest tail (number of values) a fit may choose (static).
      thresh: values ``<= thresh`` are left out (static).

    Returns:
      A :class:`PowerLawTest` of ``(L,)`` fields.
    """
    L, n = evals.shape
    fit = _fit(evals, xmin_max, min_tail, thresh)
    ok = fit.status == FIT_OK
    reps = jax.vmap(semi_parametric_replicas, in_axes=(0, 0, 0, 0, None, None))(
        keys, evals, jnp.where(ok, fit.xmin, 1.0), jnp.where(ok, fit.alpha, 2.0), num, thresh)
    rfit = _fit(reps.reshape(L * num, n), xmin_max, min_tail, thresh)
    rD = rfit.D.reshape(L, num)
    ralpha = rfit.alpha.reshape(L, num)
    good = (rfit.status == FIT_OK).reshape(L, num)
    count = good.sum(axis=1)
    p = jnp.sum(good & (rD >= fit.D[:, None]), axis=1) / jnp.maximum(count, 1)
    tails = 100.0 * (1.0 - CI_LEVEL) / 2.0
    lo, hi = jnp.nanpercentile(jnp.where(good, ralpha, jnp.nan), jnp.array([tails, 100.0 - tails]),
                               axis=1)
    bad = ~ok | (count == 0)
    nan = jnp.nan
    return PowerLawTest(fit, p_value=jnp.where(bad, nan, p),
                        alpha_ci_low=jnp.where(bad, nan, lo), alpha_ci_high=jnp.where(bad, nan, hi))


@functools.partial(jax.jit, static_argnames=("num", "min_tail", "thresh"))
def _bootstrap(key, evals, num, xmin_max, min_tail, thresh):
    def on_batch(flat):
        keys = jax.random.split(key, flat.shape[0])
        return bootstrap_batch(keys, flat, num, xmin_max, min_tail, thresh)

    return map_spectra(on_batch, evals)


def check_bootstrap(bootstrap, key) -> int:
    """The number of replicas, validated: a ValueError names what is wrong."""
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, (int, np.integer)) or bootstrap < 0:
        raise ValueError(f"bootstrap must be a non-negative int (number of replicas), got {bootstrap!r}")
    if bootstrap and key is None:
        raise ValueError("bootstrap= needs key= (a jax.random key, e.g. jax.random.key(0)): "
                         "the replicas are random and jaxww never draws an unseeded one")
    return int(bootstrap)


def bootstrap_power_law(evals, *, bootstrap: int, key, xmin_max=None, min_tail: int | None = None,
                        thresh: float = EVALS_THRESH) -> PowerLawTest:
    """Power-law fit with its bootstrap p-value and alpha interval, per spectrum.

    Args:
      evals: eigenvalues, shape ``(..., n)``, any order; leading axes are a batch
        (each spectrum gets its own replicas, from ``key``).
      bootstrap: number of replicas ``B`` per spectrum (the p-value's Monte-Carlo
        error is about ``sqrt(p (1 - p) / B)``).
      key: a ``jax.random`` key (required).
      xmin_max: only tails starting at ``xmin <= xmin_max`` (the data's and the replicas').
      min_tail: only tails of at least this many values (None: any).
      thresh: values ``<= thresh`` are left out.

    Returns:
      A :class:`PowerLawTest` whose fields have shape ``evals.shape[:-1]``.

    Raises:
      ValueError: no key, a bad ``bootstrap`` or ``min_tail``, or no eigenvalue.

    Example:
      >>> import jax, numpy as np, jaxww
      >>> x = (1 - np.random.default_rng(0).random(500)) ** (-1 / 1.5)  # Pareto, alpha=2.5
      >>> t = jaxww.bootstrap_power_law(x, bootstrap=100, key=jax.random.key(0))
      >>> bool(t.p_value > 0.1), bool(t.alpha_ci_low < 2.5 < t.alpha_ci_high)
      (True, True)
    """
    num = check_bootstrap(bootstrap, key)
    if num == 0:
        raise ValueError("bootstrap_power_law needs bootstrap >= 1")
    if min_tail is not None and (not isinstance(min_tail, (int, np.integer)) or min_tail < 2):
        raise ValueError(f"min_tail must be None or an int >= 2, got {min_tail!r}")
    evals = as_spectra(evals, "bootstrap_power_law")
    bound = jnp.asarray(np.inf if xmin_max is None else float(xmin_max), evals.dtype)
    return _bootstrap(key, evals, num, bound, None if min_tail is None else int(min_tail), float(thresh))
