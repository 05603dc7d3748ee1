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
(:mod:`jaxww._host_eigh`): eigenvalues only, plus for the regulariser the
eigenvectors of the tail. ``docs/training.md`` has the measured cost.

References:
  Y. Zhou, T. Pang, K. Liu, C. H. Martin, M. W. Mahoney, Y. Yang, "Temperature
  balancing, layer-wise weight analysis, and neural network training" (TempBalance),
  NeurIPS 2023.
  D. He et al., "AlphaDecay: Module-wise weight decay for heavy-tailed balancing in
  LLMs", NeurIPS 2025.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxww import _host_eigh, _tail
from jaxww import regularizers as _reg
from jaxww._plan import Mask, make_plan
from jaxww.kernels import LayoutOverride
from jaxww.spectra import numerical_floor

ScalarOrSchedule = Union[float, Callable[[jax.Array], jax.Array]]
_HI = jax.lax.Precision.HIGHEST
_NEEDS_PARAMS = "{}: update needs the params: call update(updates, state, params)"


# ------------------------------------------------------------------- validation
def _check_every(every) -> int:
    if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
        raise ValueError(f"every must be an int >= 1, got {every!r}")
    return int(every)


def _check_nonneg(value, what: str):
    if callable(value):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{what} must be a number >= 0 or a schedule, got {value!r}")
    if not (np.isfinite(value) and value >= 0):
        raise ValueError(f"{what} must be finite and >= 0, got {value}")
    return float(value)


def _check_scales(lo, hi):
    for v, what in ((lo, "min_scale"), (hi, "max_scale")):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or v < 0:
            raise ValueError(f"{what} must be a finite number >= 0, got {v!r}")
    if lo > hi:
        raise ValueError(f"min_scale ({lo}) must be <= max_scale ({hi})")
    return float(lo), float(hi)


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


def _stacks_and_pullback(plan):
    """The plan's group stacks and ``pullback(per-group grads) -> {leaf index: grad}``."""
    positions = sorted({k.leaf for k in plan.kernels})

    def gather(kernel_leaves):
        leaves = list(plan.leaves)
        for p, v in zip(positions, kernel_leaves):
            leaves[p] = v
        return plan.stacks(leaves)

    mats, vjp = jax.vjp(gather, [plan.leaves[p] for p in positions])
    return mats, lambda grads: dict(zip(positions, vjp(grads)[0]))


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


def _spectral_grad(Z, g, V):
    """``sum_j g_j d lambda_j / dW = 2 sum_j g_j (W v_j) v_j^T`` with ``Z = W V``."""
    return 2.0 * jnp.einsum("...nk,...mk->...nm", Z * g[..., None, :], V, precision=_HI)


# --------------------------------------------------------- the alpha regulariser
class _Refresh(NamedTuple):
    """Per shape group, what an exact refresh keeps for the steps until the next one."""

    basis: jax.Array        # (G, rf, M, K): top-K eigenvectors of W^T W
    reference: jax.Array    # (G, rf, M): each matrix's spectrum, ascending
    tail_size: jax.Array    # (G,): tail size of the exact estimate
    held: jax.Array         # (G, rf, N, M): d alpha / dW through the tail eigenvalues below the basis


class _Tracked(NamedTuple):
    """Per shape group, alpha on the fixed basis: ``d alpha / dW = 2 Z diag(dtheta) V^T + held``."""

    alpha: jax.Array        # (G,)
    ok: jax.Array           # (G,)
    num_tail: jax.Array     # (G,)
    Z: jax.Array            # (G, rf, N, K): W V
    dtheta: jax.Array       # (G, rf, K): d alpha / d theta, theta_j = ||W v_j||^2


def _refresh(spec, thresh, plan, mats, ranks):
    """Exact step: every eigenvalue and the top-K eigenvectors of every ``W^T W`` (one host
    call), the exact estimate, and ``held`` (a second host call, only when a tail is
    larger than its basis)."""
    out, below = [], []
    for g, W, (lam, V), K in zip(plan.groups, mats, _host_eigh.eigh_top(mats, ranks), ranks):
        lam = numerical_floor(lam, g.N)
        est, _, dlam = _alpha_and_grad(
            lambda x: jax.vmap(lambda e: _tail.estimate(e, spec, thresh))(x), g.pooled(lam))
        below.append((dlam.reshape(lam.shape) * g.scale).at[..., g.M - K:].set(0.0))
        out.append((V, jnp.where(jnp.isnan(lam), 0.0, lam), est.num_tail.astype(jnp.int32)))
    held = jax.lax.cond(jnp.any(jnp.stack([jnp.any(d != 0) for d in below])),
                        lambda m: _host_eigh.tail_gradient(m, below),
                        lambda m: [jnp.zeros_like(W) for W in m], mats)
    return [_Refresh(*o, h) for o, h in zip(out, held)]


def _track(spec, thresh, g, W, r: _Refresh) -> _Tracked:
    """Alpha on ``theta_j = ||W v_j||^2`` (the basis held fixed) joined with the rest of the
    reference spectrum; its gradient is exact for fixed ``v_j`` (Hellmann-Feynman)."""
    Z = jnp.einsum("...nm,...mk->...nk", W, r.basis, precision=_HI)
    fin = jnp.isfinite(Z).all(axis=(-2, -1))     # NaN/Inf anywhere in W reaches Z
    Z = jnp.where(fin[..., None, None], Z, jnp.zeros((), Z.dtype))
    theta = numerical_floor(jnp.sum(Z * Z, axis=-2), g.N)
    K, M = theta.shape[-1], r.reference.shape[-1]

    def estimate(t):
        x = jnp.concatenate([jax.lax.stop_gradient(r.reference[..., : M - K]), t], axis=-1)
        x = jnp.where(fin.all(axis=-1)[:, None], g.pooled(x), jnp.nan)
        return jax.vmap(lambda e, n: _tail.held_estimate(e, spec, n, thresh))(x, r.tail_size)

    est, ok, dtheta = _alpha_and_grad(estimate, theta)
    return _Tracked(est.alpha, ok, est.num_tail, Z, dtheta * g.scale)


def _penalty(alpha_v, ok, target, distance, reduce):
    per = jnp.where(ok, _reg.alpha_distance(jnp.where(ok, alpha_v, target), target, distance), 0.0)
    return _reg.reduce_layers(per, ok, reduce)


class AlphaRegularizationState(NamedTuple):
    """State of :func:`add_alpha_regularization`.

    Attributes:
      count: number of updates so far.
      alpha: ``{layer: alpha}`` used by the penalty at the last update (NaN: dropped).
      ok: ``{layer: bool}`` whether the layer's penalty was applied at the last update
        (False: no tail, flat tail, or NaN/Inf weights; its gradient was dropped).
      covered: ``{layer: bool}`` whether the tail fits in the basis
        (``tail size <= rank * rf``). Where it does not, the gradient through the tail
        eigenvalues below the basis is the one of the last refresh (``held``).
      tail_size: per shape group ``(G,)``: tail size at the last refresh.
      basis: per shape group ``(G, rf, M, rank)``: top eigenvectors of ``W^T W`` at the
        last refresh.
      reference: per shape group ``(G, rf, M)``: each matrix's spectrum (ascending) at
        the last refresh.
      held: per shape group ``(G, rf, N, M)``: ``d alpha / d W`` through the tail
        eigenvalues below the basis, at the last refresh (zeros when the tail fits).
    """

    count: jax.Array
    alpha: dict
    ok: dict
    covered: dict
    tail_size: tuple
    basis: tuple
    reference: tuple
    held: tuple


def add_alpha_regularization(
    strength: ScalarOrSchedule,
    target: float,
    every: int = 10,
    *,
    tail: _tail.Tail = "ks",
    temperature: float = _tail.DEFAULT_TEMPERATURE,
    distance: str = "squared",
    reduce: str = "mean",
    rank: int = 32,
    mask: Mask = None,
    layouts: LayoutOverride = None,
    thresh: float = _tail.EVALS_THRESH,
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
    a *refresh* computes, with LAPACK on the host, every eigenvalue of each ``W^T W``
    (the cost of the eigenvalues alone) and its top ``rank`` eigenvectors ``V`` (a
    thin back-transform), and the exact tail estimate. Every step then evaluates
    alpha on ``theta_j = ||W v_j||^2`` joined with the rest of the spectrum of the last
    refresh, with that refresh's tail size (``"ks"``; other tails are chosen afresh),
    and adds its gradient for fixed ``v_j`` (Hellmann-Feynman),

    .. math:: \\nabla_W \\alpha = 2 (W V) \\operatorname{diag}(\\partial \\alpha /
              \\partial \\theta) V^T + H,

    two ``N x M x rank`` matmuls per matrix. ``H`` (``held``) is the gradient through
    the tail eigenvalues below the basis at the last refresh (zero when the tail fits
    in the basis, which ``covered`` reports; else computed at the refresh from those
    eigenvectors only). At a refresh ``V`` is exact, so that step's alpha, tail and
    gradient are those of ``jax.grad(alpha_penalty)``; between refreshes the basis
    drifts by the change of the weights (``docs/training.md`` has the measured
    accuracy and cost).

    Args:
      strength: ``s >= 0``, a float or a schedule ``count -> s``.
      target: the target alpha ``alpha* > 1``.
      every: a refresh every this many steps (``>= 1``; ``1``: always exact).
      tail, temperature: how alpha is estimated (see :func:`jaxww.alpha`).
      distance: ``"squared"``, ``"absolute"``, ``"log"`` or ``"above"``
        (:func:`jaxww.regularizers.alpha_distance`).
      reduce: ``"mean"`` or ``"sum"`` over layers.
      rank: eigenvectors kept per matrix (clipped to its smaller dimension); make it
        at least the tail size.
      mask: optax-style mask (tree, prefix tree or callable) of the leaves to regularise.
      layouts: layout overrides, as in :func:`jaxww.analyze`.
      thresh: eigenvalues at or below this are dropped.

    Returns:
      An ``optax.GradientTransformation`` with an :class:`AlphaRegularizationState`;
      its ``init`` raises ``ValueError`` when the params have no eligible weight matrix.

    Raises:
      ValueError: ``target <= 1``, ``strength < 0``, ``every < 1``, ``rank < 1`` or an
        unknown option.

    Example:
      >>> import jax, optax, jaxww
      >>> params = {"dense": {"kernel": jax.random.normal(jax.random.key(0), (128, 64))}}
      >>> opt = optax.chain(jaxww.add_alpha_regularization(1e-3, target=3.0, every=10),
      ...                   optax.sgd(0.1))
      >>> state = opt.init(params)
      >>> updates, state = jax.jit(opt.update)(jax.tree.map(jax.numpy.zeros_like, params),
      ...                                       state, params)
    """
    target = _reg.check_target(target)
    strength = _check_nonneg(strength, "strength")
    every = _check_every(every)
    spec = _tail.tail_spec(tail, temperature)
    _reg.check_choice(distance, _reg.DISTANCES, "distance")
    _reg.check_choice(reduce, _reg.REDUCTIONS, "reduce")
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < 1:
        raise ValueError(f"rank must be an int >= 1, got {rank!r}")
    thresh = float(thresh)

    def init_fn(params):
        plan = make_plan(params, None, layouts, where="add_alpha_regularization.init")
        mats = plan.stacks()
        zero = {n: jnp.asarray(False) for n in plan.names}
        return AlphaRegularizationState(
            count=jnp.zeros([], jnp.int32),
            alpha={n: jnp.asarray(jnp.nan, jnp.float32) for n in plan.names}, ok=zero, covered=zero,
            tail_size=tuple(jnp.zeros(W.shape[:1], jnp.int32) for W in mats),
            basis=tuple(jnp.zeros(W.shape[:2] + (g.M, min(rank, g.M)), W.dtype)
                        for g, W in zip(plan.groups, mats)),
            reference=tuple(jnp.zeros(W.shape[:-2] + W.shape[-1:], W.dtype) for W in mats),
            held=tuple(jnp.zeros_like(W) for W in mats))

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(_NEEDS_PARAMS.format("add_alpha_regularization"))
        plan = make_plan(params, None, layouts, where="add_alpha_regularization.update")
        mats, pullback = _stacks_and_pullback(plan)
        # Start after the incoming updates exist: no overlap with the backward pass (speed).
        mats, _ = jax.lax.optimization_barrier((mats, jax.tree.leaves(updates)))
        ranks = [b.shape[-1] for b in state.basis]
        kept = [_Refresh(*f) for f in zip(state.basis, state.reference, state.tail_size, state.held)]
        fresh = _every(every, state.count, lambda m: _refresh(spec, thresh, plan, m, ranks),
                       lambda m: kept, mats)
        tracked = [_track(spec, thresh, g, W, r) for g, W, r in zip(plan.groups, mats, fresh)]
        alpha_v, ok = plan.scatter([t.alpha for t in tracked]), plan.scatter([t.ok for t in tracked])
        w = jax.grad(lambda a: _penalty(a, ok, target, distance, reduce))(jnp.where(ok, alpha_v, target))
        w = jnp.where(ok & jnp.isfinite(w), w, 0.0) * _value(strength, state.count)
        grads = [_spectral_grad(t.Z, t.dtheta * wg[:, None, None], r.basis) + wg[:, None, None, None] * r.held
                 for g, t, r in zip(plan.groups, tracked, fresh)
                 for wg in [w[np.asarray(g.members)].astype(t.Z.dtype)]]
        leaves, treedef = plan.check_updates(updates)
        for i, gl in pullback(grads).items():
            leaves[i] = leaves[i] + gl.astype(leaves[i].dtype)
        covered = plan.scatter([t.num_tail <= g.rf * K for g, t, K in zip(plan.groups, tracked, ranks)])
        named = lambda v: dict(zip(plan.names, v))  # noqa: E731
        return jax.tree_util.tree_unflatten(treedef, leaves), AlphaRegularizationState(
            count=optax.safe_increment(state.count), alpha=named(alpha_v.astype(jnp.float32)),
            ok=named(ok), covered=named(covered & ok), tail_size=tuple(r.tail_size for r in fresh),
            basis=tuple(r.basis for r in fresh), reference=tuple(r.reference for r in fresh),
            held=tuple(r.held for r in fresh))

    return _masked(optax.GradientTransformation(init_fn, update_fn), mask)


# --------------------------------------------------------- alpha-driven scaling
class AlphaScaleState(NamedTuple):
    """State of :func:`scale_by_alpha` and :func:`add_alpha_decayed_weights`.

    Attributes:
      count: number of updates so far.
      alpha: ``{layer: alpha}`` at the last refresh (NaN: no fit, layer left at scale 1).
      scale: ``{layer: factor}`` applied since the last refresh.
    """

    count: jax.Array
    alpha: dict
    scale: dict


def _alpha_snapshot(plan, spec, thresh):
    """Per-kernel alpha (NaN where it cannot be fitted), from exact eigenvalues only."""
    out = []
    for g, (lam, _) in zip(plan.groups, _host_eigh.eigh_top(plan.stacks(), [0] * len(plan.groups))):
        est = jax.vmap(lambda e: _tail.estimate(e, spec, thresh))(g.pooled(numerical_floor(lam, g.N)))
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


def _alpha_driven(name, every, tail, temperature, min_scale, max_scale, layouts, thresh, apply):
    """``(init_fn, update_fn)`` of a transform that applies per-layer factors ``s_l`` of alpha:
    ``apply(update, param, factor, count)`` on each weight leaf."""
    every = _check_every(every)
    spec = _tail.tail_spec(tail, temperature)
    min_scale, max_scale = _check_scales(min_scale, max_scale)
    thresh = float(thresh)

    def init_fn(params):
        names = make_plan(params, None, layouts, where=f"{name}.init").names
        return AlphaScaleState(count=jnp.zeros([], jnp.int32),
                               alpha={n: jnp.asarray(jnp.nan, jnp.float32) for n in names},
                               scale={n: jnp.asarray(1.0, jnp.float32) for n in names})

    def refresh(plan):
        a = _alpha_snapshot(plan, spec, thresh).astype(jnp.float32)
        return a, alpha_scales(a, min_scale, max_scale).astype(jnp.float32)

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(_NEEDS_PARAMS.format(name))
        plan = make_plan(params, None, layouts, where=f"{name}.update")
        kept = (jnp.stack([state.alpha[n] for n in plan.names]),
                jnp.stack([state.scale[n] for n in plan.names]))
        a, s = _every(every, state.count, lambda _: refresh(plan), lambda _: kept, None)
        leaves, treedef = plan.check_updates(updates)
        for i, f in plan.per_leaf(s, 1.0).items():
            leaves[i] = apply(leaves[i], plan.leaves[i], f, state.count)
        return jax.tree_util.tree_unflatten(treedef, leaves), AlphaScaleState(
            count=optax.safe_increment(state.count), alpha=dict(zip(plan.names, a)),
            scale=dict(zip(plan.names, s)))

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

    Args:
      every: refresh alphas every this many steps (``>= 1``).
      tail, temperature: how alpha is estimated (default: the top half, as TempBalance).
      min_scale, max_scale: the range of the factors, ``0 <= min_scale <= max_scale``.
      mask: optax-style mask of the leaves to consider.
      layouts: layout overrides, as in :func:`jaxww.analyze`.
      thresh: eigenvalues at or below this are dropped.

    Returns:
      An ``optax.GradientTransformation`` with an :class:`AlphaScaleState`.

    References:
      Y. Zhou et al., "Temperature balancing, layer-wise weight analysis, and neural
      network training", NeurIPS 2023.
    """
    init_fn, update_fn = _alpha_driven(
        "scale_by_alpha", every, tail, temperature, min_scale, max_scale, layouts, thresh,
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

    Args:
      weight_decay: base decay ``lambda >= 0``, a float or a schedule.
      every: refresh alphas every this many steps (``>= 1``).
      tail, temperature: how alpha is estimated (default: the top half).
      min_scale, max_scale: range of the per-layer factor.
      mask: optax-style mask of the leaves to consider.
      layouts: layout overrides, as in :func:`jaxww.analyze`.
      thresh: eigenvalues at or below this are dropped.

    Returns:
      An ``optax.GradientTransformation`` with an :class:`AlphaScaleState`.

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
        thresh, apply)
    return _masked(optax.GradientTransformation(init_fn, update_fn), mask)
