"""``jaxww.smooth``: rank-k truncation written back into every layout (dense, conv taps,
scanned stacks, Gemma einsums), k per method, the input untouched; weightwatcher 0.7.7's
``SVDSmoothing`` as the oracle of k."""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxww


@pytest.fixture(scope="module")
def tree(h):
    """Dense, conv, a scanned stack of 3 and the Gemma attention / MLP einsums
    (shapes as gemma/gm/nn/_modules.py: q (H, d, D), kv (2, K, d, D), attn_vec (H, D, d),
    gating (2, d, F)), and a scanned Gemma block (layer axis first, found from the subtree)."""
    rng = np.random.default_rng(7)
    t = lambda *s: (rng.standard_t(3, size=s) / np.sqrt(max(s))).astype(np.float32)  # noqa: E731
    return {
        "dense": {"kernel": h.student_t(1), "bias": np.zeros(128, np.float32)},
        "conv": {"kernel": t(*h.CONV)},
        "layers": {"Dense_0": {"kernel": t(3, 128, 128), "bias": np.zeros((3, 128), np.float32)}},
        "layer_0": {"attn": {"q_einsum": {"w": t(4, 128, 32)}, "kv_einsum": {"w": t(2, 1, 128, 32)},
                             "attn_vec_einsum": {"w": t(4, 32, 128)}},
                    "mlp": {"gating_einsum": t(2, 128, 256)}},
        "scan": {"attn": {"q_einsum": {"w": t(3, 4, 128, 32)}, "kv_einsum": {"w": t(3, 2, 1, 128, 32)}}},
        "norm": {"scale": np.ones(128, np.float32)},
    }


def _desc(evals):
    return np.sort(np.asarray(evals, np.float64))[::-1]


@pytest.mark.slow
def test_full_rank_is_the_identity(tree):
    before = copy.deepcopy(tree)
    out = jaxww.smooth(tree, method="svd", percent=1.0)
    assert jax.tree.structure(out) == jax.tree.structure(tree)
    for got, want in zip(jax.tree.leaves(out), jax.tree.leaves(tree)):
        assert isinstance(got, np.ndarray) and got.dtype == want.dtype and got.shape == want.shape
        scale = np.abs(want).max()
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * scale)
    assert out["norm"]["scale"] is tree["norm"]["scale"]  # leaves not analysed: the same objects
    jax.tree.map(np.testing.assert_array_equal, before, tree)  # the input is untouched


@pytest.mark.slow
def test_truncation_keeps_the_top_k(tree):
    percent = 0.5
    out = jaxww.smooth(tree, method="svd", percent=percent)
    old, new = jaxww.analyze(tree), jaxww.analyze(out)
    assert [r["name"] for r in new.rows] == [r["name"] for r in old.rows]
    assert {"layer_0/attn/kv_einsum/w[v]", "layers/Dense_0/kernel[2]", "layer_0/mlp/gating_einsum[up]",
            "conv/kernel", "scan/attn/kv_einsum/w[2][v]", "scan/attn/q_einsum/w[1]"} <= set(new.evals)
    for r in old.rows:
        k = int(percent * r["num_evals"])
        a, b = _desc(old.esd(r["name"])), _desc(new.esd(r["name"]))
        np.testing.assert_allclose(b[:k], a[:k], rtol=1e-4)
        assert b[k:].max() <= 1e-5 * a[0]  # float32 zeros, relative to the top


def test_methods_take_k_from_their_column(h):
    w = h.low_rank_plus_noise(0)  # a rank-8 signal above an MP bulk: 8 spikes
    params = {"dense": {"kernel": w}}
    report = jaxww.analyze(params, mp_fit=True, detX=True)
    row = report.rows[0]
    assert row["num_spikes"] == 8
    u, s, vh = np.linalg.svd(w.astype(np.float64), full_matrices=False)
    for method, col in (("rmt", "num_spikes"), ("detX", "detX_num"), ("alpha_min", "num_pl_spikes")):
        k = row[col]
        got = jaxww.smooth(params, method=method)["dense"]["kernel"]
        want = (u[:, :k] * s[:k]) @ vh[:k]
        assert np.linalg.norm(got - want) <= 1e-5 * np.linalg.norm(want)


def test_dtypes_and_jax_leaves_kept(h):
    params = {"a": {"kernel": jnp.asarray(h.gaussian(0), jnp.bfloat16)}, "b": {"kernel": jnp.asarray(h.gaussian(1))}}
    out = jaxww.smooth(params, method="svd", percent=1.0)
    assert out["a"]["kernel"].dtype == jnp.bfloat16 and isinstance(out["b"]["kernel"], jax.Array)
    np.testing.assert_allclose(np.asarray(out["b"]["kernel"]), np.asarray(params["b"]["kernel"]), atol=1e-5)


def test_bad_input(h):
    params = {"a": {"kernel": h.gaussian(0)}}
    with pytest.raises(ValueError, match="method must be one of"):
        jaxww.smooth(params, method="auto")
    with pytest.raises(ValueError, match="percent must be in"):
        jaxww.smooth(params, method="svd", percent=1.5)
    bad = h.gaussian(1)
    bad[0, 0] = np.nan
    with pytest.warns(UserWarning, match="left unchanged, k unknown: b/kernel"):
        out = jaxww.smooth({"a": {"kernel": h.gaussian(0)}, "b": {"kernel": bad}}, method="svd")
    assert out["b"]["kernel"] is bad


@pytest.mark.slow
@pytest.mark.oracle
def test_k_equals_weightwatcher_svd_smoothing(h):
    """Same k as weightwatcher 0.7.7's SVDSmoothing on a torch model; its reconstruction is
    sklearn's randomised TruncatedSVD (n_iter=7), so it is compared with the exact truncation
    only through its residual, and jaxww's with the exact truncation itself."""
    torch = h.torch()
    import weightwatcher as ww

    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    k1, k2 = h.student_t(3), h.student_t(4, (128, 64))
    model = torch.nn.Sequential(h.torch_linear(k1), h.torch_linear(k2))
    params = {"0": {"weight": k1.T.copy()}, "1": {"weight": k2.T.copy()}}
    for method in ("svd", "detX", "alpha_min"):
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = ww.WeightWatcher(model=copy.deepcopy(model)).SVDSmoothing(method=method, percent=0.5)
        ours = jaxww.smooth(params, method=method, percent=0.5)
        for i in ("0", "1"):
            w = params[i]["weight"].astype(np.float64)
            a, b = theirs[int(i)].weight.detach().numpy(), ours[i]["weight"]
            k = np.linalg.matrix_rank(a)
            assert np.linalg.matrix_rank(b) == k, method
            u, s, vh = np.linalg.svd(w, full_matrices=False)
            exact = (u[:, :k] * s[:k]) @ vh[:k]
            assert np.linalg.norm(b - exact) <= 1e-5 * np.linalg.norm(exact)
            assert np.linalg.norm(w - a) <= 1.01 * np.linalg.norm(w - exact)
