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


# --- tolerances, derived from float error ---------------------------------------------------
#
# Every comparison of floats in the suite is one of:
# * the same bits: two paths that must run the same operations in the same order (batch
#   composition, device or core count, a copy): ``==`` / ``assert_array_equal``, and the
#   test says why the bits must agree;
# * a closed form evaluated two ways on the same input: a few ulp times the condition
#   number (``sum_err`` for sums, ``ulps`` for a handful of roundings);
# * downstream of an eigensolver: ``eig_err`` (eigenvalues), then the fit's sensitivity to
#   its inputs (``pl_alpha_rtol``);
# * an optimiser's result: its stopping rule and the flatness of the optimum (``flat_top_tol``);
# * a statistical or design accuracy (standard errors, quadrature): stated where used.
# Tests must pass on any CPU: the BLAS kernel (OPENBLAS_CORETYPE) and XLA's instruction set
# (--xla_cpu_max_isa) change the rounding of the last bits; .ci/run checks the suite under
# another pair of them (docs/conventions.md, section 9, has the measured differences).

#: Machine epsilon of float64 and float32: the spacing of floats at 1 (one rounding errs by
#: at most half of it, relative; the bounds below count whole eps per rounding).
EPS64 = float(np.finfo(np.float64).eps)
EPS32 = float(np.finfo(np.float32).eps)


def ulps(k, cond=1.0, eps=EPS64):
    """Relative tolerance of ``k`` roundings (each <= eps relative) amplified by ``cond``:
    a closed form of a handful of operations evaluated two ways (vectorised or scalar,
    JAX or NumPy, fused or not) on the same input."""
    return k * cond * eps


def sum_err(terms, eps=EPS64):
    """Absolute bound on the difference of two evaluations of ``sum(terms)`` in any order.

    Recursive or pairwise summation of n terms is within ``(n - 1) eps sum|t|`` of the
    exact sum (Higham, Accuracy and Stability of Numerical Algorithms, 4.2); two orders
    within twice that. Relative to ``|sum|`` this is ``n eps`` times the condition number
    ``sum|t| / |sum t|`` (1 for positive terms; large under cancellation).
    """
    t = np.abs(np.asarray(terms, np.float64).ravel())
    return 2.0 * max(t.size - 1, 1) * eps * float(t.sum())


def eig_err(evals, n_rows, eps=EPS64):
    """Absolute bound on the difference of the eigenvalues of ``X = W^T W`` from two
    backward-stable paths (jaxww: BLAS ?syrk then LAPACK ?syevd; the reference: an SVD of W).

    Forming ``X`` with ``N``-term dot products errs by ``|dX_ij| <= N eps |w_i| |w_j|``, so
    ``||dX||_2 <= N eps ||W||_F^2``; ?syevd is backward stable (``<= M eps ||X||_2``), and by
    Weyl every eigenvalue moves by at most the norm of the backward error. The SVD path:
    ``|d sigma| <= N eps sigma_max``, ``|d lambda| <= 2 N eps lambda_max``. With
    ``||W||_F^2 = sum(lambda) >= lambda_max`` each path is within ``2 N eps sum(lambda)``,
    two paths within twice that. Relative to an eigenvalue it grows as
    ``sum(lambda) / lambda``: small eigenvalues are the least accurate.
    """
    ev = np.asarray(evals, np.float64)
    return 4.0 * n_rows * eps * float(np.abs(ev).sum())


def pl_alpha_rtol(tail, x_err=0.0, eps=EPS64):
    """Relative bound on the difference of two evaluations of the power-law MLE
    ``alpha = 1 + n / S``, ``S = sum ln(x_j / xmin)`` over the ascending ``tail``
    (``tail[0] = xmin``), whose values may differ by ``x_err`` (absolute) between the two.

    * Input error: each ``ln x`` moves by at most ``x_err / x``, so each term of ``S`` by
      at most ``2 x_err / xmin``; ``dalpha = (alpha - 1) dS / S``.
    * Rounding: ``S`` is a sum of ``ln x_j`` and ``-ln xmin`` (``sum_err``, which covers
      the cancellation when the tail is narrow), plus one ulp of each log; the division
      and the addition of 1: a few ulp.
    """
    x = np.sort(np.asarray(tail, np.float64))
    alpha = 1.0 + x.size / float(np.sum(np.log(x / x[0])))
    return (alpha - 1.0) / alpha * log_sum_rtol(x, x_err, eps) + ulps(4, eps=eps)


def log_sum_rtol(tail, x_err=0.0, eps=EPS64):
    """Relative bound on two evaluations of ``S = sum ln(x_j / xmin)`` (see ``pl_alpha_rtol``):
    inputs off by ``x_err``, each log off by an ulp of ``|ln x|``, and the sum of the logs
    and ``-ln xmin`` (``sum_err``: the cancellation of a narrow tail)."""
    x = np.sort(np.asarray(tail, np.float64))
    n = x.size
    logs = np.log(x)
    S = float(np.sum(logs - logs[0]))
    dS = n * 2.0 * x_err / x[0] + sum_err(np.concatenate([logs, -np.full(n, logs[0])]), eps) \
        + 2 * n * eps * float(np.abs(logs).max())
    return dS / S


def pl_fit_tols(evals, xmin, x_err=0.0, eps=EPS64):
    """Absolute tolerances of the power-law fit's fields (``alpha, xmin, D, sigma, xmax``)
    between two evaluations that chose the same ``xmin``, on eigenvalues that differ by at
    most ``x_err`` (``eig_err``) and with other roundings.

    * ``alpha``: :func:`pl_alpha_rtol` on the tail ``evals >= xmin``.
    * ``xmin``, ``xmax``: the eigenvalue's own error, plus an ulp.
    * ``D = max_j |1 - r_j**(1 - alpha) - j / n|``, ``r_j = x_j / xmin``: with
      ``y = r**(1 - alpha) <= 1``, ``dy <= (alpha - 1) |d ln r| + y ln r |dalpha|``
      (``|d ln r|``: the inputs' error and an ulp of ``|ln x|`` per log) and
      ``y ln r <= 1 / (e (alpha - 1))``; the power ``exp((1 - alpha) ln r)`` and the two
      subtractions round at a few ulp (absolute, y <= 1).
    * ``sigma = (alpha - 1) / sqrt(n)``: ``dalpha / (alpha - 1)`` relative.
    """
    x = np.asarray(evals, np.float64)
    tail = np.sort(x[x >= xmin])
    n = tail.size
    S = float(np.sum(np.log(tail / tail[0])))
    alpha = 1.0 + n / S
    da = alpha * pl_alpha_rtol(tail, x_err, eps)
    # ln r = ln x_j - ln xmin: the inputs' error, and an ulp of each log (absolute: |ln x| eps)
    dlnx = 2.0 * x_err / tail[0] + 2 * eps * max(1.0, float(np.abs(np.log(tail)).max()))
    return {
        "alpha": da,
        "xmin": x_err + ulps(2, eps=eps) * tail[0],
        "xmax": x_err + ulps(2, eps=eps) * tail[-1],
        "D": (alpha - 1.0) * dlnx + da / (np.e * (alpha - 1.0)) + ulps(8, eps=eps),
        "sigma": (alpha - 1.0) / np.sqrt(n) * (da / (alpha - 1.0) + ulps(4, eps=eps)),
    }


def metric_tols(evals, alpha, dalpha, x_err=0.0, eps=EPS64):
    """Absolute tolerances of the norm metrics of conventions section 4 on eigenvalues
    ``evals`` (all of the layer's) that differ by at most ``x_err`` between two evaluations,
    with ``alpha`` known to ``dalpha``; each adds the rounding of its own sum (``sum_err``)
    and a few ulp of its logs and divisions.
    """
    ev = np.asarray(evals, np.float64)
    M, top, tot = ev.size, float(ev.max()), float(ev.sum())
    ln10 = np.log(10.0)
    d_norm = M * x_err + sum_err(ev, eps)
    pos = ev[ev > 0]
    pw = pos ** alpha
    an = float(pw.sum())
    # d(lambda**alpha) = alpha lambda**(alpha - 1) dlambda + lambda**alpha |ln lambda| dalpha,
    # and the power rounds at (1 + alpha |ln lambda|) eps relative
    d_an = float(np.sum(alpha * pos ** (alpha - 1) * x_err + pw * np.abs(np.log(pos)) * dalpha
                        + pw * (1 + alpha * np.abs(np.log(pos))) * eps)) + sum_err(pw, eps)
    d_an += (M - pos.size) * x_err ** alpha   # numerical zeros: at most x_err each
    p = ev / tot
    dp = x_err / tot + p * d_norm / tot
    rank = int(np.sum(ev > top * 1e-13))   # the ranks compared are equal (asserted separately)
    plogp = p[p > 0] * np.log(p[p > 0])
    big = np.maximum(p, dp)
    d_p_ln_p = np.where(big > 0, dp * (np.abs(np.log(np.where(big > 0, big, 1.0))) + 1.0), 0.0)
    d_ent = (float(np.sum(d_p_ln_p)) + sum_err(plogp, eps)) / np.log(max(rank, 2))
    out = {
        "norm": d_norm,
        "log_norm": d_norm / (tot * ln10),
        "spectral_norm": x_err + ulps(2, eps=eps) * top,
        "log_spectral_norm": (x_err + ulps(2, eps=eps) * top) / (top * ln10),
        "alpha_weighted": dalpha * abs(np.log10(top)) + alpha * (x_err / top + ulps(4, eps=eps)) / ln10,
        "log_alpha_norm": d_an / (an * ln10),
        "stable_rank": (d_norm / tot + (x_err / top + ulps(2, eps=eps))) * tot / top,
        "entropy": d_ent,
    }
    # and a few ulp of each value (the log10, products and quotients that form it)
    vals = {"norm": tot, "log_norm": np.log10(tot), "spectral_norm": top, "log_spectral_norm": np.log10(top),
            "alpha_weighted": alpha * np.log10(top), "log_alpha_norm": np.log10(an), "stable_rank": tot / top,
            "entropy": 1.0}
    return {c: out[c] + ulps(4, eps=eps) * abs(vals[c]) for c in out}


def flat_top_tol(hess, f_terms, eps=EPS64, k=8):
    """Per-coordinate bound on how far apart two runs of an ascent that accepts a step only
    when the computed objective increases may stop (different batch shapes, summation
    orders or instruction sets: the same maximisation, other roundings).

    The computed objective errs by at most ``df = k eps sum|f_terms|`` (``f_terms``: the
    magnitudes of the terms the objective adds, ``k`` the roundings per term). A run stops
    where no step improves the computed value, so within ``2 df`` of the maximum (true
    values). Near the top ``f* - f(theta) = d^T (-H) d / 2``: the set of such stops is an
    ellipse whose extent along coordinate ``i`` is ``sqrt(2 * 2 df * (-H)^-1_ii)``; two runs
    may stop at its two ends (2x). This is the flat top of a maximum-likelihood estimate:
    ``~sqrt(eps)`` relative, not eps, however tight the stopping rule.
    """
    h = np.linalg.inv(-np.asarray(hess, np.float64))
    df = k * eps * float(np.sum(np.abs(np.asarray(f_terms, np.float64))))
    return 2.0 * np.sqrt(2.0 * 2.0 * df * np.diag(h))


def assert_float32_paths_agree(rows, esd, ref_rows, ref_esd):
    """Two float32 analyses of the same weights by two eigensolver paths (LAPACK on the host;
    the accelerators' Gram, tridiagonal reduction and bisection, run on the CPU by
    ``JAXWW_DEVICE_PATH=1``): the same layers, statuses and reasons; every eigenvalue within
    ``eig_err`` (float32); the same ``num_pl_spikes`` (the same xmin candidate), and every fit
    field and metric within what that error and float32 rounding allow (``pl_fit_tols``,
    ``metric_tols``); the same matrix rank.

    ``rows``, ``ref_rows``: row dicts holding ``name``, ``status``, ``reason``, ``N`` and any of
    the fit and metric columns (NaN or None where a layer failed); ``esd``, ``ref_esd``:
    ``{name: eigenvalues}`` (any order).
    """
    assert [r["name"] for r in rows] == [r["name"] for r in ref_rows]
    for r, ref in zip(rows, ref_rows, strict=True):
        name = ref["name"]
        assert (r["status"], r["reason"]) == (ref["status"], ref["reason"]), name
        if ref["status"] != "success":
            continue
        ev_ref = np.sort(np.asarray(ref_esd[name], np.float64))
        ev = np.sort(np.asarray(esd[name], np.float64))
        x_err = eig_err(ev_ref, ref["N"], EPS32)
        assert np.max(np.abs(ev - ev_ref)) <= x_err, name
        assert r.get("num_pl_spikes") == ref.get("num_pl_spikes") and r.get("matrix_rank") == ref.get("matrix_rank")
        fit = pl_fit_tols(ev_ref[ev_ref > 1e-5], ref["xmin"], x_err, EPS32)
        tols = {**fit, **metric_tols(ev_ref, ref["alpha"], fit["alpha"], x_err, EPS32)}
        for c in tols.keys() & r.keys() & ref.keys():
            assert abs(r[c] - ref[c]) <= tols[c], (name, c, r[c], ref[c], tols[c])


def assert_tree_alpha_is_analyzes(got, report):
    """``tree_alpha``'s alphas (``{name: alpha}``) are ``report``'s (an ``analyze`` of the same
    float64 params): the same layers, each alpha within the rounding of its tail
    (``pl_alpha_rtol`` of ``eig_err``)."""
    rows = {r["name"]: r for r in report.rows}
    assert set(got) == set(rows), (list(got), list(rows))
    for name, a in got.items():
        ev = report.esd(name)
        tail = ev[ev >= rows[name]["xmin"]]
        rtol = pl_alpha_rtol(tail, eig_err(ev, rows[name]["N"]))
        assert float(a) == pytest.approx(rows[name]["alpha"], rel=rtol), name


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
    EPS64, EPS32 = EPS64, EPS32
    ulps = staticmethod(ulps)
    sum_err = staticmethod(sum_err)
    eig_err = staticmethod(eig_err)
    pl_alpha_rtol = staticmethod(pl_alpha_rtol)
    log_sum_rtol = staticmethod(log_sum_rtol)
    flat_top_tol = staticmethod(flat_top_tol)
    pl_fit_tols = staticmethod(pl_fit_tols)
    metric_tols = staticmethod(metric_tols)
    assert_float32_paths_agree = staticmethod(assert_float32_paths_agree)
    assert_tree_alpha_is_analyzes = staticmethod(assert_tree_alpha_is_analyzes)
    torch = staticmethod(_torch)


@pytest.fixture(scope="session")
def h():
    return Helpers
