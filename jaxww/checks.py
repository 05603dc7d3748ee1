"""Argument checks of the public functions: each returns the value, normalised, or raises an
error whose message names the argument and says what it must be.

The base of the package: it imports only the standard library, NumPy and JAX, so that any
stage can use it. Plain Python values are checked at once. Under
:func:`optax.inject_hyperparams` a numeric argument arrives as a scalar array, concrete
when the transform is built and traced inside a jitted update: :func:`hyperparameter`
checks it when concrete and keeps it as it is, :func:`static` reads a concrete one as
its Python value and refuses a traced one.

Example:
  >>> positive_int(10, "every")
  10
  >>> number(0.0, "strength", at_least=0)
  0.0
  >>> one_of("mean", ("mean", "sum"), "reduce")
  'mean'
"""

from __future__ import annotations

import math
import numbers
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

_STATIC = ("{name} is static (it shapes the computation): under optax.inject_hyperparams "
           "pass static_args=({name!r},) (or a tuple with the other static names), got a "
           "traced value {value}")


def positive_int(value, name: str) -> int:
    """``value`` as an int ``>= 1`` (a Python or NumPy integer, not a bool).

    Raises:
      ValueError: anything else, naming ``name``.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def number(value, name: str, *, above: float | None = None, at_least: float | None = None,
           schedule: bool = False, why: str = "") -> float:
    """``value`` as a finite float, ``> above`` or ``>= at_least`` when given.

    Args:
      value: the argument.
      name: its name, as the message says it.
      above, at_least: the open or closed lower bound.
      schedule: the argument may also be a schedule (the message says so; callables are
        the caller's to let through).
      why: a reason appended to the bound in the message, e.g. ``" (a power law needs
        alpha > 1)"``.

    Raises:
      ValueError: not a real number (a bool is not one), not finite, or out of bounds.

    Example:
      >>> number(1.0, "target alpha", above=1, why=" (a power law needs alpha > 1)")
      Traceback (most recent call last):
      ValueError: target alpha must be a finite number > 1 (a power law needs alpha > 1), got 1.0
    """
    bound = f" > {above}" if above is not None else f" >= {at_least}" if at_least is not None else ""
    ok = (not isinstance(value, (bool, np.bool_)) and isinstance(value, numbers.Real)
          and math.isfinite(value) and (above is None or value > above)
          and (at_least is None or value >= at_least))
    if not ok:
        either = " or a schedule" if schedule else ""
        raise ValueError(f"{name} must be a finite number{bound}{why}{either}, got {value!r}")
    return float(value)


def one_of(value, choices: Sequence, name: str):
    """``value`` if it is one of ``choices``, else a ``ValueError`` listing them."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def callable_or_none(value, name: str, signature: str = ""):
    """``value`` if it is None or callable, else a ``TypeError``; ``signature`` (e.g.
    ``"(step, Mapping[str, float])"``) says how it is called."""
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be a callable {signature}".rstrip() + f", got {value!r}")
    return value


def int_or_none(value, name: str):
    """``value`` as an int (negative ones included) or None, else a ``TypeError``."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int or None, got {type(value).__name__} {value!r}")
    return int(value)


# ------------------------------------------------- arrays (optax.inject_hyperparams)
def is_array(value) -> bool:
    """Whether ``value`` is a JAX or NumPy array (a hyperparameter optax injected, or its value)."""
    return isinstance(value, (jax.Array, np.ndarray))


def _real_scalar(value, name: str):
    """``value`` (an array) if it is a real (int or float) scalar, else a ``TypeError``."""
    real = jnp.issubdtype(value.dtype, jnp.integer) or jnp.issubdtype(value.dtype, jnp.floating)
    if value.shape != () or not real:
        raise TypeError(f"{name} must be a real scalar, got an array of shape {value.shape} "
                        f"and dtype {value.dtype}")
    return value


def hyperparameter(value, name: str, check: Callable):
    """A numeric hyperparameter: an array (traced or concrete) kept as it is, its value
    checked by ``check`` when concrete; anything else ``check(value)``.

    Raises:
      TypeError: an array that is not a real scalar.
    """
    if not is_array(value):
        return check(value)
    if not isinstance(_real_scalar(value, name), jax.core.Tracer):
        check(value.item())
    return value


def static(value, name: str):
    """A structural argument: a concrete scalar array read as its Python value, a traced
    one refused (a ``TypeError`` naming ``static_args``), anything else as it is."""
    if isinstance(value, jax.core.Tracer):
        raise TypeError(_STATIC.format(name=name, value=value))
    return _real_scalar(value, name).item() if is_array(value) else value


def is_traced(*values) -> bool:
    """Whether any of ``values`` is traced (its value unknown until the program runs)."""
    return any(isinstance(v, jax.core.Tracer) for v in values)
