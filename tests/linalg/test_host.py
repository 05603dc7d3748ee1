"""Host LAPACK eigenpairs of the transforms (``jaxww.linalg.factored``, ``jaxww.linalg.host``) and the spectra path choice.

References: NumPy ``eigh`` of ``W^T W`` in float64 (values, and the tail gradient
``2 W V diag(g) V^T`` from its eigenvectors). Tolerances are float32 rounding of a
backward-stable eigensolver: ``|d lambda| <= c M eps lambda_max``.
"""

from __future__ import annotations

import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxww.linalg import factored as _factored
from jaxww.linalg import host as _host_eigh
from jaxww.linalg import lapack as _lapack
from jaxww.linalg import pool as _pool

from jaxww.linalg import spectra

SHAPES = [(3, 40, 24), (2, 30, 16)]      # two groups in one host call


def stacks(seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return [(rng.standard_t(4.0, s) / np.sqrt(s[1])).astype(dtype) for s in SHAPES]


def numpy_eigh(W):
    return np.linalg.eigh(W.astype(np.float64).T @ W.astype(np.float64))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_eigenvalues_match_numpy(dtype):
    with jax.enable_x64(dtype == np.float64):
        mats = stacks(0, dtype)
        mats[0][1, 2, 3] = np.nan
        out = jax.jit(_factored.eigvals_factored)([jnp.asarray(m) for m in mats])
    eps = np.finfo(dtype).eps
    for m, (lam, _) in zip(mats, out):
        lam = np.asarray(lam)
        assert lam.dtype == dtype
        for b in range(m.shape[0]):
            if not np.isfinite(m[b]).all():
                assert np.isnan(lam[b]).all()
                continue
            w, _ = numpy_eigh(m[b])
            assert np.abs(lam[b] - w).max() <= 10 * m.shape[2] * eps * w.max()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tail_gradient_is_the_eigenvector_formula(dtype):
    """``2 W V diag(g) V^T`` over the tail where g != 0, from the kept factorization."""
    rng = np.random.default_rng(1)
    with jax.enable_x64(dtype == np.float64):
        mats = stacks(1, dtype)
        gs = []
        for m in mats:
            g = np.zeros(m.shape[:1] + m.shape[2:], dtype)
            g[:, -7:] = rng.standard_normal((m.shape[0], 7))   # a tail of 7 values
            gs.append(g)
        gs[1][0] = 0.0                                         # no tail: zero gradient
        mats[0][2, 0, 0] = np.inf                              # non-finite: zeros

        @jax.jit
        def f(ms, gs):
            factors = [fac for _, fac in _factored.eigvals_factored(ms)]
            return _factored.tail_gradient(ms, gs, factors)

        out = f([jnp.asarray(m) for m in mats], [jnp.asarray(g) for g in gs])
    eps = np.finfo(dtype).eps
    for m, g, G in zip(mats, gs, out):
        G = np.asarray(G, np.float64)
        for b in range(m.shape[0]):
            if not np.isfinite(m[b]).all() or not g[b].any():
                assert np.all(G[b] == 0)
                continue
            w, V = numpy_eigh(m[b])
            want = 2 * m[b].astype(np.float64) @ (V * g[b]) @ V.T
            # eigenvector error ~ eps lambda_max / gap; the smallest relative gap of these
            # spectra is ~1e-2, so rounding is ~1e2 eps; the bound allows 100x.
            assert np.linalg.norm(G[b] - want) <= 1e4 * eps * np.linalg.norm(want)


@pytest.mark.parametrize("shape", [(2, 5, 1), (2, 6, 2), (2, 40, 24)])
def test_tail_gradient_over_the_whole_spectrum(shape):
    """A tail that is the whole spectrum (``?stein`` from the first eigenvalue), down to
    one- and two-column matrices: the eigenvector formula, and the eigenvalues."""
    rng = np.random.default_rng(7)
    W = rng.standard_normal(shape).astype(np.float32)
    g = rng.standard_normal(shape[:1] + shape[2:]).astype(np.float32)
    (lam, factors), = _factored.eigvals_factored([jnp.asarray(W)])
    G = np.asarray(_factored.tail_gradient([jnp.asarray(W)], [jnp.asarray(g)], [factors])[0], np.float64)
    eps = np.finfo(np.float32).eps
    for b in range(shape[0]):
        w, V = numpy_eigh(W[b])
        assert np.abs(np.asarray(lam[b]) - w).max() <= 10 * shape[2] * eps * w.max()
        want = 2 * W[b].astype(np.float64) @ (V * g[b]) @ V.T
        # eigenvector rounding of a backward-stable solver: ~ eps lambda_max / (smallest gap)
        cond = w[-1] / max(np.diff(w).min(), w[-1] * eps) if shape[2] > 1 else 1.0
        assert np.linalg.norm(G[b] - want) <= 100 * shape[2] * eps * cond * np.linalg.norm(want)


def test_refresh_host_calls_do_not_depend_on_the_cores(monkeypatch):
    """The regulariser's host calls give the same bits on one core as spread over the
    pool (one BLAS thread per matrix), so training does not depend on the machine."""
    rng = np.random.default_rng(9)
    mats = [jnp.asarray(m) for m in stacks(9)]
    gs = [jnp.asarray(rng.standard_normal(m.shape[:1] + m.shape[2:]).astype(np.float32)) for m in mats]

    def run():
        out = _factored.eigvals_factored(mats)
        return [np.asarray(lam) for lam, _ in out], [np.asarray(G) for G in _factored.tail_gradient(
            mats, gs, [fac for _, fac in out])]

    pooled = run()
    monkeypatch.setattr(_pool, "workers", lambda: 1)
    alone = run()
    for a, b in zip(pooled[0] + pooled[1], alone[0] + alone[1]):
        # one BLAS thread per matrix on the pool or alone: the same operations, the same bits
        np.testing.assert_array_equal(a, b)


def test_eigvals_spread_over_the_cores_match_numpy():
    """The CPU spectra: many matrices on the pool, a tall one whose Gram matrix is split
    in chunks, both orientations, a NaN matrix: the values of NumPy's float64 eigh; and
    a matrix's values do not depend on what else is in the call."""
    rng = np.random.default_rng(3)
    big = rng.standard_normal((1, 2 * _host_eigh.GRAM_ROWS + 5, 8)).astype(np.float32)
    small = [rng.standard_normal((4, 30, 20)).astype(np.float32),
             rng.standard_normal((3, 12, 50)).astype(np.float64)]
    small[0][2, 1, 1] = np.inf
    out = _host_eigh.eigvals([big] + small)
    assert [o.shape for o in out] == [(1, 8), (4, 20), (3, 12)]
    for W, o in zip([big] + small, out):
        # one LAPACK call per matrix, one BLAS thread, whatever else is in the call: the same bits
        np.testing.assert_array_equal(_host_eigh.eigvals([W])[0], o)
    assert [o.dtype for o in out] == [np.float32, np.float32, np.float64]
    for W, o in zip([big] + small, out):
        for b in range(W.shape[0]):
            if not np.isfinite(W[b]).all():
                assert np.isnan(o[b]).all()
                continue
            want = numpy_eigh(W[b] if W.shape[1] >= W.shape[2] else W[b].T)[0]
            # backward-stable eigensolver of the Gram matrix: |d lambda| <= c M eps lambda_max
            tol = 50 * W.shape[2] * np.finfo(W.dtype).eps * want[-1]
            np.testing.assert_allclose(o[b], want, rtol=0, atol=tol)


def test_on_this_thread_runs_the_jobs_in_the_caller_same_bits(monkeypatch):
    """Under ``on_this_thread`` (the tracker's idle-priority worker) every LAPACK job runs
    in the calling thread, none in the pool, and the eigenvalues are the same bits."""
    monkeypatch.setattr(_pool, "workers", lambda: 2)
    rng = np.random.default_rng(4)
    mats = [rng.standard_normal((5, 40, 24)).astype(np.float32)]
    pooled = _host_eigh.eigvals(mats)
    seen, gram = set(), _lapack.gram

    def spy(V, out=None):
        seen.add(threading.current_thread().name)
        return gram(V, out)

    monkeypatch.setattr(_lapack, "gram", spy)
    with _pool.on_this_thread():
        serial = _host_eigh.eigvals(mats)
    assert seen == {threading.current_thread().name}
    np.testing.assert_array_equal(serial[0], pooled[0])
    seen.clear()
    _host_eigh.eigvals(mats)             # the pool again outside the block
    assert seen and threading.current_thread().name not in seen


def test_spectra_path_follows_the_compile_platform():
    """CPU compiles the host LAPACK callback; TPU and GPU compile their device paths,
    whatever the default backend (lowered here for each platform from a CPU-only host)."""
    W = jnp.ones((2, 8, 4))
    text = {p: jax.jit(spectra.eigvals_ascending).trace(W, W).lower(lowering_platforms=(p,)).as_text()
            for p in ("cpu", "tpu", "cuda")}
    assert "callback" in text["cpu"]
    assert "callback" not in text["tpu"] and "callback" not in text["cuda"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_svd_host_path_equals_jax(dtype, x64):
    """``_host_eigh.svd`` (NumPy in a host callback on the CPU) against the other platforms'
    ``jnp.linalg.svd`` run here: same singular values, same reconstruction, in both orientations."""
    rng = np.random.default_rng(5)
    W = rng.standard_normal((2, 3, 12, 7)).astype(dtype)
    eps = np.finfo(dtype).eps
    for M in (W, np.swapaxes(W, -1, -2)):
        u, s, vh = (np.asarray(x) for x in jax.jit(_host_eigh.svd)(jnp.asarray(M)))
        _, s_ref, _ = (np.asarray(x) for x in jnp.linalg.svd(jnp.asarray(M), full_matrices=False))
        assert u.dtype == dtype and u.shape == M.shape[:-1] + (7,) and vh.shape == M.shape[:-2] + (7, M.shape[-1])
        np.testing.assert_allclose(s, s_ref, rtol=0, atol=50 * eps * s_ref.max())
        np.testing.assert_allclose(np.matmul(u * s[..., None, :], vh), M, rtol=0, atol=50 * eps * s_ref.max())

