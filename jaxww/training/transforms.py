"""optax gradient transformations driven by the power-law exponent ``alpha`` of each layer.

Three small pieces, each an ``optax.GradientTransformation`` with a ``NamedTuple``
state, a ``mask`` like optax's (through :func:`optax.masked`) and composable with
``optax.chain``:

* :func:`add_alpha_regularization` adds ``strength * grad P`` to the updates, with
  ``P = mean_l d(alpha_l, target)`` (as :func:`optax.add_decayed_weights` adds
  ``weight_decay * params``);
* :func:`scale_by_alpha` scales each layer's updates by an affine function of its
  alpha (TempBalance's per-layer learning rates);
* :func:`add_alpha_decayed_weights` adds weight decay whose strength per layer is an
  affine function of its alpha (AlphaDecay).

All three take exact spectra every ``every`` steps, with LAPACK on the host
(:mod:`jaxww.linalg.factored`): eigenvalues only, plus for the regulariser the
eigenvectors of the tail. ``docs/training.md`` has the measured cost.

All three work under :func:`optax.inject_hyperparams`: their numeric
hyperparameters (strengths, ``target``, the scales, ``temperature``, ``thresh``) may
be arrays, traced ones included (checked only when concrete), so that they can be
scheduled or changed through ``state.hyperparams``; the structural ones are static
and go in ``static_args``: ``every`` always (optax injects every number, defaults
included), ``tail`` and ``min_evals`` when they are numbers, ``mask`` and ``layouts`` when they are
callables (optax takes any callable for a schedule). A traced ``every`` or ``tail``
raises a ``TypeError`` that says so.

``update`` raises a ``ValueError`` naming the first difference when its params are not
those ``init`` saw (another layer; for the regulariser, another shape) or its updates have
another structure; and when the first update (``count == 0``) got the params and the
updates swapped: every weight-matrix leaf of ``updates`` has the norm ``init`` recorded
(``state.sq_norms``, to 1%) and some leaf of ``params`` has not. That is a fact of
values, checked at the refresh: it is raised from the host and surfaces as a
``JaxRuntimeError`` ending with the ``ValueError`` (jax 0.10.2; under ``jit`` or not), from
the call or from the first use of its results. Params replaced after ``init`` (loaded weights) match neither
side, and a state restored at ``count > 0`` is not checked: no error. The swap is checked
on CPU devices only: on a GPU or TPU the host call would take the refresh off the device.

References:
  Y. Zhou, T. Pang, K. Liu, C. H. Martin, M. W. Mahoney, Y. Yang, "Temperature
  balancing, layer-wise weight analysis, and neural network training" (TempBalance),
  NeurIPS 2023.
  D. He et al., "AlphaDecay: Module-wise weight decay for heavy-tailed balancing in
  LLMs", NeurIPS 2025.
"""

from __future__ import annotations

import itertools
from typing import Callable, NamedTuple, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxww.linalg import callbacks as _callbacks, factored as _factored

from jaxww.linalg import sharded as _mesh

from jaxww.fit import tail as _tail
from jaxww.training import penalties as _reg
from jaxww.training.plan import Mask, make_plan
from jaxww.defaults import MIN_VERDICT_EVALS
from jaxww.reading.kernels import LayoutOverride
from jaxww.reading.params import flatten_params
from jaxww.linalg.spectra import eigvals_ascending, numerical_floor

ScalarOrSchedule = Union[float, Callable[[jax.Array], jax.Array]]
_NEEDS_PARAMS = "{}: update needs the params: call update(updates, state, params)"


# ------------------------------------------------------------------- validation
# Under optax.inject_hyperparams the numeric arguments arrive as arrays: concrete at
# ``init``, traced inside a jitted ``update``. Numeric hyperparameters (strength,
# target, temperature, thresh, the scales, the decay) are checked when concrete and
# used as they are when traced; structural ones (``every``, ``tail``) are static: a
# concrete 0-d array is read as its Python value, a tracer is refused.
_STATIC = ("{what} is static (it shapes the computation): under optax.inject_hyperparams "
           "pass static_args=({what!r},) (or a tuple with the other static names), got a "
           "traced value {v}")


def _is_array(v) -> bool:
    return isinstance(v, (jax.Array, np.ndarray))


def _scalar(v, what: str):
    """``v`` (an array) if it is a real (int or float) scalar, else a ``TypeError``."""
    if v.shape != () or not (jnp.issubdtype(v.dtype, jnp.integer) or jnp.issubdtype(v.dtype, jnp.floating)):
        raise TypeError(f"{what} must be a real scalar, got an array of shape {v.shape} and dtype {v.dtype}")
    return v


def _number(v, what: str, check: Callable):
    """A numeric hyperparameter: an array (traced or concrete) kept as it is, its value
    checked by ``check`` when concrete; anything else ``check(v)`` (a float)."""
    if not _is_array(v):
        return check(v)
    if not isinstance(_scalar(v, what), jax.core.Tracer):
        check(v.item())
    return v


def _static(v, what: str):
    """A structural argument: a concrete 0-d array read as its Python value; a tracer refused."""
    if isinstance(v, jax.core.Tracer):
        raise TypeError(_STATIC.format(what=what, v=v))
    return _scalar(v, what).item() if _is_array(v) else v


def _check_every(every) -> int:
    every = _static(every, "every")
    if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
        raise ValueError(f"every must be an int >= 1, got {every!r}")
    return int(every)


def _min_evals(min_evals) -> int:
    """``min_evals`` (static; None: :data:`MIN_VERDICT_EVALS`, the layers analyze judges)."""
    return MIN_VERDICT_EVALS if min_evals is None else _static(min_evals, "min_evals")


def _nonneg(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{what} must be a number >= 0 or a schedule, got {value!r}")
    if not (np.isfinite(value) and value >= 0):
        raise ValueError(f"{what} must be finite and >= 0, got {value}")
    return float(value)


def _check_nonneg(value, what: str):
    return value if callable(value) else _number(value, what, lambda v: _nonneg(v, what))


def _scale(v, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or v < 0:
        raise ValueError(f"{what} must be a finite number >= 0, got {v!r}")
    return float(v)


def _check_scales(lo, hi):
    lo = _number(lo, "min_scale", lambda v: _scale(v, "min_scale"))
    hi = _number(hi, "max_scale", lambda v: _scale(v, "max_scale"))
    if not any(isinstance(v, jax.core.Tracer) for v in (lo, hi)) and float(lo) > float(hi):
        raise ValueError(f"min_scale ({float(lo)}) must be <= max_scale ({float(hi)})")
    return lo, hi


def _spec(tail, temperature) -> _tail.TailSpec:
    """The validated tail choice: ``tail`` static, ``temperature`` numeric (may be traced)."""
    tail = _static(tail, "tail")
    if not _is_array(temperature) or isinstance(tail, _tail.TailSpec):
        return _tail.tail_spec(tail, temperature)
    temperature = _number(temperature, "temperature", lambda v: _tail.tail_spec(tail, v))
    return _tail.tail_spec(tail)._replace(temperature=temperature)


def _thresh(thresh):
    return _number(thresh, "thresh", float)


def _masked(t: optax.GradientTransformation, mask: Mask) -> optax.GradientTransformation:
    """``t`` applied only where ``mask`` (optax-style) is True; ``t`` itself for no mask."""
    return t if mask is None else optax.masked(t, mask)


def _value(v, count):
    return v(count) if callable(v) else v


def _every(every, count, refresh, keep, operand):
    """``refresh(operand)`` on steps ``0, every, 2 every, ...``, else ``keep(operand)``."""
    if every == 1:
        return refresh(operand)
    return jax.lax.cond(count % every == 0, refresh, keep, operand)


def _kernel_leaves(plan) -> list:
    """Indices of the leaves that hold at least one of the plan's kernels, in order."""
    return sorted({k.leaf for k in plan.kernels})


def _stacks_and_pullback(plan):
    """The plan's group stacks and ``pullback(per-group grads) -> {leaf index: grad}``."""
    positions = _kernel_leaves(plan)

    def gather(kernel_leaves):
        leaves = list(plan.leaves)
        for p, v in zip(positions, kernel_leaves):
            leaves[p] = v
        return plan.stacks(leaves)

    mats, vjp = jax.vjp(gather, [plan.leaves[p] for p in positions])
    return mats, lambda grads: dict(zip(positions, vjp(grads)[0]))


def _estimates(spec, thresh):
    """The tail estimate (a TailAlpha) of each row of a ``(G, n)`` batch of pooled spectra."""
    return jax.vmap(lambda e: _tail.estimate(e, spec, thresh))


def _alpha_and_grad(fn, lam):
    """``fn(lam)`` (a TailAlpha per kernel), ``ok`` and ``d alpha / d lam`` (0 where not ok)."""
    def f(x):
        est = fn(x)
        return jnp.where(est.status == _tail.FIT_OK, est.alpha, 0.0), est

    a, vjp, est = jax.vjp(f, lam, has_aux=True)
    ok = est.status == _tail.FIT_OK
    (g,) = vjp(jnp.ones_like(a))
    g = jnp.where(ok.reshape(ok.shape + (1,) * (g.ndim - 1)) & jnp.isfinite(g), g, 0.0)
    return est, ok, g


# ------------------------------------------------------------------------ misuse
# ``update`` checks, while tracing, that it got the tree ``init`` saw (its layers, in the
# state's keys) and updates of the params' structure; and, when it runs, that the first
# update did not get the params and the updates swapped (a value fact: it can only be
# raised from the host, see :func:`_unless_swapped`).
_SWAPPED = ("{}: the first update got the params as `updates`: their norms are those init saw, "
            "and those of `params` are not. Call update(updates, state, params), optax's order "
            "(the gradients first)")


def _check_layers(where: str, names: list, plan, shapes=None) -> None:
    """``ValueError`` naming the first layer where ``plan`` (of the params given to
    ``update``) differs from the layers ``init`` saw: their ``names`` (the state's keys)
    and, if given, the ``shapes`` of the leaves holding them (in leaf order)."""
    for i, (then, now) in enumerate(itertools.zip_longest(names, plan.names)):
        if then != now:
            raise ValueError(f"{where}: the params are not those init saw: layer {i} is {now!r}, init saw "
                             f"{then!r} ({len(names)} layers at init, {len(plan.names)} now). Initialise the "
                             "transform with the params it updates: state = tx.init(params)")
    owner = {k.leaf: k.name for k in reversed(plan.kernels)}
    for i, then in zip(_kernel_leaves(plan), shapes or ()):
        if tuple(then) != tuple(plan.leaves[i].shape):
            raise ValueError(f"{where}: the params are not those init saw: {owner[i]!r} has shape "
                             f"{tuple(plan.leaves[i].shape)}, init saw {tuple(then)}. Initialise the "
                             "transform with the params it updates: state = tx.init(params)")


def _check_updates(where: str, updates, params) -> None:
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


def _sq_norms(leaves, positions) -> tuple:
    """The float32 sum of squares of each of ``leaves[i]``, ``i`` in ``positions``."""
    return tuple(jnp.sum(jnp.square(jnp.asarray(leaves[i], jnp.float32))) for i in positions)


def _unless_swapped(where: str, count, sq_norms, update_leaves, plan, alpha):
    """``alpha`` (the refresh's), once a host check has raised if the first update got the
    params and the updates swapped (the rule: the module docstring).

    To ``1e-2`` relative: far above the float32 rounding of the same sums computed in
    another order (eager at ``init``, jitted here). In optax's order the params of the
    first update are those ``init`` saw and match, so nothing is raised whatever the
    gradients; only params replaced after ``init`` together with gradients matching every
    layer's norm to 1% would be refused. Leaves that were zero at ``init`` are not
    counted, and at least one must be.

    Under ``jit`` the values are traced: the ``ValueError`` is raised from the host, by a
    host call (:func:`jaxww.linalg.callbacks.on_cpu`, safe in a program on a mesh) whose result
    ``alpha`` depends on, so that it runs (a ``jax.debug.callback``'s effect would take
    every call of the update off JAX's fast dispatch path: +0.5 ms a step, 0.65 -> 1.15 ms
    a held step of ``scale_by_alpha`` on a 4x512 MLP, measured). On CPU devices only: on a
    GPU or TPU a host call would take the refresh off the device, and the check is not made.
    """
    positions = _kernel_leaves(plan)
    ref = jnp.stack(sq_norms)
    counted = ref > 0

    def as_at_init(leaves):
        x = jnp.stack(_sq_norms(leaves, positions))
        return jnp.all((jnp.abs(x - ref) <= 1e-2 * ref) | ~counted) & jnp.any(counted)

    swapped = (count == 0) & as_at_init(update_leaves) & ~as_at_init(plan.leaves)
    message = _SWAPPED.format(where)

    def check(flag):
        return _callbacks.on_cpu(lambda f: (_refuse_if(message, f),), (jax.ShapeDtypeStruct((), jnp.bool_),), flag)[0]

    # On accelerators no host call enters the step (the refresh stays on the device): not checked there.
    checked = jax.lax.platform_dependent(swapped, cpu=check, default=lambda flag: jnp.asarray(True))
    return jnp.where(checked, alpha, jnp.nan)


def _refuse_if(message: str, flag) -> np.ndarray:
    """The host side of :func:`_unless_swapped`: ``ValueError(message)`` if ``flag``, else True."""
    if flag:
        raise ValueError(message)
    return np.asarray(True)


# --------------------------------------------------------- the alpha regulariser
def _refresh(spec, thresh, plan, penalty):
    """Exact alpha of every kernel and ``grad_W penalty(alpha)`` in the layout of the leaves.

    All eigenvalues (one host call), the tail estimate and ``d alpha / d lambda`` in
    JAX, the penalty's weights ``d P / d alpha``, then ``sum_j w_j d lambda_j / dW`` from
    the tail's eigenvectors only (a second host call). Params on a mesh of several
    devices: :func:`_refresh_on_mesh`.

    Returns:
      ``(grads, alpha, ok)``: ``d P / dW`` per kernel leaf (in ``plan`` leaf order),
      and per kernel alpha and whether its term was applied.
    """
    mats, pullback = _stacks_and_pullback(plan)
    if _mesh.mesh_of(*mats) is not None:
        return _refresh_on_mesh(spec, thresh, plan, penalty, mats, pullback)
    fits = []
    for g, (lam, factors) in zip(plan.groups, _factored.eigvals_factored(mats)):
        lam = numerical_floor(lam, g.N)
        est, fitted, dlam = _alpha_and_grad(_estimates(spec, thresh), g.pooled(lam))
        fits.append((est.alpha, fitted, dlam.reshape(lam.shape) * g.scale, factors))
    alpha = plan.scatter([f[0] for f in fits])
    ok = plan.scatter([f[1] & jnp.isfinite(W).all(axis=(1, 2, 3)) for f, W in zip(fits, mats)])
    w = jax.grad(penalty)(alpha, ok)
    w = jnp.where(ok & jnp.isfinite(w), w, 0.0)
    dlam = [f[2] * w[np.asarray(g.members)].astype(f[2].dtype)[:, None, None]
            for g, f in zip(plan.groups, fits)]
    grads = pullback(_factored.tail_gradient(mats, dlam, [f[3] for f in fits]))
    return tuple(grads.values()), jnp.where(ok, alpha, jnp.nan).astype(jnp.float32), ok


def _refresh_on_mesh(spec, thresh, plan, penalty, mats, pullback):
    """:func:`_refresh` of params on a mesh of several devices: ``jax.grad`` of the
    penalty through :func:`jaxww.training.penalties.plan_estimates`, i.e. the gradient of
    :func:`jaxww.alpha_penalty`, which the host refresh equals. The Gram matrices are
    summed over the devices and their eigendecompositions split between them; the
    weights are never gathered (:mod:`jaxww.linalg.sharded`). Every eigenvector is computed (no
    device solver computes only the tail's), about 2-3x the work of the eigenvalues.
    """
    def value(mats):
        est, _ = _reg.plan_estimates(plan, mats, spec, thresh)
        ok = est.status == _tail.FIT_OK
        return penalty(est.alpha, ok), (est.alpha, ok)

    grads, (alpha, ok) = jax.grad(value, has_aux=True)(mats)
    grads = pullback(grads)
    return tuple(grads.values()), jnp.where(ok, alpha, jnp.nan).astype(jnp.float32), ok


class AlphaRegularizationState(NamedTuple):
    """State of :func:`add_alpha_regularization`.

    Attributes:
      count: number of updates so far.
      alpha: ``{layer: alpha}`` at the last refresh (NaN: dropped).
      ok: ``{layer: bool}`` whether the layer's penalty is applied (False: no tail, flat
        tail, or NaN/Inf weights at the last refresh; its gradient is dropped).
      grad: ``d P / dW`` at the last refresh, one array per regularised leaf (leaf order).
      sq_norms: the float32 sum of squares of each regularised leaf given to ``init``
        (leaf order): the first update checks that it got the params as ``params``.
    """

    count: jax.Array
    alpha: dict
    ok: dict
    grad: tuple
    sq_norms: tuple


def add_alpha_regularization(
    strength: ScalarOrSchedule,
    target: float,
    every: int = 10,
    *,
    tail: _tail.Tail = "ks",
    temperature: float = _tail.DEFAULT_TEMPERATURE,
    distance: str = "squared",
    reduce: str = "mean",
    mask: Mask = None,
    layouts: LayoutOverride = None,
    thresh: float = _tail.EVALS_THRESH,
    min_evals: int | None = None,
) -> optax.GradientTransformation:
    """Add the gradient of an alpha penalty to the updates.

    .. math::

        u \\leftarrow u + s \\, \\nabla_W P, \\qquad
        P = \\operatorname{mean}_{l} \\, d(\\alpha_l(W_l), \\alpha^*)

    the transform counterpart of :func:`jaxww.alpha_penalty`, as
    :func:`optax.add_decayed_weights` is of an L2 term. Place it before the
    optimizer's scaling for a coupled penalty (as if it were in the loss) or after it
    for a decoupled one.

    Refreshes and the steps between. Every ``every`` steps (and at the first update)
    a *refresh* computes exactly, with LAPACK on the host, every eigenvalue of each
    ``W^T W`` (the cost of the eigenvalues alone), the tail estimate, and
    ``d alpha / dW = 2 W V diag(d alpha / d lambda) V^T`` from the eigenvectors ``V`` of
    the tail only (``d alpha / d lambda`` is zero outside it): that step's alpha, tail
    and gradient are those of ``jax.grad(alpha_penalty)``. Until the next refresh,
    alpha and its gradient are held: the steps between add
    ``s d'(alpha(W_r)) grad alpha(W_r)`` (one scaled add per matrix, nothing measurable
    next to a training step). Holding alpha, rather than extrapolating it to first
    order, keeps the penalty from acting on a prediction that its own steps make
    wrong (tested: extrapolation drove one layer of the digits MLP from alpha 4 to 10.7
    with target 2; holding brings it to 2.4). ``docs/training.md`` has the measured
    cost and accuracy.

    Under :func:`optax.inject_hyperparams` the numbers can be scheduled or set through
    ``state.hyperparams``: ``strength`` acts from the next update, ``target``,
    ``temperature`` and ``thresh`` (which enter the held alphas and gradient) from the
    next refresh. ``every`` is static: pass ``static_args="every"`` (add ``"tail"``
    for a numeric tail, ``"mask"`` / ``"layouts"`` for callables); see the module
    docstring.

    Args:
      strength: ``s >= 0``, a float, a scalar array (may be traced) or a schedule
        ``count -> s``.
      target: the target alpha ``alpha* > 1`` (a float or a scalar array).
      every: a refresh every this many steps (``>= 1``; ``1``: always exact); static.
      tail, temperature: how alpha is estimated (see :func:`jaxww.alpha`); ``tail`` is
        static, ``temperature`` numeric.
      distance: ``"squared"``, ``"absolute"``, ``"log"`` or ``"above"``
        (:func:`jaxww.training.penalties.alpha_distance`).
      reduce: ``"mean"`` or ``"sum"`` over layers.
      mask: optax-style mask (tree, prefix tree or callable) of the leaves to regularise.
      layouts: layout overrides, as in :func:`jaxww.analyze`.
      thresh: eigenvalues at or below this are dropped.
      min_evals: layers with fewer eigenvalues are left alone (static). None: 32
        (:data:`jaxww.defaults.MIN_VERDICT_EVALS`), the layers :func:`jaxww.analyze` gives a
        verdict; a 10-class head (10 eigenvalues) or a ``3x3x1x32`` convolution (9) is not
        touched. ``min_evals=8`` acts on every row analyze reports.

    Returns:
      An ``optax.GradientTransformation`` with an :class:`AlphaRegularizationState`;
      its ``init`` raises ``ValueError`` when the params have no eligible weight matrix.

    Raises:
      ValueError: ``target <= 1``, ``strength < 0``, ``every < 1`` or an unknown option
        (array values checked when concrete).
      TypeError: a non-scalar array for a number, or a traced ``every`` or ``tail``.

    Example:
      >>> import jax, optax, jaxww
      >>> params = {"dense": {"kernel": jax.random.normal(jax.random.key(0), (128, 64))}}
      >>> opt = optax.chain(jaxww.add_alpha_regularization(1e-3, target=3.0, every=10),
      ...                   optax.sgd(0.1))
      >>> state = opt.init(params)
      >>> updates, state = jax.jit(opt.update)(jax.tree.map(jax.numpy.zeros_like, params),
      ...                                       state, params)

      Under ``optax.inject_hyperparams``, with ``every`` static:

      >>> reg = optax.inject_hyperparams(jaxww.add_alpha_regularization, static_args="every")
      >>> opt = optax.chain(reg(strength=1e-3, target=3.0, every=10), optax.adam(1e-3))
      >>> state = opt.init(params)
      >>> state[0].hyperparams["strength"] = 0.0          # off from the next update on
      >>> updates, state = jax.jit(opt.update)(params, state, params)
    """
    target = _number(target, "target", _reg.check_target)
    strength = _check_nonneg(strength, "strength")
    every = _check_every(every)
    spec = _spec(tail, temperature)
    _reg.check_choice(distance, _reg.DISTANCES, "distance")
    _reg.check_choice(reduce, _reg.REDUCTIONS, "reduce")
    thresh = _thresh(thresh)
    min_evals = _min_evals(min_evals)

    def penalty(alpha_v, ok):
        return _reg.penalty_of_alphas(alpha_v, ok, target, distance, reduce)[0]

    def init_fn(params):
        plan = make_plan(params, None, layouts, min_evals=min_evals, where="add_alpha_regularization.init")
        return AlphaRegularizationState(
            count=jnp.zeros([], jnp.int32),
            alpha={n: jnp.asarray(jnp.nan, jnp.float32) for n in plan.names},
            ok={n: jnp.asarray(False) for n in plan.names},
            grad=tuple(jnp.zeros_like(plan.leaves[i]) for i in _kernel_leaves(plan)),
            sq_norms=_sq_norms(plan.leaves, _kernel_leaves(plan)))

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(_NEEDS_PARAMS.format("add_alpha_regularization"))
        where = "add_alpha_regularization.update"
        plan = make_plan(params, None, layouts, min_evals=min_evals, where=where)
        _check_layers(where, list(state.alpha), plan, [g.shape for g in state.grad])
        _check_updates(where, updates, params)
        leaves, treedef = jax.tree_util.tree_flatten(updates)   # structure checked above
        held = (state.grad, jnp.stack(list(state.alpha.values())), jnp.stack(list(state.ok.values())))

        def refresh(_):
            grad, alpha_v, ok = _refresh(spec, thresh, plan, penalty)
            return grad, _unless_swapped(where, state.count, state.sq_norms, leaves, plan, alpha_v), ok

        grad, alpha_v, ok = _every(every, state.count, refresh, lambda _: held, None)
        s = _value(strength, state.count)
        for i, g in zip(_kernel_leaves(plan), grad):
            leaves[i] = leaves[i] + (s * g).astype(leaves[i].dtype)
        return jax.tree_util.tree_unflatten(treedef, leaves), AlphaRegularizationState(
            count=optax.safe_increment(state.count), alpha=dict(zip(plan.names, alpha_v)),
            ok=dict(zip(plan.names, ok)), grad=grad, sq_norms=state.sq_norms)

    return _masked(optax.GradientTransformation(init_fn, update_fn), mask)


# --------------------------------------------------------- alpha-driven scaling
class AlphaScaleState(NamedTuple):
    """State of :func:`scale_by_alpha` and :func:`add_alpha_decayed_weights`.

    Attributes:
      count: number of updates so far.
      alpha: ``{layer: alpha}`` at the last refresh (NaN: no fit, layer left at scale 1).
      scale: ``{layer: factor}`` applied at the last update: the held alpha mapped with
        that update's ``min_scale`` and ``max_scale`` (which can change between
        refreshes under :func:`optax.inject_hyperparams`).
      sq_norms: the float32 sum of squares of each leaf holding a layer given to
        ``init`` (leaf order): the first update checks that it got the params as ``params``.
    """

    count: jax.Array
    alpha: dict
    scale: dict
    sq_norms: tuple


def _alpha_snapshot(plan, spec, thresh):
    """Per-kernel alpha (NaN where it cannot be fitted), from exact eigenvalues only
    (:mod:`jaxww.linalg.spectra`'s path: LAPACK ``?syevd`` on the CPU, the device's elsewhere;
    params on a mesh of several devices: the Gram matrices summed over the devices and
    their eigenvalues split between them, :func:`jaxww.linalg.sharded.eigvals`)."""
    out, stacks = [], [jax.lax.stop_gradient(W.reshape((-1,) + W.shape[-2:])) for W in plan.stacks()]
    spectra = ([_mesh.eigvals(W) for W in stacks] if _mesh.mesh_of(*stacks) is not None
               else eigvals_ascending(*stacks))
    for g, W, lam in zip(plan.groups, stacks, spectra):
        lam = lam.reshape(W.shape[0] // g.rf, g.rf, g.M)
        est = _estimates(spec, thresh)(g.pooled(numerical_floor(lam, g.N)))
        out.append(jnp.where(est.status == _tail.FIT_OK, est.alpha, jnp.nan))
    return plan.scatter(out)


def alpha_scales(alpha_v, min_scale: float, max_scale: float):
    """Affine map of alphas to ``[min_scale, max_scale]`` (TempBalance's rule).

    .. math:: s_l = s_{\\min} + (s_{\\max} - s_{\\min})
              \\frac{\\alpha_l - \\min_k \\alpha_k}{\\max_k \\alpha_k - \\min_k \\alpha_k}

    Layers with a NaN alpha get 1; when all valid alphas are equal every valid layer
    gets the midpoint.
    """
    ok = jnp.isfinite(alpha_v)
    lo = jnp.min(jnp.where(ok, alpha_v, jnp.inf))
    hi = jnp.max(jnp.where(ok, alpha_v, -jnp.inf))
    span = hi - lo
    has_span = jnp.isfinite(span) & (span > 0)
    frac = jnp.where(has_span, (jnp.where(ok, alpha_v, lo) - lo) / jnp.where(has_span, span, 1.0), 0.5)
    scale = min_scale + (max_scale - min_scale) * frac
    return jnp.where(ok, scale, 1.0)


def _alpha_driven(name, every, tail, temperature, min_scale, max_scale, layouts, thresh, min_evals, apply):
    """``(init_fn, update_fn)`` of a transform that applies per-layer factors ``s_l`` of alpha:
    ``apply(update, param, factor, count)`` on each weight leaf."""
    every = _check_every(every)
    min_evals = _min_evals(min_evals)
    spec = _spec(tail, temperature)
    min_scale, max_scale = _check_scales(min_scale, max_scale)
    thresh = _thresh(thresh)

    def init_fn(params):
        plan = make_plan(params, None, layouts, min_evals=min_evals, where=f"{name}.init")
        return AlphaScaleState(count=jnp.zeros([], jnp.int32),
                               alpha={n: jnp.asarray(jnp.nan, jnp.float32) for n in plan.names},
                               scale={n: jnp.asarray(1.0, jnp.float32) for n in plan.names},
                               sq_norms=_sq_norms(plan.leaves, _kernel_leaves(plan)))

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(_NEEDS_PARAMS.format(name))
        where = f"{name}.update"
        plan = make_plan(params, None, layouts, min_evals=min_evals, where=where)
        _check_layers(where, list(state.alpha), plan)
        _check_updates(where, updates, params)
        leaves, treedef = jax.tree_util.tree_flatten(updates)   # structure checked above
        held = jnp.stack([state.alpha[n] for n in plan.names])

        def refresh(_):
            a = _alpha_snapshot(plan, spec, thresh).astype(jnp.float32)
            return _unless_swapped(where, state.count, state.sq_norms, leaves, plan, a)

        a = _every(every, state.count, refresh, lambda _: held, None)
        s = alpha_scales(a, min_scale, max_scale).astype(jnp.float32)   # current min/max_scale
        for i, f in plan.per_leaf(s, 1.0).items():
            leaves[i] = apply(leaves[i], plan.leaves[i], f, state.count)
        return jax.tree_util.tree_unflatten(treedef, leaves), AlphaScaleState(
            count=optax.safe_increment(state.count), alpha=dict(zip(plan.names, a)),
            scale=dict(zip(plan.names, s)), sq_norms=state.sq_norms)

    return init_fn, update_fn


def scale_by_alpha(
    every: int = 100,
    *,
    tail: _tail.Tail = "fraction",
    temperature: float = _tail.DEFAULT_TEMPERATURE,
    min_scale: float = 0.5,
    max_scale: float = 1.5,
    mask: Mask = None,
    layouts: LayoutOverride = None,
    thresh: float = _tail.EVALS_THRESH,
    min_evals: int | None = None,
) -> optax.GradientTransformation:
    """Scale each layer's updates by an affine function of its alpha (TempBalance).

    .. math:: u_l \\leftarrow s_l u_l, \\qquad s_l = s_{\\min} + (s_{\\max} - s_{\\min})
              \\frac{\\alpha_l - \\min_k \\alpha_k}{\\max_k \\alpha_k - \\min_k \\alpha_k}

    With the defaults this is TempBalance's ``lr_l = lr * (0.5 + (alpha_l - min) /
    (max - min))``: layers with lighter tails (larger alpha, under-trained) learn
    faster. Alphas are refreshed every ``every`` steps (no gradient; the fast
    eigenvalue path); only weight matrices are scaled, other leaves pass through.
    Layers whose alpha cannot be fitted keep scale 1. Place it between the
    optimizer's preconditioning and the learning rate, e.g.
    ``optax.chain(optax.scale_by_adam(), jaxww.scale_by_alpha(), optax.scale(-lr))``.

    Under :func:`optax.inject_hyperparams` the numbers can be scheduled or set through
    ``state.hyperparams``: ``min_scale`` and ``max_scale`` act from the next update,
    ``temperature`` and ``thresh`` (which enter the held alphas) from the next
    refresh. ``every`` is static: pass ``static_args="every"`` (add ``"tail"`` for a
    numeric tail, ``"mask"`` / ``"layouts"`` for callables); see the module docstring.

    Args:
      every: refresh alphas every this many steps (``>= 1``); static.
      tail, temperature: how alpha is estimated (default: the top half, as TempBalance);
        ``tail`` is static, ``temperature`` numeric.
      min_scale, max_scale: the range of the factors, ``0 <= min_scale <= max_scale``
        (floats or scalar arrays, checked when concrete).
      mask: optax-style mask of the leaves to consider.
      layouts: layout overrides, as in :func:`jaxww.analyze`.
      thresh: eigenvalues at or below this are dropped.
      min_evals: layers with fewer eigenvalues are left alone (static). None: 32
        (:data:`jaxww.defaults.MIN_VERDICT_EVALS`), the layers :func:`jaxww.analyze` gives a
        verdict; a 10-class head (10 eigenvalues) or a ``3x3x1x32`` convolution (9) is not
        touched. ``min_evals=8`` acts on every row analyze reports.

    Returns:
      An ``optax.GradientTransformation`` with an :class:`AlphaScaleState`.

    Example:
      >>> import jax, optax, jaxww
      >>> params = {"dense": {"kernel": jax.random.normal(jax.random.key(0), (128, 64))}}
      >>> tb = optax.inject_hyperparams(jaxww.scale_by_alpha, static_args="every")
      >>> opt = optax.chain(optax.scale_by_adam(), tb(every=100), optax.scale(-1e-3))
      >>> state = opt.init(params)
      >>> state[1].hyperparams["max_scale"] = 2.0         # wider range from the next update
      >>> updates, state = jax.jit(opt.update)(params, state, params)

    References:
      Y. Zhou et al., "Temperature balancing, layer-wise weight analysis, and neural
      network training", NeurIPS 2023.
    """
    init_fn, update_fn = _alpha_driven(
        "scale_by_alpha", every, tail, temperature, min_scale, max_scale, layouts, thresh, min_evals,
        lambda u, p, f, c: u * f.astype(u.dtype))
    return _masked(optax.GradientTransformation(init_fn, update_fn), mask)


def add_alpha_decayed_weights(
    weight_decay: ScalarOrSchedule,
    every: int = 100,
    *,
    tail: _tail.Tail = "fraction",
    temperature: float = _tail.DEFAULT_TEMPERATURE,
    min_scale: float = 0.5,
    max_scale: float = 1.5,
    mask: Mask = None,
    layouts: LayoutOverride = None,
    thresh: float = _tail.EVALS_THRESH,
    min_evals: int | None = None,
) -> optax.GradientTransformation:
    """Add weight decay whose per-layer strength grows with the layer's alpha (AlphaDecay).

    .. math:: u_l \\leftarrow u_l + \\lambda s_l W_l, \\qquad
              s_l = s_{\\min} + (s_{\\max} - s_{\\min})
              \\frac{\\alpha_l - \\min_k \\alpha_k}{\\max_k \\alpha_k - \\min_k \\alpha_k}

    Layers with heavier tails (smaller alpha) get weaker decay, lighter-tailed layers
    stronger decay, as AlphaDecay assigns them; the linear map and its bounds are
    this library's choice, not a reproduction of the paper's settings. Only weight
    matrices are decayed (chain :func:`optax.add_decayed_weights` for other leaves);
    a non-finite weight adds no decay. Alphas are refreshed every ``every`` steps.

    Under :func:`optax.inject_hyperparams` the numbers can be scheduled or set through
    ``state.hyperparams``: ``weight_decay``, ``min_scale`` and ``max_scale`` act from
    the next update, ``temperature`` and ``thresh`` (which enter the held alphas) from
    the next refresh. ``every`` is static: pass ``static_args="every"`` (add
    ``"tail"`` for a numeric tail, ``"mask"`` / ``"layouts"`` for callables); see the
    module docstring.

    Args:
      weight_decay: base decay ``lambda >= 0``, a float, a scalar array (may be traced)
        or a schedule.
      every: refresh alphas every this many steps (``>= 1``); static.
      tail, temperature: how alpha is estimated (default: the top half); ``tail`` is
        static, ``temperature`` numeric.
      min_scale, max_scale: range of the per-layer factor (floats or scalar arrays).
      mask: optax-style mask of the leaves to consider.
      layouts: layout overrides, as in :func:`jaxww.analyze`.
      thresh: eigenvalues at or below this are dropped.
      min_evals: layers with fewer eigenvalues are left alone (static). None: 32
        (:data:`jaxww.defaults.MIN_VERDICT_EVALS`), the layers :func:`jaxww.analyze` gives a
        verdict; a 10-class head (10 eigenvalues) or a ``3x3x1x32`` convolution (9) is not
        touched. ``min_evals=8`` acts on every row analyze reports.

    Returns:
      An ``optax.GradientTransformation`` with an :class:`AlphaScaleState`.

    Example:
      >>> import jax, optax, jaxww
      >>> params = {"dense": {"kernel": jax.random.normal(jax.random.key(0), (128, 64))}}
      >>> decay = optax.inject_hyperparams(jaxww.add_alpha_decayed_weights, static_args="every")
      >>> opt = optax.chain(optax.scale_by_adam(),
      ...                   decay(optax.linear_schedule(1e-2, 0.0, 1000), every=100),
      ...                   optax.scale(-1e-3))
      >>> state = opt.init(params)
      >>> updates, state = jax.jit(opt.update)(params, state, params)

    References:
      D. He et al., "AlphaDecay: Module-wise weight decay for heavy-tailed balancing
      in LLMs", NeurIPS 2025.
    """
    weight_decay = _check_nonneg(weight_decay, "weight_decay")

    def apply(u, p, f, count):
        wd = _value(weight_decay, count)
        p = jnp.where(jnp.isfinite(p), p, jnp.zeros((), p.dtype))
        return u + (wd * f * p).astype(u.dtype)

    init_fn, update_fn = _alpha_driven(
        "add_alpha_decayed_weights", every, tail, temperature, min_scale, max_scale, layouts,
        thresh, min_evals, apply)
    return _masked(optax.GradientTransformation(init_fn, update_fn), mask)
