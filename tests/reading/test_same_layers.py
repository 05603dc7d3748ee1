"""One reading path (issue #23, point 3): training reads the layers ``analyze`` reads.

Every family the suite knows is read through training's plan
(:func:`jaxww.training.plan.make_plan`, what ``tree_alpha``, the penalties and the optax
transforms use; built under ``jax.jit`` for a tree, as there) and through analyze's
reading (:func:`jaxww.reading.layers.read_layers`): the same layer names (in the same
order outside ``jax.jit``; under it a dict comes back with sorted keys, so the plan lists
the layers in their natural order), the same :class:`~jaxww.reading.kernels.Kernel` (leaf,
axes, split indices) and the same matrices. The slow test checks the public face the same way: ``tree_alpha``'s
names are ``analyze``'s rows, and ``analyze``'s spectra are those of the plan's matrices.

A layer a tree cannot place (an ``nnx.vmap`` stack under a name like ``trunk``, a
kernel of one input channel) is refused by both: ``analyze`` marks it, training names it
in a ``UserWarning`` (docs/training.md, "A tree is read as a tree").
"""

from __future__ import annotations

import contextlib
import functools
import os
import warnings

import jax
import numpy as np
import pytest
from flax import nnx

import jaxww
from families_cases import (E, F, H, L, arr, gemma_int_tree, gemma_tree, keras_int8_tree, keras_layers_model,
                            linen_params, maxtext_tree, nnx_model, torch_state_dict)
from jaxww.reading.layers import read_layers
from jaxww.training.plan import make_plan

EPS32 = float(np.finfo(np.float32).eps)


def _keras():
    os.environ.setdefault("KERAS_BACKEND", "jax")
    keras = pytest.importorskip("keras", reason="Keras 3 models need keras")
    if keras.backend.backend() != "jax":
        pytest.skip("keras runs on another backend than JAX")
    return keras


def _keras_model():
    return keras_layers_model(_keras()), {}, ()


def _keras_quantized():
    keras = _keras()
    keras.utils.set_random_seed(0)
    inp = keras.Input((64,))
    model = keras.Model(inp, keras.layers.Dense(32, name="d4")(keras.layers.Dense(96, name="d8")(inp)))
    model.get_layer("d8").quantize("int8")
    model.get_layer("d4").quantize("int4")
    return model, {}, ()


@functools.lru_cache(maxsize=None)
def _built(kind):
    """One module of each kind for its three forms (read only, never modified)."""
    return nnx_model(kind)


def _nnx(kind, form):
    model = _built(kind)
    if form == "module":
        return model, {}, ()
    state = nnx.state(model, nnx.Param)
    if form == "state+model_layouts":
        return state, {"layouts": jaxww.model_layouts(model)}, ()
    refused = {"trunk": ("trunk/up/kernel", "trunk/down/kernel"), "cnn": ("conv1/kernel", "depthwise/kernel"),
               "scanned": (), "scan": ()}
    return state, {}, refused[kind]


#: ``name: () -> (params, keyword arguments of both readings, names both refuse)``.
CASES = {
    "linen-cnn": lambda: (linen_params(), {}, ()),
    "torch-state-dict-conv": lambda: (torch_state_dict(), {}, ()),
    "gemma3-gqa": lambda: (gemma_tree(vision=48), {}, ()),
    "gemma2-fused-qkv": lambda: (gemma_tree(kv=H, transpose_gating=False), {}, ()),
    "maxtext-scan-axis-0": lambda: (maxtext_tree(0)[0], {}, ()),
    "maxtext-scan-axis-1": lambda: (maxtext_tree(1)[0], {}, ()),
    "maxtext-scan-axis-hint": lambda: ({"decoder": {"layers": {"mlp": {"wi_0": {"kernel": arr(E, L, F)}}}}},
                                       {"scan_axis": 1}, ()),
    "keras-int8-tree": lambda: (keras_int8_tree()[0], {}, ()),
    "gemma-int8-int4-tree": lambda: (gemma_int_tree(), {}, ()),
    "keras3-model": _keras_model,
    "keras3-quantized-model": _keras_quantized,
    **{f"nnx-{kind}-{form}": (lambda kind=kind, form=form: _nnx(kind, form))
       for kind in ("trunk", "scanned", "scan", "cnn") for form in ("module", "state", "state+model_layouts")},
}


def _name(kernel) -> str:
    return kernel.name


def _live(params) -> bool:
    """A live model (an ``nnx.Module``, a Keras model): training reads it outside ``jax.jit``."""
    return isinstance(params, nnx.Module) or hasattr(params, "trainable_weights")


@contextlib.contextmanager
def _refusal_warned(refused):
    """Training names the leaves it refuses in one ``UserWarning``, and warns of no other."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    said = [str(w.message) for w in caught if "left out" in str(w.message)]
    if refused:
        assert len(said) == 1 and f"{len(refused)} weight(s) left out" in said[0], said
        assert all(name in said[0] for name in refused), said
    else:
        assert not said


def _plan_matrices(params, refused, **kw):
    """``(kernels, matrices)`` of training's plan, built under ``jax.jit`` for a tree (a live
    model is read outside, as ``tree_alpha(model)`` does)."""
    seen = {}

    def read(p, as_leaf):
        plan = make_plan(p, **kw)
        seen["kernels"] = plan.kernels
        return [k.matrices(as_leaf(plan.leaves[k.leaf])) for k in plan.kernels]

    with _refusal_warned(refused):
        if _live(params):   # concrete leaves: read as NumPy arrays, as analyze reads them on the host
            mats = read(params, np.asarray)
        else:
            mats = jax.jit(lambda p: read(p, lambda leaf: leaf))(params)
    return seen["kernels"], mats


#: Cases that build a live model, run an init or compile convolution initialisers (seconds
#: each), and the vmap stack under ``layers`` (the fast lane has the nnx.scan one): the slow lane.
_BUILT = {"linen-cnn", "keras3-model", "keras3-quantized-model", "nnx-trunk-module", "nnx-scan-module",
          "nnx-cnn-module", "nnx-cnn-state", "nnx-cnn-state+model_layouts", "nnx-scanned-module",
          "nnx-scanned-state", "nnx-scanned-state+model_layouts"}


def _cases(slow: bool) -> list:
    marks = {c: [pytest.mark.slow] * (slow or c in _BUILT) for c in CASES}
    return [pytest.param(c, marks=marks[c]) for c in sorted(CASES)]


@pytest.mark.parametrize("case", _cases(slow=False))
def test_training_plan_reads_the_layers_analyze_reads(case):
    params, kw, refused = CASES[case]()
    read = read_layers(params, **kw)
    kernels, mats = _plan_matrices(params, refused, **kw)
    # Under jax.jit a dict comes back with its keys sorted, so the plan there lists the
    # layers in their natural order; outside, in the model's own order, as analyze.
    assert sorted(k.name for k in kernels) == sorted(k.name for k in read.kernels), case
    assert sorted(kernels, key=_name) == sorted(read.kernels, key=_name), case   # same leaf, axes, splits
    with _refusal_warned(refused):
        assert make_plan(params, **kw).kernels == tuple(read.kernels), case
    for k, got in zip(kernels, mats):
        want = k.matrices(np.asarray(read.leaves[k.leaf]))
        got = np.asarray(got)
        assert got.shape == want.shape and got.dtype == want.dtype, k.name
        # Copies of the same data are exact; a dequantised weight is one float32 division
        # or product on each path (XLA may round it once differently): an ulp of the value.
        np.testing.assert_allclose(got, want, rtol=2 * EPS32, atol=0, err_msg=f"{case}: {k.name}")
    refused_read = {s.name for s in read.skipped if s.kind == "layout"}
    assert set(refused) <= refused_read, case


@pytest.mark.parametrize("case", _cases(slow=True))
def test_tree_alpha_names_and_analyze_spectra_are_the_plans(case):
    """The public face: ``tree_alpha``'s layers are ``analyze``'s rows, in order, and each
    row's spectrum is NumPy's of the plan's matrices (float32 error relative to the largest
    eigenvalue, as test_families)."""
    params, kw, refused = CASES[case]()
    kernels, mats = _plan_matrices(params, refused, **kw)
    report = jaxww.analyze(params, **kw)
    with _refusal_warned(refused):
        names = list(jaxww.tree_alpha(params, **kw))
    assert [r["name"] for r in report.rows] == names, case
    assert sorted(names) == sorted(k.name for k in kernels), case
    for k, m in zip(kernels, mats):
        m = np.asarray(m, np.float64)
        ref = np.sort(np.concatenate([np.linalg.svd(t, compute_uv=False) ** 2 for t in m]) * k.esd_scale)
        got = report.esd(k.name)
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=ref.max() * max(m.shape[1:]) * EPS32 * 4,
                                   err_msg=f"{case}: {k.name}")

