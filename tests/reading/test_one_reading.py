"""One reading of a layer, whatever form it comes in (issue #22, item 1).

A model is read the same way as a live ``nnx.Module``, as its ``nnx.state``, as an Orbax
checkpoint of that state, by the ``Tracker``, by ``tree_alpha`` and by the optax
transforms: the same rows with the same spectra. Where a form lacks what the module knows
(a tree has no module configuration), it refuses the layer with the reason and the exact
hint, and with that hint (``layouts=jaxww.model_layouts(module)``, or the ``layouts=`` /
``scan_axis=`` the reason names) it reads the module's rows.
"""

from __future__ import annotations

import os
import re

import jax
import numpy as np
import optax
import pytest
from flax import nnx

import jaxww
from families_cases import MODELS, nnx_model


def _esds(report) -> dict:
    return {r["name"]: np.sort(report.esd(r["name"])) for r in report.rows}


def _assert_same(got: dict, want: dict, what: str):
    assert set(got) == set(want), what
    for name, ev in want.items():
        # The same matrices through the same code: equal up to a float32 rounding of the
        # sum of the eigenvalues (the path may transpose the matrix: another order of sums).
        tol = 8 * ev.size * np.finfo(np.float32).eps * float(ev.sum())
        np.testing.assert_allclose(got[name], ev, rtol=0, atol=tol, err_msg=f"{what}: {name}")


def _hint(report, name) -> dict:
    """The ``layouts=`` of the first hint in the reason the report gives for ``name``."""
    reason = next(s.reason for s in report.skipped_rows if s.name == name)
    return eval(re.search(r"layouts=(\{[^}]*\})", reason).group(1))


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(MODELS))
def test_module_state_checkpoint_and_tracker_read_one_set_of_rows(kind, tmp_path):
    ocp = pytest.importorskip("orbax.checkpoint")
    model = nnx_model(kind)
    state = nnx.state(model, nnx.Param)
    layouts = jaxww.model_layouts(model)
    want = _esds(jaxww.analyze(model))

    _assert_same(_esds(jaxww.analyze(state, layouts=layouts)), want, "state with model_layouts")
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(tmp_path / "ckpt", state)
    _assert_same(_esds(jaxww.analyze(str(tmp_path / "ckpt"), layouts=layouts)), want, "Orbax checkpoint")

    with jaxww.Tracker(every=1) as live, jaxww.Tracker(every=1, layouts=layouts) as tree:
        live.update(0, model)
        tree.update(0, state)
    for tracker, what in ((live, "Tracker(module)"), (tree, "Tracker(state)")):
        rows = tracker.history.details
        assert set(rows["name"]) == set(want), what

    # Without the hint, the state reads what it can tell apart as the module does and refuses
    # the rest, except a grouped convolution: a tree cannot tell it from an ordinary one with
    # fewer inputs (documented in docs/families.md; model_layouts above is the remedy).
    bare = jaxww.analyze(state)
    refused = {s.name for s in bare.skipped_rows if s.kind == "layout"}
    grouped = {"/".join(map(str, p)) + "/kernel" for p, m in nnx.iter_graph(model)
               if isinstance(m, nnx.Conv) and 1 < m.feature_group_count < m.in_features}
    read = {n: ev for n, ev in _esds(bare).items() if n not in grouped}
    _assert_same(read, {n: want[n] for n in read}, "state without hints")
    for name in set(want) - set(read) - grouped:
        leaf = re.sub(r"\[\d+\]$", "", name)
        assert leaf in refused, f"{name}: neither read like the module nor refused"


def test_the_trunk_state_is_refused_with_hints_that_work():
    model = nnx_model("trunk")
    state = nnx.state(model, nnx.Param)
    want = _esds(jaxww.analyze(model))
    bare = jaxww.analyze(state)
    assert set(_esds(bare)) == {"head/kernel"}
    layouts = {}
    for leaf in ("trunk/up/kernel", "trunk/down/kernel"):
        s = next(s for s in bare.skipped_rows if s.name == leaf)
        assert s.kind == "layout" and "stacked_dense" in s.reason and "scan_axis" in s.reason
        layouts.update(_hint(bare, leaf))
    _assert_same(_esds(jaxww.analyze(state, layouts=layouts)), want, "layouts= from the hint")
    for scan_axis in (0, {"trunk/": 0}):
        _assert_same(_esds(jaxww.analyze(state, scan_axis=scan_axis)), want, f"scan_axis={scan_axis}")


def test_grouped_and_depthwise_convolutions():
    model = nnx_model("cnn")
    report = jaxww.analyze(model)
    rows = {r["name"]: r for r in report.rows}
    # Grouped: each 3x3 tap is block-diagonal, 4 blocks of 16 x 16: 36 pooled blocks.
    g = rows["grouped/kernel"]
    assert (g["N"], g["M"], g["num_evals"], g["layer_type"]) == (16, 16, 9 * 4 * 16, "conv2d")
    W = np.asarray(model.grouped.kernel[...], np.float64)
    blocks = [W[i, j][:, k * 16:(k + 1) * 16] for i in range(3) for j in range(3) for k in range(4)]
    ev = np.sort(np.concatenate([np.linalg.svd(b, compute_uv=False) ** 2 for b in blocks])) * 0.5
    _assert_same({"g": np.sort(report.esd("grouped/kernel"))}, {"g": ev}, "grouped")
    skipped = {s.name: s for s in report.skipped_rows}
    assert skipped["depthwise/kernel"].kind == "not_weight" and "depthwise" in skipped["depthwise/kernel"].reason


def test_keras_grouped_convolution_is_read_per_group():
    os.environ.setdefault("KERAS_BACKEND", "jax")
    keras = pytest.importorskip("keras")
    model = keras.Sequential([keras.Input((8, 8, 16)), keras.layers.Conv2D(32, 3, groups=4, name="g"),
                              keras.layers.Conv2D(32, 3, groups=32, name="dw")])
    report = jaxww.analyze(model)
    (row,) = report.rows
    assert (row["N"], row["M"], row["num_evals"]) == (8, 4, 9 * 4 * 4)
    W = np.asarray(model.get_layer("g").kernel, np.float64)
    blocks = [W[i, j][:, k * 8:(k + 1) * 8] for i in range(3) for j in range(3) for k in range(4)]
    ev = np.sort(np.concatenate([np.linalg.svd(b, compute_uv=False) ** 2 for b in blocks])) * 0.5
    _assert_same({"g": np.sort(report.esd(row["name"]))}, {"g": ev}, "keras grouped")
    assert any(s.kind == "not_weight" and "depthwise" in s.reason for s in report.skipped_rows)


def test_a_3d_kernel_is_a_convolution_only_where_something_says_so():
    w = np.random.default_rng(0).standard_normal((4, 64, 32)).astype(np.float32)
    assert jaxww.infer_layout("trunk/down/kernel", w.shape)[0] == "skip"
    assert jaxww.infer_layout("Conv_0/kernel", w.shape) == "conv"
    assert jaxww.infer_layout("layers/mlp/kernel", w.shape) == "stacked_dense"
    assert jaxww.infer_layout("encoder/Dense_0/kernel", w.shape) == "stacked_dense"


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["trunk", "cnn"])
def test_tree_alpha_and_the_transforms_read_the_modules_rows(kind):
    """``tree_alpha`` and the transforms see a tree (the state); with the module's layouts
    they analyse its rows, with the same alphas in float64 (to the rounding of two
    eigensolvers: ``h.pl_alpha_rtol``, as test_regularizers)."""
    model = nnx_model(kind)
    with jax.enable_x64(True):
        state = jax.tree.map(lambda x: np.asarray(x, np.float64), nnx.state(model, nnx.Param))
        layouts = jaxww.model_layouts(model)
        report = jaxww.analyze(state, layouts=layouts, precision="float64")
        want = {r["name"]: r["alpha"] for r in report.rows}
        got = {k: float(v) for k, v in jaxww.tree_alpha(state, layouts=layouts).items()}
        assert set(got) == set(want)
        for name, a in got.items():
            assert a == pytest.approx(want[name], rel=1e-6), name
        tx = jaxww.scale_by_alpha(every=1, min_evals=jaxww.defaults.MIN_EVALS, layouts=layouts, tail="ks")
        _, s = jax.jit(tx.update)(jax.tree.map(np.zeros_like, state), tx.init(state), state)
        assert set(s.alpha) == set(want)


class MnistCNN(nnx.Module):
    """Flax's NNX MNIST tutorial CNN (flax docs, "MNIST tutorial"), shapes as there."""

    def __init__(self, rngs):
        self.conv1 = nnx.Conv(1, 32, kernel_size=(3, 3), rngs=rngs)
        self.conv2 = nnx.Conv(32, 64, kernel_size=(3, 3), rngs=rngs)
        self.linear1 = nnx.Linear(3136, 256, rngs=rngs)
        self.linear2 = nnx.Linear(256, 10, rngs=rngs)


@pytest.mark.slow
def test_training_acts_on_the_layers_analyze_judges():
    """The transforms and penalties act only where analyze can give a verdict (>= 32
    eigenvalues): not on the 10-class head (10) nor on conv1 (9); ``tree_alpha`` has
    analyze's rows; a tree's refused layers are named in a warning, not dropped silently."""
    model = MnistCNN(nnx.Rngs(0))
    state = nnx.state(model, nnx.Param)
    rows = {r["name"]: r for r in jaxww.analyze(model).rows}
    judged = {n for n, r in rows.items() if r["num_evals"] >= jaxww.defaults.MIN_VERDICT_EVALS}
    assert judged == {"conv2/kernel", "linear1/kernel"}
    for tx in (jaxww.add_alpha_regularization(1e-3, target=3.0), jaxww.scale_by_alpha(),
               jaxww.add_alpha_decayed_weights(1e-2)):
        assert set(tx.init(state).alpha) == judged
    _, aux = jaxww.alpha_penalty(model, 3.0, has_aux=True)
    assert set(aux.alpha) == judged
    assert set(jaxww.tree_alpha(model)) == set(rows)
    with pytest.warns(UserWarning, match=r"tree_alpha: 1 weight.*conv1/kernel.*layouts="):
        assert set(jaxww.tree_alpha(state)) == set(rows) - {"conv1/kernel"}
    assert set(jaxww.tree_alpha(state, layouts=jaxww.model_layouts(model))) == set(rows)
    with pytest.raises(ValueError, match="min_evals"):
        jaxww.scale_by_alpha(min_evals=-1).init(state)
