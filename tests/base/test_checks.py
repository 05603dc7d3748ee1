"""jaxww.checks: the argument checks, each naming the argument and saying what it must be."""

from __future__ import annotations

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxww import checks


@pytest.mark.parametrize("good", [1, 7, np.int64(3), np.uint8(2)])
def test_positive_int_accepts_integers(good):
    assert checks.positive_int(good, "every") == int(good) and type(checks.positive_int(good, "every")) is int


@pytest.mark.parametrize("bad", [0, -1, 2.5, 3.0, True, np.bool_(True), "3", None])
def test_positive_int_refuses(bad):
    with pytest.raises(ValueError, match=f"^{re.escape(f'every must be a positive int, got {bad!r}')}$"):
        checks.positive_int(bad, "every")


def test_number_bounds_and_message():
    assert checks.number(np.float32(0.5), "x", at_least=0) == 0.5
    assert checks.number(2, "target alpha", above=1) == 2.0
    assert checks.number(-3.0, "thresh") == -3.0      # no bound given: any finite number
    with pytest.raises(ValueError, match=r"^target alpha must be a finite number > 1 \(a power law needs alpha > 1\), "
                                         r"got 1$"):
        checks.number(1, "target alpha", above=1, why=" (a power law needs alpha > 1)")
    with pytest.raises(ValueError, match=r"^strength must be a finite number >= 0 or a schedule, got -0.1$"):
        checks.number(-0.1, "strength", at_least=0, schedule=True)
    for bad in (math.nan, math.inf, -math.inf, True, "1", None, 1j, np.ones(2)):
        with pytest.raises(ValueError, match="^x must be a finite number"):
            checks.number(bad, "x")


def test_one_of_callable_or_none_int_or_none():
    assert checks.one_of("sum", ["mean", "sum"], "reduce") == "sum"
    with pytest.raises(ValueError, match=r"^reduce must be one of \('mean', 'sum'\), got 'max'$"):
        checks.one_of("max", ["mean", "sum"], "reduce")
    assert checks.callable_or_none(None, "writer") is None and checks.callable_or_none(print, "writer") is print
    with pytest.raises(TypeError, match=r"^writer must be a callable \(step, m\), got 'tb'$"):
        checks.callable_or_none("tb", "writer", "(step, m)")
    assert checks.int_or_none(None, "nice") is None and checks.int_or_none(np.int32(-5), "nice") == -5
    for bad in (1.5, "19", True):
        with pytest.raises(TypeError, match="^nice must be an int or None"):
            checks.int_or_none(bad, "nice")


def test_hyperparameter_checks_concrete_arrays_and_keeps_traced_ones():
    check = lambda v: checks.number(v, "strength", at_least=0)   # noqa: E731
    assert checks.hyperparameter(0.5, "strength", check) == 0.5
    x = jnp.asarray(0.5)
    assert checks.hyperparameter(x, "strength", check) is x
    with pytest.raises(ValueError, match="strength must be a finite number >= 0"):
        checks.hyperparameter(jnp.asarray(-1.0), "strength", check)
    with pytest.raises(TypeError, match=r"strength must be a real scalar, got an array of shape \(3,\)"):
        checks.hyperparameter(jnp.ones(3), "strength", check)
    with pytest.raises(TypeError, match="strength must be a real scalar, got an array of shape \\(\\) and dtype bool"):
        checks.hyperparameter(np.asarray(True), "strength", check)
    # traced: not checkable, kept as it is (a negative traced value goes through)
    assert float(jax.jit(lambda v: checks.hyperparameter(v, "strength", check) * 2)(-1.0)) == -2.0


def test_static_reads_concrete_arrays_and_refuses_traced_ones():
    assert checks.static(jnp.asarray(3), "every") == 3 and type(checks.static(np.asarray(3), "every")) is int
    assert checks.static("ks", "tail") == "ks"
    with pytest.raises(TypeError, match=r"every is static .*static_args=\('every',\)"):
        jax.jit(lambda v: checks.static(v, "every"))(3)
    assert checks.is_traced(1, 2.0) is False

