"""Which leaves of a params tree are analysed, and as which matrices.

Every leaf is either read as one or more :class:`Kernel` (one weight matrix, or the
taps of a convolution pooled into one spectrum) or is a :class:`Skipped` entry saying
why not (:func:`find_kernels`). How a leaf becomes matrices (its
:class:`~jaxww.reading.layouts.Reading`) is decided by ``layouts=``, by a model's own
configuration (:func:`jaxww.reading.params.model_readings`) or by the name rules of
:mod:`jaxww.reading.name_rules`.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from typing import Callable, NamedTuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from jaxww.defaults import LAYOUTS, MAX_EVALS, MAX_N, MIN_EVALS
from jaxww.reading import quant as _quant
from jaxww.reading.layouts import (
    CONV2D_NORM, Ambiguous, Reading, Skip, layout_reading, override, reading_fits, split_sizes_fit,
)
from jaxww.reading.name_rules import SCAN_HINT, layer_axis, name_rule, scan_hint
from jaxww.typing import LayoutOverride, ScanAxis  # noqa: F401  (re-exported: their old place)

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
      tap: ``pool=False``: which tap of the convolution this kernel is (row-major over
        the tap axes, weightwatcher's ``slice_id``), else None.
      tap_count: ``pool=False``: the convolution's number of taps, else 1.
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
    tap: int | None = None
    tap_count: int = 1

    @property
    def num_evals(self) -> int:
        return self.M * self.rf

    @property
    def Q(self) -> float:
        return self.N / self.M

    @property
    def esd_scale(self) -> float:
        """Factor on the pooled eigenvalues: :data:`CONV2D_NORM` for 2-D convolutions, else 1.
        One tap of ``pool=False`` (weightwatcher 0.7.7's slices): ``CONV2D_NORM * tap_count``,
        as weightwatcher scales each slice by ``sqrt(rf / 2)``."""
        return CONV2D_NORM * self.tap_count if self.layer_type == "conv2d" else 1.0

    def spec(self, leaf: int = 0) -> "Kernel":
        """The kernel as a static argument of a compiled function: its name dropped (so the
        kernels of one structure share one program) and its leaf index set to ``leaf`` (its
        position among the leaves passed to that function).

        Example:
          >>> k = Kernel("a/kernel", 7, "dense", "dense", (64, 32), 64, 32, 1)
          >>> k.spec() == Kernel("b/kernel", 3, "dense", "dense", (64, 32), 64, 32, 1).spec()
          True
        """
        return dataclasses.replace(self, name="", leaf=leaf)

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


def _selected(layers: LayerFilter, name: str) -> bool:
    if layers is None:
        return True
    if callable(layers):
        return bool(layers(name))
    return re.search(layers, name) is not None


#: Path components of optimizer state: Flax ``TrainState.opt_state`` and ``nnx.Optimizer.opt_state``
#: (optax's ``trace``, ``ema``... inside them), and optax's Adam moments ``mu``/``nu`` wherever
#: they are. A top-level ``ema`` copy of the params is weights, and is analysed.
_OPTIMIZER = {"opt_state", "mu", "nu"}


def _optimizer_part(name: str) -> str | None:
    """The optimizer-state component of a leaf name, or None."""
    return next((p for p in re.split(r"[/.]", name) if p in _OPTIMIZER), None)


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


def _slices(name: str, shape: tuple, r: Reading, pool: bool = True):
    """``(name, select, tap)`` of every kernel of a leaf read by ``r``: one per split index,
    and with ``pool=False`` one per tap (``tap``: ``(slice_id, number of taps)``, named
    ``name[tap=slice_id]``; else None)."""
    axes = [a for a, _ in r.splits]
    taps = () if pool else r.taps
    count = math.prod(shape[a] for a in taps)
    for idx in itertools.product(*(range(shape[a]) for a in axes)):
        label = "".join(f"[{j if lab is None else lab[j]}]" for (_, lab), j in zip(r.splits, idx))
        if not taps:
            yield name + label, tuple(zip(axes, idx)), None
            continue
        for s, t in enumerate(itertools.product(*(range(shape[a]) for a in taps))):
            yield f"{name}{label}[tap={s}]", tuple(zip(axes, idx)) + tuple(zip(taps, t)), (s, count)


def find_kernels(
    names, leaves, *, layers: LayerFilter = None, layouts: LayoutOverride = None,
    min_evals: int = MIN_EVALS, max_evals: int | None = MAX_EVALS, max_N: int | None = MAX_N,
    readings=None, scan_axis: ScanAxis = None, pool: bool = True,
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
      pool: False: one kernel per convolution tap (and group block of a grouped one),
        named ``name[tap=i]``, as weightwatcher's ``pool=False``; the size limits then
        apply to each tap's ``M``.

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
        rf = 1 if not pool else math.prod(view[x] for x in r.taps)
        N, M = max(a, b), min(a, b)
        for kname, select, tap in _slices(name, view, r, pool):
            if M * rf < min_evals:
                skip(f"num_evals {M * rf} < min_evals {min_evals}", "size_limit", kname, inner)
            elif max_evals is not None and M * rf > max_evals:
                skip(f"num_evals {M * rf} > max_evals {max_evals} (max_evals=None: no limit)",
                     "size_limit", kname, inner)
            elif max_N is not None and N > max_N:
                skip(f"N {N} > max_N {max_N} (max_N=None: no limit)", "size_limit", kname, inner)
            else:
                kernels.append(Kernel(kname, i, r.layout, r.layer_type, inner, N, M, rf, select, r.rows,
                                      r.cols, () if tap else r.taps, r.view, *(tap or ())))
    return kernels, skipped
