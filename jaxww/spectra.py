"""Eigenvalue spectra of weight matrices, batched by shape.

For a weight matrix ``W`` of shape ``(N, M)`` with ``N >= M`` the empirical spectral
density (ESD) is made of the ``M`` eigenvalues of the correlation matrix
``X = W^T W``, i.e. ``lambda_i = sigma_i(W)**2`` (no ``1/N`` normalisation).

How they are computed (one path for CPU and GPU, measured in ``bench/spectra.py``):

1. ``X = W^T W`` (a matmul), for a batch of same-shape matrices at once;
2. ``jax.lax.linalg.tridiagonal`` (LAPACK ``sytrd`` on CPU, cuSOLVER on GPU);
3. ``jax.scipy.linalg.eigh_tridiagonal(..., eigvals_only=True)``: eigenvalues only,
   no eigenvectors.

On the CPU this is 2-4x faster than ``jnp.linalg.eigvalsh`` (which also computes the
eigenvectors) and than an SVD. TPUs have no ``tridiagonal``; there ``eigvalsh`` is used.

Zero-padding ``W`` only adds zero eigenvalues, so matrices are padded to a few
*bucket* sizes (four per octave) and every bucket is one jitted, vmapped call: the
number of compilations is bounded by the number of buckets, not of layers.

Eigenvalues below the numerical floor of the solver, ``max(lambda) * N * eps``, are
set to exactly zero: forming ``W^T W`` squares the condition number, so such values
carry no information (in float32 they would otherwise leak into the power-law fit).
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

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


def _eigvals_sym(X):
    """Eigenvalues of one symmetric matrix, descending."""
    if jax.default_backend() == "tpu":
        ev = jnp.linalg.eigvalsh(X)
    else:
        _, d, e, _ = jax.lax.linalg.tridiagonal(X, lower=True)
        ev = jax.scipy.linalg.eigh_tridiagonal(d, e, eigvals_only=True)
    return ev[::-1]


@jax.jit
def _gram(W):
    """``(X, finite)`` for a batch ``W`` of shape ``(B, N, M)``: ``X = W^T W``.

    A matrix with a NaN or Inf is replaced by zeros (its flag is False) so that
    no non-finite value reaches LAPACK.
    """
    finite = jnp.isfinite(W).all(axis=(1, 2))
    W = jnp.where(finite[:, None, None], W, 0)
    X = jnp.einsum("bnm,bnk->bmk", W, W, precision=jax.lax.Precision.HIGHEST)
    return X, finite


@jax.jit
def _eig(X, n_rows):
    """Eigenvalues (descending) of a batch of Gram matrices, numerical floor zeroed.

    ``n_rows`` (shape ``(B,)``) is the larger dimension ``N`` of each original matrix.
    """
    ev = jax.vmap(_eigvals_sym)(X)
    ev = jnp.maximum(ev, 0)
    top = ev[:, :1]
    floor = top * n_rows[:, None] * jnp.finfo(ev.dtype).eps
    return jnp.where(ev > floor, ev, 0)


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
    X, finite = _gram(Wb)
    ev = _eig(X, jnp.full((X.shape[0],), Wb.shape[1], dtype))
    ev = jnp.where(finite[:, None], ev, jnp.nan)
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


def batched_spectra(stacks: Sequence[jax.Array], *, precision: str = "float32"):
    """Spectra of many stacks of matrices, one jitted call per bucket of shapes.

    Args:
      stacks: sequence of arrays of shape ``(T, a, b)`` (``T`` matrices each, e.g. the
        taps of a convolution or a single dense kernel with ``T = 1``).
      precision: ``"float32"`` or ``"float64"``.

    Returns:
      ``(evals, finite)``: for every stack, an array ``(T, min(a, b))`` of eigenvalues
      (descending) and a bool ``(T,)`` saying whether the matrix was finite (a
      non-finite matrix gets NaN eigenvalues).
    """
    dtype = _dtype(precision)
    # 1. Orient every stack as (T, N, M), N >= M, and group by padded shape.
    oriented = []
    by_shape: dict[tuple[int, int], list[int]] = {}
    for idx, st in enumerate(stacks):
        st = jnp.asarray(st)
        if st.shape[1] < st.shape[2]:
            st = jnp.swapaxes(st, 1, 2)
        oriented.append(st)
        key = (bucket(st.shape[1]), bucket(st.shape[2]))
        by_shape.setdefault(key, []).append(idx)

    # 2. Gram matrices: one call per (N, M) bucket, memory-bounded chunks.
    grams: dict[int, list] = {}  # M bucket -> [(stack index, X rows, finite)]
    for (nb, mb), members in by_shape.items():
        padded = [
            jnp.pad(oriented[i].astype(dtype),
                    ((0, 0), (0, nb - oriented[i].shape[1]), (0, mb - oriented[i].shape[2])))
            for i in members
        ]
        W = padded[0] if len(padded) == 1 else jnp.concatenate(padded)
        counts = [oriented[i].shape[0] for i in members]
        rows = np.repeat([oriented[i].shape[1] for i in members], counts)
        parts = [_gram(W[a:b]) for a, b in _chunks(W.shape[0], nb * mb)]
        X = jnp.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
        fin = jnp.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
        grams.setdefault(mb, []).append((members, counts, X, fin, rows))

    # 3. Eigenvalues: one call per M bucket, across all row counts.
    evals: list = [None] * len(stacks)
    finite: list = [None] * len(stacks)
    for mb, groups in grams.items():
        X = jnp.concatenate([g[2] for g in groups]) if len(groups) > 1 else groups[0][2]
        fin = jnp.concatenate([g[3] for g in groups]) if len(groups) > 1 else groups[0][3]
        rows = jnp.asarray(np.concatenate([g[4] for g in groups]), dtype)
        ev = [_eig(X[a:b], rows[a:b]) for a, b in _chunks(X.shape[0], mb * mb)]
        ev = jnp.concatenate(ev) if len(ev) > 1 else ev[0]
        ev = jnp.where(fin[:, None], ev, jnp.nan)
        start = 0
        for members, counts, *_ in groups:
            for i, t in zip(members, counts):
                evals[i] = ev[start:start + t, : oriented[i].shape[2]]
                finite[i] = fin[start:start + t]
                start += t
    return evals, finite
