"""Real model families: every matrix jaxww reads equals a NumPy reading of the same tensor.

Each tree copies its family's exact leaf names and axis order (sources cited per test);
the sizes are shrunk (d, F, H, vocab, layers) where the structure allows, to keep the
tests fast. Every row of the report must be one expected matrix (same eigenvalues, to
float32 error relative to the largest one) and every expected matrix a row.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import jaxww
from families_cases import D, E, F, H, KV, L, V, arr, gemma_tree, keras_layers_model, maxtext_tree
from jaxww.reading import kernels as K
from jaxww.reading import params as P

def evals(mats, scale=1.0):
    """Pooled eigenvalues of a list of 2-D matrices, ascending, float64 (zeros kept)."""
    ev = np.concatenate([np.linalg.svd(np.asarray(m, np.float64), compute_uv=False) ** 2 for m in mats])
    return np.sort(ev * scale)


def check(report, expected):
    """Rows == expected names, and each row's spectrum is the NumPy one of its matrices."""
    names = [r["name"] for r in report.rows]
    assert sorted(names) == sorted(expected) and len(names) == len(expected)
    eps = np.finfo(np.float32).eps
    for name, (mats, scale) in expected.items():
        ref, got = evals(mats, scale), report.esd(name)
        n = max(max(m.shape) for m in mats)
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=ref.max() * n * eps * 4, err_msg=name)


def one(m):
    return ([m], 1.0)


# --- Gemma (gm.nn): gemma_tree in families_cases.py cites the sources -----------------

def gemma_expected(tree):
    exp = {"embedder/input_embedding": one(tree["embedder"]["input_embedding"])}
    if "mm_input_projection" in tree["embedder"]:
        exp["embedder/mm_input_projection/w"] = one(tree["embedder"]["mm_input_projection"]["w"])
    for name, layer in tree.items():
        if not name.startswith("layer_"):
            continue
        a, p = layer["attn"], f"{name}/attn"
        if "qkv_einsum" in a:
            for j, lab in enumerate("qkv"):  # (3, H, d, D) -> d x H*D each
                exp[f"{p}/qkv_einsum/w[{lab}]"] = one(a["qkv_einsum"]["w"][j].transpose(1, 0, 2).reshape(E, -1))
        else:
            exp[f"{p}/q_einsum/w"] = one(a["q_einsum"]["w"].transpose(1, 0, 2).reshape(E, -1))
            for j, lab in enumerate("kv"):  # (2, K, d, D) -> d x K*D each
                exp[f"{p}/kv_einsum/w[{lab}]"] = one(a["kv_einsum"]["w"][j].transpose(1, 0, 2).reshape(E, -1))
        exp[f"{p}/attn_vec_einsum/w"] = one(a["attn_vec_einsum"]["w"].reshape(H * D, E))
        for j, lab in enumerate(("gate", "up")):
            exp[f"{name}/mlp/gating_einsum[{lab}]"] = one(layer["mlp"]["gating_einsum"][j])
        exp[f"{name}/mlp/linear"] = one(layer["mlp"]["linear"])
    return exp


@pytest.mark.parametrize("kv, transpose_gating, vision", [
    (KV, True, 48),   # Gemma 3: GQA q/kv einsums, gating (2, F, d), multimodal projection
    (H, False, 0),    # Gemma 2 / 7B-style: fused qkv_einsum, gating (2, d, F)
])
@pytest.mark.slow
def test_gemma(kv, transpose_gating, vision):
    tree = gemma_tree(kv=kv, transpose_gating=transpose_gating, vision=vision)
    report = jaxww.analyze(tree)
    check(report, gemma_expected(tree))
    assert {s.kind for s in report.skipped_rows} == {"not_matrix"}  # the 1-D norm scales


def test_gemma_270m_shapes_are_all_read():
    # Gemma3_270M's real shapes, found (not computed): 18 x 7 matrices + the embedding.
    shapes = {"embedder/input_embedding": (262144, 640)}
    for i in range(18):
        shapes |= {f"layer_{i}/attn/q_einsum/w": (4, 640, 256), f"layer_{i}/attn/kv_einsum/w": (2, 1, 640, 256),
                   f"layer_{i}/attn/attn_vec_einsum/w": (4, 256, 640), f"layer_{i}/mlp/gating_einsum": (2, 2048, 640),
                   f"layer_{i}/mlp/linear": (2048, 640), f"layer_{i}/pre_attention_norm/scale": (640,)}
    import jax
    leaves = [jax.ShapeDtypeStruct(s, np.float32) for s in shapes.values()]
    ks, sk = jaxww.find_kernels(list(shapes), leaves, max_N=None)
    assert len(ks) == 127 and {s.kind for s in sk} == {"not_matrix"}
    by = {k.name: k for k in ks}
    assert (by["layer_0/attn/q_einsum/w"].N, by["layer_0/attn/q_einsum/w"].M) == (1024, 640)
    assert (by["layer_0/attn/kv_einsum/w[v]"].N, by["layer_0/attn/kv_einsum/w[v]"].M) == (640, 256)
    assert (by["layer_0/mlp/gating_einsum[gate]"].N, by["layer_0/mlp/gating_einsum[gate]"].M) == (2048, 640)
    _, sk = jaxww.find_kernels(list(shapes), leaves)  # default limits: the vocabulary is left out
    assert [(s.name, s.kind) for s in sk if s.kind == "size_limit"] == [("embedder/input_embedding", "size_limit")]


def test_gemma_einsum_of_the_wrong_shape_is_refused():
    ks, sk = jaxww.find_kernels(["attn/kv_einsum/w"], [arr(3, 2, E, D)])
    assert not ks and "kv_einsum" in sk[0].reason and "layouts=" in sk[0].reason
    # a 2-D leaf under the same module name is a plain dense kernel, as before
    ks, _ = jaxww.find_kernels(["attn/qkv_proj/kernel"], [arr(E, 3 * E)])
    assert [(k.name, k.layout) for k in ks] == [("attn/qkv_proj/kernel", "dense")]


# --- MaxText scanned decoder: maxtext_tree in families_cases.py cites the sources ------

def maxtext_expected(layers, flat):
    exp = {n: one(flat[n]) for n in ("params/token_embedder/embedding", "params/decoder/logits_dense/kernel")}
    for i, lay in enumerate(layers):
        for path, w in lay.items():
            if path.endswith("kernel"):
                m = w.reshape(H * D, E) if "/out/" in path else w.reshape(w.shape[0], -1)
                exp[f"params/decoder/layers/{path}[{i}]"] = one(m)
    return exp


@pytest.mark.slow
@pytest.mark.parametrize("axis, hint", [(1, None), (1, 1), (0, None)])
def test_maxtext_scanned_layers(axis, hint):
    tree, layers, flat = maxtext_tree(axis)
    report = jaxww.analyze(tree, scan_axis=hint)
    check(report, maxtext_expected(layers, flat))


@pytest.mark.slow
def test_maxtext_fused_qkv():
    # scanned at axis 1: qkv_proj (d, L, 3, H, D), out (H, L, D, d), fused mlp wi (d, L, 2, F)
    w, o, wi = arr(E, L, 3, H, D), arr(H, L, D, E), arr(E, L, 2, F)
    tree = {"decoder": {"layers": {"self_attention": {"qkv_proj": {"kernel": w}, "out": {"kernel": o}},
                                   "mlp": {"wi": {"kernel": wi}},
                                   "pre_self_attention_norm": {"scale": arr(E, L)}}}}
    report = jaxww.analyze(tree)
    exp = {f"decoder/layers/self_attention/qkv_proj/kernel[{i}][{lab}]": one(w[:, i, j].reshape(E, -1))
           for i in range(L) for j, lab in enumerate("qkv")}
    exp |= {f"decoder/layers/mlp/wi/kernel[{i}][{j}]": one(wi[:, i, j]) for i in range(L) for j in range(2)}
    check(report, exp | {f"decoder/layers/self_attention/out/kernel[{i}]": one(o[:, i].reshape(H * D, E))
                         for i in range(L)})
    # the norm scale alone cannot tell axis 0 (d) from axis 1 (L): refused, not guessed
    del tree["decoder"]["layers"]["self_attention"]["out"], tree["decoder"]["layers"]["mlp"]
    names, leaves, _ = jaxww.flatten_params(tree)
    ks, sk = jaxww.find_kernels(names, leaves)
    assert not ks and "axes [0, 1]" in {s.name: s.reason for s in sk}[names[1]]


@pytest.mark.parametrize("tree, name", [
    # a single leaf: every axis fits "every leaf of the subtree"
    ({"decoder": {"layers": {"mlp": {"wi_0": {"kernel": arr(E, L, F)}}}}}, "decoder/layers/mlp/wi_0/kernel"),
    # the layer count equals the number of heads and nothing else tells them apart
    ({"layers": {"out": {"kernel": arr(H, H, D, E)}, "o2": {"kernel": arr(H, H, D, E)}}}, "layers/out/kernel"),
])
def test_ambiguous_layer_axis_is_refused_with_the_hint(tree, name):
    names, leaves, _ = jaxww.flatten_params(tree)
    ks, sk = jaxww.find_kernels(names, leaves)
    s = {s.name: s for s in sk}[name]
    assert not [k for k in ks if k.name.startswith(name)]
    assert s.kind == "layout" and "cannot be told apart" in s.reason and "scan_axis=" in s.reason
    ks, _ = jaxww.find_kernels(names, leaves, scan_axis={r"layers/": 1})
    assert sorted(k.name for k in ks if k.name.startswith(name)) == [f"{name}[{i}]" for i in range(leaves[0].shape[1])]


@pytest.mark.parametrize("axis", [0, 1])
def test_unfused_wi_scanned_is_a_stack_not_a_fused_mlp(axis):
    # T5X / MaxText unfused wi (d, F) scanned: (L, d, F) or (d, L, F), next to wo (F, d)
    wi, wo = np.stack([arr(E, F)] * L, axis), np.stack([arr(F, E)] * L, axis)
    tree = {"layers": {"mlp": {"wi": {"kernel": wi}, "wo": {"kernel": wo}}}}
    names, leaves, _ = jaxww.flatten_params(tree)
    ks, _ = jaxww.find_kernels(names, leaves)
    got = {k.name: k for k in ks}
    assert sorted(got) == sorted(f"layers/mlp/{m}/kernel[{i}]" for m in ("wi", "wo") for i in range(L))
    assert got["layers/mlp/wi/kernel[0]"].select == ((axis, 0),)


def test_quantised_leaf_is_skipped_with_a_reason():
    ks, sk = jaxww.find_kernels(["mlp/wi_0/kernel"], [np.ones((E, F), np.int8)])
    assert not ks and sk[0].kind == "dtype" and "dequantise" in sk[0].reason


def test_size_limits_none_means_no_limit():
    names, leaves = ["big/kernel"], [arr(600, 70)]
    _, sk = jaxww.find_kernels(names, leaves, max_N=500, max_evals=60)
    assert sk[0].kind == "size_limit"
    ks, _ = jaxww.find_kernels(names, leaves, max_N=None, max_evals=None)
    assert [k.name for k in ks] == ["big/kernel"]


def test_select_names_the_split_axis_and_index():
    ks, _ = jaxww.find_kernels(["layers/wi_0/kernel"], [arr(E, L, F)], scan_axis=1)
    assert [k.select for k in ks] == [((1, i),) for i in range(L)]
    ks, _ = jaxww.find_kernels(["attn/kv_einsum/w"], [arr(2, KV, E, D)])
    assert [k.select for k in ks] == [((0, 0),), ((0, 1),)]


# --- Keras 3 -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def keras():
    os.environ.setdefault("KERAS_BACKEND", "jax")
    keras = pytest.importorskip("keras", reason="Keras 3 models need keras")
    if keras.backend.backend() != "jax":
        pytest.skip("keras runs on another backend than JAX")
    return keras


@pytest.mark.slow
def test_keras_layers(keras):
    model = keras_layers_model(keras)

    w = {v.path: np.asarray(v.value) for v in model.weights}
    exp = {"embed/embeddings": one(w["embed/embeddings"]), "up/kernel": one(w["up/kernel"]),
           "dense/kernel": one(w["dense/kernel"]),
           "conv1/kernel": (list(w["conv1/kernel"]), 1.0),
           "conv2/kernel": (list(w["conv2/kernel"].reshape(9, 16, 32)), 0.5)}
    for i in range(12):
        exp[f"per_pos/kernel[{i}]"] = one(w["per_pos/kernel"][i])
    for p in ("query", "key", "value"):  # equation abc,cde->abde: (d, H, D) -> d x H*D
        exp[f"mha/{p}/kernel"] = one(w[f"mha/{p}/kernel"].reshape(E, -1))
    exp["mha/attention_output/kernel"] = one(w["mha/attention_output/kernel"].reshape(H * D, E))
    report = jaxww.analyze(model)
    check(report, exp)
    # 1-D biases and norm parameters; the (H, D) biases of MultiHeadAttention by name
    kinds = {s.name: s.kind for s in report.skipped_rows}
    assert {n for n, k in kinds.items() if k != "not_matrix"} == {f"mha/{p}/bias" for p in ("query", "key", "value")}
    assert kinds["mha/query/bias"] == "not_weight" and kinds["bn/moving_mean"] == "not_matrix"
    # describe() lists what analyze read, through the model's own layer readings
    desc = jaxww.describe(model)
    assert [(r["name"], r["shape"], r["rf"]) for r in desc.rows] == \
        [(r["name"], r["shape"], r["rf"]) for r in report.rows]


@pytest.mark.slow
def test_keras_hub_gemma_backbone(keras):
    keras_hub = pytest.importorskip("keras_hub", reason="keras-hub models need keras_hub")
    keras.utils.set_random_seed(0)
    model = keras_hub.models.GemmaBackbone(vocabulary_size=V, num_layers=2, num_query_heads=H,
                                           num_key_value_heads=1, hidden_dim=E, intermediate_dim=2 * F,
                                           head_dim=D)
    w = {v.path: np.asarray(v.value) for v in model.weights}
    exp = {"token_embedding/embeddings": one(w["token_embedding/embeddings"])}
    for i in range(2):
        p = f"decoder_block_{i}"
        # keras_hub gemma_attention.py: query "btd,ndh->btnh" (N, d, H); key/value "bsd,kdh->bskh";
        # attention_output "btnh,nhd->btd"; gemma_decoder_block.py: ffw_gating(_2) "btd,df->btf",
        # ffw_linear "btf,fd->btd".
        for q in ("query", "key", "value"):
            exp[f"{p}/attention/{q}/kernel"] = one(w[f"{p}/attention/{q}/kernel"].transpose(1, 0, 2).reshape(E, -1))
        exp[f"{p}/attention/attention_output/kernel"] = one(w[f"{p}/attention/attention_output/kernel"].reshape(-1, E))
        for n in ("ffw_gating", "ffw_gating_2", "ffw_linear"):
            exp[f"{p}/{n}/kernel"] = one(w[f"{p}/{n}/kernel"])
    check(jaxww.analyze(model), exp)


@pytest.mark.slow
def test_keras_resnet50_reads_every_conv(keras):
    model = keras.applications.ResNet50(weights=None)  # no download
    names, leaves, _ = jaxww.flatten_params(model)
    ks, sk = jaxww.find_kernels(names, leaves, readings=P.model_readings(model))
    convs = [v.path for v in model.weights if v.path.endswith("_conv/kernel")]
    assert len(convs) == 53
    assert sorted(k.name for k in ks) == sorted(convs + ["predictions/kernel"])
    assert all(k.layer_type == "conv2d" for k in ks if k.name != "predictions/kernel")
    assert {s.kind for s in sk} == {"not_matrix"}
    report = jaxww.analyze(model, layers=r"^(conv1_conv|conv2_block1_1_conv)/kernel$")
    w = {v.path: np.asarray(v.value) for v in model.weights}
    check(report, {"conv1_conv/kernel": (list(w["conv1_conv/kernel"].reshape(49, 3, 64)), 0.5),
                   "conv2_block1_1_conv/kernel": ([w["conv2_block1_1_conv/kernel"][0, 0]], 0.5)})


@pytest.mark.parametrize("tree", [gemma_tree(), maxtext_tree(1)[0]], ids=["gemma", "maxtext-axis1"])
def test_numpy_and_jax_leaves_give_the_same_matrices(tree):
    """On the CPU analyze reads NumPy leaves in place; the training plan and the devices
    read jax arrays: both readings of every kernel are the same matrices, bit for bit."""
    import jax.numpy as jnp

    names, leaves, _ = P.flatten_params(tree)
    kerns, _ = K.find_kernels(names, leaves, max_N=None, max_evals=None)
    assert kerns
    for k in kerns:
        from_numpy = k.matrices(leaves[k.leaf])
        assert isinstance(from_numpy, np.ndarray), k.name
        # reshapes and transposes of the same data: copies, exact
        np.testing.assert_array_equal(from_numpy, np.asarray(k.matrices(jnp.asarray(leaves[k.leaf]))))
