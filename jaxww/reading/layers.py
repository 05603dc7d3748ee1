"""What :func:`jaxww.analyze` reads from params, a model or a checkpoint: the one place
that decides, for ``analyze``, ``describe``, ``get_esd`` and ``diff_models``."""

from __future__ import annotations

import functools
import numbers
import os
import re
from typing import Any, NamedTuple

import jax

from jaxww.defaults import MAX_EVALS, MAX_N, MIN_EVALS
from jaxww.reading import checkpoints as _checkpoints
from jaxww.reading import deltas as _deltas
from jaxww.reading import kernels as _kernels
from jaxww.reading import params as _params
from jaxww.typing import LayerSelection, LayoutOverride, ScanAxis


class Layers(NamedTuple):
    """What :func:`read_layers` returns.

    Attributes:
      kernels: the weight matrices to analyse, in the model's order
        (:func:`jaxww.reading.params.model_order`).
      skipped: :class:`jaxww.Skipped` of every leaf (or slice) left out.
      leaves: the leaves the kernels are read from (``kernel.leaf`` indexes them).
      treedef: the params' tree structure.
      limited: names of the layers only ``max_N`` / ``max_evals`` left out.
      ids: each kernel's layer id: its position among the layers read without the
        ``layers`` filter (so an id means the same layer whatever is selected).
      names: the name of each leaf (``/``-joined key path), as :attr:`leaves`.
    """

    kernels: list
    skipped: list
    leaves: list
    treedef: Any
    limited: tuple
    ids: tuple
    names: tuple = ()


#: What runs under ``jax.jit``, ``jax.vmap``, ``jax.grad`` (named by :func:`traced_error`).
JIT_SAFE = ("jaxww.tree_alpha, jaxww.alpha, jaxww.alpha_penalty, jaxww.weighted_alpha_penalty, "
            "jaxww.spectral_norm_penalty, or the optax transforms jaxww.add_alpha_regularization, "
            "jaxww.scale_by_alpha and jaxww.add_alpha_decayed_weights")


def traced_error(where: str) -> TypeError:
    """The ``TypeError`` of a function that reads concrete weights (``analyze``,
    ``describe``, ``Tracker.update``...) given a traced array: it was called under a JAX
    transformation; the message says to call it outside and names :data:`JIT_SAFE`."""
    return TypeError(f"{where}: got a traced array, so it was called under a JAX transformation (jax.jit, "
                     f"jax.vmap, jax.grad, nnx.jit...). {where} reads concrete weights on the host: call it "
                     f"outside the transformed function, on the params it returns. Inside one, use {JIT_SAFE}.")


def check_concrete(params, where: str) -> None:
    """:func:`traced_error` if a leaf of ``params`` is a ``jax.core.Tracer``.

    Example:
      >>> jax.jit(lambda p: check_concrete(p, "analyze"))({"w": jax.numpy.ones((4, 4))})
      Traceback (most recent call last):
      TypeError: analyze: got a traced array, so it was called under a JAX transformation ...
    """
    if any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves(params)):
        raise traced_error(where)


def check_limits(where: str, *, min_evals, max_evals, max_N) -> None:
    """``TypeError`` / ``ValueError`` naming a bad size limit (ints; ``max_*`` may be None)."""
    for name, value, lowest, none_ok in (("min_evals", min_evals, 0, False), ("max_evals", max_evals, 1, True),
                                          ("max_N", max_N, 1, True)):
        if value is None and none_ok:
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{where}: {name} must be an int{' or None' if none_ok else ''}, "
                            f"got {type(value).__name__} {value!r}")
        if value < lowest:
            raise ValueError(f"{where}: {name} must be >= {lowest}{' (None: no limit)' if none_ok else ''}, got {value}")


def selection(layers, where: str = "analyze"):
    """``(leaf filter, ids, names)`` of a ``layers=`` argument: a regex (``re.search`` on the
    layer name) or a callable filter the leaves; an int (a layer id, as weightwatcher's
    ``layers=``), a name, or a list of ids and names select exactly those layers.

    Raises:
      ValueError: a regex that does not compile, or a negative id.
      TypeError: anything else.
    """
    if layers is None or callable(layers):
        return layers, None, None
    if isinstance(layers, str):
        try:
            re.compile(layers)
        except re.error as err:
            raise ValueError(f"{where}: layers={layers!r} is not a regular expression ({err}); pass an exact "
                             "name in a list to select it literally, e.g. layers=['dense/kernel']") from None
        return layers, None, None
    items = [layers] if isinstance(layers, numbers.Integral) else layers
    if isinstance(items, (list, tuple, set, frozenset)) and all(
            isinstance(x, str) or (isinstance(x, numbers.Integral) and not isinstance(x, bool)) for x in items):
        ids = {int(x) for x in items if not isinstance(x, str)}
        if any(i < 0 for i in ids):
            raise ValueError(f"{where}: layer ids are >= 0, got {sorted(ids)}")
        return None, ids, {x for x in items if isinstance(x, str)}
    raise TypeError(f"{where}: layers must be a regex, a callable name -> bool, a layer id or a list of "
                    f"ids and names, got {type(layers).__name__} {layers!r}")


def read_layers(params, *, min_evals: int = MIN_EVALS, max_evals: int | None = MAX_EVALS, max_N: int | None = MAX_N,
                layers: LayerSelection = None, layouts: LayoutOverride = None,
                scan_axis: ScanAxis = None, base=None, lora: str | None = None,
                lora_scale: float | dict | None = None, pool: bool = True, where: str = "analyze",
                concrete: bool = True):
    """The weight matrices of ``params`` as :func:`jaxww.analyze` reads them, and the
    leaves they are read from: the one place that decides, for ``analyze``, ``describe``,
    ``get_esd`` and ``diff_models``.

    Quantised weights are dequantised (:func:`jaxww.reading.params.read_params`), a Keras
    model's layers read as its own code says, LoRA pairs as ``lora`` asks, and a leaf
    with a ``base`` is read as ``W - W_base``.

    ``params`` (and ``base``) may be the path of a checkpoint: it is opened with
    :func:`jaxww.open_checkpoint` (its tensors stay on disk), or read whole by
    :func:`jaxww.load_params` when ``base`` or ``lora`` combine tensors.

    ``pool=False`` reads one matrix per convolution tap (:func:`jaxww.reading.kernels.find_kernels`).

    ``concrete=False`` lets traced params through: training's plan
    (:func:`jaxww.training.plan.make_plan`, under ``jax.jit``) reads their names and shapes only.

    Returns:
      :class:`Layers`.

    Raises:
      TypeError: a traced leaf (:func:`check_concrete`: called under ``jax.jit``...).
      ValueError, TypeError: a bad size limit or ``layers`` (:func:`check_limits`,
        :func:`selection`), ids or names that no layer has, ``base`` and ``lora`` both
        given, or a ``base`` of another structure.
    """
    if concrete:
        check_concrete((params, base), where)
    check_limits(where, min_evals=min_evals, max_evals=max_evals, max_N=max_N)
    leaf_filter, ids, wanted = selection(layers, where)
    whole = base is not None or lora is not None
    params, base = (_checkpoint(x, whole) for x in (params, base))
    names, leaves, treedef = _params.read_params(params)
    if base is not None and lora is not None:
        raise ValueError(f"{where}: pass base= or lora=, not both (a LoRA model's update is lora='delta')")
    bleaves = None if base is None else _deltas.base_leaves(names, leaves, base)
    names, leaves, skips = _deltas.read_lora(names, leaves, lora, lora_scale)
    find = functools.partial(_kernels.find_kernels, names, leaves, layouts=layouts,
                             min_evals=min_evals,
                             readings=_deltas.readings(_params.model_readings(params), skips, len(leaves)),
                             scan_axis=scan_axis, pool=pool)
    rank = _params.model_order(params)
    every, skipped = find(max_evals=max_evals, max_N=max_N)
    every = sorted(every, key=lambda k: rank[k.leaf])   # stable: a leaf's kernels stay in order
    number = {k.name: i for i, k in enumerate(every)}
    if leaf_filter is not None:
        kerns, skipped = find(max_evals=max_evals, max_N=max_N, layers=leaf_filter)
        kerns = sorted(kerns, key=lambda k: rank[k.leaf])
    elif ids is not None:
        kerns = _chosen(every, ids, wanted, where)
        skipped = skipped + [_kernels.Skipped(k.name, k.shape, str(leaves[k.leaf].dtype),
                                              "excluded by the layers filter", "filter")
                             for k in every if k not in kerns]
    else:
        kerns = every
    if bleaves is not None:
        leaves = _deltas.subtract(leaves, bleaves, {k.leaf for k in kerns})
    return Layers(kerns, skipped, leaves, treedef, _limited(skipped, find), tuple(number[k.name] for k in kerns),
                  tuple(names))


def _chosen(every, ids: set, names: set, where: str) -> list:
    """The kernels of ``every`` (in order, a kernel's id is its position) with an id in
    ``ids`` or a name in ``names``; ``ValueError`` naming those that no layer has."""
    unknown = sorted(i for i in ids if i >= len(every)) + sorted(names - {k.name for k in every})
    if unknown:
        near = ", ".join(k.name for k in every[:5]) + (", ..." if len(every) > 5 else "")
        raise ValueError(f"{where}: no layer {unknown[0]!r}" + (f" (nor {len(unknown) - 1} more)" if len(unknown) > 1 else "")
                         + f"; layer ids are 0..{len(every) - 1} (jaxww.describe lists them), names: {near}")
    return [k for i, k in enumerate(every) if i in ids or k.name in names]


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
