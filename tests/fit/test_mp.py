"""Marchenko-Pastur fit (``mp_fit=True``): theory on generated matrices, TW quantiles, detX oracle."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest

import jaxww
from jaxww.fit import detx

# (N, M) of aspect ratios Q = 1, 2, 4, all with M = 128 (one padded length: one compile).
from jaxww.fit import mp
SHAPES = [(128, 128), (256, 128), (512, 128)]
S = 0.05  # entry standard deviation


def fit(W, q=None):
    """MP fit of one matrix through the batch function (float32, descending spectrum)."""
    N, M = max(W.shape), min(W.shape)
    E = jnp.asarray(np.linalg.svd(np.asarray(W, np.float64), compute_uv=False) ** 2, jnp.float32)[None]
    q = mp.tw_quantile(1 - mp.TW_LEVEL) if q is None else q
    out = mp.mp_fit_batch(E, jnp.array([M]), *(jnp.array([v], jnp.float32) for v in (N, M, q)))
    return {k: v[0].item() for k, v in out.items()}


def test_tw_quantiles_match_johnstone_table():
    # Johnstone (2001), Table 1, TW1: 0.90 -> 0.4501, 0.95 -> 0.9793, 0.99 -> 2.0234 (atol: the
    # accuracy of mp.tw_quantile's approximation, a design choice, not rounding)
    np.testing.assert_allclose(mp.tw_quantile([0.90, 0.95, 0.99]), [0.4501, 0.9793, 2.0234], atol=0.012)


@pytest.mark.slow
def test_false_spike_rate_of_pure_noise_is_the_level():
    # 400 Gaussian 128 x 128 spectra: a spike in about TW_LEVEL = 1% of them (binomial
    # sd 0.5%: below 3% with a margin of 4 sd; testing a candidate after removing it
    # from the noise estimate gave 2-3x the level)
    rng = np.random.default_rng(0)
    E = np.linalg.svd(rng.standard_normal((400, 128, 128)), compute_uv=False) ** 2
    one = lambda v: jnp.full((400,), v, jnp.float32)
    out = mp.mp_fit_batch(jnp.asarray(E, jnp.float32), jnp.full((400,), 128), one(128), one(128),
                          one(mp.tw_quantile(1 - mp.TW_LEVEL)))
    assert np.mean(np.asarray(out["num_spikes"]) > 0) < 0.03


@pytest.mark.parametrize("shape", SHAPES)
def test_gaussian_bulk_edge_within_2_percent_and_no_spikes(shape):
    N, M = shape
    edge = S ** 2 * (math.sqrt(N) + math.sqrt(M)) ** 2
    for seed in range(5):
        W = np.random.default_rng(seed).standard_normal(shape) * S
        f = fit(W)
        assert abs(f["bulk_max"] / edge - 1) < 0.02
        if N > M:
            assert abs(f["bulk_min"] / (S ** 2 * (math.sqrt(N) - math.sqrt(M)) ** 2) - 1) < 0.03
        assert f["num_spikes"] == 0
        assert abs(f["sigma_mp"] / S - 1) < 0.01
        assert f["bulk_max"] < f["bulk_max_tw"]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("k", [1, 3, 10])
def test_planted_rank_k_gives_k_spikes(shape, k):
    N, M = shape
    rng = np.random.default_rng(k)
    noise = rng.standard_normal(shape) * S
    u = np.linalg.qr(rng.standard_normal((N, k)))[0]
    v = np.linalg.qr(rng.standard_normal((M, k)))[0]
    # singular values 2x to 4x the BBP threshold S (N M)^(1/4): well separated spikes
    theta = S * (N * M) ** 0.25 * np.linspace(2, 4, k)
    f = fit(noise + (u * theta) @ v.T)
    assert f["num_spikes"] == k
    edge = S ** 2 * (math.sqrt(N) + math.sqrt(M)) ** 2
    assert abs(f["bulk_max"] / edge - 1) < 0.03   # the spikes do not drag the bulk


@pytest.mark.slow
def test_analyze_mp_columns_only_when_asked(h):
    params = {"a": {"kernel": h.gaussian(0)}, "b": {"kernel": h.low_rank_plus_noise(1, rank=4, signal=6.0)}}
    plain = jaxww.analyze(params)
    assert plain.columns == jaxww.COLUMNS and list(plain.details.columns) == list(jaxww.COLUMNS)
    rep = jaxww.analyze(params, mp_fit=True)
    assert rep.columns == jaxww.COLUMNS + mp.COLUMNS
    rows = {r["name"]: r for r in rep.rows}
    assert rows["a/kernel"]["num_spikes"] == 0 and rows["b/kernel"]["num_spikes"] == 4
    for r in rep.rows:
        # one float32 quotient of the same two float32 values (here in float64): half an ulp
        assert r["mp_softrank"] == pytest.approx(r["bulk_max"] / r["spectral_norm"], rel=h.ulps(1, eps=h.EPS32))
        assert r["reason"] == ""
    for a, b in zip(plain.rows, rep.rows):   # the default columns are untouched by the option
        # (to float32 rounding: the plain analysis fits on the host in NumPy, this one in XLA)
        for c in jaxww.COLUMNS:
            assert a[c] == (pytest.approx(b[c], rel=1e-5) if isinstance(a[c], float) else b[c]), c


@pytest.mark.slow
def test_rank_deficient_and_nan_layers_are_marked(h):
    bad = h.gaussian(3)
    bad[0, 0] = np.nan
    rep = jaxww.analyze({"low": {"kernel": h.rank_deficient(0, rank=20)}, "bad": {"kernel": bad}}, mp_fit=True)
    rows = {r["name"]: r for r in rep.rows}
    low = rows["low/kernel"]
    assert math.isnan(low["sigma_mp"]) and low["num_spikes"] == -1 and "mp_fit" in low["reason"]
    assert math.isnan(rows["bad/kernel"]["bulk_max"]) and rows["bad/kernel"]["num_spikes"] == -1


@pytest.mark.slow
def test_too_small_layer_is_marked():
    rep = jaxww.analyze({"w": np.random.default_rng(0).standard_normal((12, 4)).astype(np.float32)},
                        min_evals=2, mp_fit=True, detX=True)
    r = rep.rows[0]
    assert math.isnan(r["bulk_max"]) and "fewer than" in r["reason"]


# --- detX ---------------------------------------------------------------------------

def ww_detx(evals):
    """weightwatcher 0.7.7's apply_detX on an ascending spectrum (its own functions)."""
    from weightwatcher.RMT_Util import detX_constraint, rescale_eigenvalues

    x, scale = rescale_eigenvalues(np.asarray(evals, np.float64))
    num, idx = detX_constraint(x, rescale=False)
    return num, x[idx] / scale ** 2, x[idx]


@pytest.mark.slow
def test_detx_matches_reference_function_on_many_spectra(h):
    rng = np.random.default_rng(0)
    spectra = [np.sort(rng.pareto(a, 60) + 0.01) for a in (0.8, 1.5, 3.0)]
    spectra += [np.sort(rng.standard_normal((90, 60)).std(0) ** 2), np.r_[np.zeros(20), np.sort(rng.random(40))],
                np.full(60, 2.0), np.r_[np.ones(59), 1e6]]
    E = jnp.asarray(np.stack([s[::-1] for s in spectra]))
    out = detx.detx_batch(E, jnp.full((len(spectra),), 60))
    for i, s in enumerate(spectra):
        num, val, val_rescaled = ww_detx(s)
        assert int(out["detX_num"][i]) == num
        # detX_val is an input value, rounded to float32 (E is float32 here); the reference's
        # goes through x / scale**2 (two float64 roundings)
        assert float(out["detX_val"][i]) == pytest.approx(val, rel=h.EPS32 / 2 + h.ulps(2))
        # x = lambda n / sum(lambda) in float32: the input's rounding, the sum's (sum_err), a product
        rtol = h.EPS32 / 2 + h.sum_err(s, h.EPS32) / s.sum() + h.ulps(3, eps=h.EPS32)
        assert float(out["detX_val_unrescaled"][i]) == pytest.approx(val_rescaled, rel=rtol)


@pytest.mark.slow
def test_detx_matches_weightwatcher_analyze(h, x64):
    W = [h.gaussian(0), h.student_t(1), h.low_rank_plus_noise(2)]
    import torch

    model = torch.nn.ModuleDict({f"l{i}": h.torch_linear(w) for i, w in enumerate(W)})
    ref = h.ww_analyze(model, detX=True)
    rep = jaxww.analyze({f"l{i}": {"kernel": w} for i, w in enumerate(W)}, detX=True, precision="float64")
    for w, r, (name, rr) in zip(W, rep.rows, sorted(ref.items())):
        assert r["detX_num"] == rr["detX_num"]
        # an eigenvalue of two eigensolver paths (h.eig_err), and that value times
        # n / sum(lambda) (the sum off by n eig_err plus its rounding)
        ev = h.svd_evals(w)
        x_err = h.eig_err(ev, max(w.shape))
        rel_val = x_err / rr["detX_val"] + h.ulps(2)
        rel_sum = (ev.size * x_err + h.sum_err(ev)) / ev.sum()
        assert r["detX_val"] == pytest.approx(rr["detX_val"], rel=rel_val)
        assert r["detX_val_unrescaled"] == pytest.approx(rr["detX_val_unrescaled"], rel=rel_val + rel_sum + h.ulps(2))
