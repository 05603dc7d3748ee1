"""How a leaf becomes weight matrices: :class:`Reading`, the named layouts and ``layouts=``.

How a leaf becomes matrices is a :class:`Reading`: the role of each of its axes.
``rows`` and ``cols`` axes are flattened into the two sides of the matrix (the
contracted / input axes on one side, the produced / output axes on the other, as in
the einsum the weight feeds), ``taps`` axes index convolution taps pooled into one
spectrum, and ``splits`` axes index separate kernels (a layer axis of a scanned
stack, the k and v halves of a fused projection). A kernel taken at index ``i`` of a
split axis is named ``path[i]`` (layer axes) or ``path[label]`` (``kv_einsum/w[k]``).

Named layouts (conventions section 1; ``layouts=`` takes them, and the name rules of
:mod:`jaxww.reading.name_rules` infer them):

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

import math
import re
from typing import NamedTuple

from jaxww.defaults import BASE_LAYOUTS, LAYOUTS  # noqa: F401  (part of this module's API)
from jaxww.typing import LayoutOverride, ScanAxis  # noqa: F401  (re-exported: their old place)

#: 2-D convolutions: pooled eigenvalues are multiplied by this (reference ``conv2d_norm``).
CONV2D_NORM = 0.5


class Reading(NamedTuple):
    """How a leaf becomes matrices: the role of each of its axes.

    Every axis of the leaf is in exactly one of ``rows``, ``cols``, ``taps`` or
    ``splits``. One kernel per combination of split indices; its matrices are
    ``W.transpose(taps + rows + cols).reshape(prod(taps), prod(rows), prod(cols))``.

    Attributes:
      layout: a name for the reading (``dense``, ``conv``, ``einsum``, ...).
      layer_type: ``dense``, ``embedding``, ``conv1d``/``conv2d``/``conv3d``, ``attention``.
      rows, cols: axes flattened into the two sides of the matrix.
      taps: convolution taps, pooled into one spectrum.
      splits: ``((axis, labels), ...)``: axes indexing separate kernels; ``labels`` names
        each index (``("k", "v")``) or is None for numbers (layers).
      view: the shape the leaf is reshaped to before its axes are read (None: its own
        shape); a grouped convolution splits its output axis into ``(groups, out / groups)``.

    Example (Gemma ``kv_einsum/w`` ``(2, K, d, D)``: k and v, each ``d x K*D``):
      >>> r = Reading("einsum", "attention", rows=(2,), cols=(1, 3), splits=((0, ("k", "v")),))
      >>> r.with_layer_axis(1).splits  # the same weight scanned with its layer axis at 1
      ((1, None), (0, ('k', 'v')))
    """

    layout: str
    layer_type: str
    rows: tuple
    cols: tuple
    taps: tuple = ()
    splits: tuple = ()
    view: tuple | None = None

    def with_layer_axis(self, axis: int) -> "Reading":
        """The same reading with a layer axis inserted at ``axis`` (first among the splits);
        a reading with a ``view`` takes layer axes in front only (``axis=0``)."""
        if self.view is not None:
            raise ValueError("a reading with a view takes its layer axes in front of the view")
        up = lambda axes: tuple(a + (a >= axis) for a in axes)  # noqa: E731
        return self._replace(rows=up(self.rows), cols=up(self.cols), taps=up(self.taps),
                             splits=((axis, None),) + tuple((a + (a >= axis), lab) for a, lab in self.splits))


def layout_reading(layout: str, ndim: int) -> Reading | None:
    """The reading of a base layout for a leaf of ``ndim`` axes; None if it does not fit."""
    if layout in ("dense", "embedding") and ndim == 2:
        return Reading(layout, layout, (0,), (1,))
    if layout == "conv" and ndim >= 3:
        return Reading(layout, f"conv{ndim - 2}d", (ndim - 2,), (ndim - 1,), tuple(range(ndim - 2)))
    if layout == "conv_torch" and ndim >= 3:
        return Reading(layout, f"conv{ndim - 2}d", (0,), (1,), tuple(range(2, ndim)))
    if layout == "attention_qkv" and ndim == 3:
        return Reading(layout, "attention", (0,), (1, 2))
    if layout == "attention_out" and ndim == 3:
        return Reading(layout, "attention", (0, 1), (2,))
    return None


def conv_reading(size: tuple, fan_in: int, fan_out: int, groups: int = 1):
    """The reading of a Flax / Keras convolution kernel ``(*size, fan_in / groups, fan_out)``,
    or a :class:`Skip` for a depthwise one.

    With ``groups > 1`` each output channel ``o`` sees only the inputs of its group
    ``o // (fan_out / groups)`` (``lax.conv_general_dilated``'s ``feature_group_count``), so
    each tap is a block-diagonal map of ``groups`` blocks ``(fan_in/groups, fan_out/groups)``:
    the kernel is viewed as ``(*size, fan_in/groups, groups, fan_out/groups)`` and its taps
    and groups pooled, the spectrum of the block-diagonal map. A depthwise kernel
    (``fan_in / groups == 1``) holds per-channel filters, not weight matrices.

    Example (a 3x3 convolution 16 -> 64 in 4 groups: 36 pooled 4 x 16 blocks):
      >>> r = conv_reading((3, 3), 16, 64, groups=4)
      >>> r.view, r.taps, r.rows, r.cols
      ((3, 3, 4, 4, 16), (0, 1, 3), (2,), (4,))
    """
    d = len(size)
    if groups == 1:
        return layout_reading("conv", d + 2)
    if fan_in // groups == 1:
        return Skip(f"depthwise convolution ({groups} groups of one input channel): per-channel "
                    "filters, not weight matrices", "not_weight")
    return Reading("conv_grouped", f"conv{d}d", (d,), (d + 2,), tuple(range(d)) + (d + 1,),
                   view=tuple(size) + (fan_in // groups, groups, fan_out // groups))


def reading_fits(reading: Reading, shape: tuple) -> bool:
    """Whether ``reading`` reads a leaf of ``shape``: one role per axis (of its ``view``, which
    must hold the leaf's elements) and the labelled splits of their size."""
    view = tuple(shape) if reading.view is None else tuple(reading.view)
    if reading.view is not None and math.prod(view) != math.prod(shape):
        return False
    axes = sorted(reading.rows + reading.cols + reading.taps + tuple(a for a, _ in reading.splits))
    return axes == list(range(len(view))) and split_sizes_fit(reading, view)


def split_sizes_fit(reading: Reading, shape: tuple) -> bool:
    """Whether each labelled split axis of ``reading`` has as many indices as labels."""
    return all(lab is None or shape[a] == len(lab) for a, lab in reading.splits)


class Skip(NamedTuple):
    """Why a leaf is not read: the reason (with the hint that resolves it) and its kind."""

    reason: str
    kind: str = "layout"


class Ambiguous(NamedTuple):
    """A leaf whose name and shape fit two readings: a stack of layers (when ``scan_axis=``
    says where its layer axis is) or something else. Without that hint it is a
    :class:`Skip` with ``reason``, which names the hints."""

    reason: str
    stacked: Reading


def exact_pattern(name: str) -> str:
    """The ``layouts=`` / ``scan_axis=`` pattern that matches ``name`` alone."""
    return "^" + re.escape(name) + "$"


def override(layouts: LayoutOverride, name: str, shape: tuple):
    """What ``layouts=`` says of the leaf ``name``: the callable's answer, or the layout of
    the first pattern that matches (``re.search``); None where it says nothing."""
    if layouts is None:
        return None
    if callable(layouts):
        return layouts(name, shape)
    for pattern, layout in layouts.items():
        if re.search(pattern, name):
            return layout
    return None
