"""The exact refresh of the training transforms: every eigenvalue of ``W^T W``, then the
eigenvectors of the tail only.

The transforms need every eigenvalue (for the tail fit) but only the eigenvectors of the
tail (``d alpha / d lambda_j`` is zero outside it), so they pay for the eigenvalues-only
solver plus thin work proportional to the tail:

* :func:`eigvals_factored`: ``X = W^T W`` (BLAS ``?syrk``), ``X = Q T Q^T`` (``?sytrd``,
  the ``4/3 M^3`` step that ``?syevd`` with ``jobz='N'`` also takes), all eigenvalues
  of ``T`` (``?sterf``);
* :func:`tail_gradient`, once the tail is known: its ``n_t`` eigenvectors of ``T`` by
  inverse iteration at the known eigenvalues (``?stein``, ``O(M n_t)``), ``V = Q Z``
  (``?ormtr`` on the kept reflectors, ``2 M^2 n_t``) and ``2 (W V) diag(g) V^T`` (two
  ``?gemm``, ``4 N M n_t``).

Each is one host call (:func:`jaxww.linalg.callbacks.host_call`) whose matrices spread
over the cores (:func:`jaxww.linalg.pool.run`).
"""

from __future__ import annotations

import functools

import jax
import numpy as np

from jaxww.linalg import lapack
from jaxww.linalg.callbacks import host_call
from jaxww.linalg.pool import run


def _factor(W, lam, c, tau, d, e):
    """``W^T W = Q T Q^T`` (``?syrk``, ``?sytrd``) into ``c`` (the reflectors), ``tau``,
    ``d``, ``e``, and the eigenvalues of ``T`` (``?sterf``) into ``lam``, ascending; on a
    LAPACK failure ``lam`` is left NaN."""
    M, dt = W.shape[1], W.dtype
    lapack.gram(W, out=c)
    lwork = lapack.sytrd_work(dt, M)
    if lapack.call(dt, "sytrd", b"L", M, c, M, d, e, tau, np.empty(lwork, dt), lwork):
        return
    lapack.sterf(d, e[: M - 1], lam)



def _eigvals_host(*stacks):
    jobs, out = [], []
    for W in stacks:
        lead, (N, M), dt = W.shape[:-2], W.shape[-2:], W.dtype
        flat = W.reshape(-1, N, M)
        res = [np.full((flat.shape[0], M), np.nan, dt), np.zeros((flat.shape[0], M, M), dt),
               np.zeros((flat.shape[0], max(M - 1, 1)), dt), np.zeros((flat.shape[0], M), dt),
               np.zeros((flat.shape[0], max(M - 1, 1)), dt)]
        jobs += [(N * M * M, functools.partial(_factor, flat[b], *(r[b] for r in res)))
                 for b in range(flat.shape[0]) if np.isfinite(flat[b]).all()]
        out += [r.reshape(lead + r.shape[1:]) for r in res]
    run([fn for _, fn in sorted(jobs, key=lambda j: -j[0])])
    return out


def eigvals_factored(stacks):
    """Every eigenvalue of ``W^T W`` and its tridiagonal factorization, for stacks of matrices.

    Args:
      stacks: arrays ``(..., N, M)`` with ``N >= M`` (float32 or float64).

    Returns:
      ``[(lam, factors)]``: ``lam (..., M)`` ascending (NaN for a matrix with NaN/Inf
      or a LAPACK failure) and the ``?sytrd`` factorization that :func:`tail_gradient`
      reuses. No gradient. One host call (:func:`host_call`).
    """
    stacks = [jax.lax.stop_gradient(W) for W in stacks]
    shapes = []
    for W in stacks:
        lead, M = W.shape[:-2], W.shape[-1]
        shapes += [jax.ShapeDtypeStruct(lead + s, W.dtype)
                   for s in ((M,), (M, M), (max(M - 1, 1),), (M,), (max(M - 1, 1),))]
    flat = host_call(_eigvals_host, shapes, *stacks)
    return [(flat[5 * i], tuple(flat[5 * i + 1: 5 * i + 5]) + (flat[5 * i],)) for i in range(len(stacks))]


def _tail_gradient_one(W, g, c, tau, d, e, lam, out):
    """``out = 2 W V diag(g) V^T`` over the eigenvectors where ``g != 0`` (there are some),
    from the factorization: ``?stein``, ``V = Q Z`` by ``?ormtr`` (uplo='L', the reflectors
    of ``?sytrd``), two ``?gemm``. ``out`` stays zero if ``?ormtr`` fails."""
    idx = np.flatnonzero(g)
    (M, dt), lo, hi = (W.shape[1], W.dtype), int(idx[0]), int(idx[-1])
    Z = _tridiagonal_vectors(d, e[: M - 1], lam, lo, hi)
    k = Z.shape[1]
    lwork = lapack.query(dt, "ormtr", b"L", b"L", b"N", M, k, c, M, tau, Z, M)
    if lapack.call(dt, "ormtr", b"L", b"L", b"N", M, k, c, M, tau, Z, M, np.empty(lwork, dt), lwork) == 0:
        np.matmul((W @ Z) * (2 * g[lo:hi + 1]), Z.T, out=out)


def _tridiagonal_vectors(d, e, lam, lo, hi):
    """Eigenvectors ``lo..hi`` (Fortran order) of the tridiagonal ``(d, e)`` whose eigenvalues
    ``lam`` are known: inverse iteration (``?stein``, ``O(M)`` per vector); ``?stemr`` if it
    does not converge."""
    M, k, dt = d.shape[0], hi - lo + 1, d.dtype
    Z = np.zeros((M, k), dt, order="F")
    info = lapack.call(dt, "stein", M, d, e, k, np.ascontiguousarray(lam[lo:hi + 1]), np.ones(M, np.intc),
                   np.full(M, M, np.intc), Z, M, np.empty(5 * M, dt), np.empty(M, np.intc),
                   np.empty(k, np.intc))
    if info == 0:
        return Z
    from scipy.linalg import eigh_tridiagonal

    return np.asfortranarray(eigh_tridiagonal(d, e, select="i", select_range=(lo, hi), lapack_driver="stemr")[1])


def _tail_gradient_host(*args):
    n, jobs, out = len(args) // 7, [], []
    for i in range(n):
        arrays = args[i::n]      # W, g, c, tau, d, e, lam
        lead, (N, M), dt = arrays[0].shape[:-2], arrays[0].shape[-2:], arrays[0].dtype
        flat = [a.reshape((-1,) + a.shape[len(lead):]) for a in arrays]
        res = np.zeros((flat[0].shape[0], N, M), dt)
        jobs += [(N * M * np.count_nonzero(flat[1][b]),
                  functools.partial(_tail_gradient_one, *(a[b] for a in flat), res[b]))
                 for b in range(res.shape[0]) if flat[1][b].any() and np.isfinite(flat[0][b]).all()]
        out.append(res.reshape(lead + (N, M)))
    run([fn for _, fn in sorted(jobs, key=lambda j: -j[0])])
    return out


def tail_gradient(stacks, dlam, factors):
    """``sum_j dlam_j d lambda_j / dW = 2 W V diag(dlam) V^T`` per matrix, exactly.

    Only the eigenvectors of the index range where ``dlam != 0`` (the tail) are
    computed, from the factorization of :func:`eigvals_factored` (``?stein`` on the
    tridiagonal matrix, ``?ormtr`` back-transform), then two thin ``?gemm``. A matrix
    with NaN/Inf gets zeros. One host call (:func:`host_call`).

    Args:
      stacks: arrays ``(..., N, M)``, ``N >= M``.
      dlam: arrays ``(..., M)``, the weights of the ascending eigenvalues.
      factors: the factorizations of :func:`eigvals_factored`.

    Returns:
      Arrays of the shapes of ``stacks``. No gradient.
    """
    stacks = [jax.lax.stop_gradient(W) for W in stacks]
    dlam = [jax.lax.stop_gradient(g).astype(W.dtype) for W, g in zip(stacks, dlam)]
    args = stacks + dlam + [f[j] for j in range(5) for f in factors]
    return list(host_call(_tail_gradient_host, [jax.ShapeDtypeStruct(W.shape, W.dtype) for W in stacks], *args))
