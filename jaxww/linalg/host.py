"""Exact eigenvalues and eigenpairs of ``W^T W`` by LAPACK on the host.

* :func:`eigvals`: the CPU path of :mod:`jaxww.linalg.spectra`, every eigenvalue and no
  vector (``?syrk``, ``?syevd`` with ``jobz='N'``), called without the GIL: the
  matrices spread over the cores, one BLAS thread each.

The training transforms need more at a refresh: every eigenvalue (for the tail fit)
but only the eigenvectors of the tail (``d alpha / d lambda_j`` is zero outside it),
so they pay for the eigenvalues-only solver plus thin work proportional to the tail:

* :func:`eigvals_factored`: ``X = W^T W`` (BLAS ``?syrk``), ``X = Q T Q^T`` (``?sytrd``,
  the ``4/3 M^3`` step that ``?syevd`` with ``jobz='N'`` also takes), all eigenvalues
  of ``T`` (``?sterf``);
* :func:`tail_gradient`, once the tail is known: its ``n_t`` eigenvectors of ``T`` by
  inverse iteration at the known eigenvalues (``?stein``, ``O(M n_t)``), ``V = Q Z``
  (``?ormtr`` on the kept reflectors, ``2 M^2 n_t``) and ``2 (W V) diag(g) V^T`` (two
  ``?gemm``, ``4 N M n_t``).

All LAPACK routines are SciPy's Cython LAPACK called through ctypes, without the GIL
(:func:`_lapack`), so each host call spreads its matrices over the cores (:func:`_run`).
A call stops between two matrices: an interrupt (``KeyboardInterrupt`` in the waiting
thread) cancels the matrices not started and returns once the cores have finished the
ones they hold (no LAPACK call is cut), the pool's threads ended; a thread running its
jobs itself (:func:`on_this_thread`) stops when its ``stop`` event is set.
A host call inside a traced program is :func:`host_call`: on the CPU the callback reads
and writes XLA's own buffers (no JAX inside it, so it cannot stall the devices of a
multi-device program); elsewhere ``jax.pure_callback``, where float64 arrays cross as
uint32 words (they would be cast to float32 when x64 is enabled only by a context
manager: the callback runs on another thread).

For the regularisers, :func:`eigh` (eigenpairs of symmetric matrices, LAPACK ``?syevd``
on the host on the CPU, ``jnp.linalg.eigh`` elsewhere).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import functools
import os
import threading

import jax
import jax.numpy as jnp
import numpy as np
import threadpoolctl
from jax.experimental.buffer_callback import buffer_callback
from scipy.linalg import cython_lapack


_POOL: list = []
_POOL_LOCK = threading.Lock()   # one pooled run at a time: they share the cores and the BLAS setting
_GRAM_ROWS = 8192               # Gram matrices of 2x more rows are split in chunks ...
_TALL_CHUNKS = 8                # ... of at least this many rows, at most this many chunks


def _workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@functools.cache
def _blas_threads():
    return threadpoolctl.ThreadpoolController()


_LOCAL = threading.local()


@contextlib.contextmanager
def on_this_thread(stop=None):
    """Within the block, this thread runs its own host jobs one after the other, and
    stops between two of them once ``stop`` is set.

    A background analysis at idle priority (:class:`jaxww.Tracker`) uses it so that its
    LAPACK work keeps that priority: the pool's threads run at normal priority and would
    take the cores from the training it must not slow down. The results are the same
    (one BLAS thread per job either way).

    Args:
      stop: an event (``threading.Event``, ``multiprocessing.Event``) or None; once set,
        the next job raises ``concurrent.futures.CancelledError`` instead of running.
    """
    before = getattr(_LOCAL, "serial", False), getattr(_LOCAL, "stop", None)
    _LOCAL.serial, _LOCAL.stop = True, stop
    try:
        yield
    finally:
        _LOCAL.serial, _LOCAL.stop = before


@contextlib.contextmanager
def reporting(done):
    """Within the block, this thread's host calls report their work: ``done(0.0)`` as a
    call starts, then ``done(work)`` as each matrix of work ``(n + m) m^2`` (``n x m``,
    ``n >= m``) is done, from this thread (:class:`jaxww.analysis.progress.Tracker` counts it)."""
    before, _LOCAL.done = getattr(_LOCAL, "done", None), done
    try:
        yield
    finally:
        _LOCAL.done = before


@contextlib.contextmanager
def pool_ended_on_error():
    """An exception (an interrupt) leaving the block ends the pool's threads, idle ones
    included, before it propagates: nothing of jaxww is left running."""
    try:
        yield
    except BaseException:
        with _POOL_LOCK:
            while _POOL:
                _POOL.pop().shutdown(wait=True, cancel_futures=True)
        raise


def _run(jobs, costs=None):
    """Run independent jobs (callables that release the GIL) on one thread per core,
    each with one BLAS thread, largest first (the jobs come sorted); in the calling
    thread under :func:`on_this_thread`. ``costs``: the work of each job, reported as
    each is done (:func:`reporting`).

    One BLAS thread per job keeps every result independent of the number of cores and
    of what else runs in the same call (threaded BLAS rounds differently). The device
    waits for the host call, so the cores are otherwise idle.

    An exception in the waiting thread (an interrupt) or in a job cancels the jobs not
    started, waits for the running ones and ends the pool's threads before it propagates.
    """
    done = getattr(_LOCAL, "done", None) or (lambda work: None)
    costs = [0.0] * len(jobs) if costs is None else costs
    done(0.0)
    with _POOL_LOCK, _blas_threads().limit(limits=1, user_api="blas"):
        if len(jobs) <= 1 or _workers() == 1 or getattr(_LOCAL, "serial", False):
            return [_serial(fn, cost, done) for fn, cost in zip(jobs, costs)]
        if not _POOL:
            _POOL.append(concurrent.futures.ThreadPoolExecutor(_workers(), "jaxww-lapack"))
        futures = [_POOL[0].submit(fn) for fn in jobs]
        try:
            work = dict(zip(futures, costs))
            for f in concurrent.futures.as_completed(futures):
                f.result()
                done(work[f])
            return [f.result() for f in futures]
        except BaseException:
            _POOL.pop().shutdown(wait=True, cancel_futures=True)
            raise


def _serial(fn, cost, done):
    """One job in the calling thread, unless its :func:`on_this_thread` event is set."""
    stop = getattr(_LOCAL, "stop", None)
    if stop is not None and stop.is_set():
        raise concurrent.futures.CancelledError("stopped between two matrices")
    out = fn()
    done(cost)
    return out


def _gram(V, out=None):
    """``V^T V`` (NumPy's ``A.T @ A`` is BLAS ``?syrk``), into ``out`` if given."""
    return np.matmul(V.T, V, out=out)


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


# --- LAPACK without the GIL (SciPy 1.17). SciPy's f2py wrappers hold the GIL, so threads
# would run them one after the other, and their default workspace is the minimal one
# (an unblocked ?sytrd: about 1.7x slower at n = 640); NumPy's eigvalsh is GIL-free but
# its float32 ?syevd measured 1.6-2.6x slower. So SciPy's Cython LAPACK
# (scipy.linalg.cython_lapack, a public API) is called through ctypes, which releases
# the GIL during the call, with LAPACK's optimal workspace.
@functools.cache
def _routine(dtype, name: str):
    """LAPACK ``?name`` of ``dtype`` (``s`` or ``d``), every argument a pointer."""
    capsule = cython_lapack.__pyx_capi__[("d" if dtype == np.float64 else "s") + name]
    cname, ptr = ctypes.pythonapi.PyCapsule_GetName, ctypes.pythonapi.PyCapsule_GetPointer
    cname.restype, cname.argtypes = ctypes.c_char_p, [ctypes.py_object]
    ptr.restype, ptr.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    return ctypes.CFUNCTYPE(None)(ptr(capsule, cname(capsule)))


def _lapack(dtype, name: str, *args) -> int:
    """``?name(*args, info)``, returns ``info``. Arrays pass by pointer (Fortran order:
    a C-contiguous symmetric matrix is its own transpose), ``bytes`` as a character,
    ints as Fortran integers."""
    args = [a if isinstance(a, np.ndarray) else np.frombuffer(a, np.uint8) if isinstance(a, bytes)
            else np.array([a], np.intc) for a in args] + [np.zeros(1, np.intc)]
    _routine(np.dtype(dtype), name)(*[ctypes.c_void_p(a.ctypes.data) for a in args])
    return int(args[-1][0])


def _query(dtype, name: str, *args) -> int:
    """LAPACK's optimal ``lwork`` for ``?name(*args, work, lwork=-1, info)``."""
    work = np.zeros(1, dtype)
    _lapack(dtype, name, *args, work, -1)
    return max(int(work[0]), 1)


def _call_syevd(a, w, work, iwork, lwork: int, liwork: int, jobz: bytes = b"N") -> int:
    """Eigenvalues (``jobz='N'``), or eigenpairs (``'V'``: the vectors overwrite ``a`` in
    Fortran order, so ``a`` holds them as rows), of the C-contiguous symmetric ``a``, into
    ``w``; LAPACK's ``info``."""
    n = a.shape[0]
    return _lapack(a.dtype, "syevd", jobz, b"L", n, a, n, w, work, lwork, iwork, liwork)


@functools.cache
def _syevd_work(dtype, m: int, jobz: bytes = b"N") -> tuple:
    """The optimal ``(lwork, liwork)`` of ``?syevd`` of order ``m`` (LAPACK's own query)."""
    work, iwork = np.zeros(1, dtype), np.zeros(1, np.intc)
    _call_syevd(np.zeros((m, m), dtype), np.zeros(m, dtype), work, iwork, -1, -1, jobz)
    least = 2 * m + 1 if jobz == b"N" else 1 + 6 * m + 2 * m * m
    return max(int(work[0]), least), max(int(iwork[0]), 1 if jobz == b"N" else 3 + 5 * m)


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
    ctypes, see :func:`_lapack`). Both release the GIL, so the matrices spread over the
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
            _run([functools.partial(_eigvalsh, _tall_gram(V), out)], [_work(V)])
    short = [(V, out) for V, out in mats if V.shape[0] < 2 * _GRAM_ROWS]
    _run([functools.partial(lambda V, out: _eigvalsh(_gram(V), out), V, out) for V, out in short],
         [_work(V) for V, _ in short])
    return outs


def _work(V) -> float:
    """The work of the spectrum of ``V`` (``n x m``, ``n >= m``): ``(n + m) m^2``, as
    :func:`jaxww.linalg.placement.cost` counts a layer."""
    n, m = V.shape
    return float((n + m) * m * m)



# --- host calls inside a traced program
def host_call(fn, shapes, *args, vmap_method=None) -> tuple:
    """``fn(*args)`` on the host, inside a traced program: NumPy arrays in, NumPy arrays of
    ``shapes`` (``jax.ShapeDtypeStruct``) out, as a tuple of arrays.

    On the CPU :func:`on_cpu`; elsewhere ``jax.pure_callback`` (the operands and results
    copied between the device and the host; float64 crosses as uint32 words, see
    :func:`words`). ``vmap_method`` as in ``jax.pure_callback``.
    """
    return jax.lax.platform_dependent(*args, cpu=lambda *a: on_cpu(fn, shapes, *a, vmap_method=vmap_method),
                                      default=lambda *a: _pure_call(fn, shapes, a, vmap_method))


def on_cpu(fn, shapes, *args, vmap_method=None) -> tuple:
    """:func:`host_call` on a CPU device: ``fn`` reads the operands' buffers in place
    (read-only NumPy views), its results are copied into XLA's, and nothing inside the
    callback calls JAX (``jax.experimental.buffer_callback``).

    Workaround (jax 0.10.2): ``jax.pure_callback`` ``device_put``s its operands onto a
    CPU device inside the callback, and that copy waits for a thread of the CPU client's
    pool. In a program on several CPU devices every thread of the pool (one per device
    where there are more devices than cores) runs a device, the other devices waiting
    in the rendezvous of a collective for the one in the callback, so the copy never
    runs: the program hangs, then aborts ("Expected 8 threads to join the rendezvous,
    but only 7 of them arrived"). In such a program a callback whose operands are
    replicated runs on every device (each computes the same); :mod:`jaxww.linalg.sharded` splits
    the work of params sharded over a mesh between the devices instead.
    """
    def callback(ctx, outs, *ins):
        views = []
        for b in ins:
            view = np.asarray(b)
            view.flags.writeable = False
            views.append(view)
        for out, r in zip(outs, fn(*views)):
            np.asarray(out)[...] = r

    return tuple(buffer_callback(callback, tuple(shapes), vmap_method=vmap_method)(*args))


def _pure_call(fn, shapes, args, vmap_method) -> tuple:
    """:func:`host_call` through ``jax.pure_callback``, float64 as words both ways."""
    dtypes = [np.dtype(a.dtype) for a in args]

    def host(*xs):
        out = fn(*[np_unwords(x, dt) for x, dt in zip(xs, dtypes)])
        return tuple(np_words(np.ascontiguousarray(r)) for r in out)

    out = jax.pure_callback(host, tuple(shape_struct(s.shape, s.dtype) for s in shapes),
                            *[words(a) for a in args], vmap_method=vmap_method)
    return tuple(unwords(o, s.dtype) for o, s in zip(out, shapes))


# float64 across jax.pure_callback: when x64 is on only through a context manager, the
# callback (another thread) would see float64 arrays cast to float32, so they cross as
# pairs of uint32 words. ``words``/``unwords`` on the JAX side, ``np_*`` on the host side.
def words(x):
    """A float64 JAX array as ``(..., 2)`` uint32 words; other dtypes unchanged."""
    return jax.lax.bitcast_convert_type(x, jnp.uint32) if x.dtype == jnp.float64 else x


def unwords(x, dtype):
    """The inverse of :func:`words` for an array of ``dtype``."""
    return jax.lax.bitcast_convert_type(x, dtype) if dtype == jnp.float64 else x


def np_unwords(x, dtype):
    """On the host: :func:`words` back to a float64 NumPy array (other dtypes unchanged)."""
    x = np.asarray(x)
    return x.view(np.float64)[..., 0] if dtype == np.float64 else x


def np_words(x):
    """On the host: a float64 NumPy array as uint32 words (other dtypes unchanged)."""
    return x.view(np.uint32).reshape(x.shape + (2,)) if x.dtype == np.float64 else x


def shape_struct(shape, dtype):
    """The ``jax.ShapeDtypeStruct`` a callback result of ``shape`` and ``dtype`` crosses as."""
    if dtype == jnp.float64:
        return jax.ShapeDtypeStruct(tuple(shape) + (2,), jnp.uint32)
    return jax.ShapeDtypeStruct(tuple(shape), dtype)


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
    on the pool (:func:`_run`)."""
    M = X.shape[-1]
    flat = X.reshape(-1, M, M)
    lam = np.full(flat.shape[:2], np.nan, X.dtype)
    V = np.full(flat.shape, np.nan, X.dtype) if vectors else None
    _run([functools.partial(_symmetric_one, flat[b], lam[b], V if V is None else V[b])
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
    lwork, liwork = _syevd_work(dt, M, jobz)
    if _call_syevd(a, w, np.empty(lwork, dt), np.empty(liwork, np.intc), lwork, liwork, jobz) == 0:
        lam[:] = w
        if V is not None:
            V[:] = a.T   # Fortran-order vectors: the rows of ``a``


def _factor(W, lam, c, tau, d, e):
    """``W^T W = Q T Q^T`` (``?syrk``, ``?sytrd``) into ``c`` (the reflectors), ``tau``,
    ``d``, ``e``, and the eigenvalues of ``T`` (``?sterf``) into ``lam``, ascending; on a
    LAPACK failure ``lam`` is left NaN."""
    M, dt = W.shape[1], W.dtype
    _gram(W, out=c)
    lwork = _sytrd_work(dt, M)
    if _lapack(dt, "sytrd", b"L", M, c, M, d, e, tau, np.empty(lwork, dt), lwork):
        return
    w, off = d.copy(), e.copy()
    if _lapack(dt, "sterf", M, w, off) == 0:
        lam[...] = w


@functools.cache
def _sytrd_work(dtype, m: int) -> int:
    return _query(dtype, "sytrd", b"L", m, np.zeros((m, m), dtype), m, np.zeros(m, dtype),
                  np.zeros(m, dtype), np.zeros(m, dtype))


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
    _run([fn for _, fn in sorted(jobs, key=lambda j: -j[0])])
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
    lwork = _query(dt, "ormtr", b"L", b"L", b"N", M, k, c, M, tau, Z, M)
    if _lapack(dt, "ormtr", b"L", b"L", b"N", M, k, c, M, tau, Z, M, np.empty(lwork, dt), lwork) == 0:
        np.matmul((W @ Z) * (2 * g[lo:hi + 1]), Z.T, out=out)


def _tridiagonal_vectors(d, e, lam, lo, hi):
    """Eigenvectors ``lo..hi`` (Fortran order) of the tridiagonal ``(d, e)`` whose eigenvalues
    ``lam`` are known: inverse iteration (``?stein``, ``O(M)`` per vector); ``?stemr`` if it
    does not converge."""
    M, k, dt = d.shape[0], hi - lo + 1, d.dtype
    Z = np.zeros((M, k), dt, order="F")
    info = _lapack(dt, "stein", M, d, e, k, np.ascontiguousarray(lam[lo:hi + 1]), np.ones(M, np.intc),
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
    _run([fn for _, fn in sorted(jobs, key=lambda j: -j[0])])
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
