"""What ``analyze`` compiles: nothing for the default analysis on the host, nothing new on a
repeat (issue #15: a first call as fast as the second).

Traces and XLA compilations are counted with ``jax.monitoring`` events (a persistent-cache
hit would count as a compilation here; the tests use no cache).
"""

from __future__ import annotations

import contextlib

import jax
import numpy as np
import pytest
from jax._src import dispatch

import jaxww

_COUNTING: list[dict] = []


def _on_duration(event, _secs, **_):
    for c in _COUNTING:
        c["traces"] += event == dispatch.JAXPR_TRACE_EVENT
        c["compiles"] += event == dispatch.BACKEND_COMPILE_EVENT


jax.monitoring.register_event_duration_secs_listener(_on_duration)


@contextlib.contextmanager
def counting():
    """``{"traces": ..., "compiles": ...}`` of the JAX programs run inside the block."""
    c = {"traces": 0, "compiles": 0}
    _COUNTING.append(c)
    try:
        yield c
    finally:
        _COUNTING.remove(c)


def model(seed, width=48):
    """A conv, dense layers of odd sizes, a stack, a rank-deficient and a NaN layer: a structure
    no other test uses (so nothing is cached for it)."""
    rng = np.random.default_rng(seed)
    t = lambda *s: rng.standard_t(3, s).astype(np.float32)  # noqa: E731
    bad = t(width + 3, 37)
    bad[0, 0] = np.nan
    return {"conv": {"kernel": t(3, 3, 7, width + 1)},
            "dense": {"kernel": t(width + 5, 2 * width + 3)},
            "low": {"kernel": t(width + 9, 3) @ t(3, width + 1)},
            "layers": {"Dense_0": {"kernel": np.stack([t(width + 2, 33) for _ in range(3)]),
                                   "bias": np.zeros((3, 33), np.float32)}},
            "broken": {"kernel": bad}}


@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_host_analysis_compiles_and_traces_nothing(precision):
    """On the CPU the default analysis (spectra by LAPACK, fit and metrics in NumPy) runs no
    JAX program at all: the first call of a new structure costs what the second does."""
    with counting() as c:
        report = jaxww.analyze(model(0, width=40 + (precision == "float64")), precision=precision)
    assert len(report.rows) == 7 and c == {"traces": 0, "compiles": 0}


@pytest.mark.slow
def test_repeated_analysis_with_options_traces_nothing_new():
    """The compiled path (an option, here ``detX``): a second analysis of the same structure
    with other weights neither traces nor compiles anything."""
    jaxww.analyze(model(1, width=50), detX=True)
    with counting() as c:
        jaxww.analyze(model(2, width=50), detX=True)
    assert c == {"traces": 0, "compiles": 0}


@pytest.mark.slow
@pytest.mark.parametrize("precision, rtol", [("float64", 1e-10), ("float32", 2e-5)])
def test_host_rows_equal_the_compiled_rows(precision, rtol):
    """The host fit and metrics give the rows of the compiled ones (``detX`` sends the
    analysis through the jitted fit and metrics; its own columns aside, the rows agree)."""
    params = model(3, width=56)
    host = jaxww.analyze(params, precision=precision).rows
    jitted = jaxww.analyze(params, precision=precision, detX=True).rows
    for a, b in zip(host, jitted):
        for col in jaxww.COLUMNS:
            if isinstance(a[col], float):
                np.testing.assert_allclose(a[col], b[col], rtol=rtol, atol=1e-12, err_msg=(a["name"], col))
            else:
                assert a[col] == b[col], (a["name"], col)
