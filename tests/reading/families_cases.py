"""Builders of the model families the reading tests share (imported by name:
``from families_cases import gemma_tree``). Each copies its family's exact leaf names and
axis order, with the sources cited; sizes are shrunk where the structure allows."""

from __future__ import annotations

import numpy as np
from flax import nnx

R = np.random.default_rng(7)
E, H, KV, D, F, V, L = 64, 4, 2, 16, 96, 160, 3  # embed, heads, kv heads, head dim, mlp, vocab, layers


def arr(*shape):
    """A float32 array of standard normal values."""
    return R.standard_normal(shape).astype(np.float32)


# --- Gemma (gm.nn) -----------------------------------------------------------------------
# google-deepmind/gemma gemma/gm/nn/_modules.py: Embedder.input_embedding (vocab, d),
# mm_input_projection Einsum (vision_proj_dim, d); Attention q_einsum (H, d, D),
# kv_einsum (2, K, d, D), qkv_einsum (3, H, d, D) when K == H, attn_vec_einsum (H, D, d),
# _query_norm/_key_norm RMSNorm scale; FeedForward gating_einsum (2, F, d) when
# transpose_gating_einsum (Gemma 3) else (2, d, F) (Gemma 2), linear (F, d); Block norms
# pre_attention_norm, post_attention_norm, pre_ffw_norm, post_ffw_norm; _transformer.py:
# layer_{i}, final_norm. Gemma3_270M: 18 layers, d 640, F 2048, H 4, D 256, K 1, vocab 262144.

def gemma_tree(n_layers=2, kv=KV, transpose_gating=True, vision=0):
    tree = {"embedder": {"input_embedding": arr(V, E)}, "final_norm": {"scale": arr(E)}}
    if vision:
        tree["embedder"]["mm_input_projection"] = {"w": arr(vision, E)}
        tree["embedder"]["mm_soft_embedding_norm"] = {"scale": arr(vision)}
    for i in range(n_layers):
        attn = {"attn_vec_einsum": {"w": arr(H, D, E)}, "_query_norm": {"scale": arr(D)},
                "_key_norm": {"scale": arr(D)}}
        if kv == H:
            attn["qkv_einsum"] = {"w": arr(3, H, E, D)}
        else:
            attn["q_einsum"] = {"w": arr(H, E, D)}
            attn["kv_einsum"] = {"w": arr(2, kv, E, D)}
        gating = arr(2, F, E) if transpose_gating else arr(2, E, F)
        tree[f"layer_{i}"] = {
            "attn": attn, "mlp": {"gating_einsum": gating, "linear": arr(F, E)},
            **{n: {"scale": arr(E)} for n in ("pre_attention_norm", "post_attention_norm",
                                              "pre_ffw_norm", "post_ffw_norm")}}
    return tree


# --- MaxText scanned decoder ---------------------------------------------------------------
# AI-Hypercomputer/maxtext src/MaxText/layers: decoders.py scans DecoderLayer as
# decoder/layers with nn.scan(variable_axes={"params": param_scan_axis}) (default 1);
# attentions.py query/key/value DenseGeneral kernel ("embed", heads, "kv") = (d, H, D),
# out ("heads", "kv", "embed") = (H, D, d), fused qkv_proj ("embed", "qkv", "heads", "kv");
# linears.py MlpBlock wi_0/wi_1 ("embed", "mlp"), wo ("mlp", "embed"); norms "scale" (d,);
# embeddings.py token_embedder/embedding (vocab, d); decoder/logits_dense/kernel (d, vocab).

def maxtext_layer():
    """One unscanned layer: {path: array}."""
    return {"self_attention/query/kernel": arr(E, H, D), "self_attention/key/kernel": arr(E, KV, D),
            "self_attention/value/kernel": arr(E, KV, D), "self_attention/out/kernel": arr(H, D, E),
            "mlp/wi_0/kernel": arr(E, F), "mlp/wi_1/kernel": arr(E, F), "mlp/wo/kernel": arr(F, E),
            "pre_self_attention_norm/scale": arr(E), "post_self_attention_norm/scale": arr(E)}


def nest(flat):
    out = {}
    for path, v in flat.items():
        *parents, last = path.split("/")
        d = out
        for p in parents:
            d = d.setdefault(p, {})
        d[last] = v
    return out


def maxtext_tree(axis):
    layers = [maxtext_layer() for _ in range(L)]
    flat = {"params/token_embedder/embedding": arr(V, E), "params/decoder/decoder_norm/scale": arr(E),
            "params/decoder/logits_dense/kernel": arr(E, V)}
    for path in layers[0]:
        flat[f"params/decoder/layers/{path}"] = np.stack([lay[path] for lay in layers], axis=axis)
    return nest(flat), layers, flat


class Block(nnx.Module):
    def __init__(self, rngs):
        self.up = nnx.Linear(64, 128, rngs=rngs)
        self.down = nnx.Linear(128, 64, rngs=rngs)


class Trunk(nnx.Module):
    """The issue's case: an ``nnx.vmap`` stack of Linears under a name that is not
    ``layers``/``blocks`` (kernels ``(4, 64, 128)`` and ``(4, 128, 64)``), and a head."""

    def __init__(self, rngs):
        @nnx.split_rngs(splits=4)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def make(rngs):
            return Block(rngs)

        self.trunk = make(rngs)
        self.head = nnx.Linear(64, 10, rngs=rngs)


class TutorialCNN(nnx.Module):
    """Flax's NNX MNIST tutorial CNN (flax docs, "MNIST tutorial"), 8x8 digits in, with a
    grouped and a depthwise convolution added."""

    def __init__(self, rngs):
        self.conv1 = nnx.Conv(1, 32, kernel_size=(3, 3), rngs=rngs)
        self.conv2 = nnx.Conv(32, 64, kernel_size=(3, 3), rngs=rngs)
        self.grouped = nnx.Conv(64, 64, kernel_size=(3, 3), feature_group_count=4, rngs=rngs)
        self.depthwise = nnx.Conv(64, 64, kernel_size=(3, 3), feature_group_count=64, rngs=rngs)
        self.linear1 = nnx.Linear(64 * 2 * 2, 256, rngs=rngs)
        self.linear2 = nnx.Linear(256, 10, rngs=rngs)


class Scanned(nnx.Module):
    """``nnx.scan``-style stack under ``layers`` (a name the tree rules know)."""

    def __init__(self, rngs):
        @nnx.split_rngs(splits=3)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def make(rngs):
            return nnx.Linear(48, 96, rngs=rngs)

        self.layers = make(rngs)
        self.embed = nnx.Embed(100, 48, rngs=rngs)


class ScanStack(nnx.Module):
    """A stack of ``Block`` built by ``nnx.scan`` (kernels ``(3, 64, 128)`` and ``(3, 128, 64)``
    under ``blocks``; applied with ``nnx.scan`` over ``nnx.Carry`` in flax's scan-over-layers
    pattern), and a head."""

    def __init__(self, rngs):
        @nnx.split_rngs(splits=3)
        @nnx.scan(in_axes=(0,), out_axes=0, length=3)
        def make(rngs):
            return Block(rngs)

        self.blocks = make(rngs)
        self.head = nnx.Linear(64, 10, rngs=rngs)


MODELS = {"trunk": Trunk, "cnn": TutorialCNN, "scanned": Scanned, "scan": ScanStack}


def nnx_model(kind):
    """A :data:`MODELS` module, its weights drawn from a Student-t(3)."""
    model = MODELS[kind](nnx.Rngs(0))
    # Heavier tails than the initialisation, so that every fit has a tail to find.
    rng = np.random.default_rng(1)
    for path, var in nnx.iter_graph(model):
        if isinstance(var, nnx.Param) and var[...].ndim >= 2:
            var[...] = (rng.standard_t(3.0, var[...].shape) / np.sqrt(var[...].shape[-2])).astype(np.float32)
    return model


# --- quantised weights ---------------------------------------------------------------

def abs_max(w, axis, qmax):
    """keras.quantizers.abs_max_quantize: scale = qmax / max|w|, q = clip(round(w * scale))."""
    scale = qmax / (np.max(np.abs(w), axis=axis, keepdims=True) + 1e-7)
    q = np.clip(np.round(w * scale), -qmax - (qmax == 7), qmax)
    return q.astype(np.int8), scale.astype(np.float32)


def pack_last(q):
    """Signed int4 values packed two per byte along the last axis (element 2j low nibble,
    2j + 1 high nibble, padded with 0 to an even length), as keras.quantizers.pack_int4."""
    if q.shape[-1] % 2:
        q = np.concatenate([q, np.zeros(q.shape[:-1] + (1,), q.dtype)], axis=-1)
    lo, hi = q[..., 0::2].astype(np.uint8) & 0x0F, q[..., 1::2].astype(np.uint8) & 0x0F
    return (lo | (hi << 4)).view(np.int8)


def keras_int8_tree(n_in=96, n_out=47):
    """Keras 3 ``Dense.quantize("int8")`` as a tree: ``kernel`` int8 ``(in, out)`` and its
    ``kernel_scale`` ``(out,)`` (keras/src/layers/core/dense.py), beside a float Dense.

    Returns:
      ``(tree, dequantised kernel)``.
    """
    q, scale = abs_max(arr(n_in, n_out), axis=0, qmax=127)
    tree = {"dense": {"kernel": q, "kernel_scale": scale[0], "bias": np.zeros(n_out, np.float32)},
            "head": {"kernel": arr(n_out, 32)}}
    return tree, q / scale


def gemma_int_tree(h=2, d=64, dh=16, f=96):
    """gemma/peft ``quantize``: ``q_einsum/_IntEinsum_0/{kernel, scale}`` int8 (read as
    ``q_einsum/w``, ``(H, d, D)``) and ``mlp/_IntEinsum_linear`` ``jnp.int4`` (read as ``mlp/linear``)."""
    import jax.numpy as jnp

    wq, sq = abs_max(arr(h, d, dh), axis=(1,), qmax=127)
    wl, sl = abs_max(arr(f, d), axis=(0,), qmax=7)
    return {"layer_0": {"attn": {"q_einsum": {"_IntEinsum_0": {"kernel": wq, "scale": sq}}},
                        "mlp": {"_IntEinsum_linear": {"kernel": np.asarray(wl, jnp.int4), "scale": sl}}}}


# --- Flax Linen, PyTorch-style and Keras 3 ---------------------------------------------

def linen_params():
    """``init`` variables of a Linen CNN: ``Conv`` 3x3 (4-D Flax kernel), two ``Dense``,
    ``BatchNorm`` statistics beside the params."""
    import jax
    import jax.numpy as jnp
    from flax import linen as nn

    class CNN(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.BatchNorm(use_running_average=True)(nn.Conv(32, (3, 3))(x))
            x = nn.Dense(64)(x.reshape(x.shape[0], -1))
            return nn.Dense(10)(x)

    return CNN().init(jax.random.key(0), jnp.zeros((1, 6, 6, 8)))


def torch_state_dict():
    """A PyTorch-style state dict as a checkpoint gives it: ``conv.weight`` ``(out, in, k, k)``,
    ``fc.weight`` ``(out, in)``, biases."""
    return {"conv.weight": arr(32, 16, 3, 3), "conv.bias": arr(32), "fc.weight": arr(10, 64),
            "fc.bias": arr(10)}


def keras_layers_model(keras):
    """A Keras 3 functional model with every layer kind ``jaxww.reading.keras`` reads:
    ``Embedding``, ``MultiHeadAttention``, ``EinsumDense`` (one and several matrices),
    ``Dense``, ``Conv1D``, ``Conv2D``, and the normalisations it skips."""
    keras.utils.set_random_seed(0)
    tokens = keras.Input((12,), dtype="int32")
    x = keras.layers.Embedding(V, E, name="embed")(tokens)
    x = keras.layers.MultiHeadAttention(num_heads=H, key_dim=D, name="mha")(x, x)
    x = keras.layers.LayerNormalization(name="ln")(x)
    x = keras.layers.EinsumDense("abc,cd->abd", output_shape=(12, F), name="up")(x)
    x = keras.layers.EinsumDense("abc,bcd->abd", output_shape=(12, 24), name="per_pos")(x)  # one matrix per position
    x = keras.layers.Dense(E, name="dense")(x)
    x = keras.layers.Conv1D(32, 3, name="conv1")(x)
    img = keras.Input((8, 8, 16))
    y = keras.layers.Conv2D(32, 3, name="conv2")(img)
    y = keras.layers.BatchNormalization(name="bn")(y)
    return keras.Model([tokens, img], [x, y])
