"""Exact eigenvalues and eigenpairs of ``W^T W`` and of symmetric matrices by LAPACK on the host.

* :func:`eigvals`: the CPU path of :mod:`jaxww.linalg.spectra`, every eigenvalue and no
  vector (``?syrk``, ``?syevd`` with ``jobz='N'``), called without the GIL
  (:mod:`jaxww.linalg.lapack`): the matrices spread over the cores, one BLAS thread each
  (:mod:`jaxww.linalg.pool`).
* :func:`eigh` (the regularisers, the mesh path) and :func:`eigvalsh_cpu`: eigenpairs and
  eigenvalues of symmetric matrices inside a traced program (LAPACK ``?syevd`` on the host
  on the CPU, :func:`jaxww.linalg.callbacks.on_cpu`; ``jnp.linalg.eigh`` elsewhere).
* :func:`svd`: traceable SVD, NumPy's on the CPU.

The exact refresh of the training transforms is :mod:`jaxww.linalg.factored`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxww.linalg import lapack
from jaxww.linalg.callbacks import on_cpu
from jaxww.linalg.pool import run

GRAM_ROWS = 8192               # Gram matrices of 2x more rows are split in chunks ...
_TALL_CHUNKS = 8               # ... of at least this many rows, at most this many chunks


def _tall_gram(V):
    """``V^T V`` of a tall ``V`` split over the cores: at most ``_TALL_CHUNKS`` chunks of
    rows, summed in order (a split fixed by the shape: the same rounding on any machine)."""
    rows = max(GRAM_ROWS, -(-V.shape[0] // _TALL_CHUNKS))
    parts = run([functools.partial(lapack.gram, V[r:r + rows]) for r in range(0, V.shape[0], rows)])
    X = parts[0]
    for P in parts[1:]:
        X = X + P
    return X


def eigvals(stacks) -> list:
    """Host side of the CPU spectra: ascending eigenvalues of each matrix's Gram matrix.

    ``X = W^T W`` or ``W W^T``, whichever is smaller (BLAS ``?syrk``, through NumPy), then
    LAPACK ``?syevd`` with ``jobz='N'`` (``?sytrd`` + ``?sterf``, no eigenvectors; through
    ctypes, see :mod:`jaxww.linalg.lapack`). Both release the GIL, so the matrices spread over the
    cores (:func:`jaxww.linalg.pool.run`); the Gram matrix of a tall one (an LLM embedding) is split over
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
        if V.shape[0] >= 2 * GRAM_ROWS:   # its eigenvalues with one BLAS thread too
            run([functools.partial(lapack.eigvalsh, _tall_gram(V), out)], [_work(V)])
    short = [(V, out) for V, out in mats if V.shape[0] < 2 * GRAM_ROWS]
    run([functools.partial(lambda V, out: lapack.eigvalsh(lapack.gram(V), out), V, out) for V, out in short],
         [_work(V) for V, _ in short])
    return outs


def _work(V) -> float:
    """The work of the spectrum of ``V`` (``n x m``, ``n >= m``): ``(n + m) m^2``, as
    :func:`jaxww.linalg.placement.cost` counts a layer."""
    n, m = V.shape
    return float((n + m) * m * m)


# --- eigenpairs and eigenvalues of symmetric matrices (the regularisers, the mesh path)
def eigh(X) -> tuple:
    """``(lambda, V)`` of symmetric matrices ``(..., M, M)``: eigenvalues ascending,
    eigenvectors as columns; traceable, without gradient (stop it on ``X``).

    On the CPU LAPACK ``?syevd`` on the host (:func:`on_cpu`: never XLA's own LAPACK,
    whose batched calls wait for tasks on the CPU client's pool, which hangs a program
    on several CPU devices as :func:`on_cpu` describes), the matrices spread over the
    cores; elsewhere ``jnp.linalg.eigh``. NaN for a matrix with NaN/Inf or where LAPACK
    fails.
    """
    return jax.lax.platform_dependent(X, cpu=_eigh_cpu, default=lambda x: tuple(jnp.linalg.eigh(x)))


def _eigh_cpu(X):
    shapes = (jax.ShapeDtypeStruct(X.shape[:-1], X.dtype), jax.ShapeDtypeStruct(X.shape, X.dtype))
    return on_cpu(functools.partial(_symmetric_host, vectors=True), shapes, X, vmap_method="broadcast_all")


def eigvalsh_cpu(X):
    """Ascending eigenvalues of symmetric matrices ``(..., M, M)`` on a CPU device: LAPACK
    ``?syevd`` without vectors on the host (:func:`on_cpu`); NaN as :func:`eigh`."""
    return on_cpu(functools.partial(_symmetric_host, vectors=False),
                  (jax.ShapeDtypeStruct(X.shape[:-1], X.dtype),), X, vmap_method="broadcast_all")[0]


def _symmetric_host(X, vectors: bool):
    """Host side of :func:`eigh` (``vectors``) and :func:`eigvalsh_cpu`: one job per matrix
    on the pool (:func:`jaxww.linalg.pool.run`)."""
    M = X.shape[-1]
    flat = X.reshape(-1, M, M)
    lam = np.full(flat.shape[:2], np.nan, X.dtype)
    V = np.full(flat.shape, np.nan, X.dtype) if vectors else None
    run([functools.partial(_symmetric_one, flat[b], lam[b], V if V is None else V[b])
          for b in range(flat.shape[0]) if np.isfinite(flat[b]).all()])
    lam = lam.reshape(X.shape[:-1])
    return (lam,) if V is None else (lam, V.reshape(X.shape))


def _symmetric_one(X, lam, V):
    """Eigenvalues of the symmetric ``X`` into ``lam`` and, unless ``V`` is None, its
    eigenvectors into the columns of ``V`` (LAPACK ``?syevd`` on a copy); both left as
    they are if LAPACK fails. A zero matrix (the padding of :mod:`jaxww.linalg.sharded`) costs nothing."""
    M, dt, jobz = X.shape[0], X.dtype, b"N" if V is None else b"V"
    if not X.any():
        lam[:] = 0
        if V is not None:
            V[:] = np.eye(M, dtype=dt)
        return
    a, w = np.array(X, order="C"), np.empty(M, dt)   # LAPACK overwrites its matrix
    lwork, liwork = lapack.syevd_work(dt, M, jobz)
    if lapack.syevd(a, w, np.empty(lwork, dt), np.empty(liwork, np.intc), lwork, liwork, jobz) == 0:
        lam[:] = w
        if V is not None:
            V[:] = a.T   # Fortran-order vectors: the rows of ``a``



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
    (a, b), k = W.shape[-2:], min(W.shape[-2:])
    shapes = [jax.ShapeDtypeStruct(W.shape[:-2] + s, W.dtype) for s in ((a, k), (k,), (k, b))]
    return on_cpu(lambda x: np.linalg.svd(x, full_matrices=False), shapes, W, vmap_method="broadcast_all")
