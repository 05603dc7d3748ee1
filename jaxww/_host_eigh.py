"""Exact eigenvalues and eigenpairs of ``W^T W`` by LAPACK on the host.

* :func:`eigvals`: the CPU path of :mod:`jaxww.spectra`, every eigenvalue and no
  vector (``?syrk``, ``?syevd`` with ``jobz='N'``), called without the GIL: the
  matrices spread over the cores, one BLAS thread each.

The training transforms need more at a refresh: every eigenvalue (for the tail fit)
but only the eigenvectors of the tail (``d alpha / d lambda_j`` is zero outside it),
so they pay for the eigenvalues-only solver plus thin work proportional to the tail:

* :func:`eigvals_factored`: ``X = W^T W`` (BLAS ``?syrk``), ``X = Q T Q^T`` (``?sytrd``,
  the ``4/3 M^3`` step that ``?syevd`` with ``jobz='N'`` also takes), all eigenvalues
  of ``T`` (``?stev``, i.e. ``?sterf``);
* :func:`tail_gradient`, once the tail is known: its ``n_t`` eigenvectors of ``T`` by
  inverse iteration at the known eigenvalues (``?stein``, ``O(M n_t)``), ``V = Q Z``
  (``?ormqr`` on the kept reflectors, ``2 M^2 n_t``) and ``2 (W V) diag(g) V^T`` (two
  ``?gemm``, ``4 N M n_t``).

These two need LAPACK routines NumPy does not have; SciPy's wrappers hold the GIL, so
their matrices go one after the other, in one host call for all shape groups.
float64 arrays cross as uint32 words: they would be cast to float32 when x64 is
enabled only by a context manager (the callback runs on another thread).
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import functools
import os
import threading

import jax
import jax.numpy as jnp
import numpy as np
import threadpoolctl
from scipy.linalg import blas, cython_lapack, lapack


_POOL: list = []
_POOL_LOCK = threading.Lock()   # one pooled run at a time: they share the cores and the BLAS setting
_GRAM_ROWS = 8192               # Gram matrices of 2x more rows are split in chunks ...
_TALL_CHUNKS = 8                # ... of at least this many rows, at most this many chunks


def _workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@functools.cache
def _blas_threads():
    return threadpoolctl.ThreadpoolController()


def _run(jobs):
    """Run independent jobs (callables that release the GIL) on one thread per core,
    each with one BLAS thread, largest first (the jobs come sorted).

    One BLAS thread per job keeps every result independent of the number of cores and
    of what else runs in the same call (threaded BLAS rounds differently). The device
    waits for the host call, so the cores are otherwise idle.
    """
    with _POOL_LOCK, _blas_threads().limit(limits=1, user_api="blas"):
        if len(jobs) <= 1 or _workers() == 1:
            return [fn() for fn in jobs]
        if not _POOL:
            _POOL.append(concurrent.futures.ThreadPoolExecutor(_workers(), "jaxww-lapack"))
        return [f.result() for f in [_POOL[0].submit(fn) for fn in jobs]]


def _gram(V):
    """``V^T V`` (NumPy's ``A.T @ A`` is BLAS ``?syrk``)."""
    return V.T @ V


def _eigvalsh(X, out):
    """``out[:] =`` ascending eigenvalues of the symmetric ``X`` (overwritten); NaN on failure."""
    X = np.ascontiguousarray(X)
    m, dt = X.shape[0], X.dtype
    if m == 0:
        return
    lwork, liwork = _syevd_work(dt, m)
    w = np.empty(m, dt)
    if _call_syevd(X, w, np.empty(lwork, dt), np.empty(liwork, np.intc), lwork, liwork) == 0:
        out[:] = w


# --- LAPACK ?syevd without the GIL (SciPy 1.17). SciPy's f2py wrappers hold the GIL, so
# threads would run them one after the other, and their default workspace is the minimal
# one (an unblocked ?sytrd: about 1.7x slower at n = 640); NumPy's eigvalsh is GIL-free
# but its float32 ?syevd measured 1.6-2.6x slower. So SciPy's Cython LAPACK
# (scipy.linalg.cython_lapack, a public API) is called through ctypes, which releases
# the GIL during the call, with LAPACK's optimal workspace.
@functools.cache
def _syevd(dtype):
    """``?syevd(jobz, uplo, n, a, lda, w, work, lwork, iwork, liwork, info)``."""
    capsule = cython_lapack.__pyx_capi__[("d" if dtype == np.float64 else "s") + "syevd"]
    name, ptr = ctypes.pythonapi.PyCapsule_GetName, ctypes.pythonapi.PyCapsule_GetPointer
    name.restype, name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    ptr.restype, ptr.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    i, p = ctypes.POINTER(ctypes.c_int), ctypes.c_void_p
    return ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_char_p, i, p, i, p, p, i, p, i, i)(
        ptr(capsule, name(capsule)))


def _call_syevd(a, w, work, iwork, lwork: int, liwork: int) -> int:
    """Eigenvalues only (``jobz='N'``) of the C-contiguous symmetric ``a`` into ``w``; LAPACK's ``info``."""
    n, lw, liw, info = (ctypes.c_int(v) for v in (a.shape[0], lwork, liwork, 0))
    _syevd(np.dtype(a.dtype))(b"N", b"L", ctypes.byref(n), a.ctypes.data, ctypes.byref(n), w.ctypes.data,
                              work.ctypes.data, ctypes.byref(lw), iwork.ctypes.data, ctypes.byref(liw),
                              ctypes.byref(info))
    return info.value


@functools.cache
def _syevd_work(dtype, m: int) -> tuple:
    """The optimal ``(lwork, liwork)`` of ``?syevd`` of order ``m`` (LAPACK's own query)."""
    work, iwork = np.zeros(1, dtype), np.zeros(1, np.intc)
    _call_syevd(np.zeros((m, m), dtype), np.zeros(m, dtype), work, iwork, -1, -1)
    return max(int(work[0]), 2 * m + 1), max(int(iwork[0]), 1)


def _tall_gram(V):
    """``V^T V`` of a tall ``V`` split over the cores: at most ``_TALL_CHUNKS`` chunks of
    rows, summed in order (a split fixed by the shape: the same rounding on any machine)."""
    rows = max(_GRAM_ROWS, -(-V.shape[0] // _TALL_CHUNKS))
    parts = _run([functools.partial(_gram, V[r:r + rows]) for r in range(0, V.shape[0], rows)])
    X = parts[0]
    for P in parts[1:]:
        X = X + P
    return X


def eigvals(stacks) -> list:
    """Host side of the CPU spectra: ascending eigenvalues of each matrix's Gram matrix.

    ``X = W^T W`` or ``W W^T``, whichever is smaller (BLAS ``?syrk``, through NumPy), then
    LAPACK ``?syevd`` with ``jobz='N'`` (``?sytrd`` + ``?sterf``, no eigenvectors; through
    ctypes, see :func:`_syevd`). Both release the GIL, so the matrices spread over the
    cores (:func:`_run`); the Gram matrix of a tall one (an LLM embedding) is split over
    them by chunks of rows.

    Args:
      stacks: NumPy arrays ``(..., a, b)``.

    Returns:
      Arrays ``(..., min(a, b))``, ascending; NaN for a matrix with a NaN or Inf (it
      never reaches LAPACK) or where LAPACK fails. The same numbers whatever the number
      of cores and whatever else is in ``stacks``.
    """
    outs, mats = [], []
    for W in stacks:
        a, b = W.shape[-2:]
        flat = W.reshape((-1, a, b))
        out = np.full((flat.shape[0], min(a, b)), np.nan, W.dtype)
        outs.append(out.reshape(W.shape[:-2] + (min(a, b),)))
        mats += [(flat[i] if a >= b else flat[i].T, out[i]) for i in range(flat.shape[0])
                 if np.isfinite(flat[i]).all()]
    mats.sort(key=lambda m: -m[0].shape[0] * m[0].shape[1] ** 2)
    for V, out in mats:
        if V.shape[0] >= 2 * _GRAM_ROWS:   # its eigenvalues with one BLAS thread too
            _run([functools.partial(_eigvalsh, _tall_gram(V), out)])
    _run([functools.partial(lambda V, out: _eigvalsh(_gram(V), out), V, out)
          for V, out in mats if V.shape[0] < 2 * _GRAM_ROWS])
    return outs


def _words(x):
    return jax.lax.bitcast_convert_type(x, jnp.uint32) if x.dtype == jnp.float64 else x


def _unwords(x, dtype):
    return jax.lax.bitcast_convert_type(x, dtype) if dtype == jnp.float64 else x


def _np_unwords(x, dtype):
    x = np.asarray(x)
    return x.view(np.float64)[..., 0] if dtype == np.float64 else x


def _np_words(x):
    return x.view(np.uint32).reshape(x.shape + (2,)) if x.dtype == np.float64 else x


def _shape(shape, dtype):
    if dtype == jnp.float64:
        return jax.ShapeDtypeStruct(tuple(shape) + (2,), jnp.uint32)
    return jax.ShapeDtypeStruct(tuple(shape), dtype)


def _lapack(dtype, name):
    return getattr(lapack, ("d" if dtype == np.float64 else "s") + name)


def _factor_one(W):
    """``W^T W = Q T Q^T``: eigenvalues (ascending) and ``(reflectors, tau, d, e)``, or None."""
    M, dt = W.shape[1], W.dtype
    lwork = int(_lapack(dt, "sytrd_lwork")(M, lower=1)[0])
    c, d, e, tau, info = _lapack(dt, "sytrd")(_gram(W), lower=1, lwork=max(lwork, 1))
    lam, _, info2 = _lapack(dt, "stev")(d, e, compute_v=0)
    return None if info or info2 else (lam, c, tau, d, e)


def _eigvals_host(dtypes, *stacks):
    out = []
    for dt, W in zip(dtypes, stacks):
        W = _np_unwords(W, dt)
        lead, (N, M) = W.shape[:-2], W.shape[-2:]
        flat = W.reshape(-1, N, M)
        res = [np.full((flat.shape[0], M), np.nan, dt), np.zeros((flat.shape[0], M, M), dt),
               np.zeros((flat.shape[0], max(M - 1, 1)), dt), np.zeros((flat.shape[0], M), dt),
               np.zeros((flat.shape[0], max(M - 1, 1)), dt)]
        for b in range(flat.shape[0]):
            f = _factor_one(flat[b]) if np.isfinite(flat[b]).all() else None
            for r, v in zip(res, f or ()):
                r[b, ..., : v.shape[-1]] = v
        out += [_np_words(r.reshape(lead + r.shape[1:])) for r in res]
    return tuple(out)


def eigvals_factored(stacks):
    """Every eigenvalue of ``W^T W`` and its tridiagonal factorization, for stacks of matrices.

    Args:
      stacks: arrays ``(..., N, M)`` with ``N >= M`` (float32 or float64).

    Returns:
      ``[(lam, factors)]``: ``lam (..., M)`` ascending (NaN for a matrix with NaN/Inf
      or a LAPACK failure) and the ``?sytrd`` factorization that :func:`tail_gradient`
      reuses. No gradient.
    """
    stacks = [jax.lax.stop_gradient(W) for W in stacks]
    dtypes = tuple(np.dtype(W.dtype) for W in stacks)
    shapes = []
    for W, dt in zip(stacks, dtypes):
        lead, M = W.shape[:-2], W.shape[-1]
        shapes += [_shape(lead + s, dt) for s in ((M,), (M, M), (max(M - 1, 1),), (M,), (max(M - 1, 1),))]
    flat = jax.pure_callback(lambda *xs: _eigvals_host(dtypes, *xs), tuple(shapes),
                             *[_words(W) for W in stacks])
    flat = [_unwords(f, W.dtype) for f, W in zip(flat, [W for W in stacks for _ in range(5)])]
    return [(flat[5 * i], tuple(flat[5 * i + 1: 5 * i + 5]) + (flat[5 * i],)) for i in range(len(stacks))]


def _tail_gradient_one(W, g, c, tau, d, e, lam):
    """``2 W V diag(g) V^T`` over the eigenvectors where ``g != 0`` (from the factorization)."""
    idx = np.flatnonzero(g)
    if not idx.size:
        return np.zeros_like(W)
    M, dt = W.shape[1], W.dtype
    lo, hi = int(idx[0]), int(idx[-1])
    Z = _tridiagonal_vectors(d, e[: M - 1], lam, lo, hi)
    if M > 1:   # V = Q Z, Q = H(1)..H(M-1) acting on rows 2..M (LAPACK ?ormtr, uplo='L')
        cq, _, info = _lapack(dt, "ormqr")(b"L", b"N", c[1:, :-1], tau[: M - 1], Z[1:],
                                           max(64 * Z.shape[1], 1))
        if info:
            return np.zeros_like(W)
        Z = np.concatenate([Z[:1], cq])
    gemm = blas.dgemm if dt == np.float64 else blas.sgemm
    return gemm(2.0, gemm(1.0, W, Z) * g[lo:hi + 1], Z, trans_b=1)


def _tridiagonal_vectors(d, e, lam, lo, hi):
    """Eigenvectors ``lo..hi`` of the tridiagonal ``(d, e)`` whose eigenvalues ``lam`` are known:
    inverse iteration (``?stein``, ``O(M)`` per vector); ``?stemr`` if it does not converge."""
    M = d.shape[0]
    if M > 1:
        Z, info = _lapack(d.dtype, "stein")(d, e, lam[lo:hi + 1], np.ones(M, np.int32),
                                            np.full(M, M, np.int32))
        if info == 0:
            return Z
    from scipy.linalg import eigh_tridiagonal

    return eigh_tridiagonal(d, e, select="i", select_range=(lo, hi), lapack_driver="stemr")[1]


def _tail_gradient_host(dtypes, *args):
    n = len(dtypes)
    out = []
    for i, dt in enumerate(dtypes):
        arrays = [_np_unwords(a, dt) for a in args[i::n]]      # W, g, c, tau, d, e, lam
        lead, (N, M) = arrays[0].shape[:-2], arrays[0].shape[-2:]
        flat = [a.reshape((-1,) + a.shape[len(lead):]) for a in arrays]
        res = np.zeros((flat[0].shape[0], N, M), dt)
        for b in range(res.shape[0]):
            if np.isfinite(flat[0][b]).all():
                res[b] = _tail_gradient_one(*(a[b] for a in flat))
        out.append(_np_words(res.reshape(lead + (N, M))))
    return tuple(out)


def tail_gradient(stacks, dlam, factors):
    """``sum_j dlam_j d lambda_j / dW = 2 W V diag(dlam) V^T`` per matrix, exactly.

    Only the eigenvectors of the index range where ``dlam != 0`` (the tail) are
    computed, from the factorization of :func:`eigvals_factored` (``?stein`` on the
    tridiagonal matrix, ``?ormqr`` back-transform), then two thin ``?gemm``. A matrix
    with NaN/Inf gets zeros.

    Args:
      stacks: arrays ``(..., N, M)``, ``N >= M``.
      dlam: arrays ``(..., M)``, the weights of the ascending eigenvalues.
      factors: the factorizations of :func:`eigvals_factored`.

    Returns:
      Arrays of the shapes of ``stacks``. No gradient.
    """
    stacks = [jax.lax.stop_gradient(W) for W in stacks]
    dlam = [jax.lax.stop_gradient(g).astype(W.dtype) for W, g in zip(stacks, dlam)]
    dtypes = tuple(np.dtype(W.dtype) for W in stacks)
    shapes = tuple(_shape(W.shape, dt) for W, dt in zip(stacks, dtypes))
    args = stacks + dlam + [f[j] for j in range(5) for f in factors]
    out = jax.pure_callback(lambda *xs: _tail_gradient_host(dtypes, *xs), shapes,
                            *[_words(x) for x in args])
    return [_unwords(o, W.dtype) for o, W in zip(out, stacks)]


def svd(W):
    """``jnp.linalg.svd(W, full_matrices=False)`` of a stack ``(..., a, b)``, traceable.

    Workaround (jaxlib 0.10.2): its batched CPU LAPACK (``ParallelBatchMap``) re-enters
    XLA's intra-op thread pool, and two SVDs of one program were seen to deadlock on a
    2-core machine; on the CPU the SVD is NumPy's, in one host callback. Other
    platforms: ``jnp.linalg.svd``.

    Returns:
      ``(u, s, vh)``: ``(..., a, k)``, ``(..., k)`` descending, ``(..., k, b)``, ``k = min(a, b)``.
    """
    return jax.lax.platform_dependent(W, cpu=_svd_cpu, default=lambda x: tuple(jnp.linalg.svd(x, full_matrices=False)))


def _svd_cpu(W):
    dt, (a, b) = np.dtype(W.dtype), W.shape[-2:]
    k, lead = min(a, b), W.shape[:-2]
    shapes = [_shape(lead + s, dt) for s in ((a, k), (k,), (k, b))]

    def host(x):
        return tuple(_np_words(np.ascontiguousarray(o)) for o in np.linalg.svd(_np_unwords(x, dt), full_matrices=False))

    return tuple(_unwords(o, W.dtype) for o in jax.pure_callback(host, tuple(shapes), _words(W),
                                                                 vmap_method="broadcast_all"))

