"""Truncated power law: the normaliser against mpmath, recovery of known (alpha, Lambda)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import jaxww
from jaxww.fit import fingers
from jaxww.fit import tpl

N = 4000
#: Accuracy contract of ``tpl.log_integral`` (absolute, times ``max(1, |ln I|)``): the error
#: of the 32-panel, 8-node Gauss-Legendre quadrature, not rounding (its logsumexp of 256
#: terms rounds at ~1e-14). Checked against mpmath below; used wherever the fit's
#: log-likelihood (``n ln I`` from the quadrature) meets a closed form.
LOG_INTEGRAL_TOL = 1e-10


def loglik_terms(alpha, L, s1, s2, n):
    """Magnitudes of the terms the log-likelihood adds (``flat_top_tol``'s ``f_terms``)."""
    ln_i = float(tpl.log_integral(alpha, L))
    return [alpha * s1, L * s2, n * ln_i]


def nesting_slack(n, pl_alpha, s1, shift, h):
    """How far the truncated law's log-likelihood may fall below the closed-form power
    law's on the same tail. The ascent starts at ``(pl_alpha, 0)`` and only accepts
    increases, so its result is >= its own value there, which differs from the closed
    form ``n ln(alpha - 1) - alpha s1 - shift`` by ``n`` times ``ln I``'s quadrature error
    (``LOG_INTEGRAL_TOL``) plus the rounding of the terms (8 ulp each, ``flat_top_tol``'s k)."""
    ln_i = abs(np.log(pl_alpha - 1))
    return n * LOG_INTEGRAL_TOL * max(1.0, ln_i) + h.ulps(8) * (abs(pl_alpha * s1) + n * ln_i + 2 * abs(shift))


def sample_tpl(alpha, lam, xmin, n, rng):
    """Exact draws of p(x) ~ x**-alpha exp(-lam x), x >= xmin, by rejection sampling."""
    out, have = [], 0
    while have < n:
        if alpha > 1:   # Pareto proposal, accept with exp(-lam (x - xmin))
            x = xmin * (1 - rng.random(4 * n)) ** (-1 / (alpha - 1))
            x = x[rng.random(4 * n) < np.exp(-lam * (x - xmin))]
        else:           # shifted exponential proposal, accept with (x / xmin)**-alpha
            x = xmin + rng.exponential(1 / lam, 4 * n)
            x = x[rng.random(4 * n) < (x / xmin) ** -alpha]
        out.append(x)
        have += len(x)
    return np.concatenate(out)[:n]


@pytest.mark.slow
def test_log_integral_against_mpmath(x64):
    mpmath = pytest.importorskip("mpmath", reason="reference incomplete gamma function")
    mpmath.mp.dps = 30
    for a in (0.0, 0.5, 0.999, 1.0, 1.001, 1.5, 2.5, 5.0, 20.0):
        for L in (0.0, 1e-12, 1e-6, 1e-3, 0.1, 1.0, 5.0, 50.0, 300.0, 1e4):
            if L == 0 and a <= 1:
                assert np.isinf(float(tpl.log_integral(a, L)))
                continue
            A = mpmath.mpf(a)
            ref = -mpmath.log(A - 1) if L == 0 else \
                mpmath.log(mpmath.gammainc(1 - A, mpmath.mpf(L)) * mpmath.mpf(L) ** (A - 1))
            got = float(tpl.log_integral(a, L))
            assert abs(got - float(ref)) <= LOG_INTEGRAL_TOL * max(1.0, abs(float(ref))), (a, L, got, ref)


CASES = [(2.0, 0.1, 1.0), (2.5, 0.02, 1.0), (1.5, 1.0, 2.0), (0.5, 2.0, 1.0)]


@pytest.fixture(scope="module")
def recovered():
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        x = np.stack([sample_tpl(a, lam, m, N, rng) for a, lam, m in CASES])
        xmin = np.array([c[2] for c in CASES])
        return x, xmin, jax.device_get(jaxww.fit_truncated_power_law(x, xmin=xmin))


@pytest.mark.slow
def test_recovers_alpha_and_lambda(recovered):
    x, xmin, fit = recovered
    with jax.enable_x64(True):
        for r, (a, lam, m) in enumerate(CASES):
            # Standard errors from the observed information at the estimate.
            t = x[r] / m
            _, _, H = tpl._loglik_t(jax.numpy.array([fit.alpha[r], fit.Lambda[r] * m]),
                                    np.log(t).sum(), t.sum(), float(N))
            se = np.sqrt(np.diag(np.linalg.inv(-np.asarray(H))))
            assert abs(fit.alpha[r] - a) < 4 * se[0], (r, fit.alpha[r], a, se)
            assert abs(fit.Lambda[r] * m - lam * m) < 4 * se[1], (r, fit.Lambda[r], lam, se)
            assert fit.num_tail[r] == N and fit.status[r] == tpl.TPL_OK


@pytest.mark.slow
def test_maximum_and_nesting(recovered, h):
    x, xmin, fit = recovered
    with jax.enable_x64(True):
        for r in range(len(CASES)):
            t = x[r] / xmin[r]
            s1, s2 = np.log(t).sum(), t.sum()
            shift = N * np.log(xmin[r])
            best = fit.loglik[r] + shift
            # Rounding of the objective (8 ulp per term, flat_top_tol's k) and of removing and
            # adding back the shift n ln xmin; a step of 1e-3 lowers it by ~N 1e-6 Var >> this.
            terms = loglik_terms(fit.alpha[r], fit.Lambda[r] * xmin[r], s1, s2, N)
            slack = h.ulps(8) * (np.sum(np.abs(terms)) + 2 * abs(shift))
            for da, dl in ((1e-3, 0), (-1e-3, 0), (0, 1e-3), (0, -1e-3)):
                th = np.array([fit.alpha[r] + da, max(fit.Lambda[r] * xmin[r] + dl, 0.0)])
                assert float(tpl._loglik_t(jax.numpy.asarray(th), s1, s2, float(N))[0]) <= best + slack
            # The truncated law nests the power law (Lambda = 0).
            assert fit.loglik[r] >= fit.pl_loglik[r] - nesting_slack(N, fit.pl_alpha[r], s1, shift, h)
            # 1 + n / s1, s1 a sum of positive logs (JAX's order vs NumPy's: sum_err), each
            # ln(x / xmin) off by <= 2 eps absolute from the division and the log.
            assert fit.pl_alpha[r] == pytest.approx(1 + N / s1, rel=(h.sum_err(np.log(t)) + 2 * N * h.EPS64) / s1
                                                    + h.ulps(4))


@pytest.mark.slow
def test_pure_power_law_gives_lambda_near_zero(x64):
    x = (1 - np.random.default_rng(1).random(N)) ** (-1 / 1.5)
    fit = jaxww.fit_truncated_power_law(x, xmin=1.0)
    assert float(fit.Lambda) < 1e-3
    assert float(fit.alpha) == pytest.approx(float(fit.pl_alpha), abs=0.05)


@pytest.mark.slow
def test_xmin_default_is_the_power_law_scan_and_failures_are_nan():
    x = np.zeros((2, 64), np.float32)
    x[0] = np.sort((1 - np.random.default_rng(2).random(64)) ** (-1 / 1.5))
    fit = jaxww.fit_truncated_power_law(x)
    assert float(fit.xmin[0]) == float(jaxww.fit_power_law(x[0]).xmin)   # a chosen input value
    assert int(fit.status[1]) == tpl.TPL_TOO_FEW and np.isnan(float(fit.alpha[1]))


@pytest.mark.slow
def test_analyze_tpl_columns(h, x64):
    # float64: in float32 the maximum itself is only defined to ~sqrt(eps) (a flat top).
    params = {"a": {"kernel": h.student_t(4)}, "b": {"kernel": h.gaussian(5)}}
    plain = {r["name"]: r for r in jaxww.analyze(params, precision="float64").rows}
    for kind in ("TPL", "E_TPL"):
        rep = jaxww.analyze(params, fit=kind, precision="float64")
        assert rep.columns == jaxww.COLUMNS + ("Lambda", "tpl_loglik", "pl_loglik")
        for r in rep.rows:
            ev = rep.esd(r["name"])
            if kind == "TPL":
                # the same scan on the same eigenvalues in the same batch: the same bits
                assert r["xmin"] == plain[r["name"]]["xmin"]
            else:
                # the peak recomputed from the ESD alone (another batch shape): 10**edge of a
                # log10 histogram, a few ulp times the condition ln(10) |log10 p| of 10**x
                p = float(fingers.esd_peak(ev))
                tol = h.ulps(16, cond=np.log(10) * max(1.0, abs(np.log10(p))))
                assert 0.95 * p * (1 - tol) <= r["xmin"] <= 1.5 * p * (1 + tol)
            # The same maximisation as analyze's, on a batch of one: another summation order
            # of s1, s2 and of the quadrature, so the ascent may stop anywhere on the flat top
            # (flat_top_tol, in (alpha, L = Lambda xmin); measured up to 1.3e-7 on alpha).
            ref = jaxww.fit_truncated_power_law(ev, xmin=r["xmin"])
            t = ev[ev >= r["xmin"]] / r["xmin"]
            s1, s2, n = np.log(t).sum(), t.sum(), float(t.size)
            th = np.array([float(ref.alpha), float(ref.Lambda) * r["xmin"]])
            H = np.asarray(tpl._loglik_t(jax.numpy.asarray(th), s1, s2, n)[2])
            if th[1] == 0.0 or th[0] == 0.0:   # on the box's wall: the top is a corner, not flat
                H = H - np.diag(np.where(th == 0.0, 1.0, 0.0)) * np.abs(H).max()
            tol_a, tol_l = h.flat_top_tol(H, loglik_terms(th[0], th[1], s1, s2, n))
            assert abs(r["alpha"] - th[0]) <= tol_a, (r["name"], r["alpha"], th[0], tol_a)
            assert abs(r["Lambda"] - float(ref.Lambda)) <= tol_l / r["xmin"], (r["name"], r["Lambda"], tol_l)
            # The truncated law nests the power law.
            slack = nesting_slack(n, float(ref.pl_alpha), s1, n * np.log(r["xmin"]), h)
            assert r["tpl_loglik"] >= r["pl_loglik"] - slack
    with pytest.raises(ValueError, match="fit must be one of"):
        jaxww.analyze(params, fit="tpl")
