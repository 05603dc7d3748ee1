"""LAPACK without the GIL, with its optimal workspace.

SciPy's f2py wrappers hold the GIL, so threads would run them one after the other, and
their default workspace is the minimal one (an unblocked ``?sytrd``: about 1.7x slower at
n = 640); NumPy's ``eigvalsh`` is GIL-free but its float32 ``?syevd`` measured 1.6-2.6x
slower (SciPy 1.17). So SciPy's Cython LAPACK (``scipy.linalg.cython_lapack``, a public
API) is called through ctypes (:func:`call`), which releases the GIL during the call.
Every routine here works on one matrix; :mod:`jaxww.linalg.pool` spreads them over the cores.
"""

from __future__ import annotations

import ctypes
import functools

import numpy as np
from scipy.linalg import cython_lapack


def gram(V, out=None):
    """``V^T V`` (NumPy's ``A.T @ A`` is BLAS ``?syrk``), into ``out`` if given."""
    return np.matmul(V.T, V, out=out)


def eigvalsh(X, out) -> None:
    """``out[:] =`` ascending eigenvalues of the symmetric ``X`` (``?syevd``, ``jobz='N'``;
    ``X`` overwritten when C-contiguous); ``out`` left as it is where LAPACK fails."""
    X = np.ascontiguousarray(X)
    m, dt = X.shape[0], X.dtype
    if m == 0:
        return
    lwork, liwork = syevd_work(dt, m)
    w = np.empty(m, dt)
    if syevd(X, w, np.empty(lwork, dt), np.empty(liwork, np.intc), lwork, liwork) == 0:
        out[:] = w


def sterf(d, e, out) -> None:
    """``out[:] =`` ascending eigenvalues of the symmetric tridiagonal matrix of diagonal ``d``
    and off-diagonal ``e`` (``?sterf``, the Pal-Walker-Kahan QL/QR, ``O(M^2)``; ``d`` and
    ``e`` are not modified); ``out`` left as it is where LAPACK fails."""
    w, off = np.array(d, order="C"), np.array(e, order="C")
    if w.shape[0] and call(w.dtype, "sterf", w.shape[0], w, off) == 0:
        out[:] = w


@functools.cache
def _routine(dtype, name: str):
    """LAPACK ``?name`` of ``dtype`` (``s`` or ``d``), every argument a pointer."""
    capsule = cython_lapack.__pyx_capi__[("d" if dtype == np.float64 else "s") + name]
    cname, ptr = ctypes.pythonapi.PyCapsule_GetName, ctypes.pythonapi.PyCapsule_GetPointer
    cname.restype, cname.argtypes = ctypes.c_char_p, [ctypes.py_object]
    ptr.restype, ptr.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    return ctypes.CFUNCTYPE(None)(ptr(capsule, cname(capsule)))


def call(dtype, name: str, *args) -> int:
    """``?name(*args, info)``, returns ``info``. Arrays pass by pointer (Fortran order:
    a C-contiguous symmetric matrix is its own transpose), ``bytes`` as a character,
    ints as Fortran integers."""
    args = [a if isinstance(a, np.ndarray) else np.frombuffer(a, np.uint8) if isinstance(a, bytes)
            else np.array([a], np.intc) for a in args] + [np.zeros(1, np.intc)]
    _routine(np.dtype(dtype), name)(*[ctypes.c_void_p(a.ctypes.data) for a in args])
    return int(args[-1][0])


def query(dtype, name: str, *args) -> int:
    """LAPACK's optimal ``lwork`` for ``?name(*args, work, lwork=-1, info)``."""
    work = np.zeros(1, dtype)
    call(dtype, name, *args, work, -1)
    return max(int(work[0]), 1)


def syevd(a, w, work, iwork, lwork: int, liwork: int, jobz: bytes = b"N") -> int:
    """Eigenvalues (``jobz='N'``), or eigenpairs (``'V'``: the vectors overwrite ``a`` in
    Fortran order, so ``a`` holds them as rows), of the C-contiguous symmetric ``a``, into
    ``w``; LAPACK's ``info``."""
    n = a.shape[0]
    return call(a.dtype, "syevd", jobz, b"L", n, a, n, w, work, lwork, iwork, liwork)


@functools.cache
def syevd_work(dtype, m: int, jobz: bytes = b"N") -> tuple:
    """The optimal ``(lwork, liwork)`` of ``?syevd`` of order ``m`` (LAPACK's own query)."""
    work, iwork = np.zeros(1, dtype), np.zeros(1, np.intc)
    syevd(np.zeros((m, m), dtype), np.zeros(m, dtype), work, iwork, -1, -1, jobz)
    least = 2 * m + 1 if jobz == b"N" else 1 + 6 * m + 2 * m * m
    return max(int(work[0]), least), max(int(iwork[0]), 1 if jobz == b"N" else 3 + 5 * m)


@functools.cache
def sytrd_work(dtype, m: int) -> int:
    """The optimal ``lwork`` of ``?sytrd`` of order ``m`` (LAPACK's own query)."""
    return query(dtype, "sytrd", b"L", m, np.zeros((m, m), dtype), m, np.zeros(m, dtype),
                 np.zeros(m, dtype), np.zeros(m, dtype))
