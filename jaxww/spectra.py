"""Eigenvalue spectra of weight matrices, batched by shape.

For a weight matrix ``W`` of shape ``(N, M)`` with ``N >= M`` the empirical spectral
density (ESD) is made of the ``M`` eigenvalues of the correlation matrix
``X = W^T W``, i.e. ``lambda_i = sigma_i(W)**2`` (no ``1/N`` normalisation).

The exact eigenvalue-only path, per backend (measured in ``bench/spectra.py``):

* CPU: ``X = W^T W`` (BLAS ``gemm``), then LAPACK ``?syevd`` with ``jobz='N'``
  (Householder tridiagonalisation ``?sytrd`` + ``?sterf``, no eigenvectors), through
  one host callback per batch. XLA's own ``eigvalsh`` always computes eigenvectors
  (about 3x slower), its CPU matmul is slower than the BLAS one, and the pure-JAX
  ``eigh_tridiagonal`` takes about 1 s to compile per shape.
* GPU: ``X = W^T W`` -> ``jax.lax.linalg.tridiagonal`` (cuSOLVER) ->
  ``jax.scipy.linalg.eigh_tridiagonal(..., eigvals_only=True)``.
* TPU (no tridiagonal reduction there): ``jnp.linalg.eigvalsh``.

Zero-padding ``W`` only adds zero eigenvalues, so matrices are padded to a few
*bucket* sizes (four per octave) and every bucket is one batched call: the number of
compilations is bounded by the number of buckets, not of layers.

Eigenvalues below the numerical floor of the solver, ``max(lambda) * N * eps``, are
set to exactly zero: forming ``W^T W`` squares the condition number, so such values
carry no information (in float32 they would otherwise leak into the power-law fit).
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from scipy.linalg import blas, lapack

#: Elements per batched call (inputs of one call stay below ~256 MiB in float32).
_BATCH_ELEMENTS = 1 << 26

PRECISIONS = ("float32", "float64")


def bucket(n: int) -> int:
    """Smallest size ``>= n`` on a grid of four sizes per octave (8, 10, 12, 14, 16, 20, ...).

    Padding to the grid costs at most 25% per dimension and bounds the number of
    distinct shapes (hence compilations) to about ``4 * log2(max size)``.
    """
    if n <= 8:
        return max(n, 1)
    step = 1 << (int(math.log2(n)) - 2)
    return -(-n // step) * step


def _to_words(x):
    """A float64 array as uint32 words (shape ``x.shape + (2,)``); float32 as is."""
    return jax.lax.bitcast_convert_type(x, jnp.uint32) if x.dtype.itemsize > 4 else x


def _from_words(x, dtype):
    return x.view(dtype)[..., 0] if x.dtype == np.uint32 else x


def _eigvals_host(W, dtype):
    """Host side of the CPU path: ascending eigenvalues of ``W^T W`` for a batch ``W``.

    float64 arrays cross as uint32 words: they would be cast to float32 when x64 is
    enabled only by a context manager (the callback runs on another thread). A matrix
    with a NaN or Inf gets NaN eigenvalues and never reaches LAPACK.
    """
    W = _from_words(np.asarray(W), dtype)
    double = W.dtype == np.float64
    # SciPy's BLAS and LAPACK both: one OpenBLAS thread pool (NumPy's matmul would
    # bring a second one, and the two pools slow each other down).
    syrk = blas.dsyrk if double else blas.ssyrk
    syevd = lapack.dsyevd if double else lapack.ssyevd
    m = W.shape[-1]
    lwork, liwork, _ = (lapack.dsyevd_lwork if double else lapack.ssyevd_lwork)(m, compute_v=0)
    out = np.full(W.shape[:-2] + (m,), np.nan, W.dtype)
    for b in range(W.shape[0]):
        if not np.isfinite(W[b]).all():
            continue
        # W[b] is C-ordered (N, M): as a Fortran array it is W[b]^T, so trans=0 gives
        # the lower triangle of W[b]^T W[b] without a copy.
        X = syrk(1.0, W[b].T, trans=0, lower=1)
        w, _, info = syevd(X, compute_v=0, lower=1, lwork=int(lwork), liwork=int(liwork))
        if info == 0:
            out[b] = w
    return out.view(np.uint32).reshape(out.shape + (-1,)) if double else out


def _eigvals_ascending(W):
    """Eigenvalues of ``W^T W`` for a batch ``W`` of shape ``(B, N, M)``, ascending.

    The path is chosen by the platform the computation is compiled for (the device
    the arrays are on), not by the default backend. NaN for a matrix that holds a NaN
    or Inf.
    """
    return jax.lax.platform_dependent(W, cpu=_eigvals_cpu, tpu=functools.partial(_eigvals_device, tpu=True),
                                      default=_eigvals_device)


def _eigvals_cpu(W):
    host = functools.partial(_eigvals_host, dtype=np.dtype(W.dtype))
    shape = W.shape[:1] + W.shape[2:]
    out = (jax.ShapeDtypeStruct(shape + (2,), jnp.uint32) if W.dtype.itemsize > 4
           else jax.ShapeDtypeStruct(shape, W.dtype))
    ev = jax.pure_callback(host, out, _to_words(W), vmap_method="broadcast_all")
    return jax.lax.bitcast_convert_type(ev, W.dtype) if W.dtype.itemsize > 4 else ev


def _eigvals_device(W, tpu=False):
    finite = jnp.isfinite(W).all(axis=(1, 2))
    W = jnp.where(finite[:, None, None], W, 0)
    X = jnp.einsum("bnm,bnk->bmk", W, W, precision=jax.lax.Precision.HIGHEST)
    if tpu:   # no tridiagonal reduction there
        ev = jnp.linalg.eigvalsh(X)
    else:
        _, d, e, _ = jax.lax.linalg.tridiagonal(X, lower=True)
        ev = jax.vmap(lambda a, b: jax.scipy.linalg.eigh_tridiagonal(a, b, eigvals_only=True))(d, e)
    return jnp.where(finite[:, None], ev, jnp.nan)


def numerical_floor(lam, n_rows):
    """Set eigenvalues at or below the solver's floor to 0 (along the last axis).

    .. math:: \\lambda_i \\leftarrow 0 \\quad \\text{if} \\quad
              \\lambda_i \\le \\max_j \\lambda_j \\cdot N \\cdot \\varepsilon

    with ``N`` the larger dimension of the matrix (``n_rows``, broadcastable against
    ``lam[..., :1]``) and ``eps`` the machine epsilon of ``lam``'s dtype: values below
    it are rounding noise of the Gram matrix. NaN stays NaN; the maximum carries no
    gradient.
    """
    top = jax.lax.stop_gradient(jnp.max(lam, axis=-1, keepdims=True))
    return jnp.where(jnp.isnan(lam) | (lam > top * n_rows * jnp.finfo(lam.dtype).eps), lam, 0)


@jax.jit
def _spectrum(W, n_rows):
    """Eigenvalues (descending) of a batch ``W`` of shape ``(B, N, M)``, ``N >= M``.

    ``n_rows`` (shape ``(B,)``) is the larger dimension of each original (unpadded)
    matrix, for the numerical floor. NaN for a matrix that holds a NaN or Inf.
    """
    return numerical_floor(_eigvals_ascending(W)[:, ::-1], n_rows[:, None])


def eigenvalues(W, *, precision: str = "float32") -> jax.Array:
    """Eigenvalues ``sigma_i(W)**2`` of one matrix or a batch of matrices, descending.

    .. math:: \\lambda_i = \\sigma_i(W)^2 = \\mathrm{eig}_i(W^T W)

    Args:
      W: array of shape ``(..., a, b)``; either orientation gives the same spectrum.
      precision: ``"float32"`` or ``"float64"`` (float64 needs ``jax_enable_x64`` or
        is run under ``jax.enable_x64()`` by :func:`jaxww.analyze`).

    Returns:
      Array of shape ``(..., min(a, b))``, descending. Values below the numerical floor
      ``max(lambda) * max(a, b) * eps`` are exactly 0.

    Example:
      >>> import jax.numpy as jnp, jaxww
      >>> jaxww.eigenvalues(jnp.diag(jnp.array([3.0, 2.0, 1.0])))
      Array([9., 4., 1.], dtype=float32)
    """
    W = jnp.asarray(W)
    if W.ndim < 2:
        raise ValueError(f"eigenvalues needs a matrix, got shape {W.shape}")
    dtype = _dtype(precision)
    if W.shape[-2] < W.shape[-1]:
        W = jnp.swapaxes(W, -1, -2)
    batch = W.shape[:-2]
    Wb = W.reshape((-1,) + W.shape[-2:]).astype(dtype)
    ev = _spectrum(Wb, jnp.full((Wb.shape[0],), Wb.shape[1], dtype))
    return ev.reshape(batch + ev.shape[-1:])


def _dtype(precision: str):
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "float64" and not jax.config.jax_enable_x64:
        raise ValueError('precision="float64" needs jax_enable_x64 (use jax.enable_x64())')
    return jnp.dtype(precision)


def _chunks(total: int, per_item: int):
    """Split ``total`` items into runs whose size times ``per_item`` fits one batch."""
    size = max(1, _BATCH_ELEMENTS // max(per_item, 1))
    return [(s, min(s + size, total)) for s in range(0, total, size)]


def batched_spectra(stacks: Sequence[jax.Array], *, precision: str = "float32") -> list:
    """Spectra of many stacks of matrices, one jitted call per bucket of shapes.

    Args:
      stacks: sequence of arrays of shape ``(T, a, b)`` (``T`` matrices each, e.g. the
        taps of a convolution or a single dense kernel with ``T = 1``).
      precision: ``"float32"`` or ``"float64"``.

    Returns:
      For every stack, an array ``(T, min(a, b))`` of eigenvalues, descending (NaN for
      a matrix that holds a NaN or Inf).
    """
    dtype = _dtype(precision)
    oriented = []
    groups: dict[tuple[int, int], list[int]] = {}
    for idx, st in enumerate(stacks):
        st = jnp.asarray(st)
        if st.shape[1] < st.shape[2]:
            st = jnp.swapaxes(st, 1, 2)
        oriented.append(st)
        groups.setdefault((bucket(st.shape[1]), bucket(st.shape[2])), []).append(idx)

    evals: list = [None] * len(stacks)
    for (nb, mb), members in groups.items():
        W = jnp.concatenate([
            jnp.pad(oriented[i].astype(dtype),
                    ((0, 0), (0, nb - oriented[i].shape[1]), (0, mb - oriented[i].shape[2])))
            for i in members])
        counts = [oriented[i].shape[0] for i in members]
        rows = jnp.asarray(np.repeat([oriented[i].shape[1] for i in members], counts), dtype)
        ev = jnp.concatenate([_spectrum(W[a:b], rows[a:b]) for a, b in _chunks(W.shape[0], nb * mb)])
        for i, a, b in zip(members, np.cumsum([0] + counts[:-1]), np.cumsum(counts)):
            evals[i] = ev[a:b, : oriented[i].shape[2]]
    return evals
