"""The tail estimators of the papers that act on alpha: ``estimator=`` of the fit, of
``analyze``, of the differentiable alphas and of the optax transforms.

Every estimator keeps the values ``> thresh`` of a spectrum, sorts them
(``x_0 <= ... <= x_{k-1}``), chooses a start index ``i`` of the tail and gives the
maximum-likelihood exponent and Kolmogorov-Smirnov distance of the tail ``x_i..x_{k-1}``
(``n = k - i`` values):

.. math::

    \\alpha = 1 + \\frac{n}{\\sum_{j \\ge i} \\ln(x_j / x_i)}, \\qquad
    D = \\max_{j \\ge i} \\Big| 1 - (x_j / x_i)^{1 - \\alpha} - \\frac{j - i}{n} \\Big|

They differ in how ``i`` is chosen:

================ ===========================================================================
``"csn"``        the exact Clauset-Shalizi-Newman scan of :mod:`jaxww.fit.scan` (the
                 default; weightwatcher 0.7.7's ``alpha``; small-sample variant below 20
                 values).
``"hill_median"`` ``i = floor(k / 2)``: ``xmin`` is the median eigenvalue. TempBalance's
                 default, ``pl_fitting='median'`` with ``xmin_pos=2``
                 (YefanZhou/TempBalance, ``tempbalance.py``,
                 ``Tempbalance.net_esd_estimator``: ``i = int(len(nz_eigs) / xmin_pos)``).
``"alpha_mid"``  the same definition under AlphaPruning's name, ``fix_fingers='xmin_mid'``
                 (haiquanlu/AlphaPruning, ``lib/esd_utils.py``, ``net_esd_estimator``:
                 ``i = int(len(nz_eigs) / xmin_pos)``, ``xmin_pos=2``).
``"alpha_peak"`` AlphaPruning's default metric, ``fix_fingers='xmin_peak'`` (same function):
                 the peak ``p = 10**b`` with ``b`` the left edge of the fullest of 100
                 equal bins of ``log10(x)`` on ``[min, max]`` (``torch.histc``; the first
                 fullest bin on a tie); every ``i`` with ``log10(0.95 p) <= x_i <= 1.5 p``
                 and ``i < k - 1`` is a candidate; among those with ``alpha > 1`` the
                 smallest ``D`` wins (the first on a tie). The lower bound is
                 ``log10(0.95 p)`` compared with eigenvalues, as in their code (and in
                 weightwatcher 0.7.7's ``xmin_peak``, which theirs copies): it excludes
                 nothing when ``log10(0.95 p) <= x_0`` (whenever ``p < 1 / 0.95``), and
                 the window is then in effect ``x_i <= 1.5 p``.
================ ===========================================================================

None of the papers' estimators uses a small-sample correction. What differs from the
papers' code: values ``<= thresh`` (``1e-5``) are dropped first, as in the rest of jaxww,
where TempBalance and AlphaPruning keep every eigenvalue by default
(``filter_zeros=False``); the two agree whenever no eigenvalue is ``<= 1e-5``. Where the
papers' code returns a meaningless number (no candidate with ``alpha > 1``: AlphaPruning
gives 0; a constant tail: inf), the fit here fails with ``FIT_DEGENERATE``.

Traceable, vmapped over rows, and differentiable with respect to the eigenvalues with
the index ``i`` held fixed, as the CSN fit.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxww.fit.fingers import PEAK_HIGH, PEAK_LOW, esd_peak
from jaxww.fit.scan import PowerLawFit, fit_batch
from jaxww.fit.tail import (
    FIT_DEGENERATE, FIT_OK, FIT_TOO_FEW, FLAT_TAIL_ALPHA, TailAlpha, TailSpec, candidates, mle_alpha,
    prepare, status_code, tail_spec,
)

#: ``{estimator: (paper, where its definition is)}``; ``"csn"`` is the default.
ESTIMATORS = {
    "csn": ("Clauset-Shalizi-Newman scan, weightwatcher 0.7.7's alpha", "jaxww.fit.scan"),
    "hill_median": ("TempBalance (Zhou et al., NeurIPS 2023), pl_fitting='median'",
                    "YefanZhou/TempBalance tempbalance.py Tempbalance.net_esd_estimator"),
    "alpha_mid": ("AlphaPruning (Lu et al., NeurIPS 2024), fix_fingers='xmin_mid'",
                  "haiquanlu/AlphaPruning lib/esd_utils.py net_esd_estimator"),
    "alpha_peak": ("AlphaPruning (Lu et al., NeurIPS 2024), fix_fingers='xmin_peak'",
                   "haiquanlu/AlphaPruning lib/esd_utils.py net_esd_estimator"),
}
#: The estimators whose tail starts at a fixed position (``xmin_max`` does not apply).
FIXED_POSITION = ("hill_median", "alpha_mid")
#: The papers' estimators: :func:`estimate_rows` and ``TailSpec(kind=name)`` take them.
PAPERS = FIXED_POSITION + ("alpha_peak",)
#: Work values (rows x candidates x eigenvalues) of ``alpha_peak``'s scan at once.
_CHUNK_ELEMENTS = 1 << 24


def check_estimator(estimator, xmin_max=None) -> str:
    """``estimator`` if it is one of :data:`ESTIMATORS`, else a ValueError listing them;
    a ValueError too for ``xmin_max`` with an estimator of fixed position."""
    if not isinstance(estimator, str) or estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {tuple(ESTIMATORS)}, got {estimator!r}")
    if xmin_max is not None and estimator in FIXED_POSITION:
        raise ValueError(f"xmin_max does not apply to estimator={estimator!r} (its xmin is the median "
                         "eigenvalue); leave xmin_max=None or use 'csn' or 'alpha_peak'")
    return estimator


def describe(estimator: str) -> str:
    """One line naming the estimator and its source, for reports.

    Example:
      >>> describe("hill_median")
      "hill_median: TempBalance (Zhou et al., NeurIPS 2023), pl_fitting='median'"
    """
    return f"{estimator}: {ESTIMATORS[estimator][0]}"


def peak_window(x, thresh, xmin_max=jnp.inf):
    """``(low, high)`` of ``alpha_peak``'s candidate window for ``(..., n)`` spectra:
    ``low = log10(0.95 p)`` (as AlphaPruning's code), ``high = 1.5 p`` or ``xmin_max``
    when finite (weightwatcher's rule); NaN where fewer than 2 values are kept."""
    peak = esd_peak(x, thresh)
    high = jnp.where(jnp.isinf(xmin_max), PEAK_HIGH * peak, xmin_max)
    return jnp.log10(PEAK_LOW * peak), high


def _index(x, xs, logx, k, estimator, xmin_max, thresh, chunk):
    """Start index of the chosen tail of one prepared spectrum (-1: none), and its D
    (NaN for the estimators of fixed position: computed from the exponent after)."""
    if estimator in FIXED_POSITION:
        return jnp.where(k >= 1, k // 2, -1), jnp.nan
    assert estimator == "alpha_peak", estimator
    xs, logx = jax.lax.stop_gradient((xs, logx))
    _, D, usable, _ = candidates(logx, k, chunk, small=False)
    low, high = peak_window(x, thresh, xmin_max)
    ok = usable & (xs >= low) & (xs <= high)
    D = jnp.where(ok, D, jnp.inf)
    best = jnp.argmin(D)
    return jnp.where(jnp.isfinite(D[best]), best, -1), D[best]


def ks_distance(logx, k, i, alpha):
    """``D`` of the tail ``[i, k)`` of ascending logs under the exponent ``alpha``."""
    j = jnp.arange(logx.shape[0])
    d = logx - logx[jnp.clip(i, 0, logx.shape[0] - 1)]
    tail = (j >= i) & (j < k)
    n = jnp.maximum(k - i, 1).astype(logx.dtype)
    a = jnp.where(jnp.isfinite(alpha), alpha, 2.0)
    gap = jnp.abs(1.0 - jnp.exp((1.0 - a) * jnp.where(tail, d, 0.0)) - (j - i).astype(logx.dtype) / n)
    return jnp.max(jnp.where(tail, gap, 0.0))


def _fit_one(x, estimator, xmin_max, thresh, chunk) -> PowerLawFit:
    """One spectrum's :class:`jaxww.PowerLawFit` by a paper's estimator."""
    xs, logx, k = prepare(x, thresh)
    best, D = _index(x, xs, logx, k, estimator, xmin_max, thresh, chunk)
    i = jnp.maximum(best, 0)
    alpha, ok = mle_alpha(logx, k, i, False)
    D = jax.lax.stop_gradient(ks_distance(logx, k, i, alpha)) if estimator in FIXED_POSITION else D
    status = jnp.where(k < 2, FIT_TOO_FEW, jnp.where(ok & (best >= 0), FIT_OK, FIT_DEGENERATE))
    failed = status != FIT_OK
    xmin = xs[i]
    nan = jnp.asarray(jnp.nan, x.dtype)
    return PowerLawFit(
        alpha=jnp.where(failed, nan, alpha),
        xmin=jnp.where(failed, nan, xmin),
        xmax=jnp.where(k > 0, xs[jnp.maximum(k - 1, 0)], nan),
        D=jnp.where(failed, nan, D),
        sigma=jnp.where(failed, nan, (alpha - 1.0) / jnp.sqrt((k - i).astype(x.dtype))),
        num_pl_spikes=jnp.where(failed, 0, (jnp.isfinite(x) & (x > thresh) & (x >= xmin)).sum()),
        n_tail=jnp.where(failed, 0, k - i),
        num_fit=k,
        status=status,
    )


def _chunk(batch: int, n: int) -> int:
    return max(1, min(n, _CHUNK_ELEMENTS // max(batch * n, 1)))


def fit_rows(evals, estimator: str, xmin_max=jnp.inf, thresh=1e-5) -> PowerLawFit:
    """The :class:`jaxww.PowerLawFit` of each row of a ``(B, n)`` batch by ``estimator``
    (traceable; ``"csn"``: :func:`jaxww.fit.scan.fit_batch`).

    Args:
      evals: ``(B, n)`` spectra, any order, zero-padded.
      estimator: a name of :data:`ESTIMATORS` (static).
      xmin_max: scalar bound on ``xmin`` (``inf``: none; ``alpha_peak``: replaces ``1.5 p``).
      thresh: values ``<= thresh`` are left out.

    Returns:
      A :class:`jaxww.PowerLawFit` of ``(B,)`` fields.
    """
    if estimator == "csn":
        return fit_batch(evals, xmin_max, thresh)
    chunk = _chunk(*evals.shape)
    return jax.vmap(_fit_one, (0, None, None, None, None))(evals, estimator, xmin_max, thresh, chunk)


def _estimate_one(x, estimator, thresh, chunk) -> TailAlpha:
    """One spectrum's training-time :class:`jaxww.TailAlpha` by a paper's estimator (as
    :func:`jaxww.fit.tail.estimate`: flat tails and non-finite input are failures)."""
    finite = jnp.isfinite(x).all()
    xs, logx, k = prepare(x, thresh)
    best, _ = _index(x, xs, logx, k, estimator, jnp.inf, thresh, chunk)
    i = jnp.maximum(best, 0)
    alpha, ok = mle_alpha(logx, k, i, False, FLAT_TAIL_ALPHA)
    ok &= (best >= 0) & (k >= 2) & finite
    nan = jnp.asarray(jnp.nan, x.dtype)
    return TailAlpha(alpha=jnp.where(ok, alpha, nan), xmin=jnp.where(ok, xs[i], nan),
                     num_tail=jnp.where(ok, k - i, 0).astype(jnp.int32), num_fit=k.astype(jnp.int32),
                     status=status_code(finite, k, ok).astype(jnp.int32))


def estimate_rows(flat, estimator: str, thresh) -> TailAlpha:
    """The :class:`jaxww.TailAlpha` of each row of a ``(B, n)`` batch by a paper's estimator
    (not ``"csn"``: that is the ``"ks"`` tail of :func:`jaxww.fit.tail.estimate`); traceable."""
    chunk = _chunk(*flat.shape)
    return jax.vmap(_estimate_one, (0, None, None, None))(flat, estimator, thresh, chunk)



def tail_choice(tail, temperature, estimator, default_tail) -> TailSpec:
    """The :class:`jaxww.TailSpec` of a training function's ``tail=`` and ``estimator=``.

    Args:
      tail, temperature: as :func:`jaxww.tail_spec` takes them.
      estimator: None (``tail`` decides), or a name of :data:`ESTIMATORS`: ``"csn"`` is
        the ``"ks"`` tail, the papers' estimators their own (``TailSpec(kind=estimator)``,
        :func:`estimate_rows`).
      default_tail: the function's default ``tail``: another ``tail`` with an
        ``estimator`` is a ValueError (both choose the tail).

    Returns:
      A :class:`jaxww.TailSpec`.
    """
    if estimator is None:
        return tail_spec(tail, temperature)
    check_estimator(estimator)
    if not isinstance(tail, str) or tail != default_tail:
        raise ValueError(f"give tail= or estimator=, not both (tail={tail!r}, estimator={estimator!r})")
    return tail_spec("ks", temperature) if estimator == "csn" else TailSpec(estimator)
