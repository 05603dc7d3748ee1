"""The host's worker pool: independent LAPACK jobs spread over the cores.

Every host computation of :mod:`jaxww.linalg` (spectra, eigenpairs, the refresh of the
training transforms) is a list of independent jobs, one per matrix, that release the
GIL; :func:`run` runs them on one thread per core, each with one BLAS thread.
A call stops between two matrices: an interrupt (``KeyboardInterrupt`` in the waiting
thread) cancels the matrices not started and returns once the cores have finished the
ones they hold (no LAPACK call is cut), the pool's threads ended; a thread running its
jobs itself (:func:`on_this_thread`) stops when its ``stop`` event is set.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import os
import threading

import threadpoolctl

_POOL: list = []
_POOL_LOCK = threading.Lock()   # one pooled run at a time: they share the cores and the BLAS setting


def workers() -> int:
    """The number of cores this process may run on (its CPU affinity), at least 1."""
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


def run(jobs, costs=None):
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
        if len(jobs) <= 1 or workers() == 1 or getattr(_LOCAL, "serial", False):
            return [_serial(fn, cost, done) for fn, cost in zip(jobs, costs)]
        if not _POOL:
            _POOL.append(concurrent.futures.ThreadPoolExecutor(workers(), "jaxww-lapack"))
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
