"""How a leaf becomes weight matrices: :class:`Reading`, the layouts and the rules that
infer one from a leaf's name and shape.

How a leaf becomes matrices is a :class:`Reading`: the role of each of its axes.
``rows`` and ``cols`` axes are flattened into the two sides of the matrix (the
contracted / input axes on one side, the produced / output axes on the other, as in
the einsum the weight feeds), ``taps`` axes index convolution taps pooled into one
spectrum, and ``splits`` axes index separate kernels (a layer axis of a scanned
stack, the k and v halves of a fused projection). A kernel taken at index ``i`` of a
split axis is named ``path[i]`` (layer axes) or ``path[label]`` (``kv_einsum/w[k]``).

Name-based layouts (conventions section 1, overridable with ``layouts=``):

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

A ``stacked_`` prefix (``stacked_dense``, ...) adds one leading layer axis. Inferred
stacks (a leaf with one axis more than its layout, under a module named like
``scan``/``layers``/``blocks``) take their layer axis from the stacked subtree (the one
axis position whose size every leaf of the subtree shares, and at which each bias
still matches the trailing axes of its kernel) or from ``scan_axis=``; when that
leaves more than one candidate, the leaf is skipped with the hint. Einsum weights of
known families (Gemma ``gm.nn``, MaxText fused ``qkv_proj`` and ``wi``, Keras ``EinsumDense``)
are read from their einsum; see ``docs/families.md``.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, Mapping, NamedTuple, Union

from jaxww.defaults import BASE_LAYOUTS, LAYOUTS  # noqa: F401  (part of this module's API)
from jaxww.reading import quant as _quant

#: 2-D convolutions: pooled eigenvalues are multiplied by this (reference ``conv2d_norm``).
CONV2D_NORM = 0.5

#: Leaf names that are never weight matrices (normalisation, biases, statistics).
_NOT_WEIGHTS = {"bias", "scale", "mean", "var", "running_mean", "running_var",
                "gamma", "beta", "num_batches_tracked", "moving_mean", "moving_variance"}
# A stacking module: ``layers``, ``blocks``, ``ScanBlock_0``... but not ``layers_3`` or
# ``layers.3`` (one unscanned layer of a list).
_STACK_HINT = re.compile(r"(scan|stack|vmap|repeat|layers|blocks)(?![._]?\d+(?:[/.]|$))")
_DENSE_HINT = re.compile(r"dense|linear|mlp|proj|fc|ffn")
_CONV_HINT = re.compile(r"conv")
SCAN_HINT = ("pass scan_axis=<axis of the layers> (an int, or {regex: int} per leaf; "
             "MaxText's default param_scan_axis is 1)")

#: ``layouts=``: ``{regex: layout}`` (first match wins) or a callable ``(name, shape) -> layout
#: or None``; a layout is a name from :data:`LAYOUTS`, a :class:`Reading` or a :class:`Skip`
#: (:func:`jaxww.model_layouts` gives a live model's).
LayoutOverride = Union[Callable[[str, tuple], Any], Mapping[str, Any], None]
ScanAxis = Union[int, Mapping[str, int], None]


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


_MIN_NDIM = {"dense": 2, "embedding": 2, "conv": 3, "conv_torch": 3,
             "attention_qkv": 3, "attention_out": 3}

# Einsum weights read from their module's code: (module, leaf) -> (rank, reading of the
# unstacked leaf, the size each split axis must have). Shapes from the sources cited.
_EINSUMS = {
    # google-deepmind/gemma gemma/gm/nn/_modules.py, Attention: q_einsum 'BTD,NDH->BTNH'
    # (H, d, D); kv_einsum 'BSD,CKDH->CBSKH' (2, K, d, D); qkv_einsum 'BTD,SNDH->SBTNH'
    # (3, H, d, D); attn_vec_einsum 'BTNH,NHD->BTD' (H, D, d).
    ("q_einsum", "w"): Reading("einsum", "attention", (1,), (0, 2)),
    ("kv_einsum", "w"): Reading("einsum", "attention", (2,), (1, 3), splits=((0, ("k", "v")),)),
    ("qkv_einsum", "w"): Reading("einsum", "attention", (2,), (1, 3), splits=((0, ("q", "k", "v")),)),
    ("attn_vec_einsum", "w"): Reading("einsum", "attention", (0, 1), (2,)),
    # FeedForward: gating_einsum (2, d, F) '...F,NFH->...NH' or, transposed, (2, F, d)
    # '...F,NHF->...NH'. Either way each half is one d x F matrix (its orientation does
    # not change its singular values).
    (None, "gating_einsum"): Reading("einsum", "dense", (1,), (2,), splits=((0, ("gate", "up")),)),
    # AI-Hypercomputer/maxtext attentions.py: fused qkv_proj DenseGeneral kernel
    # ("embed", "qkv", "heads", "kv") = (d, 3, H, D).
    ("qkv_proj", "kernel"): Reading("einsum", "attention", (0,), (2, 3), splits=((1, ("q", "k", "v")),)),
    # linears.py MlpBlock with fused_mlp: wi ("embed", "num_activations", "mlp") = (d, A, F),
    # one d x F matrix per activation (flaxformer's wi_fused likewise).
    ("wi", "kernel"): Reading("einsum", "dense", (0,), (2,), splits=((1, None),)),
    ("wi_fused", "kernel"): Reading("einsum", "dense", (0,), (2,), splits=((1, None),)),
}


def _einsum_rule(parts):
    for key in ((parts[-2] if len(parts) > 1 else None, parts[-1]), (None, parts[-1])):
        if key in _EINSUMS:
            return _EINSUMS[key]
    return None


def _rank(reading: Reading) -> int:
    return len(reading.rows) + len(reading.cols) + len(reading.taps) + len(reading.splits)


def reading_fits(reading: Reading, shape: tuple) -> bool:
    """Whether ``reading`` reads a leaf of ``shape``: one role per axis (of its ``view``, which
    must hold the leaf's elements) and the labelled splits of their size."""
    view = tuple(shape) if reading.view is None else tuple(reading.view)
    if reading.view is not None and math.prod(view) != math.prod(shape):
        return False
    axes = sorted(reading.rows + reading.cols + reading.taps + tuple(a for a, _ in reading.splits))
    return axes == list(range(len(view))) and split_sizes_fit(reading, view)


def split_sizes_fit(reading: Reading, shape: tuple) -> bool:
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


def _ambiguous_kernel(name: str, shape: tuple) -> Ambiguous:
    """A 3-D ``kernel`` that nothing names a convolution or a stack: ``nnx.vmap`` /
    ``nn.scan`` of dense layers under any module name reads the same as a 1-D convolution."""
    exact = exact_pattern(name)
    return Ambiguous(
        f"3-D kernel {shape}: a stack of {shape[0]} dense layers (nnx.vmap / nn.scan) or a 1-D "
        "convolution; nothing in the tree says which. For a stack pass "
        f"layouts={{{exact!r}: 'stacked_dense'}} (analyze also takes scan_axis={{{exact!r}: 0}}); "
        f"for a convolution layouts={{{exact!r}: 'conv'}}; from a live nnx.Module, "
        "layouts=jaxww.model_layouts(module) reads it as the module does", layout_reading("dense", 2))


def _one_channel_kernel(name: str, shape: tuple) -> Skip:
    """A Flax convolution kernel of one input channel, ``(3, 3, 1, 64)``: depthwise, or a
    convolution of a one-channel input; a tree does not say which."""
    exact = exact_pattern(name)
    return Skip(f"{shape} kernel of one input channel per group: a depthwise convolution "
                "(feature_group_count = its channels: per-channel filters, not weight matrices) "
                "or a convolution of one input channel; nothing in the tree says which. Pass "
                f"layouts={{{exact!r}: 'conv'}} for a convolution; from a live nnx.Module, "
                "layouts=jaxww.model_layouts(module) reads it as the module does")


def name_rule(name: str, shape: tuple):
    """``(reading, stacked)`` from the leaf's name and shape, a :class:`Skip` or an
    :class:`Ambiguous`.

    ``reading`` is for the leaf without its layer axis; ``stacked`` says whether it has
    one (its position is found by :func:`layer_axis`). Rules: see :func:`infer_layout`.
    """
    name = _quant.reading_name(name)
    parts = [p.lower() for p in re.split(r"[/.]", name)]
    last = parts[-1]
    module = parts[-2] if len(parts) > 1 else ""
    outer = "/".join(parts[:-2])
    ndim = len(shape)
    if last.endswith("_scale") or last in ("kernel_zero", "embeddings_zero", "g_idx"):
        return Skip(f"'{last}' is a quantisation parameter, not a weight matrix", "not_weight")
    if last in _NOT_WEIGHTS or last.endswith("bias"):
        return Skip(f"'{last}' is a bias / normalisation parameter, not a weight matrix", "not_weight")
    stacked = bool(_STACK_HINT.search(outer)) or bool(_STACK_HINT.search(module))
    rule = _einsum_rule(parts)
    if rule is not None and (module, last) == ("wi", "kernel") and stacked and ndim == _rank(rule):
        rule = None  # under a stack, (d, L, F) is MaxText's unfused wi scanned: the generic rules
    if rule is not None and ndim in (_rank(rule), _rank(rule) + 1):  # else: the generic rules
        r = _rank(rule)
        if ndim == r + 1 or split_sizes_fit(rule, shape):
            return rule, ndim == r + 1
        splits = ", ".join(f"axis {a} of size {len(lab)}" for a, lab in rule.splits if lab)
        return Skip(f"shape {shape} does not fit the {'/'.join(parts[-2:])} einsum ({r}-D"
                     f"{', ' + splits if splits else ''}); pass layouts= to say how to read it")
    keras = _keras_file_variable(parts, ndim)
    if isinstance(keras, Skip):
        return keras
    if keras:
        base, stacked = "conv", False
    elif "embed" in last:
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
    elif last == "kernel" and ndim == 3 and not _CONV_HINT.search(module):
        return _ambiguous_kernel(name, shape)
    elif last == "kernel" and ndim <= 5 and shape[-2] == 1:
        return _one_channel_kernel(name, shape)
    elif last == "kernel" and ndim <= 5:
        base, stacked = "conv", False
    elif last == "weight" and ndim <= 5:
        base, stacked = "conv_torch", False
    else:
        return Skip(f"layout of a {ndim}-D leaf named '{last}' is ambiguous; "
                     "pass layouts={pattern: layout} to analyse it")
    extra = 0 if base in ("conv", "conv_torch") else ndim - _MIN_NDIM[base]
    if extra == 0:
        return layout_reading(base, ndim), False
    if extra == 1 and stacked:
        return layout_reading(base, ndim - 1), True
    return Skip(f"{ndim}-D leaf does not fit layout '{base}'; pass layouts= to say how to read it")


def _keras_file_variable(parts: list, ndim: int):
    """A Keras 3 weights file (``save_weights``, ``.keras``) stores a layer's variables as
    ``layers/<layer>/vars/<i>``, without their names: its convolution kernel is ``vars/0``
    (``(k1, .., kd, in, out)``, Flax's layout) of a layer Keras named after its class
    (``conv2d``, ``conv1d_3``). True for such a kernel; a :class:`Skip` for depthwise and
    separable ones (per-channel filters, as for a live model); else False."""
    if len(parts) < 3 or parts[-2] != "vars" or parts[-1] != "0" or not 3 <= ndim <= 5:
        return False
    layer = parts[-3]
    if "depthwise" in layer or "separable" in layer:
        return Skip(f"'{layer}': depthwise / separable convolution kernels are per-channel filters, "
                    "not weight matrices", "not_weight")
    return bool(_CONV_HINT.search(layer))


def infer_layout(name: str, shape: tuple) -> str | tuple[str, str]:
    """The layout of a floating-point leaf from its name and shape.

    Returns a layout from :data:`LAYOUTS`, ``"einsum"`` / ``"stacked_einsum"`` for the
    einsum weights of known families (read from their einsum, see ``docs/families.md``),
    or ``("skip", reason)``.

    Rules, in order: biases, scales and statistics are skipped; known einsum weights
    (Gemma ``q_einsum/w``, ``kv_einsum/w``, ``qkv_einsum/w``, ``attn_vec_einsum/w``,
    ``gating_einsum``; MaxText fused ``qkv_proj/kernel``, ``wi/kernel``) are read from their einsum;
    ``embedding`` leaves are embeddings; a ``kernel`` under ``query``/``key``/``value``
    is an attention input projection and under ``out`` an output projection; a
    ``kernel`` under a module named like a dense layer is dense; 4-5-D ``kernel`` leaves,
    and 3-D ones under a module named like ``conv``, are Flax convolutions; any other 3-D
    ``kernel`` is ambiguous (a stack of dense layers or a 1-D convolution: skipped with
    the hints, or read as a stack where ``scan_axis=`` covers it), and so is a convolution
    kernel of one input channel (depthwise, or a one-channel input); 3-5-D ``weight``
    leaves are PyTorch convolutions. A tree cannot tell a grouped convolution from an
    ordinary one with fewer inputs: :func:`jaxww.model_layouts` of the live module can. One extra
    axis beyond the layout's rank, under a module named like ``scan``, ``layers``,
    ``blocks``... (or any dense/attention kernel) is a layer axis (a ``stacked_``
    layout), whose position :func:`find_kernels` finds.

    A live ``nnx.Module`` or Keras model is read from its own configuration first
    (:mod:`jaxww.reading.nnx`, :mod:`jaxww.reading.keras`); these rules read the rest.

    Example:
      >>> infer_layout("layer_0/attn/kv_einsum/w", (2, 1, 640, 256))
      'einsum'
    """
    got = name_rule(name, shape)
    if isinstance(got, (Skip, Ambiguous)):
        return ("skip", got.reason)
    reading, stacked = got
    return ("stacked_" if stacked else "") + reading.layout


def scan_hint(scan_axis: ScanAxis, name: str) -> int | None:
    """The layer axis ``scan_axis`` gives the leaf ``name`` (None: it gives none)."""
    if scan_axis is None or isinstance(scan_axis, int):
        return scan_axis
    for pattern, axis in scan_axis.items():
        if re.search(pattern, name):
            return axis
    return None


def _stack_root(name: str) -> str:
    """The scanned subtree of a stacked leaf: the path up to the first module named like a
    stack (``decoder/layers``), else the leaf's own module."""
    pos = 0
    comps = re.split(r"([/.])", name)
    for comp in comps[:-1]:
        pos += len(comp)
        if comp not in "/." and _STACK_HINT.search(comp.lower()):
            return name[:pos]
    return name[: max(name.rfind("/"), name.rfind("."), 0)]


def _members(root: str, shapes: dict) -> dict:
    if not root:
        return shapes
    return {n: s for n, s in shapes.items() if n.startswith(root) and n[len(root):len(root) + 1] in ("/", ".")}


def _biases_fit(p: int, members: dict) -> bool:
    """Each ``bias`` whose sibling ``kernel`` is in ``members``, with axis ``p`` removed from
    both, equals the kernel's trailing axes (Flax/Keras: bias shape = output features)."""
    for n, s in members.items():
        parent, sep, last = n.rpartition("/")
        k = members.get(parent + sep + "kernel") if last == "bias" else None
        if k is not None:
            b, kb = s[:p] + s[p + 1:], k[:p] + k[p + 1:]
            if len(b) > len(kb) or kb[len(kb) - len(b):] != b:
                return False
    return True


def layer_axis(name: str, shape: tuple, scan_axis: ScanAxis, shapes: dict) -> int | Skip:
    """Position of the layer axis of a stacked leaf: the hint, else the one axis that fits
    the whole scanned subtree (:func:`_stack_root`), else a :class:`Skip` with the hint."""
    hint = scan_hint(scan_axis, name)
    if hint is not None:
        if not -len(shape) <= hint < len(shape):
            return Skip(f"scan_axis={hint} is not an axis of a {len(shape)}-D leaf")
        return hint % len(shape)
    root = _stack_root(name)
    members = _members(root, shapes)
    fits = [p for p in range(len(shape))
            if all(len(s) > p and s[p] == shape[p] for s in members.values()) and _biases_fit(p, members)]
    if len(fits) == 1:
        return fits[0]
    where = f"under '{root}'" if root else "in the tree"
    if not fits:
        return Skip(f"no axis of {shape} has one size in every leaf {where}, so the layer axis "
                     f"of this stack is unknown; {SCAN_HINT}")
    return Skip(f"the layer axis of this stack cannot be told apart: axes {fits} of {shape} "
                 f"fit every leaf {where}; {SCAN_HINT}")


def override(layouts: LayoutOverride, name: str, shape: tuple):
    if layouts is None:
        return None
    if callable(layouts):
        return layouts(name, shape)
    for pattern, layout in layouts.items():
        if re.search(pattern, name):
            return layout
    return None


