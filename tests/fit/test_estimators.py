"""``estimator=``: the papers' tail estimators against NumPy transcriptions of their code.

The references below are written from the papers' code (``net_esd_estimator`` of
YefanZhou/TempBalance ``tempbalance.py`` and of haiquanlu/AlphaPruning
``lib/esd_utils.py``), in float64, on the values above ``1e-5`` (jaxww's threshold; the
generated spectra have none below it).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import gaussian, low_rank_plus_noise, student_t, svd_evals

import jaxww
from jaxww.fit import estimators, fingers

#: float64 sums of <= 200 logs: relative errors ~1e-13; 1e-9 leaves room, and no room
#: for a different tail (the next candidate moves alpha by ~(alpha - 1) / n >= 1e-3).
RTOL64 = 1e-9


def ref_mid(x):
    """TempBalance ``pl_fitting='median'`` = AlphaPruning ``fix_fingers='xmin_mid'``."""
    e = np.sort(x[x > 1e-5])
    log = np.log(e)
    i = int(len(e) / 2)
    n = float(len(e) - i)
    alpha = 1 + n / (np.sum(log[i:]) - n * log[i])
    D = np.max(np.abs(1 - (e[i:] / e[i]) ** (-alpha + 1) - np.arange(n) / n))
    return alpha, e[i], D


def ref_peak(x):
    """AlphaPruning ``fix_fingers='xmin_peak'``: a CSN scan in the window
    ``[log10(0.95 p), 1.5 p]`` around the peak ``p`` of a 100-bin log10 histogram."""
    e = np.sort(x[x > 1e-5])
    N, log = len(e), np.log(e)
    alphas, Ds = np.zeros(N - 1), np.ones(N - 1)
    h = np.log10(e)
    counts, edges = np.histogram(h, bins=100, range=(h.min(), h.max()))
    xmin2 = 10 ** edges[np.argmax(counts)]
    lo, hi = np.log10(0.95 * xmin2), 1.5 * xmin2
    for i, xmin in enumerate(e[:-1]):
        if xmin < lo:
            continue
        if xmin > hi:
            break
        n = float(N - i)
        alphas[i] = alpha = 1 + n / (np.sum(log[i:]) - n * log[i])
        if alpha > 1:
            Ds[i] = np.max(np.abs(1 - (e[i:] / xmin) ** (-alpha + 1) - np.arange(n) / n))
    j = int(np.argmin(Ds))
    return alphas[j], e[j], Ds[j]


REFERENCES = {"hill_median": ref_mid, "alpha_mid": ref_mid, "alpha_peak": ref_peak}


def _pareto(seed, alpha, n):
    return (1 - np.random.default_rng(seed).random(n)) ** (-1 / (alpha - 1))


@functools.cache
def _spectra():
    """(B, 200) spectra: Marchenko-Pastur bulks (Q = 2) with and without spikes, a
    heavy-tailed layer, Pareto samples (alpha 2.5, 3.5, 5), and the layers at 200 times
    their scale (the window's lower bound ``log10(0.95 p)`` is not scale-free)."""
    shape = (400, 200)
    mp = [svd_evals(gaussian(s, shape)) for s in (1, 2)]
    spiked = [svd_evals(low_rank_plus_noise(s, shape, rank=r, signal=3.0)) for s, r in ((3, 3), (4, 8))]
    heavy = [svd_evals(student_t(5, shape, nu=3.0))]
    pareto = [_pareto(s, a, 200) for s, a in ((6, 2.5), (7, 3.5), (8, 5.0))]
    base = mp + spiked + heavy + pareto
    return np.stack(base + [200.0 * x for x in base[:5]])


@pytest.mark.parametrize("estimator", ["hill_median", pytest.param("alpha_mid", marks=pytest.mark.slow),
                                       "alpha_peak"])
def test_estimator_equals_the_papers_code(x64, estimator):
    ev = _spectra()
    fit = jaxww.fit_power_law(ev, estimator=estimator)
    assert (np.asarray(fit.status) == jaxww.FIT_OK).all()
    for r, x in enumerate(ev):
        alpha, xmin, D = REFERENCES[estimator](x)
        assert float(fit.xmin[r]) == xmin, (estimator, r)
        assert float(fit.alpha[r]) == pytest.approx(alpha, rel=RTOL64), (estimator, r)
        assert float(fit.D[r]) == pytest.approx(D, rel=RTOL64, abs=1e-12), (estimator, r)
        assert int(fit.num_pl_spikes[r]) == (x >= xmin).sum()
        assert float(fit.sigma[r]) == pytest.approx((alpha - 1) / np.sqrt((x >= xmin).sum()), rel=RTOL64)


@pytest.mark.slow
def test_alpha_peak_window_is_the_papers(x64):
    """``[log10(0.95 p), 1.5 p]`` around the peak of the ESD: the lower bound (the papers'
    code) is in log10 units, so it cuts the bulk of some layers and not others."""
    ev = _spectra()
    low, high = (np.asarray(a) for a in estimators.peak_window(jnp.asarray(ev), 1e-5))
    peak = np.asarray(fingers.esd_peak(jnp.asarray(ev)))
    np.testing.assert_allclose(low, np.log10(0.95 * peak), rtol=RTOL64)
    np.testing.assert_allclose(high, 1.5 * peak, rtol=RTOL64)
    cuts = low > ev.min(axis=1)
    assert cuts.any() and not cuts.all()
    fit = jaxww.fit_power_law(ev, estimator="alpha_peak")
    assert ((np.asarray(fit.xmin) >= low) & (np.asarray(fit.xmin) <= high)).all()


def test_hill_median_recovers_the_pareto_exponent():
    """On Pareto samples the top half is Pareto with the same exponent: the estimate is
    within 4 standard errors ``(alpha - 1) / sqrt(n_tail)`` of the truth."""
    for seed, a in ((0, 2.0), (1, 3.0), (2, 4.5)):
        x = _pareto(seed, a, 4000)
        fit = jaxww.fit_power_law(x, estimator="hill_median")
        assert abs(float(fit.alpha) - a) < 4 * (a - 1) / np.sqrt(2000), (a, float(fit.alpha))


@pytest.mark.slow
def test_gradient_holds_the_median_index_fixed(x64):
    """``d alpha / d x_j`` of the median tail, from ``alpha = 1 + n / S`` with
    ``S = sum_{j >= i} ln x_j - n ln x_i``: ``-n / S^2 / x_j`` above ``i``, ``-n (1 - n) / S^2 / x_i``
    at ``i``, 0 below; the same under jit."""
    x = np.sort(_pareto(3, 3.0, 41))
    i, n = 20, 21.0
    S = np.log(x[i:]).sum() - n * np.log(x[i])
    want = np.zeros_like(x)
    want[i + 1:] = -n / S ** 2 / x[i + 1:]
    want[i] = -n * (1 - n) / S ** 2 / x[i]
    f = lambda e: jaxww.fit_power_law(e, estimator="hill_median").alpha  # noqa: E731
    np.testing.assert_allclose(jax.jit(jax.grad(f))(x), want, rtol=1e-9)
    g = jax.grad(lambda e: jaxww.fit_power_law(e, estimator="alpha_peak").alpha)(x)
    assert np.isfinite(g).all() and (g != 0).any()


@pytest.mark.slow
def test_jit_and_leading_axes(x64):
    """Under ``jax.jit``, on a ``(2, 2, n)`` stack: each spectrum's reference."""
    ev = np.stack([_pareto(s, 3.0, 100) for s in range(4)]).reshape(2, 2, 100)
    for e in ("hill_median", "alpha_peak"):
        whole = jax.jit(lambda v, e=e: jaxww.fit_power_law(v, estimator=e).alpha)(ev)
        assert whole.shape == (2, 2)
        for idx in np.ndindex(2, 2):
            assert float(whole[idx]) == pytest.approx(REFERENCES[e](ev[idx])[0], rel=RTOL64)


@pytest.mark.slow
def test_degenerate_and_too_few():
    fit = jaxww.fit_power_law(np.array([[1.0, 2.0, 0.0, 0.0], [3.0, 3.0, 3.0, 3.0], [0.0, 0.0, 0.0, 2.0]]),
                              estimator="hill_median")
    assert list(np.asarray(fit.status)) == [jaxww.FIT_DEGENERATE, jaxww.FIT_DEGENERATE, jaxww.FIT_TOO_FEW]
    assert np.isnan(np.asarray(fit.alpha)).all()
    flat = jaxww.fit_power_law(np.full(50, 2.0), estimator="alpha_peak")
    assert int(flat.status) == jaxww.FIT_DEGENERATE


def test_bad_arguments_name_the_choices():
    with pytest.raises(ValueError, match="estimator must be one of"):
        jaxww.fit_power_law(np.arange(1.0, 30.0), estimator="hill")
    with pytest.raises(ValueError, match="xmin_max does not apply"):
        jaxww.fit_power_law(np.arange(1.0, 30.0), estimator="hill_median", xmin_max=5.0)
    with pytest.raises(ValueError, match="bootstrap and candidates= refine the 'csn' fit"):
        jaxww.fit_power_law(np.arange(1.0, 30.0), estimator="alpha_peak", bootstrap=10,
                            key=jax.random.key(0))


def test_command_line_choices_are_the_estimators():
    from jaxww import cli

    action = next(a for a in cli._parser()._subparsers._group_actions[0].choices["analyze"]._actions
                  if a.dest == "estimator")
    assert tuple(action.choices) == tuple(estimators.ESTIMATORS)
