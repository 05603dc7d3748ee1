"""What :func:`jaxww.analyze` reads from params, a model or a checkpoint: the one place
that decides, for ``analyze``, ``describe``, ``get_esd`` and ``diff_models``."""

from __future__ import annotations

import functools
import os

from jaxww.reading import checkpoints as _checkpoints
from jaxww.reading import deltas as _deltas
from jaxww.reading import kernels as _kernels


def read_layers(params, *, min_evals: int = 8, max_evals: int | None = 15000, max_N: int | None = 50000,
                layers: _kernels.LayerFilter = None, layouts: _kernels.LayoutOverride = None,
                scan_axis: _kernels.ScanAxis = None, base=None, lora: str | None = None,
                lora_scale: float | dict | None = None, where: str = "analyze"):
    """The weight matrices of ``params`` as :func:`jaxww.analyze` reads them, and the
    leaves they are read from: the one place that decides, for ``analyze``, ``describe``,
    ``get_esd`` and ``diff_models``.

    Quantised weights are dequantised (:func:`jaxww.reading.kernels.read_params`), a Keras
    model's layers read as its own code says, LoRA pairs as ``lora`` asks, and a leaf
    with a ``base`` is read as ``W - W_base``.

    ``params`` (and ``base``) may be the path of a checkpoint: it is opened with
    :func:`jaxww.open_checkpoint` (its tensors stay on disk), or read whole by
    :func:`jaxww.load_params` when ``base`` or ``lora`` combine tensors.

    Returns:
      ``(kernels, skipped, leaves, treedef, limited)``: the kernels in the model's order
      (:func:`jaxww.reading.kernels.model_order`); ``limited`` names the leaves that only
      ``max_N`` / ``max_evals`` left out.

    Raises:
      ValueError: ``base`` and ``lora`` both given, or a ``base`` of another structure.
    """
    whole = base is not None or lora is not None
    params, base = (_checkpoint(x, whole) for x in (params, base))
    names, leaves, treedef = _kernels.read_params(params)
    if base is not None and lora is not None:
        raise ValueError(f"{where}: pass base= or lora=, not both (a LoRA model's update is lora='delta')")
    bleaves = None if base is None else _deltas.base_leaves(names, leaves, base)
    names, leaves, skips = _deltas.read_lora(names, leaves, lora, lora_scale)
    find = functools.partial(_kernels.find_kernels, names, leaves, layers=layers, layouts=layouts,
                             min_evals=min_evals, types=_kernels.module_types(params),
                             readings=_deltas.readings(_kernels.model_readings(params), skips, len(leaves)),
                             scan_axis=scan_axis)
    kerns, skipped = find(max_evals=max_evals, max_N=max_N)
    rank = _kernels.model_order(params)
    kerns = sorted(kerns, key=lambda k: rank[k.leaf])   # stable: a leaf's kernels stay in order
    if bleaves is not None:
        leaves = _deltas.subtract(leaves, bleaves, {k.leaf for k in kerns})
    return kerns, skipped, leaves, treedef, _limited(skipped, find)


def _checkpoint(params, whole: bool):
    """``params``, or the checkpoint at that path: opened lazily, or read whole."""
    if not isinstance(params, (str, os.PathLike)):
        return params
    return _checkpoints.load_params(params) if whole else _checkpoints.open_checkpoint(params)


def _limited(skipped, find) -> tuple:
    """Names of the size-limited leaves that ``find`` keeps without ``max_N`` / ``max_evals``.

    ``find(max_evals=, max_N=)`` is :func:`jaxww.reading.kernels.find_kernels` with the other
    arguments bound; it runs a second time only when a size limit skipped something.
    """
    sized = [s.name for s in skipped if s.kind == "size_limit"]
    if not sized:
        return ()
    kept = {k.name for k in find(max_evals=None, max_N=None)[0]}
    return tuple(n for n in sized if n in kept)
