"""Quantised weights: read as ``dequantised`` where the scale is in the tree, else skipped.

Each test quantises a float weight itself, the way the source does (cited in
``jaxww/reading/quant.py``), and checks that the analysed eigenvalues are NumPy's of the
dequantised matrix (float32 error relative to the largest eigenvalue).
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

import jaxww
from families_cases import abs_max, pack_last
from jaxww.reading import quant as _quant

IN, OUT = 96, 47          # OUT odd: int4 packing pads one nibble
R = np.random.default_rng(3)
EPS32 = float(np.finfo(np.float32).eps)


def _w(*shape):
    return R.standard_normal(shape).astype(np.float32)


def _check(report, name, W):
    """The row ``name`` has the eigenvalues of the float matrix ``W`` (NumPy, float64)."""
    ref = np.sort(np.linalg.svd(np.asarray(W, np.float64), compute_uv=False) ** 2)
    got = report.esd(name)
    n = max(W.shape)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=ref.max() * n * EPS32 * 4, err_msg=name)


def test_keras_dense_int8():
    q, scale = abs_max(_w(IN, OUT), axis=0, qmax=127)
    tree = {"dense": {"kernel": q, "kernel_scale": scale[0], "bias": np.zeros(OUT, np.float32)}}
    report = jaxww.analyze(tree)
    assert [r["name"] for r in report.rows] == ["dense/kernel"]
    _check(report, "dense/kernel", q / scale)
    kinds = {s.name: s.kind for s in report.skipped_rows}
    assert kinds == {"dense/kernel_scale": "not_matrix", "dense/bias": "not_matrix"}


def test_keras_dense_int4_per_channel_packed():
    q, scale = abs_max(_w(IN, OUT), axis=0, qmax=7)
    tree = {"dense": {"kernel": pack_last(q), "kernel_scale": scale[0]}}
    assert tree["dense"]["kernel"].shape == (IN, math.ceil(OUT / 2))
    report = jaxww.analyze(tree)
    assert report.rows[0]["shape"] == (IN, OUT)
    _check(report, "dense/kernel", q / scale)


def test_keras_dense_int4_sub_channel():
    """Keras's default int4: groups of ``block`` input rows, asymmetric (zero points)."""
    block, groups = 32, 3
    q = R.integers(-8, 8, (IN, OUT)).astype(np.int8)
    scale = R.uniform(0.01, 0.1, (groups, OUT)).astype(np.float32)
    zero = R.integers(-3, 4, (groups, OUT)).astype(np.int8)
    g_idx = (np.arange(IN) // block).astype(np.float32)
    tree = {"dense": {"kernel": pack_last(q), "kernel_scale": scale, "kernel_zero": zero, "g_idx": g_idx}}
    report = jaxww.analyze(tree)
    g = g_idx.astype(int)
    _check(report, "dense/kernel", (q - zero[g].astype(np.float32)) * scale[g])
    kinds = {s.name: s.kind for s in report.skipped_rows}
    assert kinds["dense/kernel_scale"] == "not_weight" and kinds["dense/kernel_zero"] == "not_weight"


@pytest.mark.slow
def test_gemma_int_einsum():
    """gemma/peft ``quantize``: ``q_einsum/_IntEinsum_0/{kernel, scale}`` read as
    ``q_einsum/w`` (H, d, D) -> d x H*D; ``mlp/_IntEinsum_linear`` as ``mlp/linear``."""
    jnp = pytest.importorskip("jax.numpy")
    H, d, D, F = 2, 64, 16, 96
    wq, sq = abs_max(_w(H, d, D), axis=(1,), qmax=127)         # int8, reduce d
    wl, sl = abs_max(_w(F, d), axis=(0,), qmax=7)              # int4, reduce F
    tree = {"layer_0": {"attn": {"q_einsum": {"_IntEinsum_0": {"kernel": wq, "scale": sq}}},
                        "mlp": {"_IntEinsum_linear": {"kernel": np.asarray(wl, jnp.int4), "scale": sl}}}}
    report = jaxww.analyze(tree)
    assert sorted(r["name"] for r in report.rows) == ["layer_0/attn/q_einsum/_IntEinsum_0/kernel",
                                                      "layer_0/mlp/_IntEinsum_linear/kernel"]
    _check(report, "layer_0/attn/q_einsum/_IntEinsum_0/kernel", (wq / sq).transpose(1, 0, 2).reshape(d, H * D))
    _check(report, "layer_0/mlp/_IntEinsum_linear/kernel", wl / sl)


def test_unpack_matches_keras():
    keras = pytest.importorskip("keras", reason="the packing oracle is Keras's own")
    q = R.integers(-8, 8, (5, 7)).astype(np.int8)
    packed, _, _ = keras.quantizers.pack_int4(q, axis=-1)
    assert np.array_equal(np.asarray(packed), pack_last(q))
    assert np.array_equal(np.asarray(_quant.unpack_int4_last(np.asarray(packed), 7)), q)


@pytest.mark.parametrize("tree, says", [
    ({"mlp": {"kernel": np.ones((IN, OUT), np.int8)}}, "no scale next to it"),
    ({"mlp": {"kernel": np.ones((IN, OUT), np.int8), "kernel_scale": np.ones(OUT + 4, np.float32)}},
     "fits neither Keras int8"),
    ({"mlp": {"kernel": np.ones((IN, 1), np.int8), "kernel_scale": np.ones(1, np.float32)}},
     "cannot be told apart"),
    ({"mha": {"kernel": np.ones((IN, 2, 8), np.int8), "kernel_scale": np.ones((1, 2, 8), np.float32)}},
     "EinsumDense"),
    ({"emb": {"embeddings": np.ones((IN, OUT), np.int8), "embeddings_scale": np.ones(IN, np.float32)}},
     "cannot be told apart"),
    ({"q": {"_IntEinsum_0": {"kernel": np.ones((2, IN, 8), np.int8), "scale": np.ones((2, 1), np.float32)}}},
     "does not broadcast"),
    ({"dense": {"kernel": np.ones((IN, 24), np.int8), "kernel_scale": np.ones((3, OUT), np.float32),
                "kernel_zero": np.ones((3, OUT), np.int8)}}, "sub-channel int4"),
])
def test_unreadable_quantised_leaf_is_skipped_with_the_reason(tree, says):
    names, leaves, _ = jaxww.reading.params.read_params(tree)
    ks, sk = jaxww.find_kernels(names, leaves)
    assert not ks
    reasons = [s.reason for s in sk if s.kind == "dtype"]
    assert len(reasons) == 1 and says in reasons[0], reasons


def test_raw_leaves_say_how_to_dequantise_and_input_is_not_modified():
    q, scale = abs_max(_w(IN, OUT), axis=0, qmax=127)
    tree = {"dense": {"kernel": q, "kernel_scale": scale[0]}}
    copy = q.copy()
    _, sk = jaxww.find_kernels(*jaxww.flatten_params(tree)[:2])
    assert "read_params" in next(s.reason for s in sk if s.name == "dense/kernel")
    desc = jaxww.describe(tree)
    assert [r["name"] for r in desc.rows] == ["dense/kernel"]
    assert tree["dense"]["kernel"].dtype == np.int8 and np.array_equal(tree["dense"]["kernel"], copy)


@pytest.mark.slow
def test_keras_quantized_model():
    """``Dense.quantize`` in Keras itself (int8; int4 sub-channel, its default; int4 per
    channel); the oracle is Keras's own dequantisation of its variables."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    keras = pytest.importorskip("keras", reason="Keras 3 models need keras")
    if keras.backend.backend() != "jax":
        pytest.skip("keras runs on another backend than JAX")
    from keras.src.quantizers.quantization_config import Int4QuantizationConfig
    from keras.src.quantizers.quantizers import dequantize_with_sz_map

    keras.utils.set_random_seed(0)
    inp = keras.Input((64,))
    x = keras.layers.Dense(IN, name="d8")(inp)
    x = keras.layers.Dense(OUT, name="d4g")(x)
    x = keras.layers.Dense(32, name="d4c")(x)
    model = keras.Model(inp, x)
    model.get_layer("d8").quantize("int8")
    model.get_layer("d4g").quantize("int4")
    model.get_layer("d4c").quantize("int4", config=Int4QuantizationConfig(block_size=-1))
    report = jaxww.analyze(model)
    assert sorted(r["name"] for r in report.rows) == ["d4c/kernel", "d4g/kernel", "d8/kernel"]

    def np_(v):
        return np.asarray(v.value if hasattr(v, "value") else v)
    d8, d4g, d4c = (model.get_layer(n) for n in ("d8", "d4g", "d4c"))
    _check(report, "d8/kernel", np_(d8._kernel).astype(np.float32) / np_(d8.kernel_scale))
    unpacked = keras.quantizers.unpack_int4(d4g._kernel.value, OUT, axis=-1)
    _check(report, "d4g/kernel", np_(dequantize_with_sz_map(unpacked, d4g.kernel_scale.value,
                                                            d4g.kernel_zero.value, d4g.g_idx.value,
                                                            group_axis=0)))
    unpacked = np_(keras.quantizers.unpack_int4(d4c._kernel.value, 32, axis=-1))
    _check(report, "d4c/kernel", unpacked.astype(np.float32) / np_(d4c.kernel_scale))
