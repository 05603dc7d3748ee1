"""Weight matrices from a pytree: which leaves are analysed, and as which matrices.

Every leaf of the tree is either a :class:`Kernel` (one weight matrix, or a stack of
matrices pooled into one spectrum) or a :class:`Skipped` entry saying why not. Names
are the key paths joined with ``/`` (``params/Dense_0/kernel``); a stacked leaf (a
leading layer axis from ``nn.scan`` / ``nnx.vmap``) gives one kernel per index,
named ``path[i]``.

Layouts (conventions section 1):

================== ================================ ===============================
layout             leaf shape                       matrices
================== ================================ ===============================
``dense``          ``(in, out)`` or ``(out, in)``   the leaf
``embedding``      ``(vocab, features)``            the leaf
``conv``           Flax ``(k1, .., kd, in, out)``   ``rf = k1*..*kd`` taps ``(in, out)``
``conv_torch``     PyTorch ``(out, in, k1, .., kd)`` ``rf`` taps ``(out, in)``
``attention_qkv``  ``(in, heads, head_dim)``        ``(in, heads*head_dim)``
``attention_out``  ``(heads, head_dim, out)``       ``(heads*head_dim, out)``
``skip``           anything                         not analysed
================== ================================ ===============================

A ``stacked_`` prefix (``stacked_dense``, ...) adds one leading layer axis.
"""

from __future__ import annotations

import dataclasses
import math
import re
import sys
from typing import Any, Callable, Mapping, NamedTuple, Union

import jax
import jax.numpy as jnp

#: 2-D convolutions: pooled eigenvalues are multiplied by this (reference ``conv2d_norm``).
CONV2D_NORM = 0.5
BASE_LAYOUTS = ("dense", "embedding", "conv", "conv_torch", "attention_qkv", "attention_out")
LAYOUTS = BASE_LAYOUTS + tuple("stacked_" + b for b in BASE_LAYOUTS) + ("skip",)

#: Leaf names that are never weight matrices (normalisation, biases, statistics).
_NOT_WEIGHTS = {"bias", "scale", "mean", "var", "running_mean", "running_var",
                "gamma", "beta", "num_batches_tracked"}
_STACK_HINT = re.compile(r"scan|stack|vmap|repeat|layers|blocks")
_DENSE_HINT = re.compile(r"dense|linear|mlp|proj|fc|ffn")
_CONV_HINT = re.compile(r"conv")

LayoutOverride = Union[Callable[[str, tuple], Any], Mapping[str, str], None]
LayerFilter = Union[str, Callable[[str], bool], None]


class Skipped(NamedTuple):
    """A leaf that was not analysed, and why.

    ``kind`` classifies the reason: ``"size_limit"`` for the size limits of
    :func:`find_kernels` (``min_evals``, ``max_evals``, ``max_N``), else a short tag
    (``"not_array"``, ``"dtype"``, ``"ndim"``, ``"filter"``, ``"layout"``).
    """

    name: str
    shape: tuple
    dtype: str
    reason: str
    kind: str


@dataclasses.dataclass(frozen=True)
class Kernel:
    """One analysed layer: where its weights live and how they become matrices.

    Attributes:
      name: key path joined with ``/`` (plus ``[i]`` for one index of a stack).
      leaf: position of the leaf in ``jax.tree_util.tree_leaves`` of the params.
      index: index along the stacked axis, or None.
      layout: a base layout (see the module docstring).
      layer_type: ``dense``, ``embedding``, ``conv1d``/``conv2d``/``conv3d`` or ``attention``.
      shape: shape of the weight (one slice of a stack).
      N, M: larger and smaller dimension of one matrix.
      rf: number of matrices pooled into the spectrum (convolution taps).
    """

    name: str
    leaf: int
    index: int | None
    layout: str
    layer_type: str
    shape: tuple
    N: int
    M: int
    rf: int

    @property
    def num_evals(self) -> int:
        return self.M * self.rf

    @property
    def Q(self) -> float:
        return self.N / self.M

    @property
    def esd_scale(self) -> float:
        """Factor on the pooled eigenvalues: :data:`CONV2D_NORM` for 2-D convolutions, else 1."""
        return CONV2D_NORM if self.layer_type == "conv2d" else 1.0

    def matrices(self, value) -> jax.Array:
        """The ``(rf, a, b)`` stack of matrices of this kernel, taken from the leaf value."""
        w = jnp.asarray(value)
        if self.index is not None:
            w = w[self.index]
        return _as_matrices(w, self.layout)


def _as_matrices(w, layout):
    if layout in ("dense", "embedding"):
        return w[None]
    if layout == "conv":
        return w.reshape((-1,) + w.shape[-2:])
    if layout == "conv_torch":
        w = w.reshape(w.shape[:2] + (-1,))
        return jnp.moveaxis(w, -1, 0)
    if layout == "attention_qkv":
        return w.reshape(1, w.shape[0], -1)
    if layout == "attention_out":
        return w.reshape(1, -1, w.shape[-1])
    raise ValueError(f"unknown layout {layout!r}")


def _matrix_dims(shape, layout):
    """(a, b, rf) of the matrices of a base layout for a leaf of ``shape``."""
    if layout in ("dense", "embedding"):
        return shape[0], shape[1], 1
    if layout == "conv":
        return shape[-2], shape[-1], math.prod(shape[:-2])
    if layout == "conv_torch":
        return shape[0], shape[1], math.prod(shape[2:])
    if layout == "attention_qkv":
        return shape[0], math.prod(shape[1:]), 1
    return math.prod(shape[:-1]), shape[-1], 1  # attention_out


_MIN_NDIM = {"dense": 2, "embedding": 2, "conv": 3, "conv_torch": 3,
             "attention_qkv": 3, "attention_out": 3}


def _layer_type(layout, ndim):
    if layout in ("conv", "conv_torch"):
        return f"conv{ndim - 2}d"
    if layout.startswith("attention"):
        return "attention"
    return layout


def key_name(key) -> str:
    """One element of a ``jax.tree_util`` key path as a string."""
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def path_name(path) -> str:
    """A key path joined with ``/``; the ``.value`` of an ``nnx.Variable`` is dropped."""
    parts = [key_name(k) for k in path]
    if parts and parts[-1] == "value" and isinstance(path[-1], jax.tree_util.GetAttrKey):
        parts = parts[:-1]
    return "/".join(parts)


def infer_layout(name: str, shape: tuple, module_type: str | None = None) -> str | tuple[str, str]:
    """Guess the layout of a floating-point leaf from its name and shape.

    Returns a layout from :data:`LAYOUTS`, or ``("skip", reason)``.

    Rules, in order: biases, scales and statistics are skipped; ``embedding`` leaves
    are embeddings; a ``kernel`` under ``query``/``key``/``value`` is an attention
    input projection and under ``out`` an output projection; a ``kernel`` under a
    module named like a dense layer is dense; 3-5-D ``kernel`` leaves are Flax
    convolutions; 3-5-D ``weight`` leaves are PyTorch convolutions. One extra leading
    axis beyond the layout's rank, under a module named like ``scan``, ``layers``,
    ``blocks``... (or any dense/attention kernel) is a stack of layers.

    ``module_type`` (the class name of the ``nnx`` module owning the leaf, when known)
    settles the ambiguous cases: an ``nnx.Linear`` kernel with a leading axis is a
    stack of dense layers (``nnx.vmap``), an ``nnx.Conv`` kernel a convolution.
    """
    parts = [p.lower() for p in re.split(r"[/.]", name)]
    last = parts[-1]
    module = parts[-2] if len(parts) > 1 else ""
    outer = "/".join(parts[:-2])
    ndim = len(shape)
    if last in _NOT_WEIGHTS or last.endswith("bias"):
        return ("skip", f"'{last}' is a bias / normalisation parameter, not a weight matrix")
    stacked = bool(_STACK_HINT.search(outer)) or bool(_STACK_HINT.search(module))
    if module_type in ("Linear", "Embed") and ndim == 3:
        module, stacked = "linear", True
    elif module_type in ("Conv", "ConvTranspose"):
        module = "conv"
    if "embed" in last:
        base = "embedding"
    elif last == "kernel" and module in ("query", "key", "value") and ndim >= 3:
        base = "attention_qkv"
    elif last == "kernel" and module == "out" and ndim >= 3:
        base = "attention_out"
    elif ndim == 2:
        base = "embedding" if "embed" in name.lower() else "dense"
    elif last == "kernel" and _DENSE_HINT.search(module) and not _CONV_HINT.search(module):
        base, stacked = "dense", True
    elif last == "kernel" and stacked and not _CONV_HINT.search(module):
        base = "dense"
    elif last == "kernel" and ndim <= 5:
        base, stacked = "conv", False
    elif last == "weight" and ndim <= 5:
        base, stacked = "conv_torch", False
    else:
        return ("skip", f"layout of a {ndim}-D leaf named '{last}' is ambiguous; "
                        "pass layouts={pattern: layout} to analyse it")
    extra = ndim - _MIN_NDIM[base]
    if base in ("conv", "conv_torch"):
        extra = 0
    if extra == 0:
        return base
    if extra == 1 and stacked:
        return "stacked_" + base
    return ("skip", f"{ndim}-D leaf does not fit layout '{base}'; pass layouts= to say how to read it")


def _override(layouts: LayoutOverride, name: str, shape: tuple):
    if layouts is None:
        return None
    if callable(layouts):
        return layouts(name, shape)
    for pattern, layout in layouts.items():
        if re.search(pattern, name):
            return layout
    return None


def _selected(layers: LayerFilter, name: str) -> bool:
    if layers is None:
        return True
    if callable(layers):
        return bool(layers(name))
    return re.search(layers, name) is not None


def flatten_params(params):
    """``(names, leaves, treedef)`` of a params pytree, an ``nnx.Module`` or ``nnx.State``."""
    nnx = sys.modules.get("flax.nnx")  # an nnx.Module can only exist once flax.nnx is imported
    if nnx is not None and isinstance(params, nnx.Module):
        params = nnx.state(params, nnx.Param)
    flat, treedef = jax.tree_util.tree_flatten_with_path(params)
    names = [path_name(p) for p, _ in flat]
    return names, [leaf for _, leaf in flat], treedef


def module_types(params) -> list | None:
    """Class name of the ``nnx`` module owning each leaf of ``nnx.state(params, nnx.Param)``.

    None for anything but an ``nnx.Module`` (plain pytrees carry no module types).
    """
    nnx = sys.modules.get("flax.nnx")
    if nnx is None or not isinstance(params, nnx.Module):
        return None
    owners = {tuple(str(k) for k in path): type(node).__name__
              for path, node in nnx.iter_graph(params) if isinstance(node, nnx.Module)}
    flat, _ = jax.tree_util.tree_flatten_with_path(nnx.state(params, nnx.Param))
    types = []
    for path, _ in flat:
        keys = tuple(key_name(k) for k in path)
        if keys and keys[-1] == "value":
            keys = keys[:-1]
        types.append(owners.get(keys[:-1]))
    return types


def find_kernels(
    names, leaves, *, layers: LayerFilter = None, layouts: LayoutOverride = None,
    min_evals: int = 8, max_evals: int | None = 15000, max_N: int | None = 50000, types=None,
):
    """Classify every leaf: the kernels to analyse and the skipped leaves with reasons.

    Args:
      names, leaves: as returned by :func:`flatten_params`.
      layers: keep only layers whose name matches this regex (``re.search``) or for
        which this callable returns True.
      layouts: override of :func:`infer_layout`: a callable ``(name, shape) -> layout
        or None`` or a mapping ``{regex: layout}`` (first match wins).
      min_evals, max_evals: keep a layer when ``min_evals <= M * rf <= max_evals``
        (``max_evals=None``: no upper limit).
      max_N: keep a layer when ``N <= max_N`` (None: no limit).
      types: per leaf, the owning module's class name or None (:func:`module_types`).

    Returns:
      ``(kernels, skipped)``: lists of :class:`Kernel` and :class:`Skipped`.
    """
    kernels, skipped = [], []
    for i, (name, leaf) in enumerate(zip(names, leaves)):
        shape = tuple(getattr(leaf, "shape", ()))
        dtype = getattr(leaf, "dtype", None)

        def skip(reason, kind, _name=name, _shape=shape):
            skipped.append(Skipped(_name, _shape, str(dtype) if dtype is not None else type(leaf).__name__,
                                   reason, kind))

        if dtype is None or not hasattr(leaf, "shape"):
            skip(f"not an array ({type(leaf).__name__})", "not_array")
            continue
        if not jnp.issubdtype(dtype, jnp.floating):
            skip(f"{dtype} leaf: only floating-point weights are analysed (dequantise int8 first)", "dtype")
            continue
        if len(shape) < 2:
            skip(f"{len(shape)}-D leaf: not a matrix", "ndim")
            continue
        if not _selected(layers, name):
            skip("excluded by the layers filter", "filter")
            continue
        layout = _override(layouts, name, shape) or infer_layout(
            name, shape, None if types is None else types[i])
        if isinstance(layout, tuple):
            skip(layout[1], "layout")
            continue
        if layout not in LAYOUTS:
            raise ValueError(f"layout {layout!r} for {name} is not one of {LAYOUTS}")
        if layout == "skip":
            skip("skipped by the layouts override", "layout")
            continue
        base = layout.removeprefix("stacked_")
        stacked = base != layout
        inner = shape[1:] if stacked else shape
        if len(inner) < _MIN_NDIM[base] or (base not in ("conv", "conv_torch") and len(inner) != _MIN_NDIM[base]):
            skip(f"shape {shape} does not fit layout '{layout}'", "layout")
            continue
        a, b, rf = _matrix_dims(inner, base)
        N, M = max(a, b), min(a, b)
        for idx in (range(shape[0]) if stacked else [None]):
            kname = name if idx is None else f"{name}[{idx}]"
            if M * rf < min_evals:
                skip(f"num_evals {M * rf} < min_evals {min_evals}", "size_limit", kname, inner)
            elif max_evals is not None and M * rf > max_evals:
                skip(f"num_evals {M * rf} > max_evals {max_evals}", "size_limit", kname, inner)
            elif max_N is not None and N > max_N:
                skip(f"N {N} > max_N {max_N}", "size_limit", kname, inner)
            else:
                kernels.append(Kernel(kname, i, idx, base, _layer_type(base, len(inner)),
                                      inner, N, M, rf))
    return kernels, skipped
