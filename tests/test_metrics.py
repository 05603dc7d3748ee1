"""``jaxww.spectral_metrics``: the per-layer norm and rank metrics (conventions section 4)."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest

import jaxww
from jaxww import metrics as M


def test_known_answer():
    m = jaxww.spectral_metrics(jnp.array([4.0, 1.0, 0.0]), 3, 3, 2.0)
    assert float(m.norm) == 5.0
    np.testing.assert_allclose(float(m.log_norm), math.log10(5.0), rtol=1e-6)
    assert float(m.spectral_norm) == 4.0
    np.testing.assert_allclose(float(m.log_spectral_norm), math.log10(4.0), rtol=1e-6)
    np.testing.assert_allclose(float(m.alpha_weighted), 2.0 * math.log10(4.0), rtol=1e-6)
    np.testing.assert_allclose(float(m.log_alpha_norm), math.log10(16.0 + 1.0), rtol=1e-6)
    assert float(m.stable_rank) == 1.25
    assert int(m.matrix_rank) == 2  # the zero eigenvalue is not counted
    p = np.array([0.8, 0.2, 0.0]) + 1e-10
    np.testing.assert_allclose(float(m.entropy), -(p * np.log(p)).sum() / math.log(2 + 1e-10), rtol=1e-5)


def test_padding_is_ignored():
    a = jaxww.spectral_metrics(jnp.array([4.0, 1.0, 0.0]), 3, 3, 2.0)
    b = jaxww.spectral_metrics(jnp.array([4.0, 1.0, 0.0, 99.0, 7.0]), 3, 3, 2.0)  # junk beyond num_evals
    for f in M.SpectralMetrics._fields:
        assert float(getattr(a, f)) == float(getattr(b, f)), f


@pytest.mark.slow
@pytest.mark.oracle
def test_matches_weightwatcher_formulas(h, x64):
    from weightwatcher.RMT_Util import matrix_entropy, matrix_rank

    ev = h.svd_evals(h.student_t(7).astype(np.float64))
    alpha = 3.7
    m = jaxww.spectral_metrics(jnp.asarray(ev), len(ev), 256, alpha)
    np.testing.assert_allclose(float(m.norm), ev.sum(), rtol=1e-12)
    np.testing.assert_allclose(float(m.stable_rank), ev.sum() / ev.max(), rtol=1e-12)
    np.testing.assert_allclose(float(m.log_alpha_norm), np.log10(np.sum(ev**alpha)), rtol=1e-12)
    np.testing.assert_allclose(float(m.alpha_weighted), alpha * np.log10(ev.max()), rtol=1e-12)
    assert int(m.matrix_rank) == matrix_rank(np.sqrt(ev), 256) == 128
    np.testing.assert_allclose(float(m.entropy), matrix_entropy(np.sqrt(ev), 256), rtol=1e-10)


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
def test_batched():
    ev = jnp.array([[4.0, 1.0, 0.0], [9.0, 3.0, 1.0]])
    m = jaxww.spectral_metrics(ev, jnp.array([3, 3]), jnp.array([3.0, 5.0]), jnp.array([2.0, 3.0]))
    assert m.norm.shape == (2,)
    one = jaxww.spectral_metrics(ev[1], 3, 5.0, 3.0)
    for f in M.SpectralMetrics._fields:
        np.testing.assert_allclose(float(getattr(m, f)[1]), float(getattr(one, f)), rtol=1e-6, err_msg=f)


@pytest.mark.parametrize("scale, alpha", [
    (740.0, 14.6),   # an untrained 256x128 Gaussian layer: lambda_max ~ 740, alpha ~ 14.6
    (1e4, 10.0),     # sum(lambda**alpha) ~ 1e39 > float32 max
    (1e-3, 14.0),    # sum(lambda**alpha) ~ 1e-42: below float32's smallest normal
])
def test_log_alpha_norm_does_not_overflow_in_float32(scale, alpha):
    # log10(sum(lambda**alpha)) must be computed without forming lambda**alpha in
    # float32 (it overflows to inf / underflows to 0 although the log is ~ +-40).
    ev = np.linspace(0.05, 1.0, 128) * scale
    expected = np.log10(np.sum(ev.astype(np.float64) ** alpha))
    m = jaxww.spectral_metrics(jnp.asarray(ev, jnp.float32), 128, 256, alpha)
    assert np.isfinite(float(m.log_alpha_norm)), float(m.log_alpha_norm)
    np.testing.assert_allclose(float(m.log_alpha_norm), expected, rtol=1e-5)


@pytest.mark.parametrize("alpha, word", [
    (1.2, "over-trained"), (1.999, "over-trained"), (2.0, ""), (4.0, ""), (6.0, ""),
    (6.001, "under-trained"), (14.6, "under-trained"),
])
def test_warning(alpha, word):
    assert jaxww.warning(alpha) == word
