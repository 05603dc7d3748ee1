"""``jaxww.reading.kernels``: which leaves are matrices, their layouts, and how they are read."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxww
from jaxww.reading import layouts, name_rules
from jaxww.reading import params as P

R = np.random.default_rng(0)


def arr(*shape, dtype=np.float32):
    return R.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("name, shape, layout", [
    ("params/Dense_0/kernel", (64, 32), "dense"),
    ("params/Dense_0/kernel", (32, 64), "dense"),
    ("linear.weight", (32, 64), "dense"),
    ("params/Embed_0/embedding", (1000, 64), "embedding"),
    ("params/Conv_0/kernel", (3, 16, 32), "conv"),
    ("params/Conv_0/kernel", (3, 3, 16, 32), "conv"),
    ("params/Conv_0/kernel", (2, 2, 2, 16, 32), "conv"),
    ("features.0.weight", (32, 16, 3, 3), "conv_torch"),
    ("params/attn/query/kernel", (128, 4, 32), "attention_qkv"),
    ("params/attn/key/kernel", (128, 4, 32), "attention_qkv"),
    ("params/attn/value/kernel", (128, 4, 32), "attention_qkv"),
    ("params/attn/out/kernel", (4, 32, 128), "attention_out"),
    ("params/layers/Dense_0/kernel", (3, 128, 128), "stacked_dense"),
    ("params/ScanBlock_0/w1/kernel", (3, 128, 128), "stacked_dense"),
    ("blocks/kernel", (3, 128, 128), "stacked_dense"),
    ("params/mlp/kernel", (3, 128, 128), "stacked_dense"),
    ("params/layers/attn/query/kernel", (3, 128, 4, 32), "stacked_attention_qkv"),
    ("params/layers/attn/out/kernel", (3, 4, 32, 128), "stacked_attention_out"),
])
def test_infer_layout(name, shape, layout):
    assert name_rules.infer_layout(name, shape) == layout


@pytest.mark.parametrize("name, shape, why", [
    ("params/Dense_0/bias", (128,), "bias"),
    ("params/BatchNorm_0/scale", (128,), "scale"),
    ("batch_stats/BatchNorm_0/mean", (128,), "mean"),
    ("bn.running_var", (128,), "running_var"),
    ("params/block/w", (3, 16, 32), "ambiguous"),
    ("params/x/kernel", (2, 3, 4, 5, 6, 7), "ambiguous"),
])
def test_infer_layout_skips(name, shape, why):
    out = name_rules.infer_layout(name, shape)
    assert isinstance(out, tuple) and out[0] == "skip"
    assert why in out[1]


def test_layouts_are_listed():
    for base in layouts.BASE_LAYOUTS:
        assert base in jaxww.LAYOUTS and "stacked_" + base in jaxww.LAYOUTS
    assert "skip" in jaxww.LAYOUTS


def _find(tree, **kw):
    names, leaves, _ = jaxww.flatten_params(tree)
    ks, sk = jaxww.find_kernels(names, leaves, **kw)
    return {k.name: k for k in ks}, {s.name: s for s in sk}, leaves


# --- how each layout is read -----------------------------------------------------

def test_flax_conv2d_taps():
    w = arr(3, 3, 16, 32)
    ks, _, leaves = _find({"Conv_0": {"kernel": w}})
    k = ks["Conv_0/kernel"]
    assert (k.layout, k.layer_type, k.N, k.M, k.rf, k.num_evals, k.Q) == ("conv", "conv2d", 32, 16, 9, 144, 2.0)
    m = np.asarray(k.matrices(leaves[k.leaf]))
    assert m.shape == (9, 16, 32)
    for i in range(3):
        for j in range(3):
            np.testing.assert_array_equal(m[3 * i + j], w[i, j])


def test_torch_conv2d_taps():
    w = arr(32, 16, 3, 3)
    ks, _, leaves = _find({"conv1": {"weight": w}})
    k = ks["conv1/weight"]
    assert (k.layout, k.layer_type, k.N, k.M, k.rf) == ("conv_torch", "conv2d", 32, 16, 9)
    m = np.asarray(k.matrices(leaves[k.leaf]))
    assert m.shape == (9, 32, 16)
    for i in range(3):
        for j in range(3):
            np.testing.assert_array_equal(m[3 * i + j], w[:, :, i, j])


@pytest.mark.parametrize("shape, layer_type, rf", [((3, 16, 32), "conv1d", 3), ((2, 2, 2, 16, 32), "conv3d", 8)])
def test_conv1d_conv3d(shape, layer_type, rf):
    w = arr(*shape)
    ks, _, leaves = _find({"Conv_0": {"kernel": w}})
    k = ks["Conv_0/kernel"]
    assert (k.layer_type, k.rf, k.N, k.M, k.num_evals) == (layer_type, rf, 32, 16, 16 * rf)
    np.testing.assert_array_equal(np.asarray(k.matrices(leaves[k.leaf])), w.reshape(rf, 16, 32))


def test_attention_kernels_are_in_by_heads_times_dim():
    q, o = arr(64, 4, 32), arr(4, 32, 64)
    ks, _, leaves = _find({"attn": {"query": {"kernel": q}, "out": {"kernel": o}}})
    kq, ko = ks["attn/query/kernel"], ks["attn/out/kernel"]
    assert (kq.layer_type, kq.N, kq.M, kq.rf) == ("attention", 128, 64, 1)
    assert (ko.layer_type, ko.N, ko.M, ko.rf) == ("attention", 128, 64, 1)
    np.testing.assert_array_equal(np.asarray(kq.matrices(leaves[kq.leaf]))[0], q.reshape(64, 128))
    # The output projection is (H*D, out), not (H, D*out).
    np.testing.assert_array_equal(np.asarray(ko.matrices(leaves[ko.leaf]))[0], o.reshape(128, 64))


def test_stacked_leaf_gives_one_kernel_per_index():
    w = arr(3, 128, 64)
    ks, sk, leaves = _find({"layers": {"Dense_0": {"kernel": w, "bias": arr(3, 64)}}})
    assert sorted(ks) == [f"layers/Dense_0/kernel[{i}]" for i in range(3)]
    for i in range(3):
        k = ks[f"layers/Dense_0/kernel[{i}]"]
        assert (k.select, k.layer_type, k.shape, k.N, k.M) == (((0, i),), "dense", (128, 64), 128, 64)
        np.testing.assert_array_equal(np.asarray(k.matrices(leaves[k.leaf]))[0], w[i])
    assert "layers/Dense_0/bias" in sk


# --- overrides and filters -------------------------------------------------------------

def test_layouts_mapping_override():
    tree = {"block": {"w": arr(3, 16, 32)}, "proj": {"w": arr(64, 32)}}
    _, sk, _ = _find(tree)
    assert "ambiguous" in sk["block/w"].reason  # not inferable ...
    ks, sk, _ = _find(tree, layouts={r"block/w$": "conv", r"proj": "skip"})  # ... unless told
    assert ks["block/w"].layer_type == "conv1d" and ks["block/w"].rf == 3
    assert "proj/w" not in ks and "override" in sk["proj/w"].reason


def test_layouts_mapping_first_match_wins():
    tree = {"block": {"w": arr(3, 16, 32)}}
    ks, _, _ = _find(tree, layouts={"block": "stacked_dense", "w": "conv"})
    assert sorted(ks) == [f"block/w[{i}]" for i in range(3)]


def test_layouts_callable_override_and_fallback():
    seen = []

    def layouts(name, shape):
        seen.append((name, shape))
        return "conv_torch" if name == "c/w" else None  # None: infer as usual

    w = arr(32, 16, 3, 3)
    ks, _, leaves = _find({"c": {"w": w}, "Dense_0": {"kernel": arr(64, 32)}}, layouts=layouts)
    assert ("c/w", (32, 16, 3, 3)) in seen
    assert ks["c/w"].layout == "conv_torch"
    np.testing.assert_array_equal(np.asarray(ks["c/w"].matrices(leaves[ks["c/w"].leaf]))[4], w[:, :, 1, 1])
    assert ks["Dense_0/kernel"].layout == "dense"


def test_unknown_layout_raises():
    with pytest.raises(ValueError, match="not one of"):
        _find({"Dense_0": {"kernel": arr(64, 32)}}, layouts={"Dense": "banana"})


def test_layout_that_does_not_fit_the_shape_is_skipped():
    _, sk, _ = _find({"Dense_0": {"kernel": arr(64, 32)}}, layouts={"Dense": "attention_qkv"})
    assert "does not fit" in sk["Dense_0/kernel"].reason


@pytest.mark.parametrize("layers", [r"^b/", lambda name: name.startswith("b/")])
def test_layers_filter(layers):
    tree = {"a": {"kernel": arr(64, 32)}, "b": {"kernel": arr(64, 32)}}
    ks, sk, _ = _find(tree, layers=layers)
    assert list(ks) == ["b/kernel"]
    assert "layers filter" in sk["a/kernel"].reason


def test_size_limits_and_boundaries():
    tree = {"m7": {"kernel": arr(64, 7)}, "m8": {"kernel": arr(64, 8)}, "big": {"kernel": arr(300, 100)}}
    ks, sk, _ = _find(tree)
    assert set(ks) == {"m8/kernel", "big/kernel"}  # default min_evals = 8 (inclusive)
    assert "min_evals" in sk["m7/kernel"].reason
    ks, sk, _ = _find(tree, min_evals=9, max_evals=100, max_N=300)
    assert set(ks) == {"big/kernel"}  # 100 <= max_evals, N = 300 <= max_N: kept
    ks, sk, _ = _find(tree, max_evals=99)
    assert "max_evals" in sk["big/kernel"].reason
    ks, sk, _ = _find(tree, max_N=299)
    assert "max_N" in sk["big/kernel"].reason and "m8/kernel" in ks
    # conv: num_evals = M * rf
    ks, sk, _ = _find({"Conv_0": {"kernel": arr(3, 3, 4, 8)}}, min_evals=37)
    assert "num_evals 36" in sk["Conv_0/kernel"].reason


def test_non_matrix_leaves_are_skipped_with_reasons():
    tree = {"i": np.ones((64, 32), np.int8), "b": np.ones((64, 32), bool), "s": "text", "f": 3.0,
            "v": arr(64), "z": np.float32(1.0), "ok": {"kernel": arr(64, 32)}}
    ks, sk, _ = _find(tree)
    assert list(ks) == ["ok/kernel"]
    assert "int8" in sk["i"].reason and "bool" in sk["b"].reason
    assert "not an array" in sk["s"].reason and "not an array" in sk["f"].reason
    assert "1-D" in sk["v"].reason and "0-D" in sk["z"].reason
    assert sk["i"].shape == (64, 32) and sk["i"].dtype == "int8"


# --- flatten_params -----------------------------------------------------------------

@pytest.mark.slow
def test_flatten_linen_nnx_module_and_state():
    from flax import linen as nn
    from flax import nnx

    class Lin(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.BatchNorm(use_running_average=True)(nn.Dense(32)(x))

    v = Lin().init(jax.random.key(0), jnp.ones((1, 64)))
    names, leaves, treedef = jaxww.flatten_params(v)
    assert "params/Dense_0/kernel" in names and "batch_stats/BatchNorm_0/mean" in names
    assert treedef == jax.tree_util.tree_structure(v)

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.fc = nnx.Linear(64, 32, rngs=rngs)
            self.bn = nnx.BatchNorm(32, rngs=rngs)

    m = Net(nnx.Rngs(0))
    names, leaves, _ = jaxww.flatten_params(m)
    assert "fc/kernel" in names and "bn/mean" not in names  # a Module: its nnx.Param state
    i = names.index("fc/kernel")
    np.testing.assert_array_equal(np.asarray(leaves[i]), np.asarray(m.fc.kernel[...]))
    names, _, _ = jaxww.flatten_params(nnx.state(m))
    assert "fc/kernel" in names and "bn/mean" in names  # a State: every variable


# --- model order ----------------------------------------------------------------------

def test_rows_in_module_order_linen_and_nnx():
    """Linen: the order the modules were called (12 Dense, then an Embed-free head);
    NNX: the order the module set its attributes (embedding, layers, head)."""
    import flax.linen as nn
    from flax import nnx

    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x):
            for _ in range(12):
                x = nn.Dense(16)(x)
            return x

    params = MLP().init(jax.random.key(0), jnp.zeros((1, 16)))
    rows = jaxww.analyze(params).rows
    assert [r["name"] for r in rows] == [f"params/Dense_{i}/kernel" for i in range(12)]
    assert [r["layer_id"] for r in rows] == list(range(12))

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.emb = nnx.Embed(100, 32, rngs=rngs)
            self.layers = nnx.List([nnx.Linear(32, 32, rngs=rngs) for _ in range(11)])
            self.head = nnx.Linear(32, 16, rngs=rngs)

    names = [r["name"] for r in jaxww.describe(Net(nnx.Rngs(0))).rows]
    assert names == ["emb/embedding"] + [f"layers/{i}/kernel" for i in range(11)] + ["head/kernel"]


def test_rows_in_natural_order_for_sorted_checkpoints():
    """A string-sorted flat dict (as a JSON index or jax flattening leaves it): numbers as numbers."""
    rng = np.random.default_rng(0)
    names = sorted(f"model._blocks.{i}.mlp.weight" for i in range(12))   # _blocks.10 before _blocks.2
    params = {n: rng.standard_normal((32, 16)).astype(np.float32) for n in names}
    rows = jaxww.describe(params).rows
    assert [r["name"] for r in rows] == [f"model._blocks.{i}.mlp.weight" for i in range(12)]
    assert P.natural_key("Dense_2") < P.natural_key("Dense_10")


def test_report_tree_unaffected_by_row_order():
    """Report.tree puts each row's value back at its own leaf, whatever the row order."""
    rng = np.random.default_rng(1)
    params = {f"l{i}": {"kernel": rng.standard_t(3, (64, 32)).astype(np.float32)} for i in (10, 2, 1)}
    rep = jaxww.analyze(params)
    assert [r["name"] for r in rep.rows] == ["l10/kernel", "l2/kernel", "l1/kernel"]  # the dict's own order
    tree = rep.tree("alpha")
    for r in rep.rows:
        assert float(tree[r["name"].split("/")[0]]["kernel"]) == np.float32(r["alpha"])
