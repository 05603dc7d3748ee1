"""What the three alpha transforms share: their arguments' forms, the refresh every
``every`` steps, and the exact alpha (and its gradient) of a refresh.

The transforms themselves: :mod:`jaxww.training.regularization` (the regulariser) and
:mod:`jaxww.training.scaling` (the two alpha-driven scalings); :mod:`jaxww.training.transforms`
says how they behave under :func:`optax.inject_hyperparams`.
"""

from __future__ import annotations

import warnings
from typing import Callable, Union

import jax
import jax.numpy as jnp
import optax

from jaxww import checks
from jaxww.defaults import MIN_VERDICT_EVALS
from jaxww.fit import estimators as _estimators
from jaxww.fit import tail as _tail
from jaxww.training.plan import Mask, Plan, make_plan

ScalarOrSchedule = Union[float, Callable[[jax.Array], jax.Array]]


# ------------------------------------------------------------------- arguments
# Numeric hyperparameters (strength, target, temperature, thresh, the scales, the decay)
# are checked when concrete and used as they are when traced; structural ones (``every``,
# ``tail``, ``min_evals``) are static: a concrete 0-d array is read as its Python value,
# a tracer is refused (:mod:`jaxww.checks`).
def every_arg(every) -> int:
    """``every`` (static), an int ``>= 1``."""
    return checks.positive_int(checks.static(every, "every"), "every")


def min_evals_arg(min_evals) -> int:
    """``min_evals`` (static; None: :data:`MIN_VERDICT_EVALS`, the layers analyze judges)."""
    return MIN_VERDICT_EVALS if min_evals is None else checks.static(min_evals, "min_evals")


def scan_axis_arg(scan_axis):
    """``scan_axis`` (static): an int (a concrete 0-d array read as one), ``{regex: int}`` or None."""
    return checks.static(scan_axis, "scan_axis")


def nonnegative_arg(value, name: str):
    """A strength ``>= 0``: a number, a scalar array (may be traced) or a schedule."""
    if callable(value):
        return value
    return checks.hyperparameter(value, name, lambda v: checks.number(v, name, at_least=0, schedule=True))


def thresh_arg(thresh):
    """``thresh``, a finite number or a scalar array (may be traced)."""
    return checks.hyperparameter(thresh, "thresh", lambda v: checks.number(v, "thresh"))


def tail_arg(tail, temperature, estimator=None, default_tail="ks") -> _tail.TailSpec:
    """The validated tail choice: ``tail`` static, ``temperature`` numeric (may be traced);
    ``estimator`` (static) instead of a ``tail`` other than ``default_tail``
    (:func:`jaxww.fit.estimators.tail_choice`)."""
    tail = checks.static(tail, "tail")
    if estimator is not None:
        return _estimators.tail_choice(tail, _tail.DEFAULT_TEMPERATURE, checks.static(estimator, "estimator"),
                                       default_tail)
    if not checks.is_array(temperature) or isinstance(tail, _tail.TailSpec):
        return _tail.tail_spec(tail, temperature)
    temperature = checks.hyperparameter(temperature, "temperature", lambda v: _tail.tail_spec(tail, v))
    return _tail.tail_spec(tail)._replace(temperature=temperature)


# ------------------------------------------------------------------ the steps
def masked(t: optax.GradientTransformation, mask: Mask) -> optax.GradientTransformation:
    """``t`` applied only where ``mask`` (optax-style) is True; ``t`` itself for no mask."""
    return t if mask is None else optax.masked(t, mask)


def value_at(v, count):
    """A hyperparameter's value at step ``count`` (``v(count)`` for a schedule)."""
    return v(count) if callable(v) else v


def every_steps(every, count, refresh, keep, operand):
    """``refresh(operand)`` on steps ``0, every, 2 every, ...``, else ``keep(operand)``."""
    if every == 1:
        return refresh(operand)
    return jax.lax.cond(count % every == 0, refresh, keep, operand)


def init_plan(name: str, params, layouts, min_evals: int, scan_axis) -> Plan:
    """The plan of the ``params`` given to the ``init`` of transform ``name``, with one
    ``UserWarning`` naming the layers stored as integers (:attr:`Plan.frozen`): measured,
    their updates passed through unchanged."""
    plan = make_plan(params, None, layouts, min_evals=min_evals, scan_axis=scan_axis, where=f"{name}.init")
    frozen = [k.name for k in plan.kernels if k.leaf in plan.frozen]
    if frozen:
        warnings.warn(f"{name}.init: {len(frozen)} layer(s) stored as integers are measured but not updated "
                      f"(their updates pass through unchanged): {', '.join(frozen)}. Integer weights are "
                      "quantised codes, not trained by gradient", UserWarning, stacklevel=3)
    return plan


def kernel_leaves(plan) -> list:
    """Indices of the leaves that hold at least one of the plan's kernels, in order."""
    return sorted({k.leaf for k in plan.kernels})


def trained_leaves(plan) -> list:
    """:func:`kernel_leaves` less the integer ones (:attr:`Plan.frozen`): those a transform updates."""
    return [i for i in kernel_leaves(plan) if i not in plan.frozen]


def sq_norms(leaves, positions) -> tuple:
    """The float32 sum of squares of each of ``leaves[i]``, ``i`` in ``positions``."""
    return tuple(jnp.sum(jnp.square(jnp.asarray(leaves[i], jnp.float32))) for i in positions)


# ------------------------------------------------------------ alpha at a refresh
def stacks_and_pullback(plan):
    """The plan's group stacks and ``pullback(per-group grads) -> {leaf index: grad}``."""
    positions = kernel_leaves(plan)

    def gather(leaves_of_kernels):
        leaves = list(plan.leaves)
        for p, v in zip(positions, leaves_of_kernels):
            leaves[p] = v
        return plan.stacks(leaves)

    mats, vjp = jax.vjp(gather, [plan.leaves[p] for p in positions])
    return mats, lambda grads: dict(zip(positions, vjp(grads)[0]))


def alpha_and_grad(fn, lam):
    """``fn(lam)`` (a TailAlpha per kernel), ``ok`` and ``d alpha / d lam`` (0 where not ok)."""
    def f(x):
        est = fn(x)
        return jnp.where(est.status == _tail.FIT_OK, est.alpha, 0.0), est

    a, vjp, est = jax.vjp(f, lam, has_aux=True)
    ok = est.status == _tail.FIT_OK
    (g,) = vjp(jnp.ones_like(a))
    g = jnp.where(ok.reshape(ok.shape + (1,) * (g.ndim - 1)) & jnp.isfinite(g), g, 0.0)
    return est, ok, g
