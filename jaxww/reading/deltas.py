"""Fine-tunes read as deltas: ``analyze(params, base=...)`` and LoRA pairs (``lora=``).

**Base model** (weightwatcher's ``base_model``): with ``base=base_params`` every leaf is
read as ``W - W_base``, the base leaf at the same path. The trees must have the same
paths in the same order and the same leaf shapes. The difference is taken leaf by leaf
(in the leaves' promoted dtype), and only for the leaves that are analysed.

**LoRA pairs.** A low-rank adapter adds ``s * B A`` to a weight (``A``: ``r x in``,
``B``: ``out x r``, ``r`` the rank, ``s`` the scale). Two conventions are recognised:

============ ================================= ============================ =========== ===================================
convention   factor leaves                     update                       scale ``s`` base weight
============ ================================= ============================ =========== ===================================
Flax NNX     ``P/lora_a`` ``(in, r)``,          ``lora_a @ lora_b``          1 (``nnx.  ``P/base_module/kernel`` (``nnx.LoRA``)
             ``P/lora_b`` ``(r, out)``          ``(in, out)``                LoRA``)     or ``Q/kernel`` when ``P = Q/lora``
                                                                                         (``nnx.LoRALinear``)
HF PEFT      ``P.lora_A[.name].weight``        ``lora_B @ lora_A``          ``lora_     ``P.base_layer.weight`` or
             ``(r, in)``, ``P.lora_B[.name]``   ``(out, in)``                alpha / r`` ``P.weight``
             ``.weight`` ``(out, r)``                                        (config)
============ ================================= ============================ =========== ===================================

(``flax/nnx/nn/lora.py``: ``LoRA.__call__`` is ``x @ lora_a @ lora_b``, unscaled;
``LoRALinear`` holds its ``LoRA`` as ``lora`` next to ``kernel``. PEFT's
``peft/tuners/lora/layer.py``: ``lora_B(lora_A(x)) * scaling``, ``scaling = lora_alpha / r``
(``lora_alpha / sqrt(r)`` with rsLoRA), which lives in ``adapter_config.json``, not in
the tensors.) A leading stack axis on both factors is carried through the product.

``analyze(lora=...)``:

* ``None`` (default): the factor leaves are skipped (kind ``"lora"``), since one factor's
  spectrum is not a layer's; everything else is read as usual.
* ``"delta"``: each pair is one matrix ``s * B A`` (rank <= r), named after its ``A``
  leaf with the factor's name replaced (``P/lora_ab``, ``P.lora_BA[.name].weight``); the
  ``B`` leaf is skipped. In ``Report.tree()`` its value sits at the ``A`` leaf.
* ``"merged"``: the base weight is read as ``W + s * B A`` (its row keeps the base
  leaf's name); both factors are skipped. A pair whose base weight cannot be found,
  or has another shape, is skipped with the reason.

``lora_scale``: ``s`` as a number or ``{regex: number}`` (``re.search`` on the ``A``
leaf's name). Without it, NNX pairs have ``s = 1`` (as ``nnx.LoRA`` computes) and PEFT
pairs raise a ValueError: their scale is not in the tree, and jaxww never guesses it.
A factor without its partner is skipped with the reason.
"""

from __future__ import annotations

import re

import jax.numpy as jnp

from jaxww.reading import params as _params
from jaxww.reading.layouts import Skip

#: The values of ``analyze(lora=...)`` besides None.
LORA_MODES = ("delta", "merged")

_NNX = re.compile(r"^(?P<pre>(?:.*[/.])?)lora_(?P<f>[ab])$")
_PEFT = re.compile(r"^(?P<pre>.*[/.])lora_(?P<f>[AB])(?P<ad>[/.][^/.]+)?(?P<w>[/.]weight)$")


def base_leaves(names, leaves, base) -> list:
    """The leaves of ``base``, checked against the params' ``names`` and ``leaves``.

    Raises:
      ValueError: the paths differ (naming the first mismatched path) or a leaf's shape does.
    """
    bnames, bleaves, _ = _params.flatten_params(base)
    for i, (n, b) in enumerate(zip(names, bnames)):
        if n != b:
            raise ValueError(f"base= has another tree structure: leaf {i} is {n!r} in params "
                             f"but {b!r} in base")
    if len(names) != len(bnames):
        longer, which = (names, "params") if len(names) > len(bnames) else (bnames, "base")
        raise ValueError(f"base= has another tree structure: {longer[min(len(names), len(bnames))]!r} "
                         f"is only in {which} ({len(names)} leaves in params, {len(bnames)} in base)")
    for n, w, b in zip(names, leaves, bleaves):
        ws, bs = getattr(w, "shape", None), getattr(b, "shape", None)
        if ws != bs:
            raise ValueError(f"base= leaf {n!r} has shape {bs}, params has {ws}")
    return bleaves


def subtract(leaves, bleaves, used) -> list:
    """``leaves`` with ``W - W_base`` at the indices ``used`` (the others unchanged)."""
    return [w - b if i in used else w for i, (w, b) in enumerate(zip(leaves, bleaves))]


def _factor(name):
    """``(key, factor, convention)`` of a LoRA factor leaf name, or None."""
    m = _NNX.match(name)
    if m:
        return (m["pre"], "", ""), m["f"], "nnx"
    m = _PEFT.match(name)
    if m:
        return (m["pre"], m["ad"] or "", m["w"]), m["f"].lower(), "peft"
    return None


def _base_candidates(pre: str, convention: str) -> list[str]:
    """Names the base weight of a pair with prefix ``pre`` may have, in order."""
    sep = pre[-1] if pre else "/"
    if convention == "peft":
        return [f"{pre}base_layer{sep}weight", f"{pre}weight"]
    out = [f"{pre}base_module{sep}kernel"]
    head, _, last = pre[:-1].rpartition(sep)
    if last == "lora":
        out.append(f"{head}{sep}kernel" if head else "kernel")
    return out


def _scale(name: str, convention: str, lora_scale):
    if isinstance(lora_scale, (int, float)):
        return float(lora_scale)
    for pattern, s in (lora_scale or {}).items():
        if re.search(pattern, name):
            return float(s)
    if convention == "nnx":
        return 1.0
    raise ValueError(f"LoRA pair {name!r} (PEFT lora_A/lora_B) needs lora_scale=: its scale "
                     "lora_alpha / r (rsLoRA: lora_alpha / sqrt(r)) is in adapter_config.json, "
                     "not in the tensors; pass a number or {regex: number}")


def _product(a, b, convention, scale):
    """``scale * A B`` (NNX, ``(in, out)``) or ``scale * B A`` (PEFT, ``(out, in)``), or the
    reason the factors do not chain. Computed in at least float32."""
    first, second = (a, b) if convention == "nnx" else (b, a)
    if first.ndim < 2 or first.shape[:-2] != second.shape[:-2] or first.shape[-1] != second.shape[-2]:
        return f"LoRA factors of shapes {a.shape} (A) and {b.shape} (B) do not chain"
    dtype = jnp.promote_types(jnp.result_type(first, second), jnp.float32)
    return scale * jnp.matmul(jnp.asarray(first, dtype), jnp.asarray(second, dtype))


def read_lora(names, leaves, mode, lora_scale):
    """LoRA pairs of a flattened tree read as ``mode``.

    Args:
      names, leaves: of :func:`jaxww.reading.params.flatten_params`.
      mode: None, ``"delta"`` or ``"merged"`` (see the module docstring).
      lora_scale: None, a number or ``{regex: number}``.

    Returns:
      ``(names, leaves, skips)``: new lists with the products in place, and
      ``{leaf index: reason}`` of the leaves to skip (the factors not read as a matrix).

    Raises:
      ValueError: an unknown ``mode``, or a PEFT pair without ``lora_scale``.
    """
    if mode is not None and mode not in LORA_MODES:
        raise ValueError(f"lora must be None or one of {LORA_MODES}, got {mode!r}")
    found: dict = {}
    for i, n in enumerate(names):
        got = _factor(n)
        if got is not None and hasattr(leaves[i], "shape"):
            key, f, conv = got
            found.setdefault((key, conv), {})[f] = i
    names, leaves, skips = list(names), list(leaves), {}
    index = {n: i for i, n in enumerate(names)}
    for (key, conv), pair in found.items():
        if len(pair) == 1:
            (f, i), = pair.items()
            other = _FACTOR_NAME[conv][f == "a"]
            skips[i] = (f"LoRA factor without its partner '{other}' (looked next to it), "
                        "not analysed")
            continue
        ia, ib = pair["a"], pair["b"]
        if mode is None:
            for i in (ia, ib):
                skips[i] = ("LoRA factor: a pair is analysed as one matrix with lora='delta' "
                            "(the update) or lora='merged' (base + update)")
            continue
        prod = _product(leaves[ia], leaves[ib], conv, _scale(names[ia], conv, lora_scale))
        if isinstance(prod, str):
            skips[ia] = skips[ib] = prod
            continue
        if mode == "delta":
            pre, ad, w = key
            names[ia] = f"{pre}lora_ab" if conv == "nnx" else f"{pre}lora_BA{ad}{w}"
            leaves[ia] = prod
            skips[ib] = f"LoRA factor: analysed with its pair as {names[ia]!r}"
            continue
        cands = _base_candidates(key[0], conv)
        ib_ = next((index[c] for c in cands if c in index), None)
        if ib_ is None or getattr(leaves[ib_], "shape", None) != prod.shape:
            why = (f"no base weight (looked for {cands})" if ib_ is None else
                   f"base weight {names[ib_]!r} has shape {leaves[ib_].shape}, the update {prod.shape}")
            skips[ia] = skips[ib] = f"LoRA pair not merged: {why}"
            continue
        leaves[ib_] = (jnp.asarray(leaves[ib_], prod.dtype) + prod)
        skips[ia] = skips[ib] = f"LoRA factor: merged into {names[ib_]!r}"
    return names, leaves, skips


_FACTOR_NAME = {"nnx": ("lora_a", "lora_b"), "peft": ("lora_A", "lora_B")}


def readings(model_readings, skips: dict, n: int):
    """Per leaf, the :class:`jaxww.reading.layouts.Reading` of the model (or None), with the LoRA
    ``skips`` as skip readings; None when there is neither."""
    if not skips:
        return model_readings
    out = list(model_readings) if model_readings is not None else [None] * n
    for i, reason in skips.items():
        out[i] = Skip(reason, "lora")
    return out
