"""Eigenvalue spectra of weight matrices, batched by shape.

For a weight matrix ``W`` of shape ``(N, M)`` with ``N >= M`` the empirical spectral
density (ESD) is made of the ``M`` eigenvalues of the correlation matrix
``X = W^T W``, i.e. ``lambda_i = sigma_i(W)**2`` (no ``1/N`` normalisation).

The exact eigenvalue-only path, per backend (measured in ``bench/spectra.py``):

* CPU: ``X = W^T W`` (BLAS ``?syrk``), then LAPACK ``?syevd`` with ``jobz='N'``
  (Householder tridiagonalisation ``?sytrd`` + ``?sterf``, no eigenvectors), in one
  host callback for all matrices, at their exact shapes, spread over the cores
  (:func:`jaxww.linalg.host.eigvals`). XLA's own ``eigvalsh`` always computes
  eigenvectors (about 3x slower), its CPU matmul is slower than the BLAS one, and the
  pure-JAX ``eigh_tridiagonal`` takes about 1 s to compile per shape.
* GPU: ``X = W^T W`` -> ``jax.lax.linalg.tridiagonal`` (cuSOLVER) ->
  ``jax.scipy.linalg.eigh_tridiagonal(..., eigvals_only=True)``.
* TPU (no tridiagonal reduction there): ``jnp.linalg.eigvalsh``.

On accelerators, zero-padding the Gram matrix only adds zero eigenvalues, so each
``M x M`` Gram matrix (computed at its own shape: padding the rows of ``W`` would add
flops and nothing else) is padded to one of a few *bucket* sizes (four per octave) and
every bucket is one batched call: the number of eigensolver calls is bounded by the
number of buckets, not of layers.

Eigenvalues below the numerical floor of the solver, ``max(lambda) * N * eps``, are
set to exactly zero: forming ``W^T W`` squares the condition number, so such values
carry no information (in float32 they would otherwise leak into the power-law fit).
"""

from __future__ import annotations

import contextlib
import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxww.linalg import callbacks as _callbacks
from jaxww.linalg import host as _host
from jaxww.linalg import placement as _placement
from jaxww.linalg.batching import group_indices

#: Elements per batched call (inputs of one call stay below ~256 MiB in float32).
_BATCH_ELEMENTS = 1 << 26

PRECISIONS = ("float32", "float64")
#: Stored dtypes whose Gram matrix is formed as stored, accumulated in float32 (:func:`_gram`).
HALF = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


def bucket(n: int) -> int:
    """Smallest size ``>= n`` on a grid of four sizes per octave (8, 10, 12, 14, 16, 20, ...).

    Padding to the grid costs at most 25% per dimension and bounds the number of
    distinct shapes (hence compilations) to about ``4 * log2(max size)``.
    """
    if n <= 8:
        return max(n, 1)
    step = 1 << (int(math.log2(n)) - 2)
    return -(-n // step) * step


def eigvals_ascending(*stacks):
    """Eigenvalues of the Gram matrix of every matrix of ``stacks`` (each ``(T, a, b)``),
    ``(T, min(a, b))`` ascending; NaN for a matrix that holds a NaN or Inf.

    The path is chosen by the platform the computation is compiled for (the device
    the arrays are on), not by the default backend; the CPU takes the accelerators' path
    too under ``JAXWW_DEVICE_PATH=1`` (:data:`jaxww.linalg.placement.DEVICE_PATH`).
    """
    cpu = _eigvals_buckets if _placement.DEVICE_PATH else _eigvals_cpu
    return jax.lax.platform_dependent(*stacks, cpu=cpu, default=_eigvals_buckets)


def _eigvals_cpu(*stacks):
    """One host call for all stacks (:func:`jaxww.linalg.host.eigvals`), exact shapes
    (:func:`jaxww.linalg.callbacks.on_cpu`: safe in a program on several CPU devices);
    bfloat16/float16 stacks cast to float32 first (LAPACK has no half precision)."""
    stacks = [W.astype(jnp.float32) if W.dtype in HALF else W for W in stacks]
    out = [jax.ShapeDtypeStruct(W.shape[:-2] + (min(W.shape[-2:]),), W.dtype) for W in stacks]
    return list(_callbacks.on_cpu(lambda *xs: _host.eigvals(list(xs)), out, *stacks,
                                 vmap_method="broadcast_all"))


def _eigvals_buckets(*stacks):
    """Accelerators: each stack's Gram matrices at their own shape (no padded rows: they
    would add flops and no eigenvalue), zero-padded to a bucket size and solved in one
    batched call per bucket (and per chunk of ``_BATCH_ELEMENTS``), so a model compiles a
    few eigensolver shapes only."""
    oriented = [jnp.swapaxes(st, 1, 2) if st.shape[1] < st.shape[2] else st for st in stacks]
    grams = [_gram(W) for W in oriented]
    groups = group_indices([bucket(W.shape[2]) for W in oriented])
    evals: list = [None] * len(stacks)
    for mb, members in groups.items():
        X = jnp.concatenate([jnp.pad(grams[i][0], ((0, 0), (0, mb - oriented[i].shape[2]),
                                                   (0, mb - oriented[i].shape[2]))) for i in members])
        finite = jnp.concatenate([grams[i][1] for i in members])
        ev = jnp.concatenate([_eigvals_gram(X[a:b]) for a, b in _chunks(X.shape[0], mb * mb)])
        ev = jnp.where(finite[:, None], ev, jnp.nan)
        counts = [oriented[i].shape[0] for i in members]
        for i, a, b in zip(members, np.cumsum([0] + counts[:-1]), np.cumsum(counts)):
            # padding adds zero eigenvalues, the smallest: drop them from the front
            evals[i] = ev[a:b, mb - oriented[i].shape[2]:]
    return evals


def _gram(W):
    """``(W^T W, finite)`` of a stack ``(T, N, M)``: the Gram matrices (of zeros for a matrix
    holding a NaN or Inf) and which matrices are finite.

    float32/float64 at HIGHEST precision (the reference); bfloat16/float16 read as stored,
    with float32 accumulation (``preferred_element_type``): the product of two such values
    is exact in float32 (8 or 11 significant bits each), so the Gram matrix differs from
    the reference's (the weights cast to float32 first) by float32 summation error only,
    while it runs at the half-precision matmul rate and no float32 copy of the weights is
    made (``tests/linalg/test_spectra.py`` bounds the difference of the spectra).
    """
    finite = jnp.isfinite(W).all(axis=(1, 2))
    W = jnp.where(finite[:, None, None], W, jnp.zeros((), W.dtype))
    if W.dtype in HALF:
        return jnp.einsum("bnm,bnk->bmk", W, W, preferred_element_type=jnp.float32), finite
    return jnp.einsum("bnm,bnk->bmk", W, W, precision=jax.lax.Precision.HIGHEST), finite


def _eigvals_device(W):
    """Ascending eigenvalues of the Gram matrices of a stack ``(T, N, M)`` (NaN where not finite)."""
    X, finite = _gram(W)
    return jnp.where(finite[:, None], _eigvals_gram(X), jnp.nan)


def _eigvals_gram(X):
    return jax.lax.platform_dependent(X, tpu=jnp.linalg.eigvalsh, default=tridiagonal_eigvals)


def tridiagonal_eigvals(X):
    """Ascending eigenvalues of symmetric matrices ``(..., M, M)``: the Householder reduction
    ``X = Q T Q^T`` (``lax.linalg.tridiagonal``; none on TPU), then every eigenvalue of ``T``
    by bisection on the device (``eigh_tridiagonal``), the whole batch in one call.

    LAPACK ``?sterf`` on the host from ``T``'s diagonals was measured against it on the
    device path of a CPU (``bench/tridiagonal.py``): no consistent win (0.66-1.43x the
    bisection's time, M = 16..1024), and batched ``eigvalsh`` 1.3-3.3x slower at every size,
    so the eigenvalues stay here; the bench measures all three again on an accelerator.
    """
    _, d, e, _ = jax.lax.linalg.tridiagonal(X, lower=True)
    return jax.vmap(lambda a, b: jax.scipy.linalg.eigh_tridiagonal(a, b, eigvals_only=True))(d, e)


def numerical_floor(lam, n_rows, xp=jnp):
    """Set eigenvalues at or below the solver's floor to 0 (along the last axis).

    .. math:: \\lambda_i \\leftarrow 0 \\quad \\text{if} \\quad
              \\lambda_i \\le \\max_j \\lambda_j \\cdot N \\cdot \\varepsilon

    with ``N`` the larger dimension of the matrix (``n_rows``, broadcastable against
    ``lam[..., :1]``) and ``eps`` the machine epsilon of ``lam``'s dtype: values below
    it are rounding noise of the Gram matrix. NaN stays NaN; the maximum carries no
    gradient. ``xp``: ``jax.numpy``, or ``numpy`` for host arrays.
    """
    top = xp.max(lam, axis=-1, keepdims=True)
    top = jax.lax.stop_gradient(top) if xp is jnp else top
    return xp.where(xp.isnan(lam) | (lam > top * n_rows * xp.finfo(lam.dtype).eps), lam, 0)


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
    batch = W.shape[:-2]
    (ev,) = batched_spectra([W.reshape((-1,) + W.shape[-2:])], precision=precision)
    return ev.reshape(batch + ev.shape[-1:])


@contextlib.contextmanager
def precision_scope(precision: str):
    """Run the block with x64 on (``jax.enable_x64``) when ``precision="float64"`` needs it."""
    if precision == "float64" and not jax.config.jax_enable_x64:
        with jax.enable_x64(True):
            yield
    else:
        yield


def check_precision_name(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else a ``ValueError`` naming them."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision


def _dtype(precision: str):
    check_precision_name(precision)
    if precision == "float64" and not jax.config.jax_enable_x64:
        raise ValueError('precision="float64" needs jax_enable_x64 (use jax.enable_x64())')
    return jnp.dtype(precision)


def _chunks(total: int, per_item: int):
    """Split ``total`` items into runs whose size times ``per_item`` fits one batch."""
    size = max(1, _BATCH_ELEMENTS // max(per_item, 1))
    return [(s, min(s + size, total)) for s in range(0, total, size)]


def batched_spectra(stacks: Sequence[jax.Array], *, precision: str = "float32") -> list:
    """Spectra of many stacks of matrices in one jitted call (see the module docstring).

    Args:
      stacks: sequence of arrays of shape ``(T, a, b)`` (``T`` matrices each, e.g. the
        taps of a convolution or a single dense kernel with ``T = 1``); bfloat16/float16
        are read as stored for float32 spectra (:func:`compute_input`).
      precision: ``"float32"`` or ``"float64"``.

    Returns:
      For every stack, an array ``(T, min(a, b))`` of eigenvalues, descending (NaN for
      a matrix that holds a NaN or Inf).
    """
    dtype = _dtype(precision)
    return _spectra(*[compute_input(st, dtype) for st in stacks])


def compute_input(W, dtype):
    """``W`` as the spectra of ``dtype`` read it: bfloat16/float16 kept as stored for float32
    spectra (their Gram matrix accumulates in float32, :func:`_gram`), else cast to ``dtype``."""
    W = jnp.asarray(W)
    return W if dtype == jnp.float32 and W.dtype in HALF else W.astype(dtype)


def host_spectra(stacks: Sequence[np.ndarray], *, precision: str = "float32") -> list:
    """:func:`batched_spectra` of arrays already in host memory, computed in place.

    For the CPU outside ``jit``: LAPACK reads the arrays where they are (no copy onto
    a device; a CPU ``jax.Array`` is read through ``np.asarray``). Same results as
    :func:`batched_spectra` on the CPU, as NumPy arrays: nothing is compiled.
    """
    dtype = _dtype(precision)
    asc = _host.eigvals([np.asarray(st, dtype) for st in stacks])
    return [numerical_floor(ev[:, ::-1], max(st.shape[1:]), np) for ev, st in zip(asc, stacks)]


@jax.jit
def _spectra(*stacks):
    return _descending(eigvals_ascending(*stacks), tuple(max(W.shape[1:]) for W in stacks))


@functools.partial(jax.jit, static_argnums=1)
def _descending(ascending, n_rows):
    """Descending, with the numerical floor of a matrix with ``n_rows`` rows applied."""
    return [numerical_floor(ev[:, ::-1], n) for ev, n in zip(ascending, n_rows)]
