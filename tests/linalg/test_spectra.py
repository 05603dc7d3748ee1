"""``jaxww.eigenvalues`` / ``batched_spectra``: sigma(W)**2, orientation, floor, NaN, precision."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxww
from jaxww.linalg import spectra


def test_diagonal_known_answer():
    ev = jaxww.eigenvalues(jnp.diag(jnp.array([3.0, 2.0, 1.0])))
    np.testing.assert_allclose(np.asarray(ev), [9.0, 4.0, 1.0], rtol=1e-6)


def test_float64_matches_svd_both_orientations(h, x64):
    w = h.student_t(1).astype(np.float64)
    ref = h.svd_evals(w)[::-1]
    for m in (w, w.T):
        ev = np.asarray(jaxww.eigenvalues(jnp.asarray(m), precision="float64"))
        assert ev.dtype == np.float64 and ev.shape == (128,)
        # ?syrk + ?syevd against an SVD: both backward stable, within h.eig_err (absolute)
        np.testing.assert_allclose(ev, ref, rtol=0, atol=h.eig_err(ref, 256))
        assert (np.diff(ev) <= 0).all()  # descending


def test_float32_close_to_float64(h):
    w = h.gaussian(2)
    ev = np.asarray(jaxww.eigenvalues(w))
    assert ev.dtype == np.float32
    ref = h.svd_evals(w)[::-1]
    # float32: errors relative to the largest eigenvalue (W^T W is formed explicitly)
    assert np.max(np.abs(ev - ref)) / ref[0] < 1e-5
    np.testing.assert_allclose(ev, ref, rtol=1e-4)


@pytest.mark.slow
def test_batch_dimensions(h):
    w = np.stack([h.gaussian(s) for s in range(6)]).reshape(2, 3, *h.DENSE)
    ev = np.asarray(jaxww.eigenvalues(w))
    assert ev.shape == (2, 3, 128)
    for i in range(2):
        for j in range(3):
            np.testing.assert_allclose(ev[i, j], h.svd_evals(w[i, j])[::-1], rtol=1e-4)


@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_rank_deficient_gives_exact_zeros(h, precision):
    w = h.rank_deficient(3)  # rank 40 of 128, largest eigenvalue ~ 1e7
    with jax.enable_x64(precision == "float64"):
        ev = np.asarray(jaxww.eigenvalues(w, precision=precision))
    assert (ev[40:] == 0).all()  # below max(lambda) * N * eps: exactly zero
    assert (ev[:40] > 0).all()
    np.testing.assert_allclose(ev[:40], h.svd_evals(w)[::-1][:40], rtol=1e-3)


def test_all_zero_matrix(h):
    ev = np.asarray(jaxww.eigenvalues(np.zeros(h.DENSE, np.float32)))
    assert (ev == 0).all() and ev.shape == (128,)


def test_non_finite_matrix_gives_nan_only_for_itself(h):
    w = np.stack([h.gaussian(0), h.gaussian(1), h.gaussian(2)])
    w[1, 5, 7] = np.nan
    w[2, 0, 0] = np.inf
    ev = np.asarray(jaxww.eigenvalues(w))
    assert np.isnan(ev[1]).all() and np.isnan(ev[2]).all()
    np.testing.assert_allclose(ev[0], h.svd_evals(w[0])[::-1], rtol=1e-4)


def test_input_not_modified(h):
    w = h.gaussian(4)
    w[0, 0] = np.nan
    w.flags.writeable = False
    before = w.copy()
    jaxww.eigenvalues(w)
    np.testing.assert_array_equal(w, before)


def test_precision_errors(h):
    with pytest.raises(ValueError, match="precision"):
        jaxww.eigenvalues(h.gaussian(0), precision="float16")
    if not jax.config.jax_enable_x64:
        with pytest.raises(ValueError, match="x64"):
            jaxww.eigenvalues(h.gaussian(0), precision="float64")
    with pytest.raises(ValueError, match="matrix"):
        jaxww.eigenvalues(np.ones(5, np.float32))


def test_batched_spectra_mixed_shapes_match_eigenvalues(h):
    conv = np.random.default_rng(0).standard_normal(h.CONV).astype(np.float32)
    stacks = [
        h.gaussian(0)[None],                    # (1, 256, 128)
        h.gaussian(1).T[None],                  # (1, 128, 256): other orientation
        h.gaussian(2)[:200][None],              # (1, 200, 128): padded into the same bucket
        conv.reshape(9, 16, 32),                # 9 taps
    ]
    evals = jaxww.batched_spectra(stacks)
    assert isinstance(evals, list) and len(evals) == len(stacks)
    assert [tuple(e.shape) for e in evals] == [(1, 128), (1, 128), (1, 128), (9, 16)]
    in_place = spectra.host_spectra(stacks)   # analyze on the CPU: NumPy leaves read in place
    for st, ev, ev_host in zip(stacks, evals, in_place):
        # both run the same host LAPACK call per matrix at its own shape, one BLAS thread
        # each (jaxww.linalg.host): the same operations in the same order, the same bits
        np.testing.assert_array_equal(np.asarray(ev_host), np.asarray(ev))
        for t in range(st.shape[0]):
            ref = h.svd_evals(st[t])[::-1]
            np.testing.assert_allclose(np.asarray(ev[t]), ref, rtol=1e-4, atol=ref[0] * 1e-6)


@pytest.mark.slow
def test_bucketed_device_path_matches_svd(h):
    """The accelerators' path (zero-padded bucket shapes, both orientations, taps), run
    here on the CPU: ascending eigenvalues of each matrix."""
    conv = np.random.default_rng(0).standard_normal(h.CONV).astype(np.float32)
    stacks = [h.gaussian(0)[None], h.gaussian(1).T[None], h.gaussian(2)[:200][None], conv.reshape(9, 16, 32)]
    buckets = jax.jit(spectra._eigvals_buckets)(*[jnp.asarray(st) for st in stacks])
    for st, ev_b in zip(stacks, buckets):
        assert ev_b.shape == (st.shape[0], min(st.shape[1:]))
        for t in range(st.shape[0]):
            ref = h.svd_evals(st[t])[::-1]
            np.testing.assert_allclose(np.asarray(ev_b[t])[::-1], ref, rtol=1e-4, atol=ref[0] * 1e-5)


@pytest.mark.parametrize("n", list(range(1, 70)) + [100, 127, 129, 1000, 4097, 15000])
def test_bucket_grid(n):
    b = spectra.bucket(n)
    assert b >= n
    assert b <= max(8, 1.25 * n)  # padding costs at most 25% per dimension
    assert spectra.bucket(b) == b  # a grid point is its own bucket
    assert spectra.bucket(n + 1) >= b  # monotone


@pytest.mark.slow
def test_pure_jax_path_matches_host_lapack():
    """The GPU path (Gram -> tridiagonal -> eigh_tridiagonal), run on the CPU, agrees."""
    rng = np.random.default_rng(7)
    W = rng.standard_t(3, size=(3, 96, 48)).astype(np.float32)
    W[1, 5, 5] = np.nan
    host = np.asarray(jaxww.eigenvalues(W))
    ev = jax.jit(spectra._eigvals_device)(jnp.asarray(W))[:, ::-1]
    pure = np.asarray(spectra.numerical_floor(ev, jnp.full((3, 1), 96.0)))
    assert np.isnan(host[1]).all() and np.isnan(pure[1]).all()
    for b in (0, 2):
        np.testing.assert_allclose(pure[b], host[b], rtol=1e-4, atol=1e-5 * host[b, 0])


@pytest.mark.slow
def test_merged_and_per_bucket_fit_groups_agree(monkeypatch):
    from jaxww.analysis import fitting

    rng = np.random.default_rng(3)
    params = {"a": {"kernel": rng.standard_t(3, size=(120, 40)).astype(np.float32)},
              "b": {"kernel": rng.standard_t(3, size=(300, 200)).astype(np.float32)}}
    merged = jaxww.analyze(params)
    monkeypatch.setattr(fitting, "FIT_MERGE_ELEMENTS", 0)
    assert len(fitting.fit_groups(jaxww.find_kernels(*jaxww.flatten_params(params)[:2])[0])) == 2
    split = jaxww.analyze(params)
    for r, s in zip(merged.rows, split.rows):
        for col in ("alpha", "xmin", "D", "log_alpha_norm", "entropy"):
            assert r[col] == pytest.approx(s[col], rel=1e-6), col


@pytest.mark.parametrize("half", [jnp.bfloat16, jnp.float16])
def test_half_precision_gram_accumulates_in_float32(half):
    """Weights stored as bfloat16/float16 (LLM checkpoints): the device path forms their
    Gram matrix from the stored values with float32 accumulation (no float32 copy), and its
    spectra differ from the HIGHEST-precision reference (the weights cast to float32
    first) by float32 summation error only: a bound that a Gram rounded to the half type
    exceeds by orders of magnitude."""
    rng = np.random.default_rng(11)
    W = jnp.asarray(rng.standard_t(3, size=(2, 300, 40)), half)
    assert spectra.compute_input(W, jnp.float32).dtype == half          # read as stored
    with jax.enable_x64(True):
        assert spectra.compute_input(W, jnp.float64).dtype == jnp.float64    # float64: cast
    dots = [e for e in jax.make_jaxpr(spectra._gram)(W).eqns if e.primitive.name == "dot_general"]
    assert [v.aval.dtype for v in dots[0].invars] == [half, half]
    X_half, X_ref = (np.asarray(spectra._gram(w)[0], np.float64) for w in (W, W.astype(jnp.float32)))
    assert spectra._gram(W)[0].dtype == jnp.float32
    # The products of two half values are exact in float32; both Grams sum the same
    # products in float32 in some order: |dX_ij| <= 2 gamma_N (|W|^T |W|)_ij, gamma_N =
    # N u / (1 - N u), u = 2^-24 (a Gram rounded to the half type errs by up to
    # 2^-9 |X_ij| or 2^-12 |X_ij|, far above it on the diagonal).
    N, M, u = W.shape[1], W.shape[2], 2.0 ** -24
    A = np.abs(np.asarray(W, np.float64))
    bound = 2 * N * u / (1 - N * u) * np.einsum("bnm,bnk->bmk", A, A)
    assert (np.abs(X_half - X_ref) <= bound).all()
    rounded = np.asarray(jnp.asarray(X_ref, jnp.float32).astype(half), np.float64)
    assert (np.abs(rounded - X_ref) > bound).any()   # the bound tells them apart
    # Spectra, Weyl: every eigenvalue moves by at most ||dX||_2 <= || bound ||_2 (|dX| <= bound
    # elementwise, bound >= 0); the device path end to end adds each float32 solver's
    # backward error (tridiagonal reduction, bisection), at most M^2 u ||X||_F (Householder).
    weyl = np.linalg.norm(bound, 2, axis=(1, 2))
    lam_half, lam_ref = np.linalg.eigvalsh(X_half), np.linalg.eigvalsh(X_ref)
    assert (np.abs(lam_half - lam_ref).max(axis=1) <= weyl).all()
    dev_half, dev_ref = (np.asarray(jax.jit(spectra._eigvals_buckets)(w)[0], np.float64)
                         for w in (W, W.astype(jnp.float32)))
    solver = 2 * M * M * u * np.linalg.norm(X_ref, axis=(1, 2))
    assert (np.abs(dev_half - dev_ref).max(axis=1) <= weyl + solver).all()
