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

import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from scipy.linalg import lapack

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


def _sterf_host(d, e, dtype):
    """LAPACK ``?sterf`` (eigenvalues of a symmetric tridiagonal matrix, no vectors).

    Arguments and results travel as uint32 words: float64 values would otherwise be
    cast to float32 when x64 is enabled only by a context manager (the callback
    runs on another thread, outside it).
    """
    d = np.ascontiguousarray(d).view(dtype)[..., 0]
    e = np.ascontiguousarray(e).view(dtype)[..., 0]
    sterf = lapack.dsterf if d.dtype == np.float64 else lapack.ssterf
    flat_d, flat_e = d.reshape(-1, d.shape[-1]), e.reshape(-1, max(e.shape[-1], 1))
    out = flat_d.copy()
    if d.shape[-1] > 1:
        for i in range(flat_d.shape[0]):
            w, info = sterf(flat_d[i], flat_e[i])
            out[i] = w if info == 0 else np.nan
    return out.view(np.uint32).reshape(d.shape + (-1,))


def _host_lapack() -> bool:
    """Whether the tridiagonal eigenvalues are computed by LAPACK on the host (CPU)."""
    return jax.default_backend() == "cpu"


def _eigvals_tridiagonal(d, e):
    """Ascending eigenvalues of the symmetric tridiagonal matrices ``(d, e)``.

    CPU: LAPACK ``?sterf`` through a host callback (the data already lives on the
    host; XLA compiles ``eigh_tridiagonal`` in about 1 s per shape, ``sterf`` needs
    no compilation and runs as fast). GPU: ``jax.scipy.linalg.eigh_tridiagonal``.
    """
    if _host_lapack():
        words = d.dtype.itemsize // 4

        def as_bits(x):
            bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
            return bits if words > 1 else bits[..., None]

        host = functools.partial(_sterf_host, dtype=np.dtype(d.dtype))
        out = jax.ShapeDtypeStruct(d.shape + (words,), jnp.uint32)
        bits = jax.pure_callback(host, out, as_bits(d), as_bits(e), vmap_method="broadcast_all")
        return jax.lax.bitcast_convert_type(bits if words > 1 else bits[..., 0], d.dtype)
    return jax.vmap(lambda a, b: jax.scipy.linalg.eigh_tridiagonal(a, b, eigvals_only=True))(d, e)


@jax.jit
def _spectrum(W, n_rows):
    """Eigenvalues (descending) of a batch ``W`` of shape ``(B, N, M)``, ``N >= M``.

    ``n_rows`` (shape ``(B,)``) is the larger dimension of each original (unpadded)
    matrix, for the numerical floor. A matrix with a NaN or Inf gets NaN eigenvalues
    and never reaches LAPACK.
    """
    finite = jnp.isfinite(W).all(axis=(1, 2))
    W = jnp.where(finite[:, None, None], W, 0)
    X = jnp.einsum("bnm,bnk->bmk", W, W, precision=jax.lax.Precision.HIGHEST)
    if jax.default_backend() == "tpu":  # no tridiagonal reduction on TPU
        ev = jnp.linalg.eigvalsh(X)
    else:
        _, d, e, _ = jax.lax.linalg.tridiagonal(X, lower=True)
        ev = _eigvals_tridiagonal(d, e)
    ev = jnp.maximum(ev[:, ::-1], 0)
    floor = ev[:, :1] * n_rows[:, None] * jnp.finfo(ev.dtype).eps
    ev = jnp.where(ev > floor, ev, 0)
    return jnp.where(finite[:, None], ev, jnp.nan)


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
        W = jax.lax.optimization_barrier(W)
        ev = jnp.concatenate([_spectrum(W[a:b], rows[a:b]) for a, b in _chunks(W.shape[0], nb * mb)])
        for i, a, b in zip(members, np.cumsum([0] + counts[:-1]), np.cumsum(counts)):
            evals[i] = ev[a:b, : oriented[i].shape[2]]
    return evals
