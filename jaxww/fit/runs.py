"""The host scan: :func:`jaxww.fit.tail.candidates` in NumPy, over runs of tied values.

Used by :func:`jaxww.fit.scan.fit_host` (the fit of ``analyze`` on the CPU and of
:func:`jaxww.fit_power_law` on a concrete host array); nothing is compiled.

A sorted spectrum is a sequence of runs of equal values (value ``v_r``, count ``c_r``,
first position ``p_r``). A candidate tail starting at position ``i`` (in run ``r0``)
enters the scan's formulas only through its runs: its log-spread is
``sum_{r > r0} c_r ln(v_r / x_i)``, and its KS distance is a maximum over values where,
within one run, the fitted CDF is constant and the empirical one (``rank / n_i``, the
rank counted from ``i``) climbs, so the maximum over a run is at its first or its last
value. Scoring over runs costs ``O(candidates x runs)`` instead of
``O(candidates x n)``: Clauset's rule (one candidate per distinct value) on ``2e5``
values with ``3e3`` distinct ones takes well under a second. Without ties every run is
one value and the computation is the position scan's, operation for operation.
"""

from __future__ import annotations

import numpy as np

from jaxww.fit.tail import alpha_from_sum, fitted_cdf, ks_gap, run_starts, small_sample, valid_candidates

#: Bytes of each (rows x candidates x runs) work array evaluated at once: 128 KiB, so
#: that the chunk's temporaries stay in the cache (measured 2x faster than 512 KiB).
CHUNK_BYTES = 1 << 17


def _runs(xs, logx, k):
    """Runs of the first ``k`` values of each ascending row, padded to the most runs.

    Returns ``(logv, count, first, run_of, num)``: per run its log value, its count and
    first position (as floats of ``logx``'s dtype: exact integers), the run of each
    position (ints) and the number of runs of each row. Padding runs have count 0 and
    the last kept value (its log, its position), so that they add nothing to a sum and
    their KS gap is at most the last run's.
    """
    B, n = xs.shape
    kept = np.arange(n) < k[:, None]
    new = run_starts(xs, np) & kept
    num = new.sum(-1)
    run_of = np.maximum(np.cumsum(new, axis=-1) - 1, 0)
    first = np.broadcast_to(k[:, None], (B, int(num.max(initial=0)))).copy()
    rows, cols = np.nonzero(new)
    first[rows, run_of[rows, cols]] = cols
    count = np.diff(np.concatenate([first, k[:, None]], axis=-1), axis=-1)
    first = np.minimum(first, np.maximum(k - 1, 0)[:, None])
    logv = np.take_along_axis(logx, first, axis=-1)
    return logv, count.astype(logx.dtype), first.astype(logx.dtype), run_of, num


def _score(logv, count, first, k, small, ci, cr, lo, alpha_max, ties):
    """``alpha``, ``D`` and usability of the candidates at positions ``ci`` (runs ``cr``),
    ``(B, c)``, from the runs ``[lo, ...)``.

    No mask: a run before the candidate's gets ``d = 0`` (clipped), so it adds nothing to
    the sum and its gap is at most 0; padding runs add nothing and repeat a gap.
    """
    dt = logv.dtype
    d = logv[:, None, lo:] - np.take_along_axis(logv, cr, axis=-1)[..., None]
    np.maximum(d, 0.0, out=d)
    cnt, pos = count[:, None, lo:], first[:, None, lo:]
    n_i = np.maximum(k[:, None] - ci, 1).astype(dt)
    alpha, usable = alpha_from_sum((d * cnt).sum(axis=-1), n_i, small[:, None], alpha_max, np)
    cdf = fitted_cdf(np.where(usable, alpha, 2.0)[..., None], d, np)
    i, n_i = ci.astype(dt)[..., None], n_i[..., None]
    low = np.maximum(pos - i, 0.0)      # the rank (in the tail) of the run's first value
    low /= n_i
    if ties:                            # ... and of its last
        high = pos + cnt - 1.0 - i
        high /= n_i
    return alpha, ks_gap(cdf, low, high if ties else low, np).max(axis=-1), usable


def candidates_host(xs, logx, k, alpha_max=np.inf, distinct=False, chunk_elements=None):
    """:func:`jaxww.fit.tail.candidates` in NumPy for a ``(B, n)`` batch, over runs.

    Args:
      xs, logx, k: a prepared batch (:func:`jaxww.fit.tail.prepare` with ``numpy``).
      alpha_max: exponents at or above this are unusable.
      distinct: Clauset's rule (one candidate per distinct value, no small-sample
        variant) instead of weightwatcher's (every sorted position).
      chunk_elements: about this many work values at once (None: ``CHUNK_BYTES`` of
        them); a chunk reads only the runs from its first candidate's on (the triangle
        of the scan).

    Returns:
      ``(alpha, D, usable, valid)``, each ``(B, n)`` over positions (NaN and False at the
      positions that are no candidate).
    """
    B, n = xs.shape
    k = np.asarray(k)
    chunk_elements = chunk_elements or CHUNK_BYTES // logx.itemsize
    logv, count, first, run_of, num = _runs(xs, logx, k)
    real = np.arange(first.shape[1]) < num[:, None]
    only = run_starts(xs, np) if distinct else None
    small = small_sample(k, only)
    ties = bool((num < k).any())
    ci, cr = (first.astype(k.dtype), np.broadcast_to(np.arange(first.shape[1]), first.shape)) if distinct else (
        np.broadcast_to(np.arange(n), (B, n)), run_of)
    alpha = np.full(ci.shape, np.nan, logx.dtype)
    D = np.full(ci.shape, np.nan, logx.dtype)
    usable = np.zeros(ci.shape, bool)
    end = int((k - 1).max(initial=0)) if not distinct else first.shape[1]
    s = 0
    while s < end:
        live = ci[:, s] < k - 1   # rows with a candidate here (and so, before, ones without)
        if not live.any():
            break
        lo = int(cr[live, s].min())
        c = min(end - s, max(1, chunk_elements // (B * max(logv.shape[1] - lo, 1))))
        sl = slice(s, s + c)
        alpha[:, sl], D[:, sl], usable[:, sl] = _score(logv, count, first, k, small, ci[:, sl],
                                                       cr[:, sl], lo, alpha_max, ties)
        s += c
    dead = ci >= (k - 1)[:, None]   # no candidate (its value was never or only partly scored)
    alpha[dead], D[dead], usable[dead] = np.nan, np.nan, False
    if distinct:
        alpha, D, usable = (_to_positions(a, first, real, n, fill) for a, fill in
                            ((alpha, np.nan), (D, np.nan), (usable, False)))
    return (alpha, D) + valid_candidates(usable, k, only, np)


def _to_positions(per_run, first, real, n, fill):
    """A ``(B, runs)`` array placed at each (``real``) run's first position of ``(B, n)``."""
    out = np.full((first.shape[0], n), fill, per_run.dtype)
    rows, runs = np.nonzero(real)
    out[rows, first[rows, runs].astype(np.intp)] = per_run[rows, runs]
    return out
