"""Keras 3 models: their weights by variable path, and how each layer's code reads them.

``jaxww.analyze(model)`` on a Keras model or layer reads ``{variable.path: value}``
(on the JAX backend the values are the model's own ``jax.Array``; nothing is copied
or modified). Each variable is read the way its owning layer uses it:

=============================== ============================= =============================
layer                           variable                      matrices
=============================== ============================= =============================
``Dense``                       ``kernel`` ``(in, out)``      the kernel
``EinsumDense``                 ``kernel``                    from the equation: kernel axes
                                                              contracted with the input x
                                                              kernel axes in the output, one
                                                              matrix per axis in both
``Conv1D/2D/3D`` (+Transpose)   ``kernel`` ``(k.., in, out)`` one ``(in, out)`` per tap
``Embedding`` (and keras-hub    ``embeddings``,               the table
``ReversibleEmbedding``)        ``reverse_embeddings``
``*Normalization``              all                           skipped
``Conv*`` with ``groups > 1``    ``kernel``                    per tap and group, pooled
depthwise / separable           ``kernel``                    skipped (per-channel filters)
=============================== ============================= =============================

``MultiHeadAttention`` owns ``EinsumDense`` layers (query/key/value ``(d, H, D)`` ->
``d x H*D``, output ``(H, D, d)`` -> ``H*D x d``), read as above. Variables of other
layers are read by name like any pytree leaf.
"""

from __future__ import annotations

import keras

from jaxww.reading.layouts import Reading, Skip, conv_reading, layout_reading

_CONVS = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
          keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose)
_PER_CHANNEL = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D,
                keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)


def _owned(model):
    """``[(path, variable, owning layer)]`` for every variable of ``model``, paths unique."""
    out, seen, paths = [], set(), set()
    # Keras 3 has no public walk of nested layers; ``_flatten_layers`` is the one its
    # own ``Layer.weights`` uses.
    for layer in model._flatten_layers(include_self=True, recursive=True):
        for v in list(layer._trainable_variables) + list(layer._non_trainable_variables):
            if id(v) in seen:
                continue
            seen.add(id(v))
            path, k = v.path, 1
            while path in paths:
                path, k = f"{v.path}#{k}", k + 1
            paths.add(path)
            out.append((path, v, layer))
    return out


def values(model) -> dict:
    """``{variable.path: value}`` of a Keras model (the backend's arrays, as they are)."""
    jax_backend = keras.backend.backend() == "jax"
    return {p: (v.value if jax_backend else keras.ops.convert_to_numpy(v)) for p, v, _ in _owned(model)}


def readings(model) -> dict:
    """``{variable.path: Reading, Skip or None}``: how each variable's layer uses it."""
    return {p: _reading(layer, p.rsplit("/", 1)[-1].split("#")[0], tuple(v.shape)) for p, v, layer in _owned(model)}


def einsum_reading(equation: str, ndim: int) -> Reading | Skip:
    """The reading of an ``EinsumDense`` kernel from its equation ``"inp,kernel->out"``.

    Kernel axes also in the input but not the output are contracted (the matrix rows),
    axes in the output but not the input are produced (the columns), axes in both index
    separate matrices (``[i]``).

    Example:
      >>> einsum_reading("abc,cde->abde", 3)  # MultiHeadAttention query (d, H, D): d x H*D
      Reading(layout='einsum', layer_type='dense', rows=(0,), cols=(1, 2), taps=(), splits=(), view=None)
    """
    lhs, out = equation.replace("...", "").split("->")
    inp, ker = lhs.split(",")
    if len(ker) != ndim or len(set(ker)) != ndim:
        return Skip(f"EinsumDense equation {equation!r} does not describe a {ndim}-D kernel")
    rows = tuple(i for i, c in enumerate(ker) if c in inp and c not in out)
    cols = tuple(i for i, c in enumerate(ker) if c in out and c not in inp)
    splits = tuple((i, None) for i, c in enumerate(ker) if c in inp and c in out)
    if not rows or not cols or len(rows) + len(cols) + len(splits) != ndim:
        return Skip(f"EinsumDense equation {equation!r}: the kernel is not a linear map from "
                     "input to output axes (an axis summed alone, or no input/output side)")
    return Reading("einsum", "dense", rows, cols, splits=splits)


def _reading(layer, attr: str, shape: tuple):
    cls, ndim = type(layer).__name__, len(shape)
    if "Normalization" in cls or cls.endswith("Norm"):
        return Skip(f"'{attr}' of normalisation layer {cls}, not a weight matrix", "not_weight")
    if isinstance(layer, _PER_CHANNEL):
        return Skip(f"{cls} kernels are per-channel filters, not weight matrices", "not_weight")
    if attr != "kernel" and not isinstance(layer, keras.layers.Embedding):
        return None
    if isinstance(layer, keras.layers.EinsumDense):
        return einsum_reading(layer.equation, ndim)
    if isinstance(layer, keras.layers.Dense):
        layout = "dense"
    elif isinstance(layer, _CONVS):
        if ndim < 3:
            return Skip(f"{ndim}-D '{attr}' of {cls} does not fit layout 'conv'")
        groups = getattr(layer, "groups", 1)
        return conv_reading(shape[:-2], shape[-2] * groups, shape[-1], groups)
    elif isinstance(layer, keras.layers.Embedding) and attr in ("embeddings", "reverse_embeddings"):
        layout = "embedding"
    else:
        return None
    return layout_reading(layout, ndim) or Skip(f"{ndim}-D '{attr}' of {cls} does not fit layout '{layout}'")
