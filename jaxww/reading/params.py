"""The leaves of what a user passes (a params pytree, an ``nnx.Module``, an ``nnx.State``, a
Keras 3 model, a training state): their names, their order in the model, and the
readings the model's own configuration gives them.

Names are the key paths joined with ``/`` (``params/Dense_0/kernel``).
"""

from __future__ import annotations

import re
import sys
from typing import Mapping

import jax

from jaxww.reading import quant as _quant
from jaxww.reading.layouts import exact_pattern
from jaxww.reading.tensors import from_torch


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


def param_tree(params):
    """The pytree of params: an ``nnx.Module``'s ``nnx.Param`` state, a Keras 3 model's
    ``{variable.path: value}``, a training state's ``params`` (Flax ``TrainState``, or any
    object with ``params`` and ``opt_state``), else ``params`` itself.

    Raises:
      TypeError: an ``nnx.Optimizer`` without its model (flax >= 0.11 keeps none).
    """
    module = nnx_module(params)
    if module is not None:
        return sys.modules["flax.nnx"].state(module, sys.modules["flax.nnx"].Param)
    if _keras_model(params):
        from jaxww.reading import keras as _keras
        return _keras.values(params)
    if hasattr(params, "params") and hasattr(params, "opt_state"):
        return params.params
    return params


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
    elif nnx_module(params) is not None:
        from jaxww.reading import nnx as _nnx
        by_path = _nnx.readings(nnx_module(params))
    else:
        return None
    names, _, _ = flatten_params(params)
    return [by_path.get(n) for n in names]


def nnx_module(params):
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
