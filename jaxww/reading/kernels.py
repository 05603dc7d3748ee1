"""Weight matrices from a pytree: which leaves are analysed, and as which matrices.

Every leaf of the tree is either read as one or more :class:`Kernel` (one weight
matrix, or the taps of a convolution pooled into one spectrum) or is a
:class:`Skipped` entry saying why not. Names are the key paths joined with ``/``
(``params/Dense_0/kernel``). How a leaf becomes matrices (its :class:`Reading`) is
decided by :mod:`jaxww.reading.layouts`, by a Keras model's own layers
(:mod:`jaxww.reading.keras`) or by ``layouts=``.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
import sys
from typing import Callable, Mapping, NamedTuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from jaxww.defaults import MAX_EVALS, MAX_N, MIN_EVALS
from jaxww.reading import quant as _quant
from jaxww.reading.checkpoints import from_torch
from jaxww.reading.layouts import (  # noqa: F401  (Reading, LAYOUTS, infer_layout: part of this module's API)
    CONV2D_NORM, LAYOUTS, SCAN_HINT, Ambiguous, LayoutOverride, exact_pattern, Reading, ScanAxis, Skip, infer_layout,
    layer_axis, layout_reading, name_rule, override, reading_fits, scan_hint, split_sizes_fit,
)

LayerFilter = Union[str, Callable[[str], bool], None]


class Skipped(NamedTuple):
    """A leaf (or one slice of it) that was not analysed, and why.

    ``kind`` classifies the reason: ``"size_limit"`` (``min_evals``, ``max_evals``,
    ``max_N``), ``"not_array"``, ``"dtype"``, ``"not_matrix"``, ``"not_weight"``
    (biases, normalisation), ``"filter"`` (``layers=``), ``"override"`` (``layouts=``
    said skip), ``"lora"`` (a LoRA factor, analysed only as a pair: ``analyze(lora=...)``),
    ``"optimizer"`` (optimizer state: under ``opt_state``, optax's ``mu``/``nu``)
    or ``"layout"`` (the layout cannot be told apart; the reason has the hint).
    """

    name: str
    shape: tuple
    dtype: str
    reason: str
    kind: str = "layout"


@dataclasses.dataclass(frozen=True)
class Kernel:
    """One analysed layer: where its weights live and how they become matrices.

    Attributes:
      name: key path joined with ``/`` (plus ``[i]`` / ``[label]`` per split axis).
      leaf: position of the leaf in ``jax.tree_util.tree_leaves`` of the params.
      layout: the reading's name (see :class:`Reading`).
      layer_type: ``dense``, ``embedding``, ``conv1d``/``conv2d``/``conv3d`` or ``attention``.
      shape: shape of the weight without its split axes.
      N, M: larger and smaller dimension of one matrix.
      rf: number of matrices pooled into the spectrum (convolution taps).
      select: ``((axis, index), ...)``: the leaf's split axes and this kernel's index on each.
      rows, cols, taps: axes of the leaf forming the matrices (see :class:`Reading`).
      view: the shape the leaf is reshaped to first (None: its own; see :class:`Reading`).
    """

    name: str
    leaf: int
    layout: str
    layer_type: str
    shape: tuple
    N: int
    M: int
    rf: int
    select: tuple = ()
    rows: tuple = (0,)
    cols: tuple = (1,)
    taps: tuple = ()
    view: tuple | None = None

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
        """The ``(rf, a, b)`` stack of matrices of this kernel, taken from the leaf value
        (a NumPy array stays one: views where the layout allows)."""
        w = value if isinstance(value, np.ndarray) else jnp.asarray(value)
        if self.view is not None:
            w = w.reshape(self.view)
        for axis, i in self.select:
            w = w[(slice(None),) * axis + (slice(i, i + 1),)]
        a = math.prod(w.shape[r] for r in self.rows)
        b = math.prod(w.shape[c] for c in self.cols)
        fixed = tuple(ax for ax, _ in self.select)
        return w.transpose(self.taps + self.rows + self.cols + fixed).reshape(self.rf, a, b)

    def put(self, value, mats) -> jax.Array:
        """The leaf value with this kernel's matrices replaced by ``mats``: the inverse of
        :meth:`matrices` (``k.put(v, k.matrices(v))`` is ``v``; cast to ``v``'s dtype).

        Args:
          value: the leaf value.
          mats: an ``(rf, a, b)`` stack, the shape :meth:`matrices` returns.
        """
        w = jnp.asarray(value)
        if self.view is not None:
            return dataclasses.replace(self, view=None).put(w.reshape(self.view), mats).reshape(w.shape)
        sub = w.shape
        start = [0] * w.ndim
        for axis, i in self.select:
            sub = sub[:axis] + (1,) + sub[axis + 1:]
            start[axis] = i
        order = self.taps + self.rows + self.cols + tuple(ax for ax, _ in self.select)
        block = jnp.reshape(mats, tuple(sub[a] for a in order))
        block = jnp.transpose(block, tuple(order.index(a) for a in range(w.ndim)))
        return jax.lax.dynamic_update_slice(w, block.astype(w.dtype), start)


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


def _selected(layers: LayerFilter, name: str) -> bool:
    if layers is None:
        return True
    if callable(layers):
        return bool(layers(name))
    return re.search(layers, name) is not None


def param_tree(params):
    """The pytree of params: an ``nnx.Module``'s ``nnx.Param`` state, a Keras 3 model's
    ``{variable.path: value}``, a training state's ``params`` (Flax ``TrainState``, or any
    object with ``params`` and ``opt_state``), else ``params`` itself.

    Raises:
      TypeError: an ``nnx.Optimizer`` without its model (flax >= 0.11 keeps none).
    """
    module = _nnx_module(params)
    if module is not None:
        return sys.modules["flax.nnx"].state(module, sys.modules["flax.nnx"].Param)
    if _keras_model(params):
        from jaxww.reading import keras as _keras
        return _keras.values(params)
    if hasattr(params, "params") and hasattr(params, "opt_state"):
        return params.params
    return params


#: Path components of optimizer state: Flax ``TrainState.opt_state`` and ``nnx.Optimizer.opt_state``
#: (optax's ``trace``, ``ema``... inside them), and optax's Adam moments ``mu``/``nu`` wherever
#: they are. A top-level ``ema`` copy of the params is weights, and is analysed.
_OPTIMIZER = {"opt_state", "mu", "nu"}


def _optimizer_part(name: str) -> str | None:
    """The optimizer-state component of a leaf name, or None."""
    return next((p for p in re.split(r"[/.]", name) if p in _OPTIMIZER), None)


def _wrapped(paths) -> set:
    """Indices of leaves saved inside an NNX variable wrapper: the only key of their dict is
    ``value`` or ``raw_value`` (``nnx.state`` through Orbax, msgpack or ``to_pure_dict``
    without unwrapping); their names drop that key, as a live module's do."""
    parents: dict = {}
    for i, path in enumerate(paths):
        parents.setdefault(tuple(path[:-1]), []).append(i)
    return {i for i, path in enumerate(paths) if len(path) > 1
            and isinstance(path[-1], jax.tree_util.DictKey) and path[-1].key in ("value", "raw_value")
            and len(parents[tuple(path[:-1])]) == 1}


def flatten_params(params):
    """``(names, leaves, treedef)`` of a params pytree, an ``nnx.Module``, an ``nnx.State``
    or a Keras 3 model / layer (``{variable.path: value}``)."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(param_tree(params))
    wrapped = _wrapped([p for p, _ in flat])
    names = [path_name(p[:-1] if i in wrapped else p) for i, (p, _) in enumerate(flat)]
    return names, [from_torch(leaf) for _, leaf in flat], treedef


def natural_key(name: str) -> tuple:
    """Sort key of a name with its numbers compared as numbers (``Dense_2`` before
    ``Dense_10``, ``layers.2`` before ``layers.10``).

    Example:
      >>> sorted(["layers.10.w", "layers.2.w", "Dense_10", "Dense_2"], key=natural_key)
      ['Dense_2', 'Dense_10', 'layers.2.w', 'layers.10.w']
    """
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name) if t)


def model_order(params) -> list[int]:
    """The rank of each leaf of :func:`flatten_params` in the model's order.

    An ``nnx.Module``'s attributes are taken in the order the module set them; a
    mapping's keys in their own order (the order a Flax module or a Keras model created
    its variables) unless that order is the plain string order (as ``jax.tree_util``
    flattening, JSON indexes and most checkpoint writers leave it): then by
    :func:`natural_key`. Sequences keep their order.

    Example:
      >>> names, _, _ = flatten_params({"Dense_10": {"kernel": 0}, "Dense_2": {"kernel": 0}})
      >>> names, model_order({"Dense_10": {"kernel": 0}, "Dense_2": {"kernel": 0}})
      (['Dense_10/kernel', 'Dense_2/kernel'], [1, 0])
    """
    names, _, _ = flatten_params(params)
    ordered: list[str] = []
    nnx = sys.modules.get("flax.nnx")

    def walk(node, prefix):
        if nnx is not None and isinstance(node, nnx.Variable):
            ordered.append("/".join(prefix))
        elif nnx is not None and isinstance(node, nnx.Module):
            for k, v in vars(node).items():
                if not k.startswith("_"):
                    walk(v, prefix + (k,))
        elif isinstance(node, Mapping) and list(node) in (["value"], ["raw_value"]) and prefix:
            walk(next(iter(node.values())), prefix)   # an NNX variable wrapper (_wrapped)
        elif isinstance(node, Mapping) and node:
            keys = list(node.keys())
            if [str(k) for k in keys] == sorted(str(k) for k in keys):
                keys = sorted(keys, key=lambda k: natural_key(str(k)))
            for k in keys:
                walk(node[k], prefix + (str(k),))
        elif isinstance(node, (list, tuple)) and node and not hasattr(node, "_fields"):
            for i, v in enumerate(node):
                walk(v, prefix + (str(i),))
        else:   # a leaf or another kind of node: its own leaves in natural order
            sub = sorted(flatten_params(node)[0], key=natural_key)
            ordered.extend("/".join(prefix + ((n,) if n else ())) for n in sub)

    walk(params if nnx is not None and isinstance(params, nnx.Module) else param_tree(params), ())
    rank = {n: i for i, n in enumerate(ordered)}
    order = sorted(range(len(names)), key=lambda i: (rank.get(names[i], len(rank)), natural_key(names[i])))
    out = [0] * len(names)
    for r, i in enumerate(order):
        out[i] = r
    return out


def read_params(params):
    """:func:`flatten_params` with quantised weights dequantised where their scale is in
    the tree (``jaxww/reading/quant.py``, ``docs/families.md``): what :func:`jaxww.analyze` reads.

    Example:
      >>> import numpy as np
      >>> q = {"dense": {"kernel": np.array([[127, -64], [0, 127]], np.int8),
      ...                "kernel_scale": np.array([127.0, 64.0], np.float32)}}
      >>> np.asarray(read_params(q)[1][0]).tolist()  # Keras int8 Dense: kernel / kernel_scale
      [[1.0, -1.0], [0.0, 1.984375]]
    """
    names, leaves, treedef = flatten_params(params)
    return names, _quant.dequantize(names, leaves), treedef


def model_layouts(model) -> dict:
    """The readings a live model's configuration gives its weights, as ``layouts=``: what a
    tree of the same weights (its ``nnx.state``, a checkpoint of it, the params an optax
    transform sees) lacks to be read as the model is.

    ``{"^name$": Reading or Skip}`` for every weight that an ``nnx.Module``'s
    ``Linear``/``Embed``/``Conv``... (:mod:`jaxww.reading.nnx`) or a Keras model's layers
    (:mod:`jaxww.reading.keras`) read; ``{}`` for a plain pytree.

    Example:
      >>> from flax import nnx
      >>> conv = nnx.Conv(16, 64, (3, 3), feature_group_count=4, rngs=nnx.Rngs(0))
      >>> import jaxww
      >>> r = jaxww.analyze(nnx.state(conv), layouts=jaxww.model_layouts(conv))  # per group
    """
    names, _, _ = flatten_params(model)
    return {exact_pattern(n): r for n, r in zip(names, model_readings(model) or ()) if r is not None}


def model_readings(params) -> list | None:
    """Per leaf of :func:`flatten_params`, the :class:`Reading` (or :class:`Skip`) that the
    model's own configuration gives (a Keras model's layers, :mod:`jaxww.reading.keras`; an
    ``nnx.Module``'s ``Linear``/``Embed``/``Conv``..., :mod:`jaxww.reading.nnx`), or None
    where it says nothing; None for a plain pytree, which carries no configuration."""
    if _keras_model(params):
        from jaxww.reading import keras as _keras
        by_path = _keras.readings(params)
    elif _nnx_module(params) is not None:
        from jaxww.reading import nnx as _nnx
        by_path = _nnx.readings(_nnx_module(params))
    else:
        return None
    names, _, _ = flatten_params(params)
    return [by_path.get(n) for n in names]


def _nnx_module(params):
    """The ``nnx.Module`` that ``params`` is or holds (an ``nnx.Optimizer``'s model), or None.

    Raises:
      TypeError: an ``nnx.Optimizer`` without its model (flax >= 0.11 keeps none).
    """
    nnx = sys.modules.get("flax.nnx")  # an nnx.Module can only exist once flax.nnx is imported
    if nnx is None:
        return None
    if isinstance(params, nnx.Optimizer):
        if getattr(params, "model", None) is None:
            raise TypeError("an nnx.Optimizer holds the optimizer state, not the model's weights: "
                            "pass the model itself, e.g. analyze(model)")
        params = params.model
    return params if isinstance(params, nnx.Module) else None


def _keras_model(params) -> bool:
    keras = sys.modules.get("keras")  # a Keras layer can only exist once keras is imported
    return keras is not None and isinstance(params, keras.layers.Layer)


def _reading(i, name, shape, *, layouts, readings, scan_axis, shapes):
    """The :class:`Reading` of leaf ``i``, or a :class:`Skip`: the ``layouts=`` override,
    else the model's own code (``readings``), else the name rules with the layer axis
    found by :func:`layer_axis` (an :class:`Ambiguous` leaf is a stack only where
    ``scan_axis`` covers it)."""
    over = override(layouts, name, shape)
    if isinstance(over, Skip):
        return over
    if isinstance(over, Reading):
        return over if reading_fits(over, shape) else Skip(f"shape {shape} does not fit the reading {over}")
    if over is not None:
        if not isinstance(over, str) or over not in LAYOUTS:
            raise ValueError(f"layout {over!r} for {name} is not one of {LAYOUTS} (or a Reading)")
        if over == "skip":
            return Skip("skipped by the layouts override", "override")
        base = over.removeprefix("stacked_")
        stacked = base != over
        r = layout_reading(base, len(shape) - stacked)
        if r is None:
            return Skip(f"shape {shape} does not fit layout '{over}'")
        return r.with_layer_axis(0) if stacked else r
    if readings is not None and readings[i] is not None:
        return readings[i]
    got = name_rule(name, shape)
    if isinstance(got, Ambiguous):
        if scan_hint(scan_axis, name) is None:
            return Skip(got.reason)
        got = (got.stacked, True)
    if isinstance(got, Skip):
        return got
    reading, stacked = got
    if not stacked:
        return reading
    axis = layer_axis(name, shape, scan_axis, shapes)
    if isinstance(axis, Skip):
        return axis
    if not split_sizes_fit(reading, shape[:axis] + shape[axis + 1:]):
        return Skip(f"with its layer axis {axis} removed, {shape} does not fit the einsum of "
                     f"'{name}'; {SCAN_HINT}")
    return reading.with_layer_axis(axis)


def _slices(name: str, shape: tuple, r: Reading):
    """``(name, select)`` of every kernel of a leaf read by ``r`` (one per split index)."""
    axes = [a for a, _ in r.splits]
    for idx in itertools.product(*(range(shape[a]) for a in axes)):
        label = "".join(f"[{j if lab is None else lab[j]}]" for (_, lab), j in zip(r.splits, idx))
        yield name + label, tuple(zip(axes, idx))


def find_kernels(
    names, leaves, *, layers: LayerFilter = None, layouts: LayoutOverride = None,
    min_evals: int = MIN_EVALS, max_evals: int | None = MAX_EVALS, max_N: int | None = MAX_N,
    readings=None, scan_axis: ScanAxis = None,
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
      readings: per leaf, the :class:`Reading` the model's code gives, or None
        (:func:`model_readings`).
      scan_axis: position of the layer axis of stacked leaves (scanned layers): an int,
        or ``{regex: int}`` per leaf name; default: found from the scanned subtree.

    Returns:
      ``(kernels, skipped)``: lists of :class:`Kernel` and :class:`Skipped`.

    Example:
      >>> import numpy as np
      >>> ks, _ = find_kernels(["attn/kv_einsum/w"], [np.zeros((2, 1, 64, 16), np.float32)])
      >>> [(k.name, k.N, k.M) for k in ks]
      [('attn/kv_einsum/w[k]', 64, 16), ('attn/kv_einsum/w[v]', 64, 16)]
    """
    shapes = {n: tuple(leaf.shape) for n, leaf in zip(names, leaves)
              if hasattr(leaf, "shape") and hasattr(leaf, "dtype") and len(leaf.shape) >= 1}
    kernels, skipped = [], []
    for i, (name, leaf) in enumerate(zip(names, leaves)):
        shape = tuple(getattr(leaf, "shape", ()))
        dtype = getattr(leaf, "dtype", None)
        dname = str(dtype) if dtype is not None else type(leaf).__name__

        def skip(reason, kind, _name=name, _shape=shape):
            skipped.append(Skipped(_name, _shape, dname, reason, kind))

        if dtype is None or not hasattr(leaf, "shape"):
            skip(f"not an array ({type(leaf).__name__})", "not_array")
            continue
        part = _optimizer_part(name)
        if part is not None:
            skip(f"optimizer state ('{part}'), not a weight of the model", "optimizer")
            continue
        if jnp.issubdtype(dtype, jnp.integer):
            skip(*_quant.skip_reason(name, leaf, names, leaves))
            continue
        if not jnp.issubdtype(dtype, jnp.floating):
            skip(f"{dtype} leaf: only floating-point weights are analysed", "dtype")
            continue
        if len(shape) < 2:
            skip(f"{len(shape)}-D leaf: not a matrix", "not_matrix")
            continue
        if 0 in shape:
            skip(f"empty leaf {shape}", "not_matrix")
            continue
        if not _selected(layers, name):
            skip("excluded by the layers filter", "filter")
            continue
        r = _reading(i, name, shape, layouts=layouts, readings=readings, scan_axis=scan_axis, shapes=shapes)
        if isinstance(r, Skip):
            skip(r.reason, r.kind)
            continue
        view = shape if r.view is None else r.view
        split = {a for a, _ in r.splits}
        inner = tuple(s for a, s in enumerate(view) if a not in split)
        a, b = math.prod(view[x] for x in r.rows), math.prod(view[x] for x in r.cols)
        rf = math.prod(view[x] for x in r.taps)
        N, M = max(a, b), min(a, b)
        for kname, select in _slices(name, view, r):
            if M * rf < min_evals:
                skip(f"num_evals {M * rf} < min_evals {min_evals}", "size_limit", kname, inner)
            elif max_evals is not None and M * rf > max_evals:
                skip(f"num_evals {M * rf} > max_evals {max_evals} (max_evals=None: no limit)",
                     "size_limit", kname, inner)
            elif max_N is not None and N > max_N:
                skip(f"N {N} > max_N {max_N} (max_N=None: no limit)", "size_limit", kname, inner)
            else:
                kernels.append(Kernel(kname, i, r.layout, r.layer_type, inner, N, M, rf,
                                      select, r.rows, r.cols, r.taps, r.view))
    return kernels, skipped
