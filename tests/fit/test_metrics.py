"""``jaxww.spectral_metrics``: the per-layer norm and rank metrics (conventions section 4)."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest

import jaxww
from jaxww.fit import metrics as M


def test_known_answer(h):
    m = jaxww.spectral_metrics(jnp.array([4.0, 1.0, 0.0]), 3, 3, 2.0)
    # small integers: sums, max and 5 / 4 are exact in float32
    assert float(m.norm) == 5.0
    assert float(m.spectral_norm) == 4.0
    assert float(m.stable_rank) == 1.25
    # float32 logs (condition 1 / |ln x| < 1 here), a product, a power of exact values: a few ulp
    rtol = h.ulps(4, eps=h.EPS32)
    np.testing.assert_allclose(float(m.log_norm), math.log10(5.0), rtol=rtol)
    np.testing.assert_allclose(float(m.log_spectral_norm), math.log10(4.0), rtol=rtol)
    np.testing.assert_allclose(float(m.alpha_weighted), 2.0 * math.log10(4.0), rtol=rtol)
    np.testing.assert_allclose(float(m.log_alpha_norm), math.log10(16.0 + 1.0), rtol=rtol)
    assert int(m.matrix_rank) == 2  # the zero eigenvalue is not counted
    p = np.array([0.8, 0.2, 0.0]) + M.ENTROPY_EPS   # the library's regulariser of p ln p
    # -sum p ln p of positive terms: each off by a few float32 ulp times (1 + |ln p|) (<= 2.6 for
    # the terms that matter; the ENTROPY_EPS one is 2e-9 in all)
    np.testing.assert_allclose(float(m.entropy), -(p * np.log(p)).sum() / math.log(2 + M.ENTROPY_EPS),
                               rtol=h.ulps(8, cond=1 + abs(math.log(0.2)), eps=h.EPS32))


def test_padding_is_ignored():
    a = jaxww.spectral_metrics(jnp.array([4.0, 1.0, 0.0]), 3, 3, 2.0)
    b = jaxww.spectral_metrics(jnp.array([4.0, 1.0, 0.0, 99.0, 7.0]), 3, 3, 2.0)  # junk beyond num_evals
    for f in M.SpectralMetrics._fields:
        # masked entries add exact zeros (and small integers sum exactly): the same bits
        assert float(getattr(a, f)) == float(getattr(b, f)), f


@pytest.mark.slow
@pytest.mark.oracle
def test_matches_weightwatcher_formulas(h, x64):
    from weightwatcher.RMT_Util import matrix_entropy, matrix_rank

    ev = h.svd_evals(h.student_t(7).astype(np.float64))
    alpha = 3.7
    m = jaxww.spectral_metrics(jnp.asarray(ev), len(ev), 256, alpha)
    # the same float64 eigenvalues on both sides: each formula's own rounding (h.metric_tols;
    # the reference's entropy goes through sigma = sqrt(lambda) and back: an ulp each)
    tol = h.metric_tols(ev, alpha, 0.0, x_err=h.ulps(2) * ev.max())
    np.testing.assert_allclose(float(m.norm), ev.sum(), rtol=0, atol=tol["norm"])
    np.testing.assert_allclose(float(m.stable_rank), ev.sum() / ev.max(), rtol=0, atol=tol["stable_rank"])
    np.testing.assert_allclose(float(m.log_alpha_norm), np.log10(np.sum(ev**alpha)), rtol=0,
                               atol=tol["log_alpha_norm"])
    np.testing.assert_allclose(float(m.alpha_weighted), alpha * np.log10(ev.max()), rtol=0,
                               atol=tol["alpha_weighted"])
    assert int(m.matrix_rank) == matrix_rank(np.sqrt(ev), 256) == 128
    np.testing.assert_allclose(float(m.entropy), matrix_entropy(np.sqrt(ev), 256), rtol=0, atol=tol["entropy"])


def test_rank_counts_eigenvalues_above_floor(x64):
    # jaxww's rank: lambda > max(lambda) * N * eps (a deliberate difference from the
    # reference's sigma > max(sigma) * N * eps).
    eps = np.finfo(np.float64).eps
    ev = np.array([1.0, 0.5, 100 * eps, 2 * eps, 0.0])  # floor = 1 * 10 * eps
    m = jaxww.spectral_metrics(jnp.asarray(ev), 5, 10, 2.0)
    assert int(m.matrix_rank) == 3


def test_failed_fit_alpha_nan():
    m = jaxww.spectral_metrics(jnp.array([4.0, 1.0, 0.5]), 3, 3, jnp.nan)
    assert np.isnan(float(m.alpha_weighted)) and np.isnan(float(m.log_alpha_norm))
    assert float(m.norm) == 5.5 and int(m.matrix_rank) == 3


@pytest.mark.slow
def test_batched(h):
    ev = jnp.array([[4.0, 1.0, 0.0], [9.0, 3.0, 1.0]])
    m = jaxww.spectral_metrics(ev, jnp.array([3, 3]), jnp.array([3.0, 5.0]), jnp.array([2.0, 3.0]))
    assert m.norm.shape == (2,)
    one = jaxww.spectral_metrics(ev[1], 3, 5.0, 3.0)
    # the same float32 formulas, batched or not (XLA may vectorise them differently): their
    # rounding (h.metric_tols in float32); the rank is a count
    tol = h.metric_tols(np.asarray(ev[1]), 3.0, 0.0, eps=h.EPS32)
    assert int(m.matrix_rank[1]) == int(one.matrix_rank)
    for f in set(M.SpectralMetrics._fields) - {"matrix_rank"}:
        np.testing.assert_allclose(float(getattr(m, f)[1]), float(getattr(one, f)), rtol=0, atol=tol[f], err_msg=f)


@pytest.mark.parametrize("scale, alpha", [
    (740.0, 14.6),   # an untrained 256x128 Gaussian layer: lambda_max ~ 740, alpha ~ 14.6
    (1e4, 10.0),     # sum(lambda**alpha) ~ 1e39 > float32 max
    (1e-3, 14.0),    # sum(lambda**alpha) ~ 1e-42: below float32's smallest normal
])
def test_log_alpha_norm_does_not_overflow_in_float32(scale, alpha, h):
    # log10(sum(lambda**alpha)) must be computed without forming lambda**alpha in
    # float32 (it overflows to inf / underflows to 0 although the log is ~ +-40).
    ev = np.linspace(0.05, 1.0, 128) * scale
    expected = np.log10(np.sum(ev.astype(np.float64) ** alpha))
    m = jaxww.spectral_metrics(jnp.asarray(ev, jnp.float32), 128, 256, alpha)
    assert np.isfinite(float(m.log_alpha_norm)), float(m.log_alpha_norm)
    # in float32 log space: each exponent alpha ln(lambda) (and lambda's own rounding to
    # float32) off by a few ulp of alpha |ln lambda|, the log of the sum of 128 by ln(128) ulp
    err = h.ulps(4, eps=h.EPS32) * (alpha * np.abs(np.log(ev)).max() + np.log(128) + 1) / np.log(10)
    np.testing.assert_allclose(float(m.log_alpha_norm), expected, rtol=0, atol=err)


@pytest.mark.parametrize("alpha, word", [
    (1.2, "over-trained"), (1.999, "over-trained"), (2.0, ""), (4.0, ""), (6.0, ""),
    (6.001, "under-trained"), (14.6, "under-trained"),
])
def test_warning(alpha, word):
    assert jaxww.warning(alpha) == word
