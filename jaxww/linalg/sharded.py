"""Spectra of weight matrices sharded over a mesh of devices, computed where they are.

A matrix ``W`` (``N x M``, ``N >= M``) whose rows are split over ``D`` devices has the
Gram matrix

.. math:: W^T W = \\sum_{d=1}^{D} W_d^T W_d

so each device forms the Gram matrix of its own rows and one all-reduce of ``M x M``
values sums them (:func:`gram`; a matrix split another way, by columns say, is first
moved to rows by an all-to-all of its shards). The eigendecompositions of the Gram
matrices of a group are then split between the devices, each taking its share of the
matrices (:func:`over_batch`); what follows them (the Rayleigh quotients and gradients
of :mod:`jaxww.training.penalties`) runs on the sharded weights again. No device holds more
than its shard of the weights plus Gram matrices: no whole weight matrix is gathered.

Where the eigenvalues are computed: on CPU devices LAPACK on the host, never inside
XLA (:func:`jaxww.linalg.host.eigh`, :func:`jaxww.linalg.callbacks.on_cpu`; XLA:CPU's own
``eigh`` there hangs batched and, unbatched, runs 8 concurrent multi-threaded OpenBLAS
calls on the cores, measured 20-50 s instead of 0.3-1.5 s for four 512 x 512 matrices on
8 host devices); on GPUs ``eigh`` on the devices and the tridiagonal path of
:mod:`jaxww.linalg.spectra` for eigenvalues alone; on TPUs ``eigh`` / ``eigvalsh``.

Which arrays take this path: those placed on a mesh of several devices, sharded or
replicated (their abstract mesh, ``jax.typeof(x).sharding.mesh``, as in a jitted
training step). Arrays that are not (an uncommitted array that ``jit`` replicates
next to a sharded batch) take the one-device path, which on CPU devices every device
then computes (:func:`jaxww.linalg.callbacks.on_cpu`). :func:`jaxww.analyze` computes the
spectra of a ``jax.Array`` placed on several devices here too (:func:`kernel_spectrum`):
only its eigenvalues leave the devices.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from jaxww.linalg import host as _host
from jaxww.linalg.batching import oriented
from jaxww.linalg.spectra import HALF, tridiagonal_eigvals, numerical_floor


def mesh_of(*arrays):
    """The abstract mesh of the first array placed on a mesh of several devices, else None.

    A mesh with manual axes (inside ``shard_map``, where each device holds its own
    block) counts as none.
    """
    for x in arrays:
        mesh = getattr(getattr(jax.typeof(x), "sharding", None), "mesh", None)
        if mesh is not None and mesh.size > 1 and AxisType.Manual not in mesh.axis_types:
            return mesh
    return None


def spread_rows(W, mesh):
    """``W`` ``(..., N, M)`` with its rows split over every device of ``mesh`` (a sharding
    constraint: nothing moves where they already are)."""
    spec = PartitionSpec(*([None] * (W.ndim - 2)), tuple(mesh.axis_names), None)
    return jax.lax.with_sharding_constraint(W, NamedSharding(mesh, spec))


@jax.jit
def gram(W):
    """``W^T W`` of a stack ``(..., N, M)`` (HIGHEST precision; bfloat16/float16 read as stored
    with float32 accumulation, as :func:`jaxww.linalg.spectra.batched_spectra` does); on a mesh
    the sum of the devices' Gram matrices of their rows (module docstring)."""
    mesh = mesh_of(W)
    if mesh is not None:
        W = spread_rows(W, mesh)
    if W.dtype in HALF:
        return jnp.einsum("...nm,...nk->...mk", W, W, preferred_element_type=jnp.float32)
    return jnp.einsum("...nm,...nk->...mk", W, W, precision=jax.lax.Precision.HIGHEST)


@functools.partial(jax.jit, static_argnums=0)
def over_batch(fn, X):
    """``fn(X)`` (a tuple of arrays whose leading axes are those of ``X``), with the
    matrices of the stack ``X`` ``(..., M, M)`` split over the devices of its mesh: each
    device applies ``fn`` to its share (``shard_map``), the stack padded with zero
    matrices to a multiple of the number of devices. Without a mesh, or for a single
    matrix, ``fn(X)`` (every device computes it: padding it to one matrix per device
    would hold ``D`` of them on each, measured ``D + 1`` Gram matrices of temporaries per
    device for one kernel on ``D`` = 2..8 host devices, 2-3 without)."""
    mesh = mesh_of(X)
    lead, core = X.shape[:-2], X.shape[-2:]
    flat = X.reshape((-1,) + core)
    count = flat.shape[0]
    if mesh is None or count == 1:
        return tuple(fn(X))
    flat = jnp.concatenate([flat, jnp.zeros((-count % mesh.size,) + core, X.dtype)])
    spec = PartitionSpec(tuple(mesh.axis_names))
    out = jax.shard_map(lambda x: tuple(fn(x)), mesh=mesh, in_specs=spec, out_specs=spec,
                        check_vma=False)(flat)   # a host callback has no varying-axes type
    return tuple(o[:count].reshape(lead + o.shape[1:]) for o in out)


def eigh(X):
    """``(lambda, V)`` of symmetric matrices ``(..., M, M)`` (:func:`jaxww.linalg.host.eigh`),
    split over the devices of their mesh."""
    return over_batch(_host.eigh, X)


def _eigvalsh(X):
    return (jax.lax.platform_dependent(X, cpu=_host.eigvalsh_cpu, tpu=jnp.linalg.eigvalsh,
                                       default=tridiagonal_eigvals),)


def by_chunks(fn, W):
    """``fn(W)`` of a stack ``(..., N, M)``, ``fn`` mapping ``(B, N, M)`` to ``(B, ...)``; on a
    mesh of ``D`` devices ``D`` matrices at a time (``lax.map``, each chunk recomputed in
    a backward pass), so that a device holds the Gram-sized arrays of ``D`` matrices at
    most, whatever the number of layers. Without a mesh, ``fn(W)``."""
    mesh = mesh_of(W)
    lead, core = W.shape[:-2], W.shape[-2:]
    flat = W.reshape((-1,) + core)
    count = flat.shape[0]
    if mesh is None or count <= mesh.size:
        out = fn(flat)
    else:
        whole = count - count % mesh.size
        out = jax.lax.map(jax.checkpoint(fn), flat[:whole].reshape((-1, mesh.size) + core))
        out = out.reshape((whole,) + out.shape[2:])
        if whole < count:
            out = jnp.concatenate([out, fn(flat[whole:])])
    return out.reshape(lead + out.shape[1:])


def rayleigh(W):
    """Ascending eigenvalues of ``W^T W`` for a stack ``(..., N, M)``, ``N >= M``, of finite
    matrices, as Rayleigh quotients ``||W v_i||^2`` with the eigenvectors ``v_i`` held fixed:
    the value is the eigenvalue, the gradient the exact eigenvalue gradient
    ``2 W v_i v_i^T``. On a mesh the weights stay where they are (module docstring), a
    chunk of matrices at a time (:func:`by_chunks`)."""
    mesh = mesh_of(W)
    if mesh is not None:
        W = spread_rows(W, mesh)
    return by_chunks(_rayleigh, W)


def _rayleigh(W):
    _, V = eigh(gram(jax.lax.stop_gradient(W)))
    Z = jnp.einsum("...nm,...mk->...nk", W, jax.lax.stop_gradient(V), precision=jax.lax.Precision.HIGHEST)
    return jnp.sum(Z * Z, axis=-2)


def eigvals(W):
    """Ascending eigenvalues of the Gram matrix of every matrix of a stack ``(..., N, M)``,
    ``N >= M``, computed on the mesh (module docstring); NaN for a matrix with NaN/Inf."""
    finite = jnp.isfinite(W).all(axis=(-2, -1))
    W = jnp.where(finite[..., None, None], W, jnp.zeros((), W.dtype))
    lam = by_chunks(lambda w: over_batch(_eigvalsh, gram(w))[0], W)
    return jnp.where(finite[..., None], lam, jnp.nan)


def on_mesh(leaf) -> bool:
    """Whether ``leaf`` is a ``jax.Array`` placed on several devices (sharded or replicated)."""
    return isinstance(leaf, jax.Array) and len(leaf.sharding.device_set) > 1


def kernel_spectrum(kernel, leaf, precision: str) -> np.ndarray:
    """The descending spectrum ``(rf, M)`` of ``kernel`` read from ``leaf``, a ``jax.Array``
    on several devices, computed where it is (:func:`eigvals`); the numbers of
    :func:`jaxww.linalg.spectra.host_spectra`, as a host array. Under ``jax.distributed`` every process
    calls it (one program over the devices of every process)."""
    spec = kernel.spec()   # one program per kernel structure
    # Every device's copy is waited for, not only the one read: a device still running its
    # share of a host callback when the interpreter exits aborts the process (PyGILState).
    lam = jax.block_until_ready(_kernel_spectrum(leaf, spec, precision))
    return np.asarray(lam.addressable_data(0))


@functools.partial(jax.jit, static_argnames=("spec", "precision"))
def _kernel_spectrum(leaf, spec, precision):
    W = oriented(spec.matrices(leaf))
    if not (W.dtype in HALF and precision == "float32"):   # half: no float32 copy (gram)
        W = W.astype(precision)
    lam = numerical_floor(eigvals(W)[:, ::-1], W.shape[-2])
    return jax.lax.with_sharding_constraint(lam, NamedSharding(mesh_of(leaf), PartitionSpec()))
