"""Two optax transforms that apply a per-layer factor, an affine function of the layer's
alpha (:func:`alpha_scales`): :func:`scale_by_alpha` scales the updates (TempBalance),
:func:`add_alpha_decayed_weights` adds weight decay (AlphaDecay). How the transforms
behave under :func:`optax.inject_hyperparams` and their misuse checks:
:mod:`jaxww.training.transforms`."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxww import checks
from jaxww.fit import tail as _tail
from jaxww.linalg import sharded as _mesh
from jaxww.linalg.spectra import eigvals_ascending, numerical_floor
from jaxww.reading.kernels import LayoutOverride
from jaxww.training import misuse
from jaxww.training import refresh as _r
from jaxww.training.estimates import tail_rows
from jaxww.training.plan import Mask
from jaxww.typing import ScanAxis


class AlphaScaleState(NamedTuple):
    """State of :func:`scale_by_alpha` and :func:`add_alpha_decayed_weights`.

    Attributes:
      count: number of updates so far.
      alpha: ``{layer: alpha}`` at the last refresh (NaN: no fit, layer left at scale 1).
      scale: ``{layer: factor}`` applied at the last update: the held alpha mapped with
        that update's ``min_scale`` and ``max_scale`` (which can change between
        refreshes under :func:`optax.inject_hyperparams`); 1 for a layer stored as
        integers (measured, not updated).
      sq_norms: the float32 sum of squares of each floating-point leaf holding a layer
        given to ``init`` (leaf order): the first update checks that it got the params as
        ``params``.
    """

    count: jax.Array
    alpha: dict
    scale: dict
    sq_norms: tuple


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
    scan_axis: ScanAxis = None,
    estimator: str | None = None,
) -> optax.GradientTransformation:
    """Scale each layer's updates by an affine function of its alpha (TempBalance).

    .. math:: u_l \\leftarrow s_l u_l, \\qquad s_l = s_{\\min} + (s_{\\max} - s_{\\min})
              \\frac{\\alpha_l - \\min_k \\alpha_k}{\\max_k \\alpha_k - \\min_k \\alpha_k}

    With the defaults this is TempBalance's ``lr_l = lr * (0.5 + (alpha_l - min) /
    (max - min))`` (``assign_func='tb_linear_map'``, ``Tempbalance.get_layer_temps`` of
    YefanZhou/TempBalance ``tempbalance.py``): layers with lighter tails (larger alpha,
    under-trained) learn faster.

    TempBalance's method (its defaults, ``main_tb.py``: SGD, momentum 0.9, coupled weight
    decay, ``pl_fitting='median'``, refreshed once per epoch, first and last layer and
    layers of fewer than 50 eigenvalues left alone) is::

        optax.chain(optax.add_decayed_weights(wd), optax.trace(decay=0.9),
                    jaxww.scale_by_alpha(every=steps_per_epoch, estimator="hill_median",
                                         min_evals=50, mask=not_first_or_last),
                    optax.scale_by_learning_rate(schedule))

    What still differs: TempBalance also gives each BatchNorm layer its convolution's
    learning rate (here other leaves pass through unscaled); it keeps eigenvalues
    ``<= 1e-5`` (see :mod:`jaxww.fit.estimators`); with all alphas equal its map gives
    ``max_scale``, this one the midpoint. ``tail="fraction"`` (the default) is the same
    tail for spectra of 3 or more eigenvalues. Alphas are refreshed every ``every`` steps (no gradient; the fast
    eigenvalue path); only weight matrices are scaled, other leaves pass through.
    Layers whose alpha cannot be fitted keep scale 1. Place it between the
    optimizer's preconditioning and the learning rate, e.g.
    ``optax.chain(optax.scale_by_adam(), jaxww.scale_by_alpha(), optax.scale(-lr))``.

    Under :func:`optax.inject_hyperparams` the numbers can be scheduled or set through
    ``state.hyperparams``: ``min_scale`` and ``max_scale`` act from the next update,
    ``temperature`` and ``thresh`` (which enter the held alphas) from the next
    refresh. ``every`` is static: pass ``static_args="every"`` (add ``"tail"`` for a
    numeric tail, ``"scan_axis"`` for an int, ``"mask"`` / ``"layouts"`` for
    callables); see the module docstring.

    Layers stored as integers (quantised codes, read dequantised) are measured (their
    alpha is in the state) but left out of the map, and their updates pass through
    unchanged (one ``UserWarning`` at ``init`` names them).

    Args:
      every: refresh alphas every this many steps (``>= 1``); static.
      tail, temperature: how alpha is estimated (default: the top half, as TempBalance);
        ``tail`` is static, ``temperature`` numeric.
      estimator: instead of ``tail``, a paper's estimator (static; see :func:`jaxww.alpha`):
        ``"hill_median"`` is TempBalance's.
      min_scale, max_scale: the range of the factors, ``0 <= min_scale <= max_scale``
        (floats or scalar arrays, checked when concrete).
      mask: optax-style mask of the leaves to consider.
      layouts: layout overrides, as in :func:`jaxww.analyze`.
      thresh: eigenvalues at or below this are dropped.
      min_evals: layers with fewer eigenvalues are left alone (static). None: 32
        (:data:`jaxww.defaults.MIN_VERDICT_EVALS`), the layers :func:`jaxww.analyze` gives a
        verdict; a 10-class head (10 eigenvalues) or a ``3x3x1x32`` convolution (9) is not
        touched. ``min_evals=8`` acts on every row analyze reports.
      scan_axis: the layer axis of scanned stacks, as in :func:`jaxww.analyze` (static).

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
    def apply(u, p, s, count):          # u_l <- s_l u_l
        return u * s.astype(u.dtype)

    return _alpha_driven("scale_by_alpha", apply, every=every, tail=tail, temperature=temperature,
                         min_scale=min_scale, max_scale=max_scale, mask=mask, layouts=layouts, thresh=thresh,
                         min_evals=min_evals, scan_axis=scan_axis, estimator=estimator)


def add_alpha_decayed_weights(
    weight_decay: _r.ScalarOrSchedule,
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
    scan_axis: ScanAxis = None,
    estimator: str | None = None,
) -> optax.GradientTransformation:
    """Add weight decay whose per-layer strength grows with the layer's alpha (AlphaDecay).

    .. math:: u_l \\leftarrow u_l + \\lambda s_l W_l, \\qquad
              s_l = s_{\\min} + (s_{\\max} - s_{\\min})
              \\frac{\\alpha_l - \\min_k \\alpha_k}{\\max_k \\alpha_k - \\min_k \\alpha_k}

    Layers with heavier tails (smaller alpha) get weaker decay, lighter-tailed layers
    stronger decay: AlphaDecay's ``assign_func='tb_linear_map'``
    (hed-ucas/AlphaDecay, ``WeightDecayUnbalance.py``,
    ``modulewise_AlphaDecay.get_layer_temps``: ``np.interp(alpha, [min, max],
    [wd_min_ratio * wd, wd_max_ratio * wd])``, alpha by ``pl_fitting='median'``).
    AlphaDecay's method (``torchrun_main.py``: AdamW, refreshed every 500 steps, first
    and last layer and layers of fewer than 50 eigenvalues at the base decay; its
    scripts use ``wd_min_ratio=0.6666`` and ``wd_max_ratio`` 3 to 5) is::

        optax.chain(optax.scale_by_adam(),
                    jaxww.add_alpha_decayed_weights(wd, every=500, estimator="hill_median",
                                                    min_scale=0.6666, max_scale=5.0,
                                                    min_evals=50, mask=not_first_or_last),
                    optax.add_decayed_weights(wd, mask=every_other_leaf),
                    optax.scale_by_learning_rate(schedule))

    What still differs: AlphaDecay refreshes after steps 499, 999, ... (here at steps 0,
    500, 1000, ...; both at the start); it keeps eigenvalues ``<= 1e-5``; with all
    alphas equal its map gives ``max_scale``, this one the midpoint. Only weight
    matrices are decayed (chain :func:`optax.add_decayed_weights` for other leaves);
    a non-finite weight adds no decay. Alphas are refreshed every ``every`` steps.

    Under :func:`optax.inject_hyperparams` the numbers can be scheduled or set through
    ``state.hyperparams``: ``weight_decay``, ``min_scale`` and ``max_scale`` act from
    the next update, ``temperature`` and ``thresh`` (which enter the held alphas) from
    the next refresh. ``every`` is static: pass ``static_args="every"`` (add
    ``"tail"`` for a numeric tail, ``"scan_axis"`` for an int, ``"mask"`` /
    ``"layouts"`` for callables); see the module docstring. Layers stored as integers
    are treated as by :func:`scale_by_alpha`: measured, never decayed.

    Args:
      weight_decay: base decay ``lambda >= 0``, a float, a scalar array (may be traced)
        or a schedule.
      every: refresh alphas every this many steps (``>= 1``); static.
      tail, temperature: how alpha is estimated (default: the top half); ``tail`` is
        static, ``temperature`` numeric.
      estimator: instead of ``tail``, a paper's estimator (static; see :func:`jaxww.alpha`):
        ``"hill_median"`` is AlphaDecay's.
      min_scale, max_scale: range of the per-layer factor (floats or scalar arrays).
      mask: optax-style mask of the leaves to consider.
      layouts: layout overrides, as in :func:`jaxww.analyze`.
      thresh: eigenvalues at or below this are dropped.
      min_evals: layers with fewer eigenvalues are left alone (static). None: 32
        (:data:`jaxww.defaults.MIN_VERDICT_EVALS`), the layers :func:`jaxww.analyze` gives a
        verdict; a 10-class head (10 eigenvalues) or a ``3x3x1x32`` convolution (9) is not
        touched. ``min_evals=8`` acts on every row analyze reports.
      scan_axis: the layer axis of scanned stacks, as in :func:`jaxww.analyze` (static).

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
    weight_decay = _r.nonnegative_arg(weight_decay, "weight_decay")

    def apply(u, p, s, count):          # u_l <- u_l + lambda s_l W_l (non-finite weights: no decay)
        p = jnp.where(jnp.isfinite(p), p, jnp.zeros((), p.dtype))
        return u + (_r.value_at(weight_decay, count) * s * p).astype(u.dtype)

    return _alpha_driven("add_alpha_decayed_weights", apply, every=every, tail=tail, temperature=temperature,
                         min_scale=min_scale, max_scale=max_scale, mask=mask, layouts=layouts, thresh=thresh,
                         min_evals=min_evals, scan_axis=scan_axis, estimator=estimator)


def _scales_arg(lo, hi):
    """``(min_scale, max_scale)``: numbers ``>= 0`` (or scalar arrays, may be traced), ``lo <= hi``."""
    lo = checks.hyperparameter(lo, "min_scale", lambda v: checks.number(v, "min_scale", at_least=0))
    hi = checks.hyperparameter(hi, "max_scale", lambda v: checks.number(v, "max_scale", at_least=0))
    if not checks.is_traced(lo, hi) and float(lo) > float(hi):
        raise ValueError(f"min_scale ({float(lo)}) must be <= max_scale ({float(hi)})")
    return lo, hi


def _alpha_driven(name: str, apply, *, every, tail, temperature, min_scale, max_scale, mask, layouts, thresh,
                  min_evals, scan_axis, estimator) -> optax.GradientTransformation:
    """The transform ``name`` that applies per-layer factors ``s_l`` of alpha
    (:func:`alpha_scales`): ``apply(update, param, factor, count)`` on each floating-point
    weight leaf; layers stored as integers are measured, left out of the map, not updated."""
    every = _r.every_arg(every)
    min_evals = _r.min_evals_arg(min_evals)
    scan_axis = _r.scan_axis_arg(scan_axis)
    spec = _r.tail_arg(tail, temperature, estimator, "fraction")
    min_scale, max_scale = _scales_arg(min_scale, max_scale)
    thresh = _r.thresh_arg(thresh)

    def init_fn(params):
        plan = _r.init_plan(name, params, layouts, min_evals, scan_axis)
        return AlphaScaleState(count=jnp.zeros([], jnp.int32),
                               alpha={n: jnp.asarray(jnp.nan, jnp.float32) for n in plan.names},
                               scale={n: jnp.asarray(1.0, jnp.float32) for n in plan.names},
                               sq_norms=_r.sq_norms(plan.leaves, _r.trained_leaves(plan)))

    def update_fn(updates, state, params=None):
        plan, leaves, treedef = misuse.update_plan(name, updates, params, list(state.alpha), layouts, min_evals,
                                                   scan_axis=scan_axis)
        frozen = jnp.asarray([k.leaf in plan.frozen for k in plan.kernels])
        held = jnp.stack([state.alpha[n] for n in plan.names])

        def refresh(_):
            a = _alpha_snapshot(plan, spec, thresh).astype(jnp.float32)
            return misuse.unless_swapped(f"{name}.update", state.count, state.sq_norms, leaves, plan, a)

        a = _r.every_steps(every, state.count, refresh, lambda _: held, None)
        s = alpha_scales(jnp.where(frozen, jnp.nan, a), min_scale, max_scale).astype(jnp.float32)
        for i, f in plan.per_leaf(s, 1.0).items():      # current min/max_scale; integer codes: u
            if i not in plan.frozen:
                leaves[i] = apply(leaves[i], plan.leaves[i], f, state.count)
        return jax.tree_util.tree_unflatten(treedef, leaves), AlphaScaleState(
            count=optax.safe_increment(state.count), alpha=dict(zip(plan.names, a)),
            scale=dict(zip(plan.names, s)), sq_norms=state.sq_norms)

    return _r.masked(optax.GradientTransformation(init_fn, update_fn), mask)


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
        est = tail_rows(g.pooled(numerical_floor(lam, g.N)), spec, thresh)
        out.append(jnp.where(est.status == _tail.FIT_OK, est.alpha, jnp.nan))
    return plan.scatter(out)
