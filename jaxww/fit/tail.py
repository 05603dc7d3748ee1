"""The Clauset-Shalizi-Newman tail core: one spectrum's candidate tails, exponents and choice.

Shared by the fit (:mod:`jaxww.fit.scan`) and the differentiable training-time
estimates at the end of this module (:class:`TailSpec`, :func:`estimate`, used by
:mod:`jaxww.training`).

One spectrum at a time (callers ``vmap``): keep the eigenvalues above a threshold and
sort them (:func:`prepare`), score every candidate ``xmin`` (:func:`candidates`: the
exact Clauset-Shalizi-Newman scan), pick the winner (:func:`best_candidate`) and
evaluate the maximum-likelihood exponent of a tail (:func:`mle_alpha`):

.. math::

    \\alpha_i = 1 + \\frac{n_i - c}{\\sum_{j \\ge i} (\\ln x_j - \\ln x_i)}, \\qquad
    D_i = \\max_{j \\ge i} \\Big| 1 - (x_j/x_i)^{1-\\alpha_i} - \\frac{j-i}{n_i} \\Big|

with ``n_i = k - i`` the tail size and ``c = 1`` for the small-sample estimator
(fewer than ``SMALL_N`` kept values), else 0. One status enum (``FIT_*``) says why a
result is missing.

The functions that take ``xp`` are written once for ``jax.numpy`` (the default: the
jitted, vmapped, differentiable fit) and ``numpy`` (the host fit,
:func:`jaxww.fit.scan.fit_host`, which compiles nothing); with ``numpy`` they take
leading batch axes. The scan's formulas are :func:`alpha_from_sum`,
:func:`fitted_cdf` and :func:`ks_gap`, used by :func:`candidates` (``jax.lax.map`` over chunks of positions)
and by the host scan over runs of tied values (:mod:`jaxww.fit.runs`).

Two candidate rules: weightwatcher's (every sorted position but the last a candidate,
so with ties a tail may start inside a run of equal values) and Clauset's ``plfit.m``
(each distinct value a candidate, its tail every value ``>=`` it: ``only=run_starts``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxww.typing import Tail

#: Eigenvalues at or below this value are left out of the fit (reference: EVALS_THRESH).
EVALS_THRESH = 1e-5
#: Spectra with fewer kept eigenvalues use the small-sample estimator.
SMALL_N = 20
#: In the small-sample variant, only tails of at least this many values are candidates.
SMALL_N_MIN_TAIL = 8

# Status codes of every tail estimate (an int array under jit); FIT_REASONS spells them out.
FIT_OK = 0
FIT_TOO_FEW = 1
FIT_DEGENERATE = 2
FIT_NONFINITE = 3
FIT_REASONS = {
    FIT_OK: "",
    FIT_TOO_FEW: "fewer than 2 eigenvalues above 1e-5: nothing to fit",
    FIT_DEGENERATE: "no valid tail: every candidate tail is constant, gives alpha <= 1 "
                    "or starts above xmin_max",
    FIT_NONFINITE: "weights or eigenvalues contain NaN or Inf",
}

#: The training-time estimates (:func:`estimate`) flag an exponent at or above this as a
#: numerically flat tail (mean log-spread < 1e-3), never a number; the fit keeps every one.
FLAT_TAIL_ALPHA = 1000.0
#: Default temperature of the ``"soft"`` tail, in units of the KS distance ``D``.
DEFAULT_TEMPERATURE = 0.01
#: Candidate rows x eigenvalues evaluated at once in the training-time KS scan.
_CHUNK_ELEMENTS = 1 << 22


def take_at(xp, a, i):
    """``a[..., i]`` with one index per leading row (``i`` has ``a``'s leading shape)."""
    return xp.take_along_axis(a, xp.asarray(i)[..., None], axis=-1)[..., 0]


def as_column(xp, a):
    """``a`` as a column against the last axis: ``a[..., None]`` (a Python scalar as is)."""
    return a if isinstance(a, (int, float)) else xp.asarray(a)[..., None]


def prepare(x, thresh, xp=jnp):
    """Kept values of one spectrum, ascending: ``(xs, logx, k)``.

    Values ``> thresh`` and finite are kept (``k`` of them, first in ``xs``); the
    padding after them repeats the largest kept value (1 when none), and ``logx`` is
    ``ln xs`` on the kept values and 0 on the padding, so nothing is inf or NaN.

    Like every function of this core that takes ``xp`` (``jax.numpy``, or ``numpy``
    for the host fit, :func:`jaxww.fit.scan.fit_host`), it also takes leading batch axes
    (``x`` of shape ``(..., n)``, ``thresh`` a scalar or of the leading shape).
    """
    n = x.shape[-1]
    keep = xp.isfinite(x) & (x > as_column(xp, thresh))
    k = keep.sum(-1)
    xs = xp.sort(xp.where(keep, x, xp.inf), axis=-1)
    top = xp.where(k > 0, take_at(xp, xs, xp.maximum(k - 1, 0)), 1.0)
    kept = xp.arange(n) < k[..., None]
    xs = xp.where(kept, xs, top[..., None])
    return xs, xp.where(kept, xp.log(xs), 0.0), k


def mle_alpha(logx, k, i, small, alpha_max=np.inf, xp=jnp):
    """MLE exponent of the tail ``[i, k)`` of ascending logs, and whether it is usable.

    ``alpha = 1 + (n_i - small) / sum_j (ln x_j - ln x_i)``; usable when the tail has
    at least two values, a positive log-spread and ``1 < alpha < alpha_max``.
    Differentiable with respect to ``logx`` (the index held fixed).
    """
    n = logx.shape[-1]
    pos = xp.arange(n)
    tail = (pos >= as_column(xp, i)) & (pos < as_column(xp, k))
    s = xp.where(tail, logx - take_at(xp, logx, xp.clip(i, 0, n - 1))[..., None], 0.0).sum(-1)
    n_i = xp.asarray(k - i).astype(logx.dtype)
    ok = (s > 0) & (n_i >= 2)
    alpha = 1.0 + (n_i - xp.asarray(small).astype(logx.dtype)) / xp.where(ok, s, 1.0)
    return alpha, ok & (alpha > 1.0) & (alpha < alpha_max)


def alpha_from_sum(s, n_i, small, alpha_max=np.inf, xp=jnp):
    """The scan's exponent ``1 + (n_i - small) / s`` of a tail of ``n_i`` values whose
    log-spread is ``s = sum ln(x_j / xmin)``, and whether it is usable (``s`` positive,
    ``1 < alpha < alpha_max``). A degenerate tail gets a safe denominator (no inf or NaN).
    """
    dt = s.dtype
    positive = s > xp.where(small, xp.asarray(1e-12, dt), xp.asarray(0.0, dt))
    alpha = 1.0 + (n_i - xp.asarray(small).astype(dt)) / xp.where(positive, s, 1.0)
    return alpha, positive & (alpha > 1.0) & (alpha < alpha_max)


def fitted_cdf(alpha, d, xp=jnp):
    """The power law's CDF ``1 - (x / xmin)**(1 - alpha)`` at ``d = ln(x / xmin)``."""
    return 1.0 - xp.exp((1.0 - alpha) * d)


def ks_gap(cdf, low, high, xp=jnp):
    """The KS gap at a value whose fitted CDF is ``cdf`` and whose empirical CDF
    (``rank / n_i`` at the value of ``rank`` in the tail, Clauset's ``(0:n-1)/n``) runs
    from ``low`` to ``high`` over its tied copies: ``max(cdf - low, high - cdf)``, the
    larger ``|cdf - ecdf|`` over them (``|cdf - low|`` exactly when ``low == high``)."""
    return xp.maximum(cdf - low, high - cdf)


def _candidate_chunk(logx, k, starts, small, alpha_max, xp=jnp):
    """``alpha_i``, ``D_i`` and usability of the candidate indices ``starts`` (a chunk).

    ``logx`` ``(..., n)``, ``k`` and ``small`` of its leading shape, ``starts``
    ``(c,)``; the results are ``(..., c)``. The scan's formulas are :func:`alpha_from_sum`
    and :func:`ks_gap` (with :func:`fitted_cdf`). Differentiable: a degenerate tail (``sum ln(x_j / x_i) == 0``,
    alpha infinite) is marked unusable and computed with a safe denominator.
    """
    n = logx.shape[-1]
    dt = logx.dtype
    j = xp.arange(n)
    k, small = xp.asarray(k)[..., None], xp.asarray(small)[..., None]
    tail = (j >= starts[:, None]) & (j < k[..., None])
    d = xp.where(tail, logx[..., None, :] - logx[..., xp.minimum(starts, n - 1)][..., None], 0.0)
    n_i = xp.maximum(k - starts, 1).astype(dt)
    alpha, usable = alpha_from_sum(d.sum(axis=-1), n_i, small, alpha_max, xp)
    a = xp.where(usable, alpha, 2.0)
    ecdf = (j - starts[:, None]).astype(dt) / n_i[..., None]
    gap = ks_gap(fitted_cdf(a[..., None], d, xp), ecdf, ecdf, xp)
    D = xp.max(xp.where(tail, gap, 0.0), axis=-1)
    return alpha, D, usable


def run_starts(xs, xp=jnp):
    """Where each run of equal values of ascending ``xs`` (``(..., n)``) starts: the
    candidates of Clauset's rule (one per distinct value)."""
    first = xp.ones(xs.shape[:-1] + (1,), bool)
    return xp.concatenate([first, xs[..., 1:] != xs[..., :-1]], axis=-1)


def small_sample(k, only, small=None):
    """Whether the small-sample variant applies: ``small`` where given; else fewer than
    ``SMALL_N`` kept values under weightwatcher's rule (``only`` None), never under
    Clauset's (``plfit.m`` has none)."""
    if small is not None:
        return small
    return (k < SMALL_N) if only is None else (k < 0)


def valid_candidates(usable, k, only=None, xp=jnp, small=None):
    """``(usable, valid)`` of :func:`candidates` from the chunks' usability ``(..., n)``.

    ``only``: None (every sorted position, small samples' tails of at least
    ``SMALL_N_MIN_TAIL`` values) or the mask of the allowed candidates (no minimum tail).
    ``small``: as in :func:`small_sample` (False: no minimum tail either).
    """
    j = xp.arange(usable.shape[-1])
    k = xp.asarray(k)[..., None]
    usable = usable & (j < k - 1)
    if only is not None:
        usable = usable & only
        return usable, usable
    small = (k < SMALL_N) if small is None else small
    return usable, usable & xp.where(small, k - j >= SMALL_N_MIN_TAIL, True)


def candidates(logx, k, chunk, alpha_max=np.inf, only=None, small=None):
    """The exact KS scan: every candidate's exponent, distance and validity.

    Args:
      logx: ``(n,)`` logs of an ascending spectrum whose first ``k`` entries are real.
      k: number of real values (``< SMALL_N`` selects the small-sample variant).
      chunk: candidates evaluated at once (static), bounding memory to ``chunk * n``.
      alpha_max: exponents at or above this are unusable (the training-time
        estimators reject numerically flat tails; the fit keeps every finite one).
      only: None (weightwatcher's rule: every sorted position a candidate) or a
        ``(n,)`` mask of the allowed candidates (Clauset's rule: :func:`run_starts`;
        no small-sample variant).
      small: whether to use the small-sample variant (None: by the rule; False: the
        plain exponent for any ``k``, as :mod:`jaxww.fit.estimators`' ``alpha_peak``).

    Returns:
      ``(alpha, D, usable, valid)``, each ``(n,)``: ``usable`` candidates have a
      finite exponent > 1 and a tail of at least two values; ``valid`` ones may win
      the scan (small samples: tails of at least ``SMALL_N_MIN_TAIL`` values).
      Differentiable with respect to ``logx``. :func:`jaxww.fit.runs.candidates_host`
      is the same scan in NumPy.
    """
    n = logx.shape[0]
    small = small_sample(k, only, small)
    num_chunks = -(-n // chunk)
    starts = jnp.arange(num_chunks * chunk).reshape(num_chunks, chunk)
    alpha, D, usable = jax.lax.map(lambda st: _candidate_chunk(logx, k, st, small, alpha_max), starts)
    alpha, D, usable = alpha.reshape(-1)[:n], D.reshape(-1)[:n], usable.reshape(-1)[:n]
    return (alpha, D) + valid_candidates(usable, k, only, small=small)


def best_candidate(D, usable, valid, xp=jnp):
    """Index of the winning candidate: smallest ``D`` among the valid (first on a tie).

    With no valid candidate, the reference's small-sample fallback: the whole spectrum
    (index 0) if usable, else -1 (no fit).
    """
    D_valid = xp.where(valid, D, xp.inf)
    best = xp.argmin(D_valid, axis=-1)
    return xp.where(xp.isfinite(take_at(xp, D_valid, best)), best, xp.where(usable[..., 0], 0, -1))


def status_code(finite, k, ok, xp=jnp):
    """The status code from the checks, worst first: non-finite, too few, no valid tail."""
    return xp.where(~finite, FIT_NONFINITE,
                    xp.where(k < 2, FIT_TOO_FEW, xp.where(ok, FIT_OK, FIT_DEGENERATE)))


# ------------------------------------------------- the training-time estimators
class TailSpec(NamedTuple):
    """A validated tail choice (see :mod:`jaxww.training.penalties`); build it with :func:`tail_spec`.

    Attributes:
      kind: ``"ks"``, ``"soft"``, ``"fraction"`` or ``"count"``.
      fraction: share of the kept spectrum in the tail (``"fraction"``).
      count: number of values in the tail (``"count"``).
      temperature: softmax temperature on ``D`` (``"soft"``).
    """

    kind: str
    fraction: float = 0.5
    count: int = 0
    temperature: float = DEFAULT_TEMPERATURE


def tail_spec(tail: Tail | TailSpec = "ks", temperature: float = DEFAULT_TEMPERATURE) -> TailSpec:
    """Validate a ``tail=`` argument.

    Args:
      tail: ``"ks"``, ``"soft"``, ``"fraction"`` (top half), a float in ``(0, 1]`` (that
        share of the spectrum), an int ``>= 2`` (that many values), or a :class:`TailSpec`.
      temperature: temperature of the ``"soft"`` tail, ``> 0``.

    Returns:
      A :class:`TailSpec`.

    Raises:
      ValueError: for anything else.
    """
    if isinstance(tail, TailSpec):
        return tail_spec(_spec_arg(tail), tail.temperature)
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    if isinstance(tail, (bool, np.bool_)):
        raise ValueError(f"tail must be 'ks', 'soft', 'fraction', a float or an int, got {tail!r}")
    if isinstance(tail, str):
        if tail == "ks":
            return TailSpec("ks", temperature=float(temperature))
        if tail == "soft":
            return TailSpec("soft", temperature=float(temperature))
        if tail == "fraction":
            return TailSpec("fraction", fraction=0.5, temperature=float(temperature))
        raise ValueError(f"tail must be 'ks', 'soft', 'fraction', a float or an int, got {tail!r}")
    if isinstance(tail, (int, np.integer)):
        if tail < 2:
            raise ValueError(f"a tail count must be >= 2, got {tail}")
        return TailSpec("count", count=int(tail), temperature=float(temperature))
    if isinstance(tail, (float, np.floating)):
        if not 0.0 < tail <= 1.0:
            raise ValueError(f"a tail fraction must be in (0, 1], got {tail}")
        return TailSpec("fraction", fraction=float(tail), temperature=float(temperature))
    raise ValueError(f"tail must be 'ks', 'soft', 'fraction', a float or an int, got {tail!r}")


def _spec_arg(spec: TailSpec):
    return {"ks": "ks", "soft": "soft", "fraction": spec.fraction, "count": spec.count}[spec.kind]


class TailAlpha(NamedTuple):
    """Result of :func:`tail_alpha`; every field has the batch shape of the input.

    Attributes:
      alpha: the tail exponent (NaN when ``status != FIT_OK``); differentiable.
      xmin: smallest eigenvalue of the tail (``"soft"``: the weighted mean of the
        candidates' ``xmin``).
      num_tail: number of values in the tail (``"soft"``: of the heaviest candidate).
      num_fit: number of eigenvalues above the threshold.
      status: ``FIT_OK``, ``FIT_TOO_FEW``, ``FIT_DEGENERATE`` or ``FIT_NONFINITE``
        (:data:`jaxww.FIT_REASONS`).
    """

    alpha: jax.Array
    xmin: jax.Array
    num_tail: jax.Array
    num_fit: jax.Array
    status: jax.Array


def _ks_index(logx, kc):
    """Index of the CSN choice (smallest D, first on a tie; the fit's fallbacks), or -1."""
    _, D, usable, valid = _candidates(jax.lax.stop_gradient(logx), kc)
    return best_candidate(D, usable, valid)


def _candidates(logx, kc):
    """The exact KS scan, numerically flat tails (``alpha >= FLAT_TAIL_ALPHA``) unusable."""
    n = logx.shape[0]
    return candidates(logx, kc, max(1, min(n, _CHUNK_ELEMENTS // max(n, 1))), FLAT_TAIL_ALPHA)


def estimate(x, spec: TailSpec, thresh: float) -> TailAlpha:
    """Tail exponent of one spectrum ``x`` (any order, zero padding allowed)."""
    dt = x.dtype
    finite = jnp.isfinite(x).all()
    xs, logx, kc = prepare(x, thresh)
    n = x.shape[0]
    small = (kc < SMALL_N) & (spec.kind in ("ks", "soft"))
    if spec.kind == "fraction":
        # n_t = ceil(f * k) (TempBalance's i = int(k / 2) for f = 1/2); the factor
        # absorbs float32 rounding of products that are exact integers.
        n_t = jnp.ceil(kc * spec.fraction * (1.0 - 1e-6)).astype(kc.dtype)
        best = jnp.maximum(kc - jnp.clip(n_t, 2, None), 0)
    elif spec.kind == "count":
        best = jnp.maximum(kc - spec.count, 0)
    elif spec.kind == "ks":
        best = _ks_index(logx, kc)
    else:  # soft: one scan, with gradient; the hard choice from its stopped D
        a_all, D, usable, valid = _candidates(logx, kc)
        best = best_candidate(jax.lax.stop_gradient(D), usable, valid)
    i = jnp.maximum(best, 0)
    alpha, ok = mle_alpha(logx, kc, i, small, FLAT_TAIL_ALPHA)
    xmin = xs[jnp.clip(i, 0, n - 1)]
    if spec.kind == "soft":
        any_valid = valid.any()
        z = -D / spec.temperature
        zmax = jax.lax.stop_gradient(jnp.max(jnp.where(valid, z, -jnp.inf)))
        e = jnp.where(valid, jnp.exp(jnp.where(valid, z - jnp.where(any_valid, zmax, 0.0), 0.0)), 0.0)
        w = e / jnp.maximum(e.sum(), 1e-30)
        alpha = jnp.where(any_valid, (w * jnp.where(valid, a_all, 0.0)).sum(), alpha)
        xmin = jnp.where(any_valid, (w * xs).sum(), xmin)
    ok &= (best >= 0) & (kc >= 2) & finite
    nan = jnp.asarray(jnp.nan, dt)
    return TailAlpha(
        alpha=jnp.where(ok, alpha, nan),
        xmin=jnp.where(ok, xmin, nan),
        num_tail=jnp.where(ok, kc - i, 0).astype(jnp.int32),
        num_fit=kc.astype(jnp.int32),
        status=status_code(finite, kc, ok).astype(jnp.int32),
    )
