"""Quantised (integer) weights read with the scale stored next to them.

An integer weight is analysed only where a documented layout says exactly how its
scale applies; it is then read as the float32 matrix the layer computes with, by the
same reading as a float weight of that name. Every other integer leaf is skipped with
the reason naming what is missing. Layouts:

=========================== ============================================ ==========================
source                      leaves                                       weight read
=========================== ============================================ ==========================
Keras 3 ``Dense`` int8      ``kernel`` int8 ``(in, out)``,               ``kernel / kernel_scale``
                            ``kernel_scale`` ``(out,)``                  (last axis)
Keras ``Dense`` int4, per   ``kernel`` int8 ``(in, ceil(out/2))``, two   ``unpack(kernel) /
channel (``block_size=-1``) int4 per byte; ``kernel_scale`` ``(out,)``   kernel_scale``
Keras ``Dense`` int4, sub-  ``kernel`` packed as above; ``kernel_scale``, ``(unpack(kernel) -
channel (the default)       ``kernel_zero`` ``(groups, out)``; ``g_idx`` zero[g]) * scale[g]``,
                            ``(in,)`` (group of each input row)          ``g = g_idx``
Gemma ``gm`` int4 / int8    ``_IntEinsum_*/kernel`` (``jnp.int4`` /      ``kernel / scale``
(``peft.quantize``)         int8), ``_IntEinsum_*/scale`` of the         (plain broadcasting)
                            kernel's rank
=========================== ============================================ ==========================

``unpack``: byte ``j`` of the last axis holds element ``2j`` in its low and ``2j + 1``
in its high nibble, each a signed 4-bit value; the padding to an even length is
dropped (``out`` is the scale's last size). Symmetric scales divide (they were applied
as ``q = round(w * scale)``); the asymmetric sub-channel scale multiplies.

Sources: keras/src/layers/core/dense.py (Keras 3.15: ``_int8_build``, ``_int4_build``;
``_int8_call`` / ``_int4_call``: ``kernel / kernel_scale`` and
``dequantize_with_sz_map(unpacked, scale, zero, g_idx, group_axis=0)``),
keras/src/quantizers/quantizers.py (``abs_max_quantize``, ``unpack_int4``,
``dequantize_with_sz_map``: ``(w - zero[g]) * scale[g]``); google-deepmind/gemma
gemma/peft/_quantization_utils.py (``uniform_quantize``: ``DQ(x) = x / scale``, the
scale kept with ``keepdims=True``; ``quantize`` stores ``_IntEinsum_<key>/{kernel, scale}``).

Not read, with the reason: ``EinsumDense`` and ``Embedding`` scales (the layer permutes
the scale's axes, or int8 and packed int4 cannot be told apart from shapes), any other
shape of scale, and an integer leaf without a scale.
"""

from __future__ import annotations

import math
import re

import jax.numpy as jnp
import numpy as np

#: Gemma peft: ``<module>/_IntEinsum_0/kernel`` holds ``<module>/w``, ``_IntEinsum_<key>``
#: holds ``<module>/<key>`` (gemma/peft/_quantization_utils.py ``quantize``).
_GEMMA_INT = re.compile(r"(^|[/.])_IntEinsum_(\w+?)[/.]kernel$")


def reading_name(name: str) -> str:
    """The name whose reading a dequantised leaf takes: Gemma's ``q_einsum/_IntEinsum_0/kernel``
    is read as ``q_einsum/w``, ``mlp/_IntEinsum_gating_einsum/kernel`` as ``mlp/gating_einsum``.

    Example:
      >>> reading_name("layer_0/attn/q_einsum/_IntEinsum_0/kernel")
      'layer_0/attn/q_einsum/w'
    """
    m = _GEMMA_INT.search(name)
    if m is None:
        return name
    key = "w" if m.group(2) == "0" else m.group(2)
    return name[: m.start()] + m.group(1) + key


def _sibling(name: str, leaf: str) -> str:
    cut = max(name.rfind("/"), name.rfind("."))
    return name[: cut + 1] + leaf


def _plan(name: str, shape: tuple, shapes: dict):
    """How to dequantise the integer leaf ``name``: ``((scale, [zero, g_idx]) names, kind)``
    (:func:`_dequantized`), or the reason it cannot be."""
    last = re.split(r"[/.]", name)[-1]
    if _GEMMA_INT.search(name):
        scale = _sibling(name, "scale")
        s = shapes.get(scale)
        if s is None:
            return f"no '{scale}' next to this Gemma quantised kernel"
        if len(s) == len(shape) and all(a in (1, b) for a, b in zip(s, shape)):
            return (scale,), "int8"
        return f"scale {s} of '{scale}' does not broadcast against the kernel {shape} (Gemma keeps its rank)"
    if last == "kernel" and _sibling(name, "kernel_scale") in shapes:
        return _keras_dense(name, shape, shapes)
    if last == "embeddings" and _sibling(name, "embeddings_scale") in shapes:
        return ("Keras embeddings with embeddings_scale: int8 (V, d) and packed int4 (V, ceil(d/2)) "
                "cannot be told apart from shapes (analyse the Keras model object)")
    return ("no scale next to it (a Keras 'kernel_scale', a Gemma '_IntEinsum_*/scale'); "
            "dequantise it with its scale first")


def _keras_dense(name: str, shape: tuple, shapes: dict):
    """The plan of a Keras ``Dense`` quantised kernel (see the module docstring)."""
    scale, zero, g_idx = (_sibling(name, x) for x in ("kernel_scale", "kernel_zero", "g_idx"))
    s = shapes[scale]
    if len(shape) != 2:
        return (f"kernel {shape} with kernel_scale {s}: only Keras Dense (2-D kernel) is read from "
                "a tree; EinsumDense permutes its scale's axes")
    packed = math.ceil(s[-1] / 2)
    if zero in shapes or g_idx in shapes:  # sub-channel int4 (Keras's default int4)
        if (len(s) == 2 and shapes.get(zero) == s and shapes.get(g_idx) == (shape[0],)
                and shape[1] == packed and s[-1] > 1):
            return (scale, zero, g_idx), "int4_grouped"
        return (f"sub-channel int4: kernel {shape}, kernel_scale {s}, kernel_zero {shapes.get(zero)}, "
                f"g_idx {shapes.get(g_idx)} do not fit Keras's (in, ceil(out/2)), (groups, out) x 2, (in,)")
    if len(s) != 1:
        return f"kernel_scale {s} of a 2-D kernel without kernel_zero / g_idx: not a Keras layout"
    if s[0] == 1:
        return "kernel_scale (1,): int8 (in, 1) and packed int4 (in, 1) cannot be told apart"
    if shape[1] == s[0]:
        return (scale,), "int8"
    if shape[1] == packed:
        return (scale,), "int4"
    return (f"kernel_scale {s} fits neither Keras int8 (kernel (in, {s[0]})) nor packed int4 "
            f"(kernel (in, {packed})) for the kernel {shape}")


def unpack_int4_last(packed, length: int):
    """Signed int4 pairs packed along the last axis (Keras ``pack_int4``) -> int8, trimmed
    to ``length``: byte ``j`` holds element ``2j`` in its low and ``2j + 1`` in its high nibble.

    Example:
      >>> unpack_int4_last(np.array([[125, 2], [24, 0]], np.int8), 3).tolist()  # Keras's own example
      [[-3, 7, 2], [-8, 1, 0]]
    """
    p = jnp.asarray(packed).astype(jnp.int32) & 0xFF
    nibbles = jnp.stack([p & 0x0F, p >> 4], axis=-1)
    signed = ((nibbles ^ 8) - 8).astype(jnp.int8)
    return signed.reshape(p.shape[:-1] + (-1,))[..., :length]


def dequantize(names: list, leaves: list) -> list:
    """The leaves with every readable integer weight replaced by its float32 dequantised
    value (new arrays: the inputs are not modified); other leaves as they are."""
    shapes = _shapes(names, leaves)
    index = {n: i for i, n in enumerate(names)}
    out = list(leaves)
    for i, (name, leaf) in enumerate(zip(names, leaves)):
        if not _quantised(leaf):
            continue
        plan = _plan(name, tuple(leaf.shape), shapes)
        if isinstance(plan, str):
            continue
        out[i] = _dequantized(leaf, *(jnp.asarray(leaves[index[n]]) for n in plan[0]), kind=plan[1])
    return out


def _dequantized(q, scale, zero=None, g_idx=None, *, kind):
    """float32 weight of an integer ``q`` (see the module docstring for each kind)."""
    scale = scale.astype(jnp.float32)
    if kind == "int8":  # int8 or unpacked int4 (Gemma): q / scale, plain broadcasting
        return jnp.asarray(q).astype(jnp.float32) / scale
    q = unpack_int4_last(q, scale.shape[-1]).astype(jnp.float32)
    if kind == "int4":
        return q / scale
    g = g_idx.astype(jnp.int32)  # int4_grouped: (q - zero[g]) * scale[g], per input row
    return (q - zero[g].astype(jnp.float32)) * scale[g]


def skip_reason(name: str, leaf, names: list, leaves: list) -> tuple[str, str]:
    """``(reason, kind)`` of an integer leaf left out (for :func:`jaxww.find_kernels`):
    kind ``"not_weight"`` for zero points, else ``"dtype"``."""
    last = re.split(r"[/.]", name)[-1]
    if last in ("kernel_zero", "embeddings_zero"):
        return f"'{last}': zero points of a quantised weight, not a weight matrix", "not_weight"
    plan = _plan(name, tuple(leaf.shape), _shapes(names, leaves)) if len(leaf.shape) >= 2 else \
        "not a matrix"
    if isinstance(plan, str):
        return f"{leaf.dtype} leaf: {plan}", "dtype"
    return (f"{leaf.dtype} leaf with its scale '{plan[0][0]}': read the params with "
            "jaxww.reading.params.read_params (as analyze does) to dequantise it"), "dtype"


def _shapes(names, leaves) -> dict:
    return {n: tuple(x.shape) for n, x in zip(names, leaves) if hasattr(x, "shape") and hasattr(x, "dtype")}


def _quantised(leaf) -> bool:
    dtype = getattr(leaf, "dtype", None)
    return dtype is not None and hasattr(leaf, "shape") and len(leaf.shape) >= 2 and _is_int(dtype)


def _is_int(dtype) -> bool:
    return jnp.issubdtype(dtype, jnp.integer)
