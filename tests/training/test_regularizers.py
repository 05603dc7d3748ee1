"""Differentiable alpha and the spectral loss terms (``jaxww.training.penalties``).

References: ``jaxww.fit_power_law`` (the ``"ks"`` tail), NumPy formulas (fixed
tails, spectral norm), central finite differences in float64 (every gradient), and
``jaxww.analyze`` (per-layer alphas of a tree). Shapes are few and reused: every new
shape costs about a second of compilation.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import jaxww
from jaxww.training import penalties as R

SHAPE = (24, 16)          # most single-matrix tests
# The penalties act only on layers of >= 32 eigenvalues by default (their own test below);
# these tests' matrices have 16, so they pass analyze's limit, min_evals=8.
alpha_penalty = functools.partial(jaxww.alpha_penalty, min_evals=8)
weighted_alpha_penalty = functools.partial(jaxww.weighted_alpha_penalty, min_evals=8)
PAD = 64                  # hypothesis spectra are zero-padded to this length
TAILS = ("ks", "soft", "fraction", 0.3, 6)
FAST = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def pareto(rng, n, a, scale=1.0):
    return scale * (1.0 - rng.random(n)) ** (-1.0 / (a - 1.0))


def padded(x, n=PAD):
    out = np.zeros(n, np.float32)
    out[: len(x)] = x
    return out


def matrix(seed, shape=SHAPE, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return (rng.standard_t(3.0, size=shape) / np.sqrt(shape[0])).astype(dtype)


def fd_check(f, W, seed=0, h=1e-6, directions=3, rtol=1e-4, atol=1e-7):
    """Central finite differences of the float64 scalar ``f`` along random directions."""
    g = np.asarray(jax.jit(jax.grad(f))(W))
    f = jax.jit(f)
    rng = np.random.default_rng(seed)
    assert np.isfinite(g).all()
    for _ in range(directions):
        D = rng.standard_normal(W.shape)
        D /= np.linalg.norm(D)
        fd = (float(f(W + h * D)) - float(f(W - h * D))) / (2 * h)
        an = float(np.sum(g * D))
        assert an == pytest.approx(fd, rel=rtol, abs=atol), (an, fd)
    return g


# ------------------------------------------------------------------- tail choices
@FAST
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(2, PAD), a=st.floats(1.5, 6.0),
       log_scale=st.floats(-3, 3))
@pytest.mark.slow
def test_ks_tail_is_the_fit_of_fit_power_law(seed, n, a, log_scale):
    x = padded(pareto(np.random.default_rng(seed), n, a, 10.0**log_scale))
    fit = jaxww.fit_power_law(x)
    est = jaxww.tail_alpha(x, "ks")
    assert (int(fit.status) == 0) == (int(est.status) == 0)
    if int(fit.status) == 0:
        assert float(est.xmin) == pytest.approx(float(fit.xmin), rel=1e-6)
        assert int(est.num_tail) == int(fit.num_pl_spikes)
        assert float(est.alpha) == pytest.approx(float(fit.alpha), rel=1e-4)


def numpy_fixed_tail(x, fraction=None, count=None):
    """The top ceil(f k) values (at least 2; TempBalance: i = int(k / 2)) or the top count, plain MLE."""
    v = np.sort(np.asarray(x, np.float64)[np.asarray(x) > 1e-5])
    k = len(v)
    if fraction is not None:
        i = max(k - max(math.ceil(round(k * fraction, 9)), 2), 0)
    else:
        i = max(k - count, 0)
    tail = v[i:]
    n = len(tail)
    return 1 + n / (np.log(tail).sum() - n * np.log(tail[0])), n


@FAST
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(4, PAD), a=st.floats(1.5, 6.0),
       fraction=st.sampled_from([0.5, 0.25, 0.8, 1.0]), count=st.integers(2, 40))
@pytest.mark.slow
def test_fixed_tails_match_the_numpy_formula(seed, n, a, fraction, count):
    x = padded(pareto(np.random.default_rng(seed), n, a))

    def check(got, want, nt):
        if want >= R.FLAT_TAIL_ALPHA:   # a numerically flat tail: flagged, never a number
            assert np.isnan(float(got.alpha)) and int(got.status) == jaxww.FIT_DEGENERATE
            return
        assert int(got.num_tail) == nt
        assert float(got.alpha) == pytest.approx(want, rel=2e-4)

    check(jaxww.tail_alpha(x, fraction), *numpy_fixed_tail(x, fraction=fraction))
    check(jaxww.tail_alpha(x, count), *numpy_fixed_tail(x, count=count))
    check(jaxww.tail_alpha(x, "fraction"), *numpy_fixed_tail(x, fraction=0.5))


def test_a_flat_fixed_tail_is_flagged():
    """Found by hypothesis: two nearly equal top values give alpha > 1000 by the formula."""
    x = padded(pareto(np.random.default_rng(2166), 4, 2.0))
    want, _ = numpy_fixed_tail(x, count=2)
    assert want > R.FLAT_TAIL_ALPHA
    got = jaxww.tail_alpha(x, 2)
    assert np.isnan(float(got.alpha)) and int(got.status) == jaxww.FIT_DEGENERATE


@pytest.mark.slow
def test_known_answer_on_a_large_pareto_sample():
    x = pareto(np.random.default_rng(1), 4000, 3.5).astype(np.float32)
    for tail in ("ks", "soft", 0.2):
        assert float(jaxww.tail_alpha(x, tail).alpha) == pytest.approx(3.5, abs=0.25), tail


@pytest.mark.slow
def test_soft_tail_tends_to_ks_and_lies_among_the_candidates():
    x = padded(pareto(np.random.default_rng(3), 60, 2.5))
    ks = float(jaxww.tail_alpha(x, "ks").alpha)
    assert float(jaxww.tail_alpha(x, "soft", temperature=1e-7).alpha) == pytest.approx(ks, rel=1e-5)
    # A large temperature averages over the candidates: a different value, inside their range.
    s = float(jaxww.tail_alpha(x, "soft", temperature=1.0).alpha)
    assert abs(s - ks) > 1e-3
    v = np.sort(x[x > 1e-5]).astype(np.float64)
    cands = [1 + (len(v) - i) / np.log(v[i:] / v[i]).sum() for i in range(len(v) - 1)]
    assert min(cands) <= s <= max(cands)


@pytest.mark.slow
def test_soft_tail_carries_gradient_through_the_choice():
    """Eigenvalues below the KS xmin get no gradient from "ks", some from "soft"."""
    rng = np.random.default_rng(5)
    x = jnp.asarray(padded(np.concatenate([rng.uniform(0.2, 1.0, 40), pareto(rng, 20, 2.5, 1.2)])))
    xmin = float(jaxww.tail_alpha(x, "ks").xmin)
    below = (np.asarray(x) < xmin) & (np.asarray(x) > 1e-5)
    g_ks = np.asarray(jax.grad(lambda e: jaxww.tail_alpha(e, "ks").alpha)(x))
    g_soft = np.asarray(jax.grad(lambda e: jaxww.tail_alpha(e, "soft", temperature=0.05).alpha)(x))
    assert below.sum() > 5
    assert np.all(g_ks[below] == 0)
    assert np.abs(g_soft[below]).max() > 1e-4
    assert np.isfinite(g_soft).all()


def test_padding_and_order_do_not_change_alpha():
    x = pareto(np.random.default_rng(7), 40, 3.0).astype(np.float32)
    a = jaxww.tail_alpha(padded(x), "ks")
    b = jaxww.tail_alpha(padded(np.random.default_rng(0).permutation(x)), "ks")
    assert float(a.alpha) == float(b.alpha)   # sorted first: the same array, the same bits


# ------------------------------------------------------------------ eigenvalues
@pytest.mark.slow
def test_spectrum_matches_svd_and_jaxww_eigenvalues():
    W = matrix(0)
    want = np.linalg.svd(W.astype(np.float64), compute_uv=False) ** 2
    got = np.asarray(jaxww.spectrum(W))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.asarray(jaxww.spectrum(W.T)), got, rtol=1e-5)
    np.testing.assert_allclose(got, np.asarray(jaxww.eigenvalues(W)), rtol=1e-4, atol=1e-6)
    batch = np.stack([W, matrix(1)])
    np.testing.assert_allclose(np.asarray(jaxww.spectrum(batch))[0], got, rtol=1e-6)


@pytest.mark.slow
def test_spectrum_gradient_is_the_eigenvalue_gradient(x64, h):
    W = matrix(0, dtype=np.float64)
    w = np.random.default_rng(1).standard_normal(SHAPE[1])
    fd_check(lambda M: jnp.sum(jaxww.spectrum(M) * w), W)
    # d sigma_max^2 / dW = 2 sigma u v^T
    U, s, Vt = np.linalg.svd(W)
    g = np.asarray(jax.grad(lambda M: jaxww.spectrum(M)[0])(W))
    # u and v from two solvers: each off by the backward error over the gap (Davis-Kahan:
    # h.eig_err / (lambda_1 - lambda_2)), times 2 sigma, plus a few ulp of entries <= 2 sigma
    vec = h.eig_err(s**2, max(W.shape)) / (s[0] ** 2 - s[1] ** 2)
    np.testing.assert_allclose(g, 2 * s[0] * np.outer(U[:, 0], Vt[0]), rtol=0,
                               atol=2 * s[0] * (2 * vec + h.ulps(4)))


# ---------------------------------------------------------------- finite differences
@pytest.mark.slow
@pytest.mark.parametrize("tail", TAILS)
def test_alpha_gradient_matches_finite_differences(x64, tail):
    W = matrix(2, dtype=np.float64)
    a = float(jaxww.alpha(W, tail=tail))
    assert 1 < a < 100
    fd_check(lambda M: jaxww.alpha(M, tail=tail, temperature=0.05), W, seed=3)


@pytest.mark.slow
def test_batched_alpha_is_per_matrix():
    Ws = np.stack([matrix(0), matrix(1), matrix(2)])
    batch = np.asarray(jaxww.alpha(Ws))
    single = [float(jaxww.alpha(w)) for w in Ws]
    np.testing.assert_allclose(batch, single, rtol=1e-6)


# ------------------------------------------------------------ degenerate matrices
def degenerate_matrices():
    rng = np.random.default_rng(0)
    low = rng.standard_normal((SHAPE[0], 4)) @ rng.standard_normal((4, SHAPE[1]))
    q, _ = np.linalg.qr(rng.standard_normal(SHAPE))
    dup = matrix(4)
    dup[:, 8:] = dup[:, :8]
    nan = matrix(5)
    nan[3, 2] = np.nan
    inf = matrix(6)
    inf[0, 0] = np.inf
    return {
        "zeros": np.zeros(SHAPE, np.float32), "ones": np.ones(SHAPE, np.float32),
        "orthogonal": q.astype(np.float32), "rank4": low.astype(np.float32),
        "duplicate_columns": dup, "tiny": (1e-4 * matrix(7)).astype(np.float32),  # lambda < 1e-5
        "nan": nan, "inf": inf,
    }


EXPECTED_STATUS = {"zeros": jaxww.FIT_TOO_FEW, "ones": jaxww.FIT_TOO_FEW, "tiny": jaxww.FIT_TOO_FEW,
                   "orthogonal": jaxww.FIT_DEGENERATE,
                   "nan": jaxww.FIT_NONFINITE, "inf": jaxww.FIT_NONFINITE}


@pytest.mark.slow
@pytest.mark.parametrize("tail", TAILS)
def test_degenerate_matrices_give_finite_gradients(tail):
    mats = degenerate_matrices()
    stack = jnp.asarray(np.stack(list(mats.values())))
    a = np.asarray(jaxww.alpha(stack, tail=tail))
    g = np.asarray(jax.jit(jax.grad(lambda M: jnp.nansum(jaxww.alpha(M, tail=tail))))(stack))
    assert np.isfinite(g).all()
    status = np.asarray(jaxww.tail_alpha(jnp.where(jnp.isfinite(stack).all(axis=(1, 2))[:, None],
                                                   jaxww.spectrum(stack), jnp.nan), tail).status)
    for i, name in enumerate(mats):
        if name in EXPECTED_STATUS:
            assert status[i] == EXPECTED_STATUS[name], name
            assert np.isnan(a[i]) and np.all(g[i] == 0), name
        else:
            assert status[i] == jaxww.FIT_OK and a[i] > 1, name


def numpy_tail_alphas(lam, tail, temperature=R.DEFAULT_TEMPERATURE, d_tol=1e-5):
    """Acceptable alphas of an independent float64 NumPy estimate ([] where it must fail).

    ``lam``: the kept eigenvalues, ascending. The estimators of ``jaxww.training.penalties``'
    docstring: MLE ``1 + (n - c) / sum ln(x_j / x_i)`` (``c = 1`` for "ks"/"soft" below
    20 values), usable when ``1 < alpha < 1000``; "ks" takes the smallest KS distance
    among tails of >= 8 values (small samples), falling back to the whole spectrum;
    "soft" weights the candidates by ``softmax(-D / T)``. Candidates whose ``D`` is
    within ``d_tol`` (float32 rounding of ``D``) of the best are all acceptable.
    """
    x = np.asarray(lam, np.float64)
    k = len(x)
    if k < 2:
        return []
    c = 1.0 if (k < R.SMALL_N and tail in ("ks", "soft")) else 0.0

    def mle(i):
        s = np.log(x[i:] / x[i]).sum()
        a = 1.0 + (k - i - c) / s if s > 0 else np.inf
        return a if (k - i >= 2 and 1.0 < a < R.FLAT_TAIL_ALPHA) else None

    if tail == "fraction":
        a = mle(max(k - max(math.ceil(k / 2), 2), 0))
        return [] if a is None else [a]
    cand = [(i, mle(i)) for i in range(k - 1)]
    D = {}
    for i, a in cand:
        if a is not None and np.log(x[i:] / x[i]).sum() > (1e-12 if c else 0.0):  # the library's rule
            n = k - i
            D[i] = np.max(np.abs(1 - (x[i:] / x[i]) ** (1 - a) - np.arange(n) / n))
    valid = {i: d for i, d in D.items() if not c or k - i >= 8}
    if not valid:
        return [] if 0 not in D else [mle(0)]
    best = min(valid.values())
    if tail == "ks":
        return [mle(i) for i, d in valid.items() if d <= best + d_tol]
    idx = np.asarray(list(valid))
    w = np.exp(-(np.asarray(list(valid.values())) - best) / temperature)
    alphas = np.asarray([mle(i) for i in idx])
    soft = float(w @ alphas / w.sum())
    spread = alphas.max() - alphas.min()          # d alpha / dD_i <= spread / T
    return [soft - spread * d_tol / temperature, soft + spread * d_tol / temperature]


def kept_eigenvalues(W):
    """Float64 eigenvalues of ``W^T W`` kept as jaxww keeps them, the float32 rounding
    error ``err = N eps lambda_max`` that jaxww's numerical floor assumes, and whether a
    value lies within ``err`` of a cut-off (the floor, ``1e-5``): float32 may move it across.
    Exact zeros (rank deficiency, < 1e-10 lambda_max in float64) are far below the floor."""
    lam = np.sort(np.linalg.svd(np.asarray(W, np.float64), compute_uv=False) ** 2)
    err = W.shape[0] * np.finfo(np.float32).eps * lam.max()
    real = lam[lam > 1e-10 * lam.max()]
    near = np.any(real <= 2 * err) or np.any(np.abs(real - R.EVALS_THRESH) <= 2 * err + 1e-3 * R.EVALS_THRESH)
    return lam[(lam > err) & (lam > R.EVALS_THRESH)], err, bool(near)


@FAST
@given(seed=st.integers(0, 2**31 - 1), rank=st.integers(0, SHAPE[1]), log_scale=st.floats(-4, 2),
       repeat=st.booleans())
@pytest.mark.slow
def test_estimates_and_gradients_for_any_rank_and_scale(seed, rank, log_scale, repeat):
    """NaN exactly when the NumPy estimate fails, else its value; gradients always finite."""
    rng = np.random.default_rng(seed)
    W = rng.standard_normal(SHAPE) * 10.0**log_scale
    W[:, rank:] = 0.0
    if repeat and rank >= 2:
        W[:, 1] = W[:, 0]
    W = np.asarray(W, np.float32)
    lam, err, near_cut = kept_eigenvalues(W)
    assume(not near_cut)
    for tail in ("ks", "soft", "fraction"):
        a = float(jaxww.alpha(jnp.asarray(W), tail=tail))
        assert np.isfinite(np.asarray(_grad_alpha(jnp.asarray(W), tail))).all()
        want = numpy_tail_alphas(lam, tail)
        if not want:
            assert math.isnan(a), (tail, a)
            continue
        # alpha - 1 = (n - c) / s with n - c >= 1: d alpha = (alpha - 1)^2 / (n - c) d s, and
        # the eigenvalue errors move s = sum ln(x_j / x_min) by at most 2 err sum_j 1 / lambda_j.
        lo, hi = min(want), max(want)
        tol = (hi - 1) ** 2 * 2 * err * np.sum(1.0 / lam) + 1e-5 * hi
        assert lo - tol <= a <= hi + tol, (tail, a, want)


_GRADS = {t: jax.jit(jax.grad(lambda M, t=t: jnp.nan_to_num(jaxww.alpha(M, tail=t))))
          for t in ("ks", "soft", "fraction")}


def _grad_alpha(W, tail):
    return _GRADS[tail](W)


# ------------------------------------------------------------------ pytrees
def tree(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "Dense_0": {"kernel": (rng.standard_t(3.0, (96, 64)) / 10).astype(np.float32),
                    "bias": np.zeros(64, np.float32)},
        "Conv_0": {"kernel": (rng.standard_normal((3, 3, 4, 8)) / 4).astype(np.float32)},
        "LayerNorm_0": {"scale": np.ones(64, np.float32)},
    }


@pytest.mark.slow
def test_tree_alpha_matches_analyze(h):
    """Same eigenvalues by two solvers (XLA eigh and LAPACK syevd), same fit: in float64
    the alphas agree to rounding: the eigenvalues within ``h.eig_err``, the MLE's
    sensitivity to them and its own rounding ``h.pl_alpha_rtol`` (~1e-12 here)."""
    with jax.enable_x64(True):
        params = jax.tree.map(lambda x: np.asarray(x, np.float64), tree())
        got = jaxww.tree_alpha(params)
        rep = jaxww.analyze(params, precision="float64")
        rows = {r["name"]: r for r in rep.rows}
    assert set(rows) == {"Dense_0/kernel", "Conv_0/kernel"}
    h.assert_tree_alpha_is_analyzes(got, rep)


@pytest.mark.slow
def test_transposed_shapes_share_a_group():
    """(a, b) and (b, a) matrices are one batched group (oriented first); results per layer."""
    rng = np.random.default_rng(4)
    params = {"a": {"kernel": (rng.standard_t(3.0, (40, 24)) / 6).astype(np.float32)},
              "b": {"kernel": (rng.standard_t(3.0, (24, 40)) / 6).astype(np.float32)}}
    from jaxww.training.plan import make_plan
    assert len(make_plan(params).groups) == 1
    got = jaxww.tree_alpha(params, tail="fraction")
    for name in ("a", "b"):
        want = float(jaxww.alpha(params[name]["kernel"], tail="fraction"))
        assert float(got[f"{name}/kernel"]) == pytest.approx(want, rel=1e-6)


@pytest.mark.slow
def test_tree_alpha_accepts_nnx_modules():
    from flax import nnx

    model = nnx.Linear(24, 16, rngs=nnx.Rngs(0))
    got = jaxww.tree_alpha(model)
    assert list(got) == ["kernel"]
    assert float(got["kernel"]) == pytest.approx(float(jaxww.alpha(model.kernel[...])), rel=1e-6)


def small_tree(seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return {
        "a": {"kernel": (rng.standard_t(3.0, SHAPE) / 5).astype(dtype), "bias": np.zeros(16, dtype)},
        "b": {"kernel": (rng.standard_t(3.0, (3, 3, 4, 8)) / 4).astype(dtype)},
    }


@pytest.mark.slow
def test_alpha_penalty_value_mask_and_reductions():
    p = small_tree()
    alphas = {k: float(v) for k, v in jaxww.tree_alpha(p).items()}
    t = 2.5
    want = np.mean([(a - t) ** 2 for a in alphas.values()])
    assert float(alpha_penalty(p, t)) == pytest.approx(want, rel=1e-5)
    assert float(alpha_penalty(p, t, reduce="sum")) == pytest.approx(2 * want, rel=1e-5)
    assert float(alpha_penalty(p, t, distance="absolute")) == pytest.approx(
        np.mean([abs(a - t) for a in alphas.values()]), rel=1e-5)
    assert float(alpha_penalty(p, t, distance="log")) == pytest.approx(
        np.mean([np.log(a / t) ** 2 for a in alphas.values()]), rel=1e-5)
    above = np.mean([max(a - t, 0) ** 2 for a in alphas.values()])
    assert float(alpha_penalty(p, t, distance="above")) == pytest.approx(above, rel=1e-5, abs=1e-7)
    mask = {"a": {"kernel": True, "bias": False}, "b": False}
    assert float(alpha_penalty(p, t, mask=mask)) == pytest.approx((alphas["a/kernel"] - t) ** 2, rel=1e-5)
    g = jax.grad(lambda q: alpha_penalty(q, t, mask=mask))(p)
    assert np.all(np.asarray(g["b"]["kernel"]) == 0) and np.abs(np.asarray(g["a"]["kernel"])).max() > 0
    # a callable mask and a prefix mask
    g2 = jax.grad(lambda q: alpha_penalty(q, t, mask=lambda tr: {"a": True, "b": False}))(p)
    # the same mask, given two ways: the same computation, so the same bits
    np.testing.assert_array_equal(np.asarray(g2["a"]["kernel"]), np.asarray(g["a"]["kernel"]))


@pytest.mark.slow
def test_penalties_match_finite_differences(x64):
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), small_tree(1))
    W = p["a"]["kernel"]

    def on_a(fn):
        return lambda M: fn({"a": {"kernel": M, "bias": p["a"]["bias"]}, "b": p["b"]})

    # One compiled function: a random combination of the three penalties (and the soft tail).
    c = np.random.default_rng(2).uniform(0.5, 2.0, 4)
    fd_check(on_a(lambda q: c[0] * alpha_penalty(q, 2.0)
                  + c[1] * alpha_penalty(q, 2.0, tail="soft", temperature=0.05)
                  + c[2] * weighted_alpha_penalty(q)
                  + c[3] * jaxww.spectral_norm_penalty(q)), W, directions=4)


@pytest.mark.slow
def test_weighted_alpha_and_spectral_norm_values():
    p = small_tree(2)
    a = {k: float(v) for k, v in jaxww.tree_alpha(p, tail="fraction").items()}
    lam_a = np.linalg.svd(p["a"]["kernel"].astype(np.float64), compute_uv=False) ** 2
    taps = p["b"]["kernel"].astype(np.float64).reshape(9, 4, 8)
    lam_b = 0.5 * max(np.linalg.svd(t, compute_uv=False)[0] ** 2 for t in taps)  # conv2d_norm
    want = a["a/kernel"] * np.log(lam_a[0]) + a["b/kernel"] * np.log(lam_b)
    assert float(weighted_alpha_penalty(p)) == pytest.approx(want, rel=1e-4)
    assert float(jaxww.spectral_norm_penalty(p)) == pytest.approx(lam_a[0] + lam_b, rel=1e-4)
    assert float(jaxww.spectral_norm_penalty(p, reduce="mean")) == pytest.approx((lam_a[0] + lam_b) / 2, rel=1e-4)


@pytest.mark.slow
def test_a_nan_layer_is_dropped_and_flagged_the_rest_trains():
    p = small_tree(3)
    p["b"]["kernel"] = p["b"]["kernel"].copy()
    p["b"]["kernel"][0, 0, 0, 0] = np.nan
    for fn in (lambda q: alpha_penalty(q, 2.0, has_aux=True),
               lambda q: weighted_alpha_penalty(q, has_aux=True),
               lambda q: jaxww.spectral_norm_penalty(q, has_aux=True)):
        (value, aux), g = jax.value_and_grad(fn, has_aux=True)(p)
        assert np.isfinite(float(value))
        assert bool(aux.ok["a/kernel"]) and not bool(aux.ok["b/kernel"])
        assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(g))
        assert np.abs(np.asarray(g["a"]["kernel"])).max() > 0
        assert np.all(np.asarray(g["b"]["kernel"]) == 0)


@jax.jit
def _all_penalties(q):
    return (alpha_penalty(q, 2.0) + weighted_alpha_penalty(q)
            + jaxww.spectral_norm_penalty(q))


@pytest.mark.slow
def test_penalties_under_jit_on_zero_and_constant_params():
    for fill in (0.0, 0.1):
        p = jax.tree.map(lambda a: np.full_like(a, fill), small_tree())
        value, g = jax.jit(jax.value_and_grad(_all_penalties))(p)
        assert np.isfinite(float(value))
        assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(g))


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("target", [1.0, 0.5, -2.0, float("nan"), float("inf"), "2", True])
def test_bad_target(target):
    with pytest.raises(ValueError, match="target"):
        alpha_penalty(small_tree(), target)


@pytest.mark.parametrize("tail", ["hill", 1, 0, 1.5, 0.0, -0.5, True, None])
def test_bad_tail(tail):
    with pytest.raises(ValueError, match="tail"):
        jaxww.alpha(matrix(0), tail=tail)


def test_bad_options():
    with pytest.raises(ValueError, match="temperature"):
        jaxww.alpha(matrix(0), tail="soft", temperature=0.0)
    with pytest.raises(ValueError, match="distance"):
        alpha_penalty(small_tree(), 2.0, distance="l3")
    with pytest.raises(ValueError, match="reduce"):
        weighted_alpha_penalty(small_tree(), reduce="max")
    with pytest.raises(ValueError, match="matrix"):
        jaxww.alpha(np.ones(5))
    with pytest.raises(ValueError, match="no eligible weight matrix"):
        alpha_penalty({"bias": np.zeros(4), "scale": np.ones((2, 2), np.int32)}, 2.0)
    with pytest.raises(ValueError, match="no eligible weight matrix"):
        jaxww.spectral_norm_penalty(small_tree(), mask=False)
    with pytest.raises(ValueError, match="mask"):
        jaxww.tree_alpha(small_tree(), mask={"x": True})


@pytest.mark.parametrize("call", [
    lambda t: jaxww.tail_alpha(np.arange(1.0, 50.0), thresh=t),
    lambda t: jaxww.alpha(matrix(0), thresh=t),
    lambda t: jaxww.tree_alpha(small_tree(), thresh=t),
    lambda t: alpha_penalty(small_tree(), 2.0, thresh=t),
    lambda t: weighted_alpha_penalty(small_tree(), thresh=t),
])
@pytest.mark.parametrize("thresh", ["1e-5", float("nan"), None])
def test_bad_thresh_names_itself(call, thresh):
    """A thresh that is not a finite number is refused by name (a string was a bare
    ``could not convert string to float``, a NaN dropped every eigenvalue)."""
    with pytest.raises(ValueError, match="thresh must be a finite number"):
        call(thresh)


@pytest.mark.slow
def test_distance_fn_is_a_deprecated_name_of_distance():
    p = small_tree()
    with pytest.warns(DeprecationWarning, match="distance="):
        old = float(alpha_penalty(p, 2.0, distance_fn="absolute"))
    assert old == float(alpha_penalty(p, 2.0, distance="absolute"))   # the same function
