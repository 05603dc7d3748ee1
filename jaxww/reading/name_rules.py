"""The rules that read a leaf from its name and shape, for trees that carry no model.

Rules, in order (:func:`infer_layout` lists them in full): biases, scales and statistics
are skipped; einsum weights of known families (Gemma ``gm.nn``, MaxText fused ``qkv_proj``
and ``wi``, Keras ``EinsumDense``) are read from their einsum (``docs/families.md``); then
the named layouts of :mod:`jaxww.reading.layouts` by the leaf's name and rank.

Inferred stacks (a leaf with one axis more than its layout, under a module named like
``scan``/``layers``/``blocks``) take their layer axis from the stacked subtree (the one
axis position whose size every leaf of the subtree shares, and at which each bias
still matches the trailing axes of its kernel) or from ``scan_axis=``; when that
leaves more than one candidate, the leaf is skipped with the hint (:func:`layer_axis`).
"""

from __future__ import annotations

import re

from jaxww.reading import quant as _quant
from jaxww.reading.layouts import Ambiguous, Reading, Skip, exact_pattern, layout_reading, split_sizes_fit
from jaxww.typing import ScanAxis

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
