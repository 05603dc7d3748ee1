"""Exact eigenpairs of ``W^T W`` for the training transforms, by LAPACK on the host.

What the regulariser needs at a refresh is every eigenvalue (for the tail fit) but
only the eigenvectors of the tail (``d alpha / d lambda_j`` is zero outside it), so it
pays for the eigenvalues-only solver plus a thin back-transform:

* ``X = W^T W`` (BLAS ``?syrk``), ``X = Q T Q^T`` (``?sytrd``, the ``4/3 M^3`` step that
  ``?syevd`` with ``jobz='N'`` also takes), all eigenvalues of ``T`` (``?stev``,
  i.e. ``?sterf``): the cost of :func:`jaxww.eigenvalues`;
* the top ``K`` eigenvectors of ``T`` (``?stemr``, ``O(M K)``) and ``V = Q Z``
  (``?ormqr`` on the reflectors, ``2 M^2 K``).

The eigenvectors of a tail larger than ``K`` (rare: make ``rank`` cover the tail)
are computed by :func:`tail_gradient` with ``?syevr`` on the index range only.

All groups go through one host call, so no two LAPACK calls of the step run at once.
float64 arrays cross as uint32 words: they would be cast to float32 when x64 is
enabled only by a context manager (the callback runs on another thread).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from scipy.linalg import blas, lapack


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


def _gram(W):
    """Lower triangle of ``W^T W`` for a C-ordered ``(N, M)`` ``W`` (no copy: trans=0 on W^T)."""
    syrk = blas.dsyrk if W.dtype == np.float64 else blas.ssyrk
    return syrk(1.0, W.T, trans=0, lower=1)


def _eigh_top_one(W, K):
    """All eigenvalues of ``W^T W`` (ascending) and its top-``K`` eigenvectors ``(M, K)``."""
    M, dt = W.shape[1], W.dtype
    lwork = int(_lapack(dt, "sytrd_lwork")(M, lower=1)[0])
    c, d, e, tau, info = _lapack(dt, "sytrd")(_gram(W), lower=1, lwork=max(lwork, 1))
    lam, _, info2 = _lapack(dt, "stev")(d, e, compute_v=0)
    if info or info2:
        return None
    if K == 0:
        return lam, np.zeros((M, 0), dt)
    _, Z = _tridiagonal_top(d, e, K)
    if M > 1:
        # Q = H(1)..H(M-1) acts on rows 2..M (LAPACK ?ormtr, uplo='L').
        cq, _, info = _lapack(dt, "ormqr")(b"L", b"N", c[1:, :-1], tau, Z[1:], max(64 * K, 1))
        if info:
            return None
        Z = np.concatenate([Z[:1], cq])
    return lam, Z


def _tridiagonal_top(d, e, K):
    """Top-``K`` eigenpairs of the symmetric tridiagonal matrix (``?stemr``), ascending."""
    from scipy.linalg import eigh_tridiagonal

    M = d.shape[0]
    return eigh_tridiagonal(d, e, select="i", select_range=(M - K, M - 1), lapack_driver="stemr")


def _eigh_top_host(K, dtypes, *stacks):
    out = []
    for k, dt, W in zip(K, dtypes, stacks):
        W = _np_unwords(W, dt)
        lead, (N, M) = W.shape[:-2], W.shape[-2:]
        flat = W.reshape(-1, N, M)
        lam = np.full((flat.shape[0], M), np.nan, dt)
        V = np.zeros((flat.shape[0], M, k), dt)
        for b in range(flat.shape[0]):
            res = _eigh_top_one(flat[b], k) if np.isfinite(flat[b]).all() else None
            if res is not None:
                lam[b], V[b] = res
        out += [_np_words(lam.reshape(lead + (M,))), _np_words(V.reshape(lead + (M, k)))]
    return tuple(out)


def eigh_top(stacks, ranks):
    """Every eigenvalue and the top eigenvectors of ``W^T W`` for stacks of matrices.

    Args:
      stacks: arrays ``(..., N, M)`` with ``N >= M`` (float32 or float64).
      ranks: for each stack, ``K <= M`` eigenvectors (0: eigenvalues only).

    Returns:
      ``[(lam, V)]``: ``lam (..., M)`` ascending (NaN for a matrix with NaN/Inf or a
      LAPACK failure) and ``V (..., M, K)``, the eigenvectors of ``lam[..., M-K:]``
      (zeros where ``lam`` is NaN). No gradient.
    """
    stacks = [jax.lax.stop_gradient(W) for W in stacks]
    dtypes = tuple(np.dtype(W.dtype) for W in stacks)
    shapes = []
    for W, k, dt in zip(stacks, ranks, dtypes):
        shapes += [_shape(W.shape[:-2] + W.shape[-1:], dt), _shape(W.shape[:-2] + (W.shape[-1], k), dt)]

    def host(*xs):
        return _eigh_top_host(tuple(ranks), dtypes, *xs)

    flat = jax.pure_callback(host, tuple(shapes), *[_words(W) for W in stacks])
    return [(_unwords(flat[2 * i], W.dtype), _unwords(flat[2 * i + 1], W.dtype))
            for i, W in enumerate(stacks)]


def _tail_gradient_host(dtypes, *args):
    n = len(dtypes)
    out = []
    for W, g, dt in zip(args[:n], args[n:], dtypes):
        W, g = _np_unwords(W, dt), _np_unwords(g, dt)
        lead, (N, M) = W.shape[:-2], W.shape[-2:]
        flat, gf = W.reshape(-1, N, M), g.reshape(-1, M)
        res = np.zeros_like(flat)
        for b in range(flat.shape[0]):
            idx = np.flatnonzero(gf[b])
            if idx.size and np.isfinite(flat[b]).all():
                res[b] = _tail_gradient_one(flat[b], gf[b], idx[0], idx[-1])
        out.append(_np_words(res.reshape(lead + (N, M))))
    return tuple(out)


def _tail_gradient_one(W, g, lo, hi):
    """``2 W V diag(g) V^T`` over the eigenvectors ``lo..hi`` of ``W^T W`` (``?syevr``)."""
    M = W.shape[1]
    syevr = _lapack(W.dtype, "syevr")
    lwork, liwork = _lapack(W.dtype, "syevr_lwork")(M, lower=1)[:2]
    _, V, _, _, info = syevr(_gram(W), compute_v=1, range="I", il=lo + 1, iu=hi + 1, lower=1,
                             lwork=int(lwork), liwork=int(liwork))
    if info:
        return np.zeros_like(W)
    gemm = blas.dgemm if W.dtype == np.float64 else blas.sgemm
    Z = gemm(1.0, W, V)
    return gemm(2.0, Z * g[lo:hi + 1], V, trans_b=1)


def tail_gradient(stacks, dlam):
    """``sum_j dlam_j d lambda_j / dW = 2 W V diag(dlam) V^T`` per matrix, exactly.

    Only the eigenvectors of the index range where ``dlam != 0`` are computed
    (``?syevr``, ``range='I'``). A matrix with NaN/Inf gets zeros.

    Args:
      stacks: arrays ``(..., N, M)``, ``N >= M``.
      dlam: arrays ``(..., M)``, the weights of the ascending eigenvalues.

    Returns:
      Arrays of the shapes of ``stacks``. No gradient.
    """
    stacks = [jax.lax.stop_gradient(W) for W in stacks]
    dlam = [jax.lax.stop_gradient(g).astype(W.dtype) for W, g in zip(stacks, dlam)]
    dtypes = tuple(np.dtype(W.dtype) for W in stacks)
    shapes = tuple(_shape(W.shape, dt) for W, dt in zip(stacks, dtypes))

    def host(*xs):
        return _tail_gradient_host(dtypes, *xs)

    out = jax.pure_callback(host, shapes, *[_words(x) for x in stacks + dlam])
    return [_unwords(o, W.dtype) for o, W in zip(out, stacks)]
