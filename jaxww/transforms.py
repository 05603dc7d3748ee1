"""optax gradient transformations driven by the power-law exponent ``alpha`` of each layer.

Three small pieces, each an ``optax.GradientTransformation`` with a ``NamedTuple``
state, a ``mask`` like optax's and composable with ``optax.chain``:

* :func:`add_alpha_regularization` adds ``strength * grad P`` to the updates, with
  ``P = mean_l d(alpha_l, target)`` (as :func:`optax.add_decayed_weights` adds
  ``weight_decay * params``);
* :func:`scale_by_alpha` scales each layer's updates by an affine function of its
  alpha (TempBalance's per-layer learning rates);
* :func:`add_alpha_decayed_weights` adds weight decay whose strength per layer is an
  affine function of its alpha (AlphaDecay).

Cost model of :func:`add_alpha_regularization` (``every=k``): an exact step (full
``eigh`` of every ``W^T W``) every ``k`` steps, and between them cheap steps on the
top-``rank`` eigenpairs kept in the state and refined by subspace iteration (see its
docstring). ``docs/training.md`` has the measured trade-off.

References:
  Y. Zhou, T. Pang, K. Liu, C. H. Martin, M. W. Mahoney, Y. Yang, "Temperature
  balancing, layer-wise weight analysis, and neural network training" (TempBalance),
  NeurIPS 2023.
  D. He et al., "AlphaDecay: Module-wise weight decay for heavy-tailed balancing in
  LLMs", NeurIPS 2025.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxww import regularizers as _reg
from jaxww.spectra import eigenvalues as _eigenvalues
from jaxww.spectra import numerical_floor

ScalarOrSchedule = Union[float, Callable[[jax.Array], jax.Array]]
_HI = jax.lax.Precision.HIGHEST


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


def _masked(t: optax.GradientTransformation, mask) -> optax.GradientTransformation:
    """``t`` applied only where ``mask`` (optax-style) is True; ``t`` itself for no mask."""
    return t if mask is None else optax.masked(t, mask)


def _value(v, count):
    return v(count) if callable(v) else v


def _leaf_positions(plan):
    """Sorted unique leaf indices holding kernels."""
    return sorted({k.leaf for k in plan.kernels})


def _flatten_updates(updates, plan):
    leaves, treedef = jax.tree_util.tree_flatten(updates)
    if len(leaves) != len(plan.leaves):
        raise ValueError(f"updates have {len(leaves)} leaves but params have {len(plan.leaves)}: "
                         "they must have the same tree structure")
    return leaves, treedef


def _names(plan):
    return [k.name for k in plan.kernels]


def _in_order(plan, per_group):
    """Concatenate per-group ``(G,)`` arrays and reorder them to kernel order."""
    order = np.concatenate([np.asarray(g.members) for g in plan.groups])
    inv = np.argsort(order)
    return jnp.concatenate(per_group)[inv]


def _per_leaf(plan, values, fill):
    """``{leaf index: factor}`` broadcastable against the leaf (stacks: per index)."""
    out = {}
    for i, k in enumerate(plan.kernels):
        leaf = plan.leaves[k.leaf]
        if k.index is None:
            out[k.leaf] = values[i]
        else:
            cur = out.get(k.leaf)
            if cur is None:
                cur = jnp.full((leaf.shape[0],), fill, values.dtype)
            out[k.leaf] = cur.at[k.index].set(values[i])
    for li, v in out.items():
        leaf = plan.leaves[li]
        if v.ndim == 1:
            out[li] = v.reshape((-1,) + (1,) * (leaf.ndim - 1))
    return out


# ------------------------------------------------------------------ the tracker
def _spectrum_snapshot(mats, group):
    """Pooled spectrum ``(G, rf*M)`` ascending, from the fast eigenvalue path; 0 for non-finite."""
    G, rf, N, M = mats.shape
    ev = _eigenvalues(jax.lax.stop_gradient(mats).reshape(G * rf, N, M))
    ev = _reg._pooled(ev.reshape(G, rf, M), group)
    fin = jnp.isfinite(ev).all(axis=-1)
    ev = jnp.where(fin[:, None], ev, 0.0)
    return jnp.sort(ev, axis=-1), fin


def _held_estimate(x, spec, n_t, thresh):
    """Alpha of one combined spectrum; the KS tail size is held at ``n_t``."""
    if spec.kind != "ks":
        return _reg._estimate(x, spec, thresh)
    _, logx, kc = _reg._prepare(x, thresh)
    small = kc < _reg.SMALL_N
    i = jnp.maximum(kc - n_t, 0)
    alpha, ok = _reg._alpha_at(logx, kc, i, small)
    ok &= (n_t >= 2) & (kc >= 2) & jnp.isfinite(x).all()
    status = jnp.where(ok, _reg.TAIL_OK, _reg.TAIL_DEGENERATE)
    return _reg.TailAlpha(jnp.where(ok, alpha, jnp.nan), jnp.nan, jnp.where(ok, kc - i, 0),
                          kc, status)


def _alpha_and_grad(fn, lam):
    """``alpha = fn(lam)`` per kernel and ``d alpha / d lam`` (kernels are independent)."""
    def f(x):
        est = fn(x)
        return jnp.where(est.status == _reg.TAIL_OK, est.alpha, 0.0), est

    a, vjp, est = jax.vjp(f, lam, has_aux=True)
    ok = est.status == _reg.TAIL_OK
    (g,) = vjp(jnp.ones_like(a))
    g = jnp.where(ok.reshape(ok.shape + (1,) * (g.ndim - 1)) & jnp.isfinite(g), g, 0.0)
    return est, ok, g


def _one_after_another(fn, groups, *per_group):
    """``[fn(g, *args_g) for g]``, each group's work ordered after the previous group's.

    The groups are independent, so XLA:CPU may run them concurrently. Inside a
    ``lax.cond`` branch, several concurrent pieces of work with LAPACK calls
    (``eigh``, ``qr``) deadlocked XLA:CPU (jaxlib 0.10.2, 2 cores). An
    ``optimization_barrier`` makes each group wait for the previous one; the
    steps below order their own pieces the same way.
    """
    outs, prev = [], None
    for g, *args in zip(groups, *per_group):
        if prev is not None:
            args, _ = jax.lax.optimization_barrier((tuple(args), prev))
        out = fn(g, *args)
        outs.append(out)
        prev = out
    return outs


def _per_matrix(fn, x):
    """``fn`` on each matrix of the batch ``x`` (``(..., a, b)``), one after another on CPU.

    On the CPU the LAPACK kernels loop over a batch anyway; run batched inside a
    ``lax.cond`` branch they deadlocked XLA:CPU (jaxlib 0.10.2 on 2 cores, batch >= 4).
    ``lax.map`` keeps one call per matrix. Other backends get the batched call.
    """
    if jax.default_backend() != "cpu" or x.ndim == 2:
        return fn(x)
    flat = x.reshape((-1,) + x.shape[-2:])
    out = jax.lax.map(fn, flat)
    return jax.tree.map(lambda o: o.reshape(x.shape[:-2] + o.shape[1:]), out)


def _spectral_grad(Z, g, V):
    """``sum_j g_j d lambda_j / dW = 2 sum_j g_j (W v_j) v_j^T`` with ``Z = W V``."""
    return 2.0 * jnp.einsum("...nk,...mk->...nm", Z * g[..., None, :], V, precision=_HI)


def _wt_z(W, Z):
    """``W^T Z`` as ``(Z^T W)^T``: the big operand keeps its layout (2x faster on CPU)."""
    return jnp.swapaxes(jnp.einsum("...nk,...nm->...km", Z, W, precision=_HI), -1, -2)


class _Refresh(NamedTuple):
    """Per shape group, what a full step stores for the steps that follow it."""

    basis: jax.Array        # (G, rf, M, K): top-K eigenvectors of W^T W
    reference: jax.Array    # (G, rf, M): each matrix's spectrum, ascending
    tail_size: jax.Array    # (G,): tail size of the exact estimate
    held: jax.Array         # (G, rf, N, M): d alpha / dW through the eigenvalues below the basis
    error: jax.Array        # (G,): tracking error of the previous basis


class _Tracked(NamedTuple):
    """Per shape group, what every step computes on the basis.

    ``d alpha / dW = _spectral_grad(Z, dtheta, V) + held``.
    """

    alpha: jax.Array        # (G,)
    ok: jax.Array           # (G,)
    num_tail: jax.Array     # (G,)
    Z: jax.Array            # (G, rf, N, K): W V
    dtheta: jax.Array       # (G, rf, K): d alpha / d theta (Ritz values)
    V: jax.Array            # (G, rf, M, K): Ritz vectors
    basis: jax.Array        # (G, rf, M, K): the basis after ``refine`` subspace iterations


def _combined_estimate(spec, thresh, group, reference, theta, n_t, fin):
    """Alpha (and its status) of the lower reference spectrum joined with the tracked top.

    ``theta`` (G, rf, K) are the Ritz values on the basis (with gradient);
    ``reference[..., :M-K]`` the rest of each matrix's spectrum at the last full step.
    ``"ks"`` keeps the tail size ``n_t`` of the last full step; other tails are
    estimated afresh. At a full step this is the exact spectrum and estimate.
    """
    K, M = theta.shape[-1], reference.shape[-1]
    x = jnp.concatenate([jax.lax.stop_gradient(reference[..., : M - K]), theta], axis=-1)
    x = jnp.where(fin[:, None], _reg._pooled(x, group), jnp.nan)
    return jax.vmap(lambda e, t: _held_estimate(e, spec, t, thresh))(x, n_t)


def _refresh(spec, thresh, g, W, Q_old, count):
    """Full step: ``eigh`` of every ``W^T W``; the exact basis, spectra, tail and ``held``."""
    G, rf, N, M = W.shape
    K = Q_old.shape[-1]
    fin = jnp.isfinite(W).all(axis=(-2, -1))
    W0 = jnp.where(fin[..., None, None], W, jnp.zeros((), W.dtype))
    w, V = _per_matrix(jnp.linalg.eigh, jnp.einsum("...nm,...nk->...mk", W0, W0, precision=_HI))
    lam = numerical_floor(jnp.maximum(w, 0.0), N)                         # (G, rf, M) ascending
    kfin = fin.all(axis=-1)
    pooled = jnp.where(kfin[:, None], _reg._pooled(lam, g), jnp.nan)
    est, ok, gl = _alpha_and_grad(
        lambda x: jax.vmap(lambda e: _reg._estimate(e, spec, thresh))(x), pooled)
    gl = gl.reshape(G, rf, M)[..., : M - K] * g.scale
    V_low = V[..., : M - K]

    def through_lower(_):
        return _spectral_grad(jnp.einsum("...nm,...mk->...nk", W0, V_low, precision=_HI), gl, V_low)

    # Zero (and two matmuls saved) when every tail fits in the basis.
    held = jax.lax.cond(jnp.any(gl != 0), through_lower, lambda _: jnp.zeros_like(W0), None)
    # How well did the previous basis track? Its Ritz values against the exact values.
    # (Ordered after the rest: see _one_after_another.)
    (W0, Q_old), _ = jax.lax.optimization_barrier(((W0, Q_old), held))
    Zo = jnp.einsum("...nm,...mk->...nk", W0, Q_old, precision=_HI)
    theta = _per_matrix(jnp.linalg.eigvalsh, jnp.einsum("...nk,...nl->...kl", Zo, Zo, precision=_HI))
    error = _tracking_error(theta.reshape(G, rf * K) * g.scale, pooled, est.num_tail, thresh)
    ref = jnp.where(kfin[:, None, None], lam, 0.0)
    # The state keeps the error in float32 (also under x64): both cond branches match.
    return _Refresh(V[..., M - K:], ref, est.num_tail.astype(jnp.int32), held,
                    jnp.where(count > 0, error, 0.0).astype(jnp.float32))


def _track(spec, thresh, refine, g, W, Q, ref, n_t):
    """Rayleigh-Ritz on the basis ``Q``: alpha, the gradient factors, the next basis."""
    G, rf, N, M = W.shape
    Z = jnp.einsum("...nm,...mk->...nk", W, Q, precision=_HI)     # (G, rf, N, K)
    # A NaN/Inf anywhere in W reaches Z (x * 0 is NaN for those): test the small Z.
    fin = jnp.isfinite(Z).all(axis=(-2, -1))
    Z = jnp.where(fin[..., None, None], Z, jnp.zeros((), Z.dtype))
    theta, U = _per_matrix(jnp.linalg.eigh, jnp.einsum("...nk,...nl->...kl", Z, Z, precision=_HI))
    Zr = jnp.einsum("...nk,...kl->...nl", Z, U, precision=_HI)
    Vr = jnp.einsum("...mk,...kl->...ml", Q, U, precision=_HI)
    lam = numerical_floor(jnp.maximum(theta, 0.0), N)
    kfin = fin.all(axis=-1)
    est, ok, gl = _alpha_and_grad(
        lambda t: _combined_estimate(spec, thresh, g, ref, t, n_t, kfin), lam)
    gl = gl * g.scale
    (W, Y, Qn), _ = jax.lax.optimization_barrier(((W, Zr, Vr), gl))
    for it in range(int(refine)):
        Qn = _per_matrix(lambda y: jnp.linalg.qr(y)[0], _wt_z(W, Y))
        if it + 1 < refine:
            Y = jnp.einsum("...nm,...mk->...nk", W, Qn, precision=_HI)
    # A non-finite matrix keeps its basis (never a NaN basis in the state).
    Qn = jnp.where((fin & jnp.isfinite(Qn).all(axis=(-2, -1)))[..., None, None], Qn, Q)
    return _Tracked(est.alpha, ok, est.num_tail, Zr, gl, Vr, Qn)


class AlphaRegularizationState(NamedTuple):
    """State of :func:`add_alpha_regularization`.

    Attributes:
      count: number of updates so far.
      alpha: ``{layer: alpha}`` used by the penalty at the last update (NaN: dropped).
      ok: ``{layer: bool}`` whether the layer's penalty was applied at the last update
        (False: no tail, flat tail, or NaN/Inf weights; its gradient was dropped).
      covered: ``{layer: bool}`` whether the tail fits in the tracked subspace
        (``tail size <= rank * rf``). Where it does not, the gradient through the tail
        eigenvalues below the tracked ones (``xmin`` among them) is the one of the
        last full step (``held``) on cheap steps.
      subspace_error: ``{layer: r}``, measured at each full step: the largest relative
        error of the tracked eigenvalues (the basis after the cheap steps) against the
        exact ones, over the tail.
      tail_size: per shape group ``(G,)``: tail size at the last full step.
      basis: per shape group ``(G, rf, M, rank)``: tracked top eigenvectors of ``W^T W``.
      reference: per shape group ``(G, rf, M)``: each matrix's spectrum (ascending) at
        the last full step.
      held: per shape group ``(G, rf, N, M)``: ``d alpha / d W`` through the eigenvalues
        outside the tracked subspace, at the last full step.
    """

    count: jax.Array
    alpha: dict
    ok: dict
    covered: dict
    subspace_error: dict
    tail_size: tuple
    basis: tuple
    reference: tuple
    held: tuple


def add_alpha_regularization(
    strength: ScalarOrSchedule,
    target: float,
    every: int = 10,
    *,
    tail: _reg.Tail = "ks",
    temperature: float = _reg.DEFAULT_TEMPERATURE,
    distance: str = "squared",
    reduce: str = "mean",
    rank: int = 32,
    refine: int = 1,
    mask: Any = None,
    layouts: Any = None,
    thresh: float = _reg.EVALS_THRESH,
) -> optax.GradientTransformation:
    """Add the gradient of an alpha penalty to the updates.

    .. math::

        u \\leftarrow u + s \\, \\nabla_W P, \\qquad
        P = \\operatorname{mean}_{l} \\, d(\\alpha_l(W_l), \\alpha^*)

    the transform counterpart of :func:`jaxww.alpha_penalty`, as
    :func:`optax.add_decayed_weights` is of an L2 term. Place it before the
    optimizer's scaling for a coupled penalty (as if it were in the loss) or after it
    for a decoupled one.

    Full and cheap steps. Every step works on a basis ``Q`` of the top ``rank``
    eigenvectors of each ``W^T W``, kept in the state:

    * Rayleigh-Ritz: ``Z = W Q``, ``Z^T Z = U diag(theta) U^T`` gives the top eigenpairs
      ``(theta_j, Q u_j)``;
    * alpha is evaluated on those values joined with the rest of each matrix's
      spectrum from the last full step, with that step's tail size (``"ks"``; other
      tails are chosen afresh);
    * its gradient is exact for that tail through the tracked eigenvalues
      (``d lambda_j / dW = 2 W q_j q_j^T``) plus ``held``, the gradient through the tail
      eigenvalues below the basis at the last full step (zero when the tail fits in
      the basis);
    * ``refine`` subspace iterations ``Q <- qr(W^T (W Q))`` follow the basis.

    Every ``every`` steps (and at the first update) a *full step* first diagonalises
    ``W^T W`` (``eigh``) and replaces the basis, the lower spectrum, the tail size and
    ``held`` by exact ones: alpha, the tail choice and the gradient of that step are
    those of :func:`jaxww.alpha_penalty`. A cheap step costs three ``N x M x rank``
    matmuls, a ``rank x rank`` ``eigh`` and an ``M x rank`` QR per matrix; a full step
    adds an ``M x M`` ``eigh`` (plus two ``N x M x M`` matmuls when the tail is larger
    than the basis). The state says, per layer, whether the tail fits in the basis
    (``covered``) and how far the tracked eigenvalues drifted between full steps
    (``subspace_error``); ``docs/training.md`` has the measured trade-off.

    Args:
      strength: ``s >= 0``, a float or a schedule ``count -> s``.
      target: the target alpha ``alpha* > 1``.
      every: a full step every this many steps (``>= 1``; ``1``: always exact).
      tail, temperature: how alpha is estimated (see :func:`jaxww.alpha`).
      distance: ``"squared"``, ``"absolute"``, ``"log"`` or ``"above"``
        (:func:`jaxww.regularizers.distance`).
      reduce: ``"mean"`` or ``"sum"`` over layers.
      rank: eigenpairs tracked per matrix between full steps (clipped to its smaller
        dimension); make it at least the tail size.
      refine: subspace iterations per cheap step (``>= 0``).
      mask: optax-style mask (tree, prefix tree or callable) of the leaves to regularise.
      layouts: layout overrides, as in :func:`jaxww.analyze`.
      thresh: eigenvalues at or below this are dropped.

    Returns:
      An ``optax.GradientTransformation`` with an :class:`AlphaRegularizationState`;
      its ``init`` raises ``ValueError`` when the params have no eligible weight matrix.

    Raises:
      ValueError: ``target <= 1``, ``strength < 0``, ``every < 1``, ``rank < 1``,
        ``refine < 0`` or an unknown option.

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
    spec = _reg.tail_spec(tail, temperature)
    _reg._check_choice(distance, _reg.DISTANCES, "distance")
    _reg._check_choice(reduce, _reg.REDUCTIONS, "reduce")
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < 1:
        raise ValueError(f"rank must be an int >= 1, got {rank!r}")
    if isinstance(refine, bool) or not isinstance(refine, (int, np.integer)) or refine < 0:
        raise ValueError(f"refine must be an int >= 0, got {refine!r}")
    thresh = float(thresh)

    def plan_of(params, where):
        return _reg.make_plan(params, None, layouts, where=where)

    def init_fn(params):
        plan = plan_of(params, "add_alpha_regularization.init")
        bases, refs, tails, helds = [], [], [], []
        for g in plan.groups:
            G, dt = len(g.members), _reg.group_matrices(plan, g).dtype
            bases.append(jnp.zeros((G, g.rf, g.M, min(int(rank), g.M)), dt))
            refs.append(jnp.zeros((G, g.rf, g.M), dt))
            tails.append(jnp.zeros((G,), jnp.int32))
            helds.append(jnp.zeros((G, g.rf, g.N, g.M), dt))
        names = _names(plan)
        return AlphaRegularizationState(
            count=jnp.zeros([], jnp.int32),
            alpha={n: jnp.asarray(jnp.nan, jnp.float32) for n in names},
            ok={n: jnp.asarray(False) for n in names},
            covered={n: jnp.asarray(False) for n in names},
            subspace_error={n: jnp.asarray(0.0, jnp.float32) for n in names},
            tail_size=tuple(tails), basis=tuple(bases), reference=tuple(refs), held=tuple(helds))

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(optax._src.base.NO_PARAMS_MSG)
        plan = plan_of(params, "add_alpha_regularization.update")
        names = _names(plan)
        positions = _leaf_positions(plan)

        def gather(kleaves):
            leaves = list(plan.leaves)
            for p, v in zip(positions, kleaves):
                leaves[p] = v
            return [_reg.group_matrices(plan, g, leaves) for g in plan.groups]

        mats_list, pullback = jax.vjp(gather, [plan.leaves[p] for p in positions])
        # Start after the incoming updates exist (no overlap with the backward pass).
        mats_list, _ = jax.lax.optimization_barrier(
            ([jax.lax.stop_gradient(m) for m in mats_list], jax.tree_util.tree_leaves(updates)))
        old_err = tuple(jnp.stack([state.subspace_error[names[i]] for i in g.members])
                        for g in plan.groups)
        kept = [_Refresh(*f) for f in zip(state.basis, state.reference, state.tail_size,
                                           state.held, old_err)]

        def full(mats):
            return _one_after_another(
                lambda g, W, Q: _refresh(spec, thresh, g, W, Q, state.count),
                plan.groups, mats, state.basis)

        if every == 1:
            fresh = full(mats_list)
        else:
            fresh = jax.lax.cond(state.count % every == 0, full, lambda _: kept, mats_list)
        tracked = [_track(spec, thresh, refine, g, W, r.basis, r.reference, r.tail_size)
                   for g, W, r in zip(plan.groups, mats_list, fresh)]

        alpha_v = _in_order(plan, [t.alpha for t in tracked])
        ok = _in_order(plan, [t.ok for t in tracked])

        def total(a):
            per = jnp.where(ok, _reg.distance(jnp.where(ok, a, target), target, distance), 0.0)
            return _reg.reduce_layers(per, ok, reduce)

        dP = jax.grad(total)(jnp.where(ok, alpha_v, target))
        grads, goods = [], []
        for g, t, r in zip(plan.groups, tracked, fresh):
            w = dP[np.asarray(g.members)]
            # The small factors are the last guard, per kernel.
            good = (jnp.isfinite(t.Z).all(axis=(1, 2, 3)) & jnp.isfinite(t.V).all(axis=(1, 2, 3))
                    & jnp.isfinite(t.dtheta).all(axis=(1, 2)) & jnp.isfinite(w))
            w = jnp.where(good, w, 0.0).astype(t.Z.dtype)
            Z = jnp.where(good[:, None, None, None], t.Z, 0.0)
            dtheta = jnp.where(good[:, None, None], t.dtheta, 0.0) * w[:, None, None]
            grads.append(_spectral_grad(Z, dtheta, t.V) + w[:, None, None, None] * r.held)
            goods.append(good)
        ok = ok & _in_order(plan, goods)
        (gleaves,) = pullback(grads)

        s = _value(strength, state.count)
        up_leaves, up_def = _flatten_updates(updates, plan)
        for p, gl in zip(positions, gleaves):
            u = up_leaves[p]
            up_leaves[p] = u + (s * gl).astype(u.dtype)
        cover = _in_order(plan, [t.num_tail <= t.basis.shape[1] * t.basis.shape[-1]
                                 for t in tracked]) & ok
        err = _in_order(plan, [r.error for r in fresh])
        new_state = AlphaRegularizationState(
            count=optax.safe_increment(state.count),
            alpha={n: alpha_v[i].astype(jnp.float32) for i, n in enumerate(names)},
            ok={n: ok[i] for i, n in enumerate(names)},
            covered={n: cover[i] for i, n in enumerate(names)},
            subspace_error={n: err[i].astype(jnp.float32) for i, n in enumerate(names)},
            tail_size=tuple(r.tail_size for r in fresh),
            basis=tuple(t.basis.astype(b.dtype) for t, b in zip(tracked, state.basis)),
            reference=tuple(r.reference.astype(x.dtype) for r, x in zip(fresh, state.reference)),
            held=tuple(r.held.astype(h.dtype) for r, h in zip(fresh, state.held)))
        return jax.tree_util.tree_unflatten(up_def, up_leaves), new_state

    return _masked(optax.GradientTransformation(init_fn, update_fn), mask)


def _tracking_error(theta, pooled, n_t, thresh):
    """Largest relative error of tracked eigenvalues vs exact ones within the tail, per kernel."""
    top_fresh = jnp.sort(theta, axis=-1)[:, ::-1]
    k = top_fresh.shape[-1]
    top_ref = jnp.sort(jnp.nan_to_num(pooled), axis=-1)[:, ::-1][:, :k]
    rank_ok = (jnp.arange(k)[None, :] < n_t[:, None]) & (top_ref > thresh)
    rel = jnp.abs(top_fresh - top_ref) / jnp.where(rank_ok, top_ref, 1.0)
    return jnp.max(jnp.where(rank_ok, rel, 0.0), axis=-1)


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
    """Per-kernel alpha (no gradient), from the fast eigenvalue path."""
    def one(g, mats):
        pooled, fin = _spectrum_snapshot(mats, g)
        est = jax.vmap(lambda e: _reg._estimate(e, spec, thresh))(pooled)
        return jnp.where(fin & (est.status == _reg.TAIL_OK), est.alpha, jnp.nan)

    mats = [_reg.group_matrices(plan, g) for g in plan.groups]
    return _in_order(plan, _one_after_another(one, plan.groups, mats))


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
    every = _check_every(every)
    spec = _reg.tail_spec(tail, temperature)
    min_scale, max_scale = _check_scales(min_scale, max_scale)
    thresh = float(thresh)

    def init_fn(params):
        plan = _reg.make_plan(params, None, layouts, where=f"{name}.init")
        names = _names(plan)
        return AlphaScaleState(count=jnp.zeros([], jnp.int32),
                               alpha={n: jnp.asarray(jnp.nan, jnp.float32) for n in names},
                               scale={n: jnp.asarray(1.0, jnp.float32) for n in names})

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(optax._src.base.NO_PARAMS_MSG)
        plan = _reg.make_plan(params, None, layouts, where=f"{name}.update")
        names = _names(plan)
        old_a = jnp.stack([state.alpha[n] for n in names])
        old_s = jnp.stack([state.scale[n] for n in names])

        def compute(_):
            a = _alpha_snapshot(plan, spec, thresh).astype(old_a.dtype)
            return a, alpha_scales(a, min_scale, max_scale).astype(old_s.dtype)

        if every == 1:
            a, s = compute(None)
        else:
            a, s = jax.lax.cond(state.count % every == 0, compute, lambda _: (old_a, old_s), None)
        factors = _per_leaf(plan, s, 1.0)
        up_leaves, up_def = _flatten_updates(updates, plan)
        for li, f in factors.items():
            up_leaves[li] = apply(up_leaves[li], plan.leaves[li], f, state.count)
        new_state = AlphaScaleState(count=optax.safe_increment(state.count),
                                    alpha={n: a[i] for i, n in enumerate(names)},
                                    scale={n: s[i] for i, n in enumerate(names)})
        return jax.tree_util.tree_unflatten(up_def, up_leaves), new_state

    return init_fn, update_fn


def scale_by_alpha(
    every: int = 100,
    *,
    tail: _reg.Tail = "fraction",
    temperature: float = _reg.DEFAULT_TEMPERATURE,
    min_scale: float = 0.5,
    max_scale: float = 1.5,
    mask: Any = None,
    layouts: Any = None,
    thresh: float = _reg.EVALS_THRESH,
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
    tail: _reg.Tail = "fraction",
    temperature: float = _reg.DEFAULT_TEMPERATURE,
    min_scale: float = 0.5,
    max_scale: float = 1.5,
    mask: Any = None,
    layouts: Any = None,
    thresh: float = _reg.EVALS_THRESH,
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
