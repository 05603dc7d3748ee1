"""The background side of :class:`jaxww.Tracker`: the copy of the params made on the training
loop's thread (:func:`snapshot`), the worker's start (:func:`start_worker`: its stop event and
its priority) and its work (:func:`analyze_copy`), in a thread or a spawned process.
"""

from __future__ import annotations

import os
import signal
import threading

import jax
import jax.numpy as jnp
import numpy as np

from jaxww.analysis import analyze as _report
from jaxww.linalg import pool as _pool
from jaxww.linalg import sharded as _mesh

_WORKER = threading.local()   # the stop event of a tracker's worker, in its thread


def start_worker(nice: int, thread: bool, stop) -> None:
    """The worker's start: its stop event (the tracker sets it to stop the work) and its
    priority (:func:`lower_priority`). A worker process computes on the CPU only and
    ignores SIGINT: a Ctrl-C in a terminal reaches the whole process group, and the
    tracker, in the parent, decides what stops."""
    _WORKER.stop = stop
    if not thread:
        os.environ["JAX_PLATFORMS"] = "cpu"   # before the worker's first JAX computation
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    lower_priority(nice, thread)


def lower_priority(nice: int, thread: bool):
    """Add ``nice`` to the worker's niceness (a thread's own on Linux, where a thread id is
    a ``PRIO_PROCESS`` target)."""
    who = threading.get_native_id() if thread else 0
    try:
        if nice is None and hasattr(os, "SCHED_IDLE"):   # runs only on a CPU nothing else wants
            os.sched_setscheduler(who, os.SCHED_IDLE, os.sched_param(0))
        elif nice and hasattr(os, "setpriority"):
            os.setpriority(os.PRIO_PROCESS, who, os.getpriority(os.PRIO_PROCESS, who) + nice)
    except OSError:   # pragma: no cover - not permitted: keep the priority
        pass


def snapshot(params):
    """A copy of every array leaf of ``params``, dispatched without waiting: the JAX arrays
    on the same devices are copied by one jitted program (one dispatch on the training
    loop's thread, whatever the number of leaves), queued after the step that computes
    them; the copy stays valid when the training step donates or replaces the original.
    NumPy leaves are copied at once; other leaves are kept."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    out, by_devices = list(leaves), {}
    for i, x in enumerate(leaves):
        if isinstance(x, jax.Array):
            by_devices.setdefault(frozenset(x.devices()), []).append(i)
        elif isinstance(x, np.ndarray):
            out[i] = x.copy()
    for idx in by_devices.values():
        for i, y in zip(idx, copy_arrays([leaves[i] for i in idx])):
            out[i] = y
    return jax.tree_util.tree_unflatten(treedef, out)


@jax.jit
def copy_arrays(xs: list) -> list:
    return [jnp.copy(x) for x in xs]


def analyze_copy(params, options) -> tuple:
    """The background work: ``(report.rows, report.summary, report.columns)`` of
    ``jaxww.analyze`` of the params brought to the host (the wait for the step's copy is
    the worker's), except the arrays placed on several devices (params sharded over a
    mesh): those are analysed where they are, only their eigenvalues leave the devices
    (:func:`jaxww.linalg.sharded.kernel_spectrum`, on the devices and their threads)."""
    params = jax.tree.map(lambda x: x if _mesh.on_mesh(x) else jax.device_get(x), params)
    # the LAPACK work at this worker's (idle) priority, stopped by its tracker
    with _pool.on_this_thread(getattr(_WORKER, "stop", None)):
        report = _report.analyze(params, **options)
    return list(report.rows), report.summary, tuple(report.columns)
