"""Shared fixtures of the jaxww test suite.

Speed: every new array shape given to jaxww costs about a second of XLA compilation
on the CPU, so the tests reuse a few shapes (``DENSE = (256, 128)`` above all) and the
expensive things (training a net, weightwatcher's ``analyze``) are module-scoped.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import logging
import os
import warnings

os.environ.setdefault("MPLBACKEND", "Agg")  # weightwatcher imports matplotlib; never open a window

import jax
import numpy as np
import pytest
from hypothesis import settings

# The same examples on every run: CI is a verdict on the code, not on the draw.
settings.register_profile("jaxww", derandomize=True)
settings.load_profile("jaxww")

#: The reference implementation the ``oracle`` tests compare with.
ORACLE_VERSION = "0.7.7"


def _oracle_missing() -> str | None:
    """Why the oracle tests cannot run here, or None."""
    try:
        found = importlib.metadata.version("weightwatcher")
    except importlib.metadata.PackageNotFoundError:
        return f"weightwatcher {ORACLE_VERSION} (the oracle) is not installed: pip install '.[test]'"
    if found != ORACLE_VERSION:
        return f"the oracle is weightwatcher {ORACLE_VERSION}, found {found}"
    return None


def pytest_collection_modifyitems(config, items):
    """Skip ``@pytest.mark.oracle`` tests, with the reason, when the oracle is missing."""
    why = _oracle_missing()
    if why is None:
        return
    for item in items:
        if item.get_closest_marker("oracle"):
            item.add_marker(pytest.mark.skip(reason=why))

#: The shape most tests use (Flax ``(in, out)``): N = 256, M = 128, Q = 2.
DENSE = (256, 128)
#: Flax 2-D convolution kernel ``(kh, kw, in, out)``: 9 taps of (16, 32), 144 eigenvalues.
CONV = (3, 3, 16, 32)


def gaussian(seed, shape=DENSE):
    """i.i.d. N(0, 1/N) entries, float32 (well conditioned for Q = 2)."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) / np.sqrt(max(shape))).astype(np.float32)


def student_t(seed, shape=DENSE, nu=3.0):
    """i.i.d. Student-t entries (heavy-tailed ESD), float32."""
    rng = np.random.default_rng(seed)
    return (rng.standard_t(nu, size=shape) / np.sqrt(max(shape))).astype(np.float32)


def low_rank_plus_noise(seed, shape=DENSE, rank=8, signal=3.0):
    """A rank-``rank`` signal (spikes in the ESD) plus Gaussian noise, float32."""
    rng = np.random.default_rng(seed)
    u = rng.standard_normal((shape[0], rank))
    v = rng.standard_normal((rank, shape[1]))
    w = signal * (u @ v) / shape[0] + rng.standard_normal(shape) / np.sqrt(shape[0])
    return w.astype(np.float32)


def rank_deficient(seed, shape=DENSE, rank=40, scale=10.0):
    """Exactly rank ``rank`` (in float64): ``M - rank`` zero eigenvalues."""
    rng = np.random.default_rng(seed)
    w = scale * rng.standard_normal((shape[0], rank)) @ rng.standard_normal((rank, shape[1]))
    return w.astype(np.float32)


def svd_evals(w):
    """Reference eigenvalues sigma(W)**2 in float64, ascending."""
    w = np.asarray(w, np.float64)
    return np.sort(np.linalg.svd(w, compute_uv=False) ** 2)


def conv_taps_evals(kernel_flax):
    """Float64 eigenvalues of all (in, out) taps of a Flax conv kernel, pooled, ascending."""
    k = np.asarray(kernel_flax, np.float64)
    taps = k.reshape((-1,) + k.shape[-2:])
    return np.sort(np.concatenate([svd_evals(t) for t in taps]))


def ww_fit(evals):
    """weightwatcher 0.7.7's own fit (``WWFit``) on the values above 1e-5, stdout silenced."""
    from weightwatcher.WW_powerlaw import WWFit

    x = np.asarray(evals, np.float64)
    x = x[x > 1e-5]
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return WWFit(x)


def ww_analyze(model, **kwargs):
    """``weightwatcher.WeightWatcher(model).analyze(**kwargs)``, quiet, no plots; rows by name."""
    import weightwatcher as ww

    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        details = ww.WeightWatcher(model=model).analyze(plot=False, **kwargs)
    return {str(r["name"]): r for r in details.to_dict("records")}


def _torch():
    """The torch module, or a clean skip of the test that needs it."""
    return pytest.importorskip("torch", reason="the weightwatcher oracle models need torch: pip install '.[test]'")


def torch_linear(kernel_flax, bias=None):
    """A ``torch.nn.Linear`` holding a Flax ``(in, out)`` kernel (PyTorch stores ``(out, in)``)."""
    torch = _torch()

    k = np.asarray(kernel_flax, np.float32)
    m = torch.nn.Linear(k.shape[0], k.shape[1], bias=bias is not None)
    with torch.no_grad():
        m.weight.copy_(torch.from_numpy(k.T.copy()))
        if bias is not None:
            m.bias.copy_(torch.from_numpy(np.array(bias, np.float32)))
    return m


def torch_conv2d(kernel_flax):
    """A ``torch.nn.Conv2d`` holding a Flax ``(kh, kw, in, out)`` kernel as ``(out, in, kh, kw)``."""
    torch = _torch()

    k = np.asarray(kernel_flax, np.float32)
    kh, kw, cin, cout = k.shape
    m = torch.nn.Conv2d(cin, cout, (kh, kw), bias=False)
    with torch.no_grad():
        m.weight.copy_(torch.from_numpy(np.transpose(k, (3, 2, 0, 1)).copy()))
    return m


def rel(a, b):
    """Relative difference |a - b| / |b|."""
    a, b = float(a), float(b)
    return abs(a - b) / abs(b)


@pytest.fixture
def x64():
    """Run the test with float64 enabled in JAX (restored afterwards)."""
    with jax.enable_x64(True):
        yield


class Helpers:
    """The helpers above, as a fixture (tests/ is not a package)."""

    DENSE = DENSE
    CONV = CONV
    gaussian = staticmethod(gaussian)
    student_t = staticmethod(student_t)
    low_rank_plus_noise = staticmethod(low_rank_plus_noise)
    rank_deficient = staticmethod(rank_deficient)
    svd_evals = staticmethod(svd_evals)
    conv_taps_evals = staticmethod(conv_taps_evals)
    ww_fit = staticmethod(ww_fit)
    ww_analyze = staticmethod(ww_analyze)
    torch_linear = staticmethod(torch_linear)
    torch_conv2d = staticmethod(torch_conv2d)
    rel = staticmethod(rel)
    torch = staticmethod(_torch)


@pytest.fixture(scope="session")
def h():
    return Helpers
