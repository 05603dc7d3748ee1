"""The alpha transforms' checks of how ``update`` is called (the rules:
:mod:`jaxww.training.transforms`).

``update`` checks, while tracing, that it got the tree ``init`` saw (its layers, in the
state's keys) and updates of the params' structure (:func:`check_layers`,
:func:`check_updates`); and, when it runs, that the first update did not get the params
and the updates swapped (a value fact: it can only be raised from the host,
:func:`unless_swapped`).
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np

from jaxww.linalg import callbacks as _callbacks
from jaxww.reading.params import flatten_params
from jaxww.training.plan import make_plan
from jaxww.training.refresh import kernel_leaves, sq_norms, trained_leaves


def update_plan(name: str, updates, params, names: list, layouts, min_evals: int, shapes=None, *, scan_axis=None):
    """The plan of the ``params`` given to the update of transform ``name`` (read with
    ``layouts``, ``min_evals`` and ``scan_axis``), checked against
    the layers ``init`` saw (:func:`check_layers`: their ``names`` and the ``shapes`` of
    their leaves) and against ``updates`` (:func:`check_updates`).

    Returns:
      ``(plan, leaves of updates, treedef of updates)``.
    """
    if params is None:
        raise ValueError(f"{name}: update needs the params: call update(updates, state, params)")
    where = f"{name}.update"
    plan = make_plan(params, None, layouts, min_evals=min_evals, scan_axis=scan_axis, where=where)
    check_layers(where, names, plan, shapes)
    check_updates(where, updates, params)
    leaves, treedef = jax.tree_util.tree_flatten(updates)   # structure checked above
    return plan, leaves, treedef


_SWAPPED = ("{}: the first update got the params as `updates`: their norms are those init saw, "
            "and those of `params` are not. Call update(updates, state, params), optax's order "
            "(the gradients first)")


def check_layers(where: str, names: list, plan, shapes=None) -> None:
    """``ValueError`` naming the first layer where ``plan`` (of the params given to
    ``update``) differs from the layers ``init`` saw: their ``names`` (the state's keys)
    and, if given, the ``shapes`` of the leaves holding them (in leaf order)."""
    for i, (then, now) in enumerate(itertools.zip_longest(names, plan.names)):
        if then != now:
            raise ValueError(f"{where}: the params are not those init saw: layer {i} is {now!r}, init saw "
                             f"{then!r} ({len(names)} layers at init, {len(plan.names)} now). Initialise the "
                             "transform with the params it updates: state = tx.init(params)")
    owner = {k.leaf: k.name for k in reversed(plan.kernels)}
    for i, then in zip(kernel_leaves(plan), shapes or ()):
        if tuple(then) != tuple(plan.leaves[i].shape):
            raise ValueError(f"{where}: the params are not those init saw: {owner[i]!r} has shape "
                             f"{tuple(plan.leaves[i].shape)}, init saw {tuple(then)}. Initialise the "
                             "transform with the params it updates: state = tx.init(params)")


def check_updates(where: str, updates, params) -> None:
    """``ValueError`` naming the first leaf where ``updates`` and ``params`` differ in
    path or shape (they must have the same structure)."""
    u_names, u_leaves, _ = flatten_params(updates)
    p_names, p_leaves, _ = flatten_params(params)
    for i, (u, p) in enumerate(itertools.zip_longest(u_names, p_names)):
        if u != p:
            raise ValueError(f"{where}: updates and params differ at leaf {i}: {u!r} in updates, {p!r} in "
                             f"params ({len(u_names)} and {len(p_names)} leaves); they must have the same "
                             "tree structure")
        if jnp.shape(u_leaves[i]) != jnp.shape(p_leaves[i]):
            raise ValueError(f"{where}: updates and params differ at {u!r}: shape {jnp.shape(u_leaves[i])} "
                             f"in updates, {jnp.shape(p_leaves[i])} in params")


def unless_swapped(where: str, count, init_norms, update_leaves, plan, alpha):
    """``alpha`` (the refresh's), once a host check has raised if the first update got the
    params and the updates swapped (the rule: :mod:`jaxww.training.transforms`), by
    comparing the norms of the leaves with ``init_norms`` (``state.sq_norms``).

    To ``1e-2`` relative: far above the float32 rounding of the same sums computed in
    another order (eager at ``init``, jitted here). In optax's order the params of the
    first update are those ``init`` saw and match, so nothing is raised whatever the
    gradients; only params replaced after ``init`` together with gradients matching every
    layer's norm to 1% would be refused. Only the leaves a transform updates are compared
    (:func:`jaxww.training.refresh.trained_leaves`: integer codes are not); those that
    were zero at ``init`` are not counted, and at least one must be.

    Under ``jit`` the values are traced: the ``ValueError`` is raised from the host, by a
    host call (:func:`jaxww.linalg.callbacks.on_cpu`, safe in a program on a mesh) whose result
    ``alpha`` depends on, so that it runs (a ``jax.debug.callback``'s effect would take
    every call of the update off JAX's fast dispatch path: +0.5 ms a step, 0.65 -> 1.15 ms
    a held step of ``scale_by_alpha`` on a 4x512 MLP, measured). On CPU devices only: on a
    GPU or TPU a host call would take the refresh off the device, and the check is not made.
    """
    positions = trained_leaves(plan)
    if not positions:
        return alpha
    ref = jnp.stack(init_norms)
    counted = ref > 0

    def as_at_init(leaves):
        x = jnp.stack(sq_norms(leaves, positions))
        return jnp.all((jnp.abs(x - ref) <= 1e-2 * ref) | ~counted) & jnp.any(counted)

    swapped = (count == 0) & as_at_init(update_leaves) & ~as_at_init(plan.leaves)
    message = _SWAPPED.format(where)

    def check(flag):
        return _callbacks.on_cpu(lambda f: (_refuse_if(message, f),), (jax.ShapeDtypeStruct((), jnp.bool_),), flag)[0]

    # On accelerators no host call enters the step (the refresh stays on the device): not checked there.
    checked = jax.lax.platform_dependent(swapped, cpu=check, default=lambda flag: jnp.asarray(True))
    return jnp.where(checked, alpha, jnp.nan)


def _refuse_if(message: str, flag) -> np.ndarray:
    """The host side of :func:`unless_swapped`: ``ValueError(message)`` if ``flag``, else True."""
    if flag:
        raise ValueError(message)
    return np.asarray(True)
