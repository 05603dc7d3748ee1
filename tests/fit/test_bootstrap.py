"""Bootstrap goodness of fit: the vectorised test equals a plain loop, is calibrated, seeded."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxww
from jaxww.fit import bootstrap as bs

N = 300   # every spectrum here has 300 values: one compilation per replica count
B = 100


def pareto(alpha, size, rng):
    return (1.0 - rng.random(size)) ** (-1.0 / (alpha - 1.0))


#: The plain fit as the bootstrap runs it (traced; on a NumPy array fit_power_law runs the
#: host fit, equal only to rounding).
plain_fit = jax.jit(jaxww.fit_power_law)


def loop_p_and_ci(x, replicas):
    """p-value and percentile interval from a plain Python loop of fit_power_law."""
    fit = plain_fit(x)
    rD, ra = [], []
    for r in replicas:
        f = plain_fit(np.asarray(r, x.dtype))
        if int(f.status) == jaxww.FIT_OK:
            rD.append(float(f.D))
            ra.append(float(f.alpha))
    rD, ra = np.array(rD), np.array(ra)
    return float(np.mean(rD >= float(fit.D))), np.percentile(ra, [2.5, 97.5])


def numpy_replicas(x, xmin, alpha, num, rng):
    """Clauset-Shalizi-Newman's semi-parametric replicas, written independently in NumPy."""
    body = x[x < xmin]
    out = []
    for _ in range(num):
        m = rng.binomial(len(x), 1.0 - len(body) / len(x))
        tail = xmin * (1.0 - rng.random(m)) ** (-1.0 / (alpha - 1.0))
        out.append(np.concatenate([tail, rng.choice(body, len(x) - m)]) if len(body) else tail)
    return out


@pytest.fixture(scope="module")
def lognormal():
    # A sample whose p-value is neither 0 nor 1, so a mismatch would show.
    return np.random.default_rng(3).lognormal(0.0, 1.0, N).astype(np.float32)


@pytest.mark.slow
def test_vectorised_equals_a_loop_over_the_same_replicas(lognormal):
    x = lognormal
    key = jax.random.key(7)
    t = jaxww.fit_power_law(x, bootstrap=B, key=key)
    fit = plain_fit(x)
    layer_key = jax.random.split(key, 1)[0]  # what bootstrap_power_law gives a 1-spectrum batch
    reps = bs.semi_parametric_replicas(layer_key, jnp.asarray(x), fit.xmin, fit.alpha, B)
    p, ci = loop_p_and_ci(x, np.asarray(reps))
    assert float(t.p_value) == pytest.approx(p, abs=1e-6)
    np.testing.assert_allclose([float(t.alpha_ci_low), float(t.alpha_ci_high)], ci, rtol=1e-5)
    for f in jaxww.PowerLawFit._fields:   # the plain fit's function on the same array: the same bits
        np.testing.assert_array_equal(np.asarray(getattr(t.fit, f)), np.asarray(getattr(fit, f)))


@pytest.mark.slow
def test_p_value_matches_an_independent_numpy_bootstrap_within_monte_carlo_error(lognormal):
    x = lognormal
    t = jaxww.fit_power_law(x, bootstrap=B, key=jax.random.key(1))
    fit = plain_fit(x)
    reps = numpy_replicas(x.astype(np.float64), float(fit.xmin), float(fit.alpha), B,
                          np.random.default_rng(11))
    p_loop, _ = loop_p_and_ci(x, [np.asarray(r, np.float32) for r in reps])
    p = float(t.p_value)
    assert 0.05 < p < 0.95, p  # the check is only sharp away from 0 and 1
    # Two independent estimates of the same p, B replicas each: 4 standard errors.
    se = np.sqrt(2 * p * (1 - p) / B)
    assert abs(p - p_loop) < 4 * se, (p, p_loop)


@pytest.mark.slow
def test_calibrated_on_pareto_and_the_interval_covers_alpha():
    rng = np.random.default_rng(0)
    x = pareto(2.5, (24, N), rng).astype(np.float32)
    t = jaxww.bootstrap_power_law(x, bootstrap=B, key=jax.random.key(0))
    p = np.asarray(t.p_value)
    # Under the null about 10% have p <= 0.1; 24 samples: 3 binomial standard errors.
    assert np.mean(p <= 0.1) <= 0.1 + 3 * np.sqrt(0.09 / 24)
    cover = np.mean((np.asarray(t.alpha_ci_low) < 2.5) & (2.5 < np.asarray(t.alpha_ci_high)))
    assert cover >= 0.95 - 3 * np.sqrt(0.05 * 0.95 / 24)


@pytest.mark.slow
def test_exponential_rejected_when_the_tail_is_held_long():
    rng = np.random.default_rng(5)
    x = rng.exponential(1.0, (8, 1000)).astype(np.float32)
    t = jaxww.bootstrap_power_law(x, bootstrap=50, key=jax.random.key(2), min_tail=200)
    assert (np.asarray(t.num_pl_spikes) >= 200).all()
    assert np.mean(np.asarray(t.p_value) <= 0.1) >= 0.75


@pytest.mark.slow
def test_seeded():
    x = pareto(2.5, N, np.random.default_rng(1)).astype(np.float32)
    a = jaxww.fit_power_law(x, bootstrap=B, key=jax.random.key(3))
    b = jaxww.fit_power_law(x, bootstrap=B, key=jax.random.key(3))
    c = jaxww.fit_power_law(x, bootstrap=B, key=jax.random.key(4))
    # the same key, the same computation: the same bits
    assert float(a.p_value) == float(b.p_value) and float(a.alpha_ci_low) == float(b.alpha_ci_low)
    assert (float(a.p_value), float(a.alpha_ci_low)) != (float(c.p_value), float(c.alpha_ci_low))


@pytest.mark.slow
def test_result_is_the_plain_fit_and_the_test():
    x = pareto(2.5, N, np.random.default_rng(1)).astype(np.float32)
    t = jaxww.fit_power_law(x, bootstrap=B, key=jax.random.key(3))
    fit = plain_fit(x)
    assert isinstance(t, jaxww.PowerLawTest) and isinstance(t.fit, jaxww.PowerLawFit)
    assert t._fields == ("fit", "p_value", "alpha_ci_low", "alpha_ci_high")
    for f in jaxww.PowerLawFit._fields:   # the fit's fields also read directly
        assert getattr(t, f) is getattr(t.fit, f)
        # the plain fit's function on the same array: the same bits
        np.testing.assert_array_equal(np.asarray(getattr(t.fit, f)), np.asarray(getattr(fit, f)))
    with pytest.raises(AttributeError, match="no attribute 'Lambda'"):
        t.Lambda


@pytest.mark.slow
def test_too_small_or_failed_is_nan_not_a_crash():
    x = np.zeros((3, N), np.float32)
    x[1, :3] = [1.0, 2.0, 3.0]
    x[2] = pareto(2.5, N, np.random.default_rng(2))
    t = jaxww.bootstrap_power_law(x, bootstrap=B, key=jax.random.key(0), min_tail=N + 5)
    assert np.isnan(np.asarray(t.p_value)).all()  # nothing to fit; no tail of N + 5 values
    t = jaxww.bootstrap_power_law(x, bootstrap=B, key=jax.random.key(0))
    assert np.isnan(np.asarray(t.p_value)[0]) and np.isfinite(np.asarray(t.p_value)[2])


def test_bad_input():
    x = np.arange(1.0, 50.0)
    with pytest.raises(ValueError, match="needs key="):
        jaxww.fit_power_law(x, bootstrap=10)
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="bootstrap must be"):
            jaxww.fit_power_law(x, bootstrap=bad, key=jax.random.key(0))
    with pytest.raises(ValueError, match="min_tail"):
        jaxww.bootstrap_power_law(x, bootstrap=5, key=jax.random.key(0), min_tail=1)
    with pytest.raises(ValueError, match="needs key="):
        jaxww.analyze({"w": np.ones((16, 8), np.float32)}, bootstrap=5)


@pytest.mark.slow
def test_analyze_bootstrap_columns(h):
    params = {"a": {"kernel": h.student_t(4)}, "b": {"kernel": h.gaussian(5)},
              "z": {"kernel": np.zeros(h.DENSE, np.float32)}}
    plain = jaxww.analyze(params)
    assert plain.columns == jaxww.COLUMNS and "pl_p_value" not in plain.details
    r1 = jaxww.analyze(params, bootstrap=20, key=jax.random.key(0))
    r2 = jaxww.analyze(params, bootstrap=20, key=jax.random.key(0))
    assert r1.columns == jaxww.COLUMNS + ("pl_p_value", "alpha_ci_low", "alpha_ci_high")
    rows = {r["name"]: r for r in r1.rows}
    for name in ("a/kernel", "b/kernel"):
        assert 0.0 <= rows[name]["pl_p_value"] <= 1.0
        assert rows[name]["alpha_ci_low"] < rows[name]["alpha_ci_high"]
        # the plain analysis fits on the host in NumPy, the bootstrap one in XLA: the same MLE
        # on the same float32 eigenvalues, two summation orders (conftest.pl_alpha_rtol)
        ev, mine = plain.esd(name), {r["name"]: r for r in plain.rows}[name]
        rtol = h.pl_alpha_rtol(ev[ev >= mine["xmin"]], eps=h.EPS32)
        assert rows[name]["alpha"] == pytest.approx(mine["alpha"], rel=rtol)
    assert rows["z/kernel"]["status"] == "failed" and np.isnan(rows["z/kernel"]["pl_p_value"])
    # Seeded: the same key, the same computation, the same bits (NaN compares equal here).
    np.testing.assert_array_equal(r1.details["pl_p_value"].to_numpy(), r2.details["pl_p_value"].to_numpy())
