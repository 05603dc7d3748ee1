"""weightwatcher 0.7.7's options ``ERG``, ``pool=False``, ``vectors`` and ``distances``
against their definitions (the oracle comparisons are in
tests/integration/test_oracle_ww_options.py)."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest

import jaxww
from jaxww.analysis import vectors as _vectors
from jaxww.reading.kernels import find_kernels


def _conv_params():
    rng = np.random.default_rng(0)
    return {"conv": {"kernel": rng.standard_normal((3, 2, 8, 12)).astype(np.float32)},   # Flax (kh, kw, in, out)
            "c1d": {"kernel": rng.standard_normal((3, 8, 16)).astype(np.float32)},       # Flax conv1d
            "dense": {"kernel": rng.standard_normal((24, 16)).astype(np.float32)}}


def test_pool_false_one_kernel_per_tap_row_major():
    names = ["conv/kernel", "torch/weight"]
    leaves = [np.zeros((3, 2, 8, 12), np.float32), np.zeros((12, 8, 3, 2), np.float32)]
    ks, _ = find_kernels(names, leaves, pool=False, min_evals=1, layouts={"torch": "conv_torch"})
    assert [k.name for k in ks[:6]] == [f"conv/kernel[tap={i}]" for i in range(6)]
    w = np.arange(3 * 2 * 8 * 12, dtype=np.float32).reshape(3, 2, 8, 12)
    wt = np.transpose(w, (3, 2, 0, 1))
    for k in ks:
        assert (k.rf, k.tap_count, k.esd_scale) == (1, 6, 0.5 * 6)
        i, j = divmod(k.tap, 2)    # slice_id = i * kw + j, weightwatcher's order
        src = w if k.name.startswith("conv") else wt
        mat = np.asarray(k.matrices(src))[0]
        want = w[i, j] if k.name.startswith("conv") else wt[:, :, i, j]
        np.testing.assert_array_equal(mat, want)


@pytest.mark.slow
def test_pool_false_rows_are_the_taps_spectra():
    params = _conv_params()
    rep = jaxww.analyze(params, pool=False, min_evals=4, layouts={"c1d": "conv"})
    names = [r["name"] for r in rep.rows]
    assert names == ([f"conv/kernel[tap={i}]" for i in range(6)] + [f"c1d/kernel[tap={i}]" for i in range(3)]
                     + ["dense/kernel"])
    assert [r["slice_id"] for r in rep.rows] == list(range(6)) + list(range(3)) + [0]
    for r in rep.rows[:6]:                       # 2-D: each tap's eigenvalues times rf / 2
        i, j = divmod(r["slice_id"], 2)
        want = np.linalg.svd(params["conv"]["kernel"][i, j].astype(np.float64), compute_uv=False) ** 2 * 3.0
        np.testing.assert_allclose(rep.esd(r["name"]), np.sort(want), rtol=1e-5)
    w1 = params["c1d"]["kernel"][2].astype(np.float64)   # 1-D: unscaled, as pooled
    np.testing.assert_allclose(rep.esd("c1d/kernel[tap=2]"), np.sort(np.linalg.svd(w1, compute_uv=False) ** 2),
                               rtol=1e-5)
    assert all(r["rf"] == 1 and r["num_evals"] == r["M"] for r in rep.rows)


@pytest.fixture(scope="module")
def heavy():
    """A heavy-tailed matrix analysed with ``ERG`` and ``vectors`` (one analysis, two tests)."""
    params = {"a": {"kernel": np.random.default_rng(2).standard_t(3, (96, 48)).astype(np.float32)}}
    return params, jaxww.analyze(params, ERG=True, vectors=True)


@pytest.mark.slow
def test_erg_is_detx_with_its_gap(heavy):
    r = heavy[1].rows[0]
    assert r["num_ERG_spikes"] == r["detX_num"] >= 0 and "detX_val" in r
    assert r["ERG_gap"] == r["detX_num"] - r["num_pl_spikes"]


@pytest.mark.slow
def test_vector_numbers_of_localized_and_flat_vectors():
    """Standard basis vectors: loc_ratio = part_ratio = 1, one nonzero value (entropy of
    a histogram with one full bin and the rest at the 1e-10 floor); a Hadamard basis: every
    |v_i| = 1/sqrt(m), so loc_ratio = m, part_ratio = m ** (1/4) and all values in one bin."""
    m = 16
    diag = np.diag(np.arange(1, m + 1, dtype=np.float64))
    had = np.array([[1.0]])
    while had.shape[0] < m:
        had = np.block([[had, had], [had, -had]])
    flat = had / math.sqrt(m) @ diag @ had.T / math.sqrt(m)   # eigenvectors: Hadamard columns
    with jax.enable_x64(True):
        _, nums = jax.device_get(_vectors.vector_numbers(np.stack([diag, flat])))
    np.testing.assert_allclose(nums[1:, 0], np.ones((2, m)), rtol=1e-12)
    np.testing.assert_allclose(nums[1, 1], m, rtol=1e-9)
    np.testing.assert_allclose(nums[2, 1], m ** 0.25, rtol=1e-9)


def _discrete_entropy(v):
    """weightwatcher 0.7.7's definition (RMT_Util.discrete_entropy), with NumPy."""
    a = np.abs(v)
    h = np.histogram(a - a.mean(), bins=100, density=True)[0] + 1e-10
    p = h / h.sum()
    return -np.sum(p * np.log(p))


@pytest.mark.slow
def test_discrete_entropy_is_numpys_histogram():
    """Values on bin edges (small integers: many exactly on an edge), a constant vector
    (NumPy's edges min -/+ 0.5) and Gaussian ones, against np.histogram's binning."""
    rng = np.random.default_rng(4)
    rows = np.concatenate([rng.integers(-7, 8, (3, 200)).astype(np.float64), np.full((1, 200), 0.3),
                           rng.standard_normal((3, 200))])
    with jax.enable_x64(True):
        got = np.asarray(_vectors.discrete_entropy(np.abs(rows)))
    # 100 terms |p log p| <= 1/e, each to a few eps: 1e-14 absolute
    np.testing.assert_allclose(got, [_discrete_entropy(r) for r in rows], rtol=1e-12, atol=1e-14)


@pytest.mark.slow
def test_vectors_columns_split_at_the_tail(heavy):
    params, rep = heavy
    r = rep.rows[0]
    assert rep.columns[-12:] == _vectors.COLUMNS
    w = params["a"]["kernel"].astype(np.float64)
    ev, V = np.linalg.eigh(w.T @ w)
    tail = V[:, -r["num_pl_spikes"]:]
    loc = np.abs(tail).sum(0) / np.abs(tail).max(0)
    # float32 eigenvectors: each moves by ~ m eps32 lambda_max / gap; loc_ratio's mean by less
    gaps = np.diff(ev)[-r["num_pl_spikes"]:].min()
    assert r["tail_mean_loc_ratio"] == pytest.approx(loc.mean(), rel=2 * 48 * 48 * 6e-8 * ev[-1] / gaps)


def test_distances_by_definition():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((32, 16)).astype(np.float32)
    a = {"d": {"kernel": w, "bias": np.zeros(16, np.float32)}}
    b = {"d": {"kernel": 3 * w, "bias": np.ones(16, np.float32)}}
    raw = jaxww.distances(a, b)
    want = np.linalg.norm((3 * w).astype(np.float64) - w)
    assert raw.rows[0]["delta_W"] == pytest.approx(want, rel=1e-12)
    assert raw.rows[0]["delta_b"] == pytest.approx(4.0) and raw.rows[0]["b_shape"] == (16,)
    assert jaxww.distances(a, b, method="CKA").delta_W == pytest.approx(1.0, rel=1e-12)
    assert jaxww.distances(a, a, method="euclidean").rows[0]["delta_W"] == 0.0


def test_distances_refuses_bad_method_and_other_layers():
    a = {"d": {"kernel": np.ones((32, 16), np.float32)}}
    with pytest.raises(ValueError, match="method must be one of"):
        jaxww.distances(a, a, method="l2")
    with pytest.raises(ValueError, match="'d/kernel' shape"):
        jaxww.distances(a, {"d": {"kernel": np.ones((32, 8), np.float32)}})
    with pytest.raises(ValueError, match="'e/kernel' not read in model_a"):
        jaxww.distances(a, {**a, "e": {"kernel": np.ones((32, 16), np.float32)}})


def test_vectors_batches_within_the_budget():
    """Consecutive chunks of at most ``budget`` bytes, a larger matrix alone."""
    chunks = _vectors.chunks([4, 7, 9, 11, 12], [40, 30, 50, 200, 10], 100)
    assert chunks == [[4, 7], [9], [11], [12]]


def test_pool_false_grouped_conv_one_kernel_per_tap_and_group():
    """A grouped convolution (Flax/Keras/NNX ``feature_group_count``): a row per tap and group block."""
    from jaxww.reading.layouts import conv_reading

    w = np.random.default_rng(5).standard_normal((3, 3, 4, 64)).astype(np.float32)   # 16 -> 64 in 4 groups
    ks, _ = find_kernels(["g/kernel"], [w], pool=False, min_evals=1, readings=[conv_reading((3, 3), 16, 64, groups=4)])
    assert len(ks) == 36 and {(k.N, k.M, k.rf, k.tap_count) for k in ks} == {(16, 4, 1, 36)}
    view = w.reshape(3, 3, 4, 4, 16)
    k = ks[7]                                    # tap (0, 1), group 3: slice_id 7 = (0 * 3 + 1) * 4 + 3
    np.testing.assert_array_equal(np.asarray(k.matrices(w))[0], view[0, 1, :, 3, :])
