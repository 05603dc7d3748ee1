"""``randomize=True``: seeded permutation spectra, rand_distance, traps."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest

import jaxww
from jaxww.analysis import randomize


def planted_trap(h, seed=0):
    """Gaussian noise (entries of std 1/16) with 3 entries of 40x that (far past the BBP threshold)."""
    W = h.gaussian(seed)
    W[[5, 70, 200], [3, 50, 100]] = [2.5, -2.5, 2.5]
    return W


@pytest.fixture(scope="module")
def params(h):
    return {"gauss": {"kernel": h.gaussian(0)}, "gauss2": {"kernel": h.gaussian(1)},
            "trap": {"kernel": planted_trap(h)}, "conv": {"kernel": h.gaussian(2, h.CONV)}}


@pytest.fixture(scope="module")
def rep(params):
    return jaxww.analyze(params, randomize=True, key=jax.random.key(0))


def rows(report):
    return {r["name"]: r for r in report.rows}


@pytest.mark.slow
def test_seeded_and_independent_of_batching(params, rep):
    again = jaxww.analyze(params, randomize=True, key=jax.random.key(0))
    assert [r["max_rand_eval"] for r in again.rows] == [r["max_rand_eval"] for r in rep.rows]
    other = jaxww.analyze(params, randomize=True, key=jax.random.key(1))
    assert [r["max_rand_eval"] for r in other.rows] != [r["max_rand_eval"] for r in rep.rows]
    # one layer alone: the same permutation as within the tree (its key is folded from its
    # name), and its spectrum is one host LAPACK call per matrix, one BLAS thread: the same bits
    alone = jaxww.analyze({"trap": params["trap"]}, randomize=True, key=jax.random.key(0))
    np.testing.assert_array_equal(alone.esd("trap/kernel", random=True), rep.esd("trap/kernel", random=True))


@pytest.mark.slow
def test_randomised_spectrum_is_that_of_the_permuted_matrix(params, rep, h):
    W = params["trap"]["kernel"]
    key = randomize.layer_keys(jax.random.key(0), ["trap/kernel"])[0]
    Wp = np.asarray(randomize.permuted(key, W[None]))[0]
    assert sorted(Wp.ravel()) == sorted(W.ravel())
    ref = h.svd_evals(Wp)
    np.testing.assert_allclose(rep.esd("trap/kernel", random=True), ref, rtol=1e-4, atol=ref.max() * 256 * 1.2e-7)


def test_planted_trap_found_with_its_direction(rep):
    r = rows(rep)["trap/kernel"]
    assert r["num_traps"] == 3 and len(r["trap_indices"]) == 3
    # the three large entries are the three top singular directions of W
    assert sorted(r["trap_indices"]) == [0, 1, 2]
    assert r["reason"] == ""


def test_gaussian_layers_have_no_traps(rep):
    for name in ("gauss/kernel", "gauss2/kernel", "conv/kernel"):
        r = rows(rep)[name]
        assert r["num_traps"] == 0 and r["trap_indices"] == ()


@pytest.mark.slow
def test_rand_distance_matches_reference_formula(rep):
    from weightwatcher.RMT_Util import jensen_shannon_distance

    for r in rep.rows:
        # in float64: the reference's own sum of KL terms cancels in float32 for close spectra
        ref = jensen_shannon_distance(np.float64(rep.esd(r["name"])), np.float64(rep.esd(r["name"], random=True)))
        assert r["rand_distance"] == pytest.approx(ref, rel=1e-4)
        assert r["ww_softrank"] == pytest.approx(r["max_rand_eval"] / r["spectral_norm"], rel=1e-6)


def test_randomize_needs_a_key(params):
    with pytest.raises(ValueError, match="key"):
        jaxww.analyze(params, randomize=True)
    with pytest.raises(ValueError, match="key"):
        jaxww.analyze(params, randomize=True, key=np.float32(3))


@pytest.mark.slow
def test_nan_layer_gets_nan_columns(h):
    bad = h.gaussian(4)
    bad[0, 1] = np.inf
    rep = jaxww.analyze({"bad": {"kernel": bad}, "ok": {"kernel": h.gaussian(5)}},
                        randomize=True, key=jax.random.key(0), mp_fit=True, detX=True)
    r = rows(rep)["bad/kernel"]
    assert math.isnan(r["rand_distance"]) and r["num_traps"] == -1 and r["detX_num"] == -1
    assert rows(rep)["ok/kernel"]["num_traps"] == 0


@pytest.mark.slow
def test_student_t_with_finite_fourth_moment_has_no_traps(h):
    # nu = 10: Tracy-Widom applies (finite 4th moment); measured max(rand) / bulk_max <= 1.03
    # over 20 layers for nu >= 8, against a bound of 1.04. nu <= 5 does show traps
    # (its largest entries; docs/conventions.md section 6), as theory says.
    params = {f"t{i}": {"kernel": h.student_t(30 + i, nu=10.0)} for i in range(5)}
    rep = jaxww.analyze(params, randomize=True, key=jax.random.key(3))
    assert [r["num_traps"] for r in rep.rows] == [0] * 5


@pytest.mark.slow
def test_student_t_nu3_traps_are_its_largest_entries(h):
    # an i.i.d. nu = 3 matrix is its own randomisation: its traps are real spikes of W,
    # made by its largest entries (Auffinger, Ben Arous, Peche 2009)
    W = h.student_t(7)
    rep = jaxww.analyze({"t": {"kernel": W}}, randomize=True, key=jax.random.key(0))
    r = rep.rows[0]
    assert r["num_traps"] >= 1
    top = np.sort(W.ravel() ** 2)[::-1][: r["num_traps"]]
    # a rank-one entry a in noise of variance s^2 gives about (a^2 + N s^2)(a^2 + M s^2) / a^2
    s2 = float(np.mean(W ** 2))
    pred = (top + 256 * s2) * (top + 128 * s2) / top
    lam = rep.esd("t/kernel", random=True)[::-1][: r["num_traps"]]
    np.testing.assert_allclose(lam, pred, rtol=0.25)
