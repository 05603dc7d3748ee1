"""The alpha regulariser, an optax transform: ``u <- u + s grad P`` with
``P = mean_l d(alpha_l, target)`` (:func:`add_alpha_regularization`; how the transforms
behave under :func:`optax.inject_hyperparams` and their misuse checks:
:mod:`jaxww.training.transforms`)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxww import checks
from jaxww.fit import tail as _tail
from jaxww.linalg import factored as _factored
from jaxww.linalg import sharded as _mesh
from jaxww.linalg.spectra import numerical_floor
from jaxww.reading.kernels import LayoutOverride
from jaxww.training import misuse
from jaxww.training import penalties as _reg
from jaxww.training import refresh as _r
from jaxww.training.estimates import plan_estimates, tail_rows
from jaxww.training.plan import Mask
from jaxww.typing import ScanAxis


class AlphaRegularizationState(NamedTuple):
    """State of :func:`add_alpha_regularization`.

    Attributes:
      count: number of updates so far.
      alpha: ``{layer: alpha}`` at the last refresh (NaN: dropped).
      ok: ``{layer: bool}`` whether the layer's penalty is applied (False: no tail, flat
        tail, or NaN/Inf weights at the last refresh; its gradient is dropped).
      grad: ``d P / dW`` at the last refresh, one array per leaf holding a layer (leaf
        order; an integer leaf's is not applied).
      sq_norms: the float32 sum of squares of each regularised (floating-point) leaf given
        to ``init`` (leaf order): the first update checks that it got the params as ``params``.
    """

    count: jax.Array
    alpha: dict
    ok: dict
    grad: tuple
    sq_norms: tuple


def add_alpha_regularization(
    strength: _r.ScalarOrSchedule,
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
    scan_axis: ScanAxis = None,
    estimator: str | None = None,
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
    for a numeric tail, ``"scan_axis"`` for an int, ``"mask"`` / ``"layouts"`` for
    callables); see the module docstring.

    Layers stored as integers (quantised codes, read dequantised) enter ``P`` as
    constants: their alpha is measured and in the state, their updates pass through
    unchanged (one ``UserWarning`` at ``init`` names them).

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
      scan_axis: the layer axis of scanned stacks, as in :func:`jaxww.analyze` (static).
      estimator: instead of ``tail``, a paper's estimator (see :func:`jaxww.alpha`; static).

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
    target = checks.hyperparameter(target, "target", _reg.target_arg)
    strength = _r.nonnegative_arg(strength, "strength")
    every = _r.every_arg(every)
    spec = _r.tail_arg(tail, temperature, estimator, "ks")
    checks.one_of(distance, _reg.DISTANCES, "distance")
    checks.one_of(reduce, _reg.REDUCTIONS, "reduce")
    thresh = _r.thresh_arg(thresh)
    min_evals = _r.min_evals_arg(min_evals)
    scan_axis = _r.scan_axis_arg(scan_axis)
    name = "add_alpha_regularization"

    def penalty(alpha_v, ok):
        return _reg.penalty_of_alphas(alpha_v, ok, target, distance, reduce)[0]

    def init_fn(params):
        plan = _r.init_plan(name, params, layouts, min_evals, scan_axis)
        return AlphaRegularizationState(
            count=jnp.zeros([], jnp.int32),
            alpha={n: jnp.asarray(jnp.nan, jnp.float32) for n in plan.names},
            ok={n: jnp.asarray(False) for n in plan.names},
            grad=tuple(jnp.zeros_like(plan.leaves[i]) for i in _r.kernel_leaves(plan)),
            sq_norms=_r.sq_norms(plan.leaves, _r.trained_leaves(plan)))

    def update_fn(updates, state, params=None):
        plan, leaves, treedef = misuse.update_plan(name, updates, params, list(state.alpha), layouts, min_evals,
                                                   [g.shape for g in state.grad], scan_axis=scan_axis)
        held = (state.grad, jnp.stack(list(state.alpha.values())), jnp.stack(list(state.ok.values())))

        def refresh(_):
            grad, alpha_v, ok = _refresh(spec, thresh, plan, penalty)
            alpha_v = misuse.unless_swapped(f"{name}.update", state.count, state.sq_norms, leaves, plan, alpha_v)
            return grad, alpha_v, ok

        grad, alpha_v, ok = _r.every_steps(every, state.count, refresh, lambda _: held, None)
        s = _r.value_at(strength, state.count)
        for i, g in zip(_r.kernel_leaves(plan), grad):      # u <- u + s grad P (integer codes: u)
            if i not in plan.frozen:
                leaves[i] = leaves[i] + (s * g).astype(leaves[i].dtype)
        return jax.tree_util.tree_unflatten(treedef, leaves), AlphaRegularizationState(
            count=optax.safe_increment(state.count), alpha=dict(zip(plan.names, alpha_v)),
            ok=dict(zip(plan.names, ok)), grad=grad, sq_norms=state.sq_norms)

    return _r.masked(optax.GradientTransformation(init_fn, update_fn), mask)


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
    mats, pullback = _r.stacks_and_pullback(plan)
    if _mesh.mesh_of(*mats) is not None:
        return _refresh_on_mesh(spec, thresh, plan, penalty, mats, pullback)
    fits = []
    for g, (lam, factors) in zip(plan.groups, _factored.eigvals_factored(mats)):
        lam = numerical_floor(lam, g.N)
        est, fitted, dlam = _r.alpha_and_grad(lambda x: tail_rows(x, spec, thresh), g.pooled(lam))
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
    penalty through :func:`jaxww.training.estimates.plan_estimates`, i.e. the gradient of
    :func:`jaxww.alpha_penalty`, which the host refresh equals. The Gram matrices are
    summed over the devices and their eigendecompositions split between them; the
    weights are never gathered (:mod:`jaxww.linalg.sharded`). Every eigenvector is computed (no
    device solver computes only the tail's), about 2-3x the work of the eigenvalues.
    """
    def value(mats):
        est, _ = plan_estimates(plan, mats, spec, thresh)
        ok = est.status == _tail.FIT_OK
        return penalty(est.alpha, ok), (est.alpha, ok)

    grads, (alpha, ok) = jax.grad(value, has_aux=True)(mats)
    grads = pullback(grads)
    return tuple(grads.values()), jnp.where(ok, alpha, jnp.nan).astype(jnp.float32), ok
