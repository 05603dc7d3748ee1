"""Every kind of awkward input to ``jaxww.analyze``: bad values, bad leaves, odd containers.

One tree holds most of the bad leaves (one compilation); the model containers (Linen,
nnx, scan, vmap, attention) are small real Flax models.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxww


def rows_by_name(report):
    return {r["name"]: r for r in report.rows}


def row_tols(report, row, h):
    """Tolerances between a row and the same layer analysed in another call: the same
    float32 eigenvalues (bit-identical, docs/conventions.md section 9), fitted and summed
    in another padded batch, so their float32 rounding (conftest ``pl_fit_tols``,
    ``metric_tols``); xmin is a chosen value."""
    ev = report.esd(row["name"]).astype(np.float64)
    tols = h.pl_fit_tols(ev[ev > 1e-5], row["xmin"], eps=h.EPS32)
    return {**tols, **h.metric_tols(ev, row["alpha"], tols["alpha"], eps=h.EPS32), "xmin": 0.0}


@pytest.fixture(scope="module")
def bad(h):
    """A tree of awkward leaves, all NumPy arrays made read-only, plus copies to compare."""
    nan = h.gaussian(1)
    nan[10, 20] = np.nan
    inf = h.gaussian(2)
    inf[0, 0] = -np.inf
    params = {
        "good": {"kernel": h.gaussian(0), "bias": np.zeros(128, np.float32)},
        "nan": {"kernel": nan},
        "inf": {"kernel": inf},
        "zero": {"kernel": np.zeros(h.DENSE, np.float32)},
        "tiny": {"kernel": h.gaussian(3) * np.float32(1e-4)},  # every eigenvalue < 1e-5
        "lowrank": {"kernel": h.rank_deficient(4)},            # rank 40 of 128
        "ints": {"kernel": np.ones(h.DENSE, np.int32)},
        "bools": {"kernel": np.ones(h.DENSE, bool)},
        "meta": {"text": "relu", "count": 3, "rate": 0.1},
        "half": {"kernel": h.gaussian(5).astype(np.float16)},
        "brain": {"kernel": jnp.asarray(h.gaussian(6), jnp.bfloat16)},
    }
    copies = jax.tree.map(lambda x: x.copy() if isinstance(x, np.ndarray) else x, params)
    for leaf in jax.tree.leaves(params):
        if isinstance(leaf, np.ndarray):
            leaf.flags.writeable = False  # any in-place write raises
    return params, copies, jaxww.analyze(params)


@pytest.mark.slow
def test_non_finite_layer_fails_alone(bad, h):
    _, _, report = bad
    rows = rows_by_name(report)
    for n in ("nan/kernel", "inf/kernel"):
        r = rows[n]
        assert r["status"] == "failed" and "NaN or Inf" in r["reason"]
        assert math.isnan(r["alpha"]) and math.isnan(r["D"]) and math.isnan(r["xmin"])
    good = rows["good/kernel"]
    assert good["status"] == "success" and np.isfinite(good["alpha"])
    # the neighbour is analysed as if alone
    alone = jaxww.analyze({"dense": {"bias": np.zeros(128, np.float32), "kernel": bad[0]["good"]["kernel"]}})
    assert alone.rows[0]["alpha"] == pytest.approx(good["alpha"], abs=row_tols(report, good, h)["alpha"])


def test_all_zero_matrix_says_nothing_to_fit(bad):
    r = rows_by_name(bad[2])["zero/kernel"]
    assert r["status"] == "failed" and "nothing to fit" in r["reason"]
    assert math.isnan(r["alpha"]) and r["num_pl_spikes"] == 0
    assert r["matrix_rank"] == 0 and r["norm"] == 0.0
    assert (bad[2].esd("zero/kernel") == 0).all()


def test_eigenvalues_below_threshold_say_nothing_to_fit(bad):
    r = rows_by_name(bad[2])["tiny/kernel"]
    assert r["status"] == "failed" and "1e-5" in r["reason"]
    assert r["matrix_rank"] == 128  # norm metrics still use every eigenvalue
    assert np.isfinite(r["log_norm"]) and r["log_norm"] < -3


@pytest.mark.slow
def test_rank_deficient_zeros_left_out_of_fit(bad, h):
    report = bad[2]
    r = rows_by_name(report)["lowrank/kernel"]
    ev = report.esd("lowrank/kernel")
    assert (ev == 0).sum() == 88 and r["matrix_rank"] == 40
    assert r["status"] == "success"
    # The fit is the fit of the 40 non-zero eigenvalues alone (the reference drops
    # values <= 1e-5 the same way: test_oracle compares with it). Same float32 values,
    # other padding: equal to the float32 rounding of the MLE (h.pl_alpha_rtol); xmin is
    # a chosen input value: the same bits.
    alone = jaxww.fit_power_law(ev[ev > 0])
    tail = ev[ev >= float(alone.xmin)]
    assert r["alpha"] == pytest.approx(float(alone.alpha), rel=h.pl_alpha_rtol(tail, eps=h.EPS32))
    assert r["xmin"] == float(alone.xmin)
    assert r["num_pl_spikes"] == int((ev >= r["xmin"]).sum()) <= 40
    assert r["xmin"] >= ev[ev > 0].min()


def test_non_array_integer_bool_leaves_skipped_and_listed(bad):
    _, _, report = bad
    sk = {r.name: r for r in report.skipped_rows}
    df = report.skipped
    assert {"ints/kernel", "bools/kernel", "meta/text", "meta/count", "meta/rate", "good/bias"} <= set(df["name"])
    assert "int32" in sk["ints/kernel"].reason and "bool" in sk["bools/kernel"].reason
    for n in ("meta/text", "meta/count", "meta/rate"):
        assert "not an array" in sk[n].reason
    analysed = {r["name"] for r in report.rows}
    assert analysed.isdisjoint(sk)
    assert analysed == {"good/kernel", "nan/kernel", "inf/kernel", "zero/kernel", "tiny/kernel",
                        "lowrank/kernel", "half/kernel", "brain/kernel"}


@pytest.mark.slow
def test_half_precision_is_upcast(bad, h):
    params, _, report = bad
    rows = rows_by_name(report)
    for n, key in (("half/kernel", "half"), ("brain/kernel", "brain")):
        assert rows[n]["status"] == "success"
        # upcast on the host (exact): XLA's float16 conversion capped below AVX's F16C calls a
        # runtime helper (__extendhfsf2) that its JIT does not link (other-cpu's SSE4_2 profile)
        upcast = np.asarray(params[key]["kernel"]).astype(np.float32)
        ref = jaxww.analyze({"dense": {"bias": np.zeros(128, np.float32), "kernel": upcast}}).rows[0]
        tols = row_tols(report, rows[n], h)
        for col in ("alpha", "xmin", "D", "log_norm", "stable_rank"):
            assert rows[n][col] == pytest.approx(ref[col], rel=0, abs=tols[col]), (n, col)
        assert report.esd(n).dtype == np.float32


def test_callers_arrays_not_modified(bad):
    params, copies, _ = bad
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(copies)):
        if isinstance(a, np.ndarray):
            np.testing.assert_array_equal(a, b)  # NaNs compare equal here
            assert a.dtype == b.dtype


@pytest.mark.slow
def test_read_only_arrays_in_float64(h):
    w = h.student_t(1)
    w.flags.writeable = False
    report = jaxww.analyze({"dense": {"bias": np.zeros(128, np.float32), "kernel": w}}, precision="float64")
    assert report.rows[0]["status"] == "success"
    assert w.dtype == np.float32 and np.array_equal(w, h.student_t(1))


# --- trees with nothing to analyse ------------------------------------------------

@pytest.mark.parametrize("tree", [{}, [], None, {"a": {}, "b": []}])
def test_empty_tree_raises(tree):
    with pytest.raises(ValueError, match="empty"):
        jaxww.analyze(tree)


def test_no_eligible_leaf_raises_naming_what_was_searched(h):
    tree = {"Dense_0": {"bias": np.zeros(128, np.float32)}, "step": np.int32(3),
            "mask": np.ones((64, 64), bool), "small": {"kernel": np.ones((64, 4), np.float32)}}
    with pytest.raises(ValueError) as err:
        jaxww.analyze(tree)
    msg = str(err.value)
    assert "floating-point" in msg and "ndim >= 2" in msg and "4 leaves" in msg
    for name in ("Dense_0/bias", "mask", "small/kernel"):
        assert name in msg
    with pytest.raises(ValueError, match="min_evals"):
        jaxww.analyze({"dense": {"kernel": h.gaussian(0)}}, min_evals=129)


# --- containers -----------------------------------------------------------------------

@pytest.mark.slow
def test_linen_variables_nnx_module_and_state_agree(h):
    from flax import linen as nn
    from flax import nnx

    w = h.student_t(2)

    class Lin(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(128, name="dense")(x)

    variables = Lin().init(jax.random.key(0), jnp.ones((1, 256)))
    variables = {"params": {"dense": {"bias": variables["params"]["dense"]["bias"], "kernel": jnp.asarray(w)}}}

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.dense = nnx.Linear(256, 128, rngs=rngs)

    net = Net(nnx.Rngs(0))
    net.dense.kernel[...] = jnp.asarray(w)

    ref_report = jaxww.analyze({"dense": {"bias": np.zeros(128, np.float32), "kernel": w}})
    ref = ref_report.rows[0]
    tol = row_tols(ref_report, ref, h)["alpha"]
    out = {
        "linen": jaxww.analyze(variables),
        "module": jaxww.analyze(net),
        "state": jaxww.analyze(nnx.state(net)),
        "params": jaxww.analyze(nnx.state(net, nnx.Param)),
    }
    assert [r["name"] for r in out["linen"].rows] == ["params/dense/kernel"]
    for key in ("module", "state", "params"):
        assert [r["name"] for r in out[key].rows] == ["dense/kernel"], key
    for key, report in out.items():
        assert report.rows[0]["alpha"] == pytest.approx(ref["alpha"], abs=tol), key
    assert [s.name for s in out["module"].skipped_rows] == ["dense/bias"]
    tree = out["module"].tree()
    assert float(tree["dense"]["kernel"]) == out["module"].rows[0]["alpha"]   # a copy of the row


def _check_stack(report, prefix, stack, h):
    rows = rows_by_name(report)
    names = [f"{prefix}[{i}]" for i in range(stack.shape[0])]
    assert [n for n in rows if n.startswith(prefix)] == names
    for i, n in enumerate(names):
        assert rows[n]["layer_type"] == "dense" and rows[n]["rf"] == 1
        ref = h.svd_evals(stack[i])
        floor = ref.max() * 128 * np.finfo(np.float32).eps  # float32 values below it are 0
        np.testing.assert_allclose(report.esd(n), ref, rtol=1e-4, atol=floor)
        fit = jaxww.fit_power_law(report.esd(n))
        assert rows[n]["alpha"] == pytest.approx(float(fit.alpha), abs=row_tols(report, rows[n], h)["alpha"])


@pytest.mark.slow
def test_linen_scan_gives_one_row_per_layer(h):
    from flax import linen as nn

    class Block(nn.Module):
        @nn.compact
        def __call__(self, x, _):
            return nn.Dense(128)(x), None

    class Model(nn.Module):
        @nn.compact
        def __call__(self, x):
            scan = nn.scan(Block, variable_axes={"params": 0}, split_rngs={"params": True}, length=3)
            return scan(name="layers")(x, None)[0]

    v = Model().init(jax.random.key(0), jnp.ones((1, 128)))
    report = jaxww.analyze(v)
    _check_stack(report, "params/layers/Dense_0/kernel", np.asarray(v["params"]["layers"]["Dense_0"]["kernel"]), h)
    assert np.asarray(report.tree()["params"]["layers"]["Dense_0"]["kernel"]).shape == (3,)


def _vmapped_linear():
    from flax import nnx

    @nnx.vmap(in_axes=0, out_axes=0)
    def make(key):
        return nnx.Linear(128, 128, rngs=nnx.Rngs(key))

    return make(jax.random.split(jax.random.key(0), 3))


@pytest.mark.slow
def test_nnx_vmap_stack_in_a_module(h):
    from flax import nnx

    class Net(nnx.Module):
        def __init__(self):
            self.blocks = _vmapped_linear()

    net = Net()
    report = jaxww.analyze(net)
    _check_stack(report, "blocks/kernel", np.asarray(net.blocks.kernel[...]), h)


@pytest.mark.slow
def test_nnx_vmap_stack_passed_directly(h):
    # A stack of 3 nnx.Linear made by nnx.vmap, given as is: its kernel (3, 128, 128)
    # is three dense layers, not one 1-D convolution with 3 taps.
    layers = _vmapped_linear()
    report = jaxww.analyze(layers)
    _check_stack(report, "kernel", np.asarray(layers.kernel[...]), h)


@pytest.mark.slow
def test_attention_kernels(h):
    from flax import linen as nn

    mha = nn.MultiHeadDotProductAttention(num_heads=4, qkv_features=128, out_features=64)
    v = mha.init(jax.random.key(0), jnp.ones((1, 3, 64)))
    p = v["params"]
    report = jaxww.analyze(v)
    rows = rows_by_name(report)
    assert set(rows) == {f"params/{n}/kernel" for n in ("query", "key", "value", "out")}
    for n in ("query", "key", "value"):
        k = np.asarray(p[n]["kernel"])
        assert k.shape == (64, 4, 32)
        r = rows[f"params/{n}/kernel"]
        assert (r["layer_type"], r["N"], r["M"]) == ("attention", 128, 64)
        np.testing.assert_allclose(report.esd(f"params/{n}/kernel"), h.svd_evals(k.reshape(64, 128)), rtol=1e-4)
    o = np.asarray(p["out"]["kernel"])
    assert o.shape == (4, 32, 64)
    r = rows["params/out/kernel"]
    assert (r["N"], r["M"], r["num_evals"]) == (128, 64, 64)
    right = h.svd_evals(o.reshape(128, 64))  # (H*D, out)
    wrong = h.svd_evals(o.reshape(4, 32 * 64))  # (H, D*out): only 4 eigenvalues
    np.testing.assert_allclose(report.esd("params/out/kernel"), right, rtol=1e-4)
    assert len(wrong) != len(report.esd("params/out/kernel"))


# --- options ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ambiguous():
    rng = np.random.default_rng(3)
    return {"block": {"w": rng.standard_normal((3, 16, 32)).astype(np.float32)},
            "head": {"w": rng.standard_normal((3, 128, 128)).astype(np.float32)}}


@pytest.mark.slow
def test_layouts_override_mapping_and_callable(ambiguous, h):
    with pytest.raises(ValueError, match="ambiguous"):
        jaxww.analyze(ambiguous)  # neither leaf can be inferred
    by_map = jaxww.analyze(ambiguous, layouts={r"block/w$": "conv", r"^head/": "stacked_dense"})
    by_fn = jaxww.analyze(ambiguous, layouts=lambda name, shape: {"block/w": "conv", "head/w": "stacked_dense"}[name])
    for report in (by_map, by_fn):
        rows = rows_by_name(report)
        assert set(rows) == {"block/w", "head/w[0]", "head/w[1]", "head/w[2]"}
        assert rows["block/w"]["layer_type"] == "conv1d" and rows["block/w"]["rf"] == 3
        np.testing.assert_allclose(report.esd("block/w"), h.conv_taps_evals(ambiguous["block"]["w"]), rtol=1e-4)
    assert [r["alpha"] for r in by_map.rows] == [r["alpha"] for r in by_fn.rows]


@pytest.mark.parametrize("layers", [r"^head/", lambda name: name.startswith("head/")])
def test_layers_filter(ambiguous, layers):
    report = jaxww.analyze(ambiguous, layers=layers, layouts={"block": "conv", "head": "stacked_dense"})
    assert [r["name"] for r in report.rows] == ["head/w[0]", "head/w[1]", "head/w[2]"]
    assert "layers filter" in {s.name: s for s in report.skipped_rows}["block/w"].reason


@pytest.mark.slow
def test_size_limits(ambiguous):
    lay = {"block": "conv", "head": "stacked_dense"}
    # block/w: conv1d, M * rf = 16 * 3 = 48 eigenvalues, N = 32; head/w[i]: 128, N = 128
    report = jaxww.analyze(ambiguous, layouts=lay, max_evals=127)
    sk = {s.name: s.reason for s in report.skipped_rows}
    assert all("max_evals" in sk[f"head/w[{i}]"] for i in range(3))
    assert [r["name"] for r in report.rows] == ["block/w"]
    report = jaxww.analyze(ambiguous, layouts=lay, min_evals=49, max_evals=128, max_N=128)
    sk = {s.name: s.reason for s in report.skipped_rows}
    assert "min_evals" in sk["block/w"] and len(report.rows) == 3
    report = jaxww.analyze(ambiguous, layouts=lay, max_N=127)
    sk = {s.name: s.reason for s in report.skipped_rows}
    assert all("max_N" in sk[f"head/w[{i}]"] for i in range(3))
    assert [r["name"] for r in report.rows] == ["block/w"]


def test_non_finite_slice_of_a_stack_fails_alone(ambiguous):
    tree = jax.tree.map(np.copy, ambiguous)
    tree["head"]["w"][1, 3, 4] = np.nan
    report = jaxww.analyze(tree, layouts={"block": "conv", "head": "stacked_dense"})
    rows = rows_by_name(report)
    assert rows["head/w[1]"]["status"] == "failed" and "NaN" in rows["head/w[1]"]["reason"]
    for n in ("block/w", "head/w[0]", "head/w[2]"):
        assert rows[n]["status"] == "success", n
    alphas = np.asarray(report.tree()["head"]["w"])
    assert np.isnan(alphas[1]) and np.isfinite(alphas[[0, 2]]).all()
