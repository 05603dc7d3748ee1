"""The exact power-law scan of a ``(B, n)`` batch of spectra (Clauset, Shalizi, Newman 2009).

The scan behind :func:`jaxww.fit_power_law` (:mod:`jaxww.fit.powerlaw`), the bootstrap,
the fingers and the fits that start from its tail: traceable (:func:`fit_batch`,
:func:`fit_rows`, :func:`map_tails`) and in NumPy on the host (:func:`fit_host`, the fit
of ``analyze`` on the CPU), both on the formulas of :mod:`jaxww.fit.tail`.

It scans candidate values ``xmin``, fits the maximum-likelihood exponent of the tail
above each and keeps the candidate whose Kolmogorov-Smirnov distance ``D`` is smallest.
Two rules for the candidates (``candidates=``): ``"sorted"``, every sorted eigenvalue but
the largest (the scan that weightwatcher 0.7.7 runs in a Python loop,
``WW_powerlaw.WWFit``; with tied values a tail can start inside a run of them and hold
only part of it), and ``"distinct"``, each distinct value, its tail every value ``>=`` it
(Clauset's ``plfit.m``). Written here as one vectorised JAX function over candidates
*and* layers:

.. math::

    \\alpha_i = 1 + \\frac{n_i}{\\sum_{j \\ge i} \\ln(x_j / x_i)}, \\qquad
    D_i = \\max_{j \\ge i} \\Big| 1 - (x_j/x_i)^{1-\\alpha_i} - \\frac{j-i}{n_i} \\Big|

with ``n_i = n - i`` the tail size. Under ``"sorted"``, spectra of fewer than
``SMALL_N = 20`` values use the bias-corrected exponent ``1 + (n_i - 1) / sum ln(x_j/x_i)``
and only tails of at least ``SMALL_N_MIN_TAIL = 8`` values, as weightwatcher does
(``plfit.m`` has no such variant, nor has ``"distinct"``).

The candidate scan costs ``O(n^2)`` and is evaluated in chunks of candidates so that
15000 eigenvalues fit in memory. The chosen index is piecewise constant in the
eigenvalues; ``alpha`` is re-evaluated at that index with an ``O(n)`` formula so that
it is differentiable with respect to the eigenvalues (the index held fixed).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxww.fit.batching import map_spectra
from jaxww.fit.runs import candidates_host
from jaxww.fit.tail import (
    EVALS_THRESH, FIT_DEGENERATE, FIT_OK, FIT_TOO_FEW, as_column, best_candidate, candidates,
    mle_alpha, prepare, run_starts, small_sample, take_at,
)

#: The candidate rules (``candidates=``): weightwatcher's and Clauset's ``plfit.m``'s.
CANDIDATE_RULES = ("sorted", "distinct")

#: Elements of the (layers x candidates x eigenvalues) work array evaluated at once.
_CHUNK_ELEMENTS = 1 << 24


class PowerLawFit(NamedTuple):
    """Result of :func:`jaxww.fit_power_law`; every field has the batch shape of the input.

    Attributes:
      alpha: tail exponent of the best candidate (NaN when the fit failed).
      xmin: smallest eigenvalue of the fitted tail.
      xmax: largest eigenvalue.
      D: Kolmogorov-Smirnov distance of the fit.
      sigma: standard error of alpha, ``(alpha - 1) / sqrt(n_tail)``.
      num_pl_spikes: number of eigenvalues ``>= xmin`` (weightwatcher's column). With
        ``candidates="sorted"`` and a tail that starts inside a run of tied values, it
        counts the whole run while alpha was fitted on ``n_tail`` values, fewer.
      n_tail: number of values alpha and D were fitted on (0 when the fit failed);
        equal to ``num_pl_spikes`` without ties and with ``candidates="distinct"``.
      num_fit: number of eigenvalues above the threshold that entered the fit.
      status: ``FIT_OK``, ``FIT_TOO_FEW`` or ``FIT_DEGENERATE``.
    """

    alpha: jax.Array
    xmin: jax.Array
    xmax: jax.Array
    D: jax.Array
    sigma: jax.Array
    num_pl_spikes: jax.Array
    n_tail: jax.Array
    num_fit: jax.Array
    status: jax.Array


def _scan(xs, logx, k, xmin_max, chunk, only):
    """Index of the best tail of one prepared spectrum (``k`` real values), and its D.

    Everything here is under ``stop_gradient``: the choice of the tail carries no
    gradient.
    """
    xs, logx = jax.lax.stop_gradient((xs, logx))
    _, D, usable, valid = candidates(logx, k, chunk, only=only)
    return _best(xs, D, usable, valid, xmin_max)


def _best(xs, D, usable, valid, xmin_max, xp=jnp):
    """The winning index of the scan's ``D`` under the bound ``xmin_max``, and its D."""
    below = xs <= (xmin_max if xp is jnp else np.asarray(xmin_max)[..., None])
    best = best_candidate(D, usable & below, valid & below, xp)
    return best, take_at(xp, D, xp.maximum(best, 0))


def _fit_one(x, xmin_max, thresh, chunk, rule):
    """Fit one spectrum (any order, zero-padded); see :func:`jaxww.fit_power_law`."""
    xs, logx, k = prepare(x, thresh)
    only = run_starts(xs) if rule == "distinct" else None
    return _result(x, xs, logx, k, *_scan(xs, logx, k, xmin_max, chunk, only), thresh, only)


def _result(x, xs, logx, k, best, D, thresh, only, xp=jnp) -> PowerLawFit:
    """The fit's fields from the scan's winner ``best`` (and its ``D``)."""
    i = xp.maximum(best, 0)
    alpha, _ = mle_alpha(logx, k, i, small_sample(k, only), xp=xp)
    xmin = take_at(xp, xs, i)
    status = xp.where(k < 2, FIT_TOO_FEW, xp.where(best >= 0, FIT_OK, FIT_DEGENERATE))
    nan = xp.nan
    failed = status != FIT_OK
    n_tail = (k - i).astype(x.dtype)
    return PowerLawFit(
        alpha=xp.where(failed, nan, alpha),
        xmin=xp.where(failed, nan, xmin),
        xmax=xp.where(k > 0, xs[..., -1], nan),
        D=xp.where(failed, nan, D),
        sigma=xp.where(failed, nan, (alpha - 1.0) / xp.sqrt(n_tail)),
        num_pl_spikes=xp.where(failed, 0, (xp.isfinite(x) & (x > as_column(xp, thresh))
                                           & (x >= xmin[..., None])).sum(-1)),
        n_tail=xp.where(failed, 0, k - i),
        num_fit=k,
        status=status,
    )


def fit_host(evals: np.ndarray, xmin_max=np.inf, thresh=EVALS_THRESH, candidates="sorted"
             ) -> PowerLawFit:
    """:func:`fit_batch` in NumPy on the host, nothing compiled (same formulas, same results
    to rounding, in the input's precision): a ``(B, n)`` batch of spectra, any order,
    zero-padded; ``xmin_max`` a scalar or ``(B,)``; ``candidates`` one of
    :data:`CANDIDATE_RULES`. Fields are NumPy arrays of shape ``(B,)``. The scan runs over
    runs of tied values (:mod:`jaxww.fit.runs`): ``O(candidates x distinct values)``.
    """
    evals = np.asarray(evals)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # failed rows: NaN-masked
        xs, logx, k = prepare(evals, thresh, np)
        distinct = candidates == "distinct"
        _, D, usable, valid = candidates_host(xs, logx, k, distinct=distinct)
        best, D = _best(xs, D, usable, valid, np.asarray(xmin_max, evals.dtype), np)
        only = run_starts(xs, np) if distinct else None
        return _result(evals, xs, logx, k, best, D, thresh, only, np)


def _chunk(evals) -> int:
    """Candidates per chunk of a ``(B, n)`` batch: at most ``_CHUNK_ELEMENTS`` work values."""
    batch, n = evals.shape
    return max(1, min(n, _CHUNK_ELEMENTS // (batch * n)))


def fit_batch(evals, xmin_max, thresh=EVALS_THRESH, candidates="sorted") -> PowerLawFit:
    """Traceable core of :func:`jaxww.fit_power_law` for a ``(B, n)`` batch of spectra.

    Candidates (``candidates``: one of :data:`CANDIDATE_RULES`, static) are scanned in
    chunks so that the ``B x chunk x n`` work array holds at most ``_CHUNK_ELEMENTS``
    values (15000 eigenvalues fit in memory).
    """
    one = functools.partial(_fit_one, chunk=_chunk(evals), rule=candidates)
    return jax.vmap(one, in_axes=(0, None, None))(evals, xmin_max, thresh)


def fit_rows(evals, xmin_max, thresh, candidates="sorted") -> PowerLawFit:
    """:func:`fit_batch` with its own bound and threshold per spectrum (traceable).

    Args:
      evals: ``(B, n)`` spectra, any order, zero-padded.
      xmin_max: ``(B,)`` upper bounds on the candidate ``xmin`` (``inf``: none).
      thresh: ``(B,)`` thresholds: values ``<= thresh`` are left out of each fit.
      candidates: one of :data:`CANDIDATE_RULES` (static).

    Returns:
      A :class:`PowerLawFit` of ``(B,)`` fields.

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.stack([jnp.arange(1.0, 41.0)] * 2)
      >>> fit = fit_rows(x, jnp.array([jnp.inf, 5.0]), jnp.array([1e-5, 1e-5]))
      >>> bool(fit.xmin[1] <= 5.0)
      True
    """
    one = functools.partial(_fit_one, chunk=_chunk(evals), rule=candidates)
    return jax.vmap(one, in_axes=(0, 0, 0))(evals, xmin_max, thresh)


def map_tails(batch_fn, evals, xmin, thresh):
    """``batch_fn(flat, xmin, thresh)`` on the tails of ``evals`` (any leading axes); traceable.

    ``flat`` is ``evals`` as a ``(B, n)`` batch and ``xmin`` a ``(B,)`` start of each
    tail: the given scalar or ``evals.shape[:-1]`` array broadcast, or, for None, the
    exact scan's ``xmin`` (:func:`fit_batch`). The result is reshaped back to
    ``evals.shape[:-1]``. Used by the fits that take a power-law tail as given
    (truncated power law, likelihood-ratio comparisons).
    """
    if xmin is not None:
        xmin = jnp.broadcast_to(xmin, evals.shape[:-1]).reshape(-1)

    def on_tails(flat):
        start = fit_batch(flat, jnp.inf, thresh).xmin if xmin is None else xmin
        return batch_fn(flat, start, thresh)

    return map_spectra(on_tails, evals)
