"""Kernels -> spectra a group of leaves at a time, within a memory budget.

The weights are read (from a checkpoint on disk, :class:`jaxww.reading.LazyTensor`, or
from memory), cast to the compute dtype and turned into eigenvalues one group at a
time; a group is as many leaves as the budget holds (by shape across the model
where that compiles fewer programs, :func:`groups`), and is released once its spectra
are taken. The next group is read on a thread while the current one is computed, where
both fit the budget. Only the eigenvalues are kept, so the peak
memory of an analysis is about the budget plus the process itself, whatever the
size of the model. A leaf that alone needs more than the budget is computed alone
(its rows say so).

The memory a leaf needs while its spectra are computed (``c`` the compute dtype's
bytes, ``rf M^2`` the Gram matrices of its kernels):

.. math:: \\text{stored bytes (when read from disk)} + \\text{size} \\cdot c
          \\text{ (when cast)} + \\sum_{\\text{kernels}} rf \\, M^2 c

On an accelerator the groups follow the device's own budget (:func:`device_budget`) and
what a leaf needs there (:func:`device_need`); the host holds one tensor at a time.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import queue
import threading
from typing import Sequence

import jax
import numpy as np

from jaxww.linalg import spectra as _spectra
from jaxww.reading.checkpoints import LazyTensor
from jaxww.analysis.progress import human_bytes
from jaxww.analysis.specs import static_specs, used_leaves
from jaxww.linalg.placement import check_precision, cost, on_device

#: Groups in flight on an accelerator at most: before dispatching group ``i + IN_FLIGHT``
#: the host waits for group ``i``'s spectra (on the host a group is done when computed).
IN_FLIGHT = 2
#: A group may need ``1 / DEVICE_SHARE`` of a device's free memory: the ``IN_FLIGHT`` groups
#: in flight and the next one being put on the device hold at most 3/4 of it, the rest is
#: left to XLA (its workspace, fragmentation).
DEVICE_SHARE = IN_FLIGHT + 2


def device_budget(device, budget: int) -> int:
    """The bytes a group may need where it is computed: ``budget`` (the host's) on the host
    path; on an accelerator :data:`DEVICE_SHARE`'s share of the device's own free memory
    (``memory_stats()``: ``bytes_limit - bytes_in_use``), whatever the host budget (the host
    holds one tensor of a group at a time there, :class:`_Reader`); ``budget`` where the
    device reports no statistics (a CPU device on the device path)."""
    if not on_device(device):
        return budget
    try:
        stats = device.memory_stats() or {}
    except Exception:   # a backend without memory statistics
        stats = {}
    if "bytes_limit" not in stats:
        return budget
    return max(1 << 20, (stats["bytes_limit"] - stats.get("bytes_in_use", 0)) // DEVICE_SHARE)


def stored_bytes(leaf) -> int:
    """Bytes of a leaf as stored (what reading it costs)."""
    return int(np.prod(leaf.shape)) * np.dtype(leaf.dtype).itemsize


def need(leaf, kerns, precision: str) -> int:
    """Bytes a leaf needs while its kernels' spectra are computed on the host (module docstring)."""
    c = np.dtype(precision).itemsize
    size = int(np.prod(leaf.shape))
    read = stored_bytes(leaf) if isinstance(leaf, LazyTensor) else 0
    cast = size * c if np.dtype(leaf.dtype) != np.dtype(precision) else 0
    return read + cast + sum(k.rf * k.M ** 2 * c for k in kerns)


def device_need(leaf, kerns, precision: str) -> int:
    """Bytes a leaf needs on an accelerator while its kernels' spectra are computed: its copy
    as stored, its cast to ``precision`` (none for bfloat16/float16 and float32 spectra,
    :func:`jaxww.linalg.spectra.compute_input`) and three Gram matrices per kernel at its
    bucket size (the Gram, its padded copy, the tridiagonal reduction's; XLA's
    ``memory_analysis`` of the program measured 2.9-3.0 of them, plus a weight-sized copy
    where the layout changes, which the cast term covers)."""
    c = np.dtype(precision).itemsize
    size, dtype = int(np.prod(leaf.shape)), np.dtype(leaf.dtype)
    kept = dtype == np.dtype(precision) or (precision == "float32" and dtype in _spectra.HALF)
    grams = sum(3 * k.rf * _spectra.bucket(k.M) ** 2 * c for k in kerns)
    return stored_bytes(leaf) + (0 if kept else size * c) + grams


def groups(kerns, leaves, budget: int, precision: str, need_of=need) -> list[tuple[list[int], int]]:
    """Kernel indices in groups whose leaves need at most ``budget`` together (all kernels
    of a leaf in the same group), with the bytes each group needs; a leaf needing more
    than the budget is a group of its own.

    Shaped for an accelerator, which compiles one program per group structure (the
    signatures of its leaves, :func:`_signature`): of two plans, the one with fewer
    structures (then fewer groups). The first takes the leaves in model order; the
    second by shape across the whole model (same shape, dtype and reading together, in
    order of first appearance), a shape whose leaves fill several groups getting groups
    of its own, all of one size where a divisor of its count holds at least half of what
    fits (:func:`_run_size`). The spectra do not depend on the plan. ``need_of``: a leaf's
    bytes, :func:`need` (host) or :func:`device_need`.
    """
    by_leaf: dict[int, list[int]] = {}
    for i, k in enumerate(kerns):
        by_leaf.setdefault(k.leaf, []).append(i)
    sig = {leaf: _signature(leaves[leaf], [kerns[i] for i in m]) for leaf, m in by_leaf.items()}
    n = {leaf: need_of(leaves[leaf], [kerns[i] for i in m], precision) for leaf, m in by_leaf.items()}
    by_shape: dict[tuple, list[int]] = {}
    for leaf in by_leaf:
        by_shape.setdefault(sig[leaf], []).append(leaf)
    runs = [(same, _run_size(len(same), budget // n[same[0]]) if n[same[0]] * len(same) > budget else 0)
            for same in by_shape.values()]
    plans = [_pack([(list(by_leaf), 0)], n, budget), _pack(runs, n, budget)]
    best = min(plans, key=lambda p: (len({tuple(sig[leaf] for leaf in g) for g in p}), len(p)))
    return [([i for leaf in g for i in by_leaf[leaf]], sum(n[leaf] for leaf in g)) for g in best]


def _pack(runs, need_of: dict, budget: int) -> list[list[int]]:
    """Leaves in groups of at most ``budget`` bytes, in order; ``runs``: ``(leaves, size)``,
    a run of ``size`` > 0 cut into groups of its own of ``size`` leaves (0: packed with
    its neighbours)."""
    out: list[list[int]] = []
    current, used = [], 0
    for same, size in runs:
        for j, leaf in enumerate(same):
            if current and (used + need_of[leaf] > budget or (size and j % size == 0)):
                out.append(current)
                current, used = [], 0
            current, used = current + [leaf], used + need_of[leaf]
        if size:
            out.append(current)
            current, used = [], 0
    if current:
        out.append(current)
    return out


def _run_size(count: int, fits: int) -> int:
    """Leaves per group for ``count`` leaves of one shape, ``fits`` of which fit the budget:
    the largest divisor of ``count`` in ``[fits / 2, fits]`` (every group the same program),
    else ``fits`` (and a smaller last group); at least 1."""
    fits = max(fits, 1)
    return next((d for d in range(fits, (fits + 1) // 2 - 1, -1) if d and count % d == 0), fits)


def _signature(leaf, kerns) -> tuple:
    """What the program of a leaf depends on: its shape, dtype and kernels less their names."""
    return (tuple(leaf.shape), str(np.dtype(leaf.dtype)),
            static_specs(kerns))


def read(leaf):
    """The leaf's value in memory (a :class:`LazyTensor` is read from disk)."""
    return leaf.read() if isinstance(leaf, LazyTensor) else leaf


def compute(kerns, leaves, device, precision: str, budget: int, tracker) -> tuple[list, dict]:
    """Descending spectra ``(rf, M)`` of every kernel (arrays on ``device``, kernel order), a group
    at a time (:func:`groups`), and ``{kernel index: (bytes needed, budget, "memory budget" or
    "device budget")}`` of the kernels computed alone above the budget they were planned in.

    The next group's tensors are read from disk on a thread while the current one is
    computed, where both fit the budget (:class:`_Reader`); on an accelerator at most
    :data:`IN_FLIGHT` groups are in flight, and a group counts as done for ``tracker``
    when its spectra are ready, not when it is dispatched.

    Args:
      kerns, leaves: from :func:`jaxww.reading.read_layers`.
      device: a CPU device computes with LAPACK on the host, others with
        :func:`jaxww.batched_spectra` on the device (:func:`jaxww.linalg.placement.on_device`).
      precision: ``"float32"`` or ``"float64"``.
      budget: bytes (:func:`jaxww.analysis.budget.parse_budget`).
      tracker: a :class:`jaxww.analysis.progress.Progress` in its ``"spectra"`` phase.

    Raises:
      MemoryError: the host or the device ran out of memory, when the group was dispatched
        or while it ran; the message names the layers, the bytes they need and the budget.
      ValueError: ``precision="float64"`` on a TPU (:func:`jaxww.linalg.placement.check_precision`).
    """
    check_precision(device, precision)
    evals: list = [None] * len(kerns)
    needs: dict[int, tuple[int, int, str]] = {}
    host_budget, budget = budget, device_budget(device, budget)
    label = "memory budget" if budget == host_budget else "device budget"
    plan = groups(kerns, leaves, budget, precision, device_need if on_device(device) else need)
    used = [used_leaves([kerns[i] for i in members]) for members, _ in plan]
    pending: collections.deque = collections.deque()
    put = functools.partial(jax.device_put, device=device) if on_device(device) else None
    reader = _Reader(leaves, used, _ahead(plan, used, leaves, budget, on_device(device)), put)
    try:
        for g, (members, n) in enumerate(plan):
            if n > budget:
                needs.update({i: (n, budget, label) for i in members})
            sub = [kerns[i] for i in members]
            tracker.reading()
            values = reader.take(g)
            with _memory(sub, n, budget, device):
                out = _dispatch(values, used[g], sub, device, precision)
            del values
            reader.release(g)
            pending.append((members, sub, n, out))
            while len(pending) > (IN_FLIGHT - 1 if on_device(device) else 0):
                _finish(pending.popleft(), evals, leaves, budget, device, tracker)
        while pending:
            _finish(pending.popleft(), evals, leaves, budget, device, tracker)
    finally:
        reader.close()
    return evals, needs


def _dispatch(values: dict, used: list[int], sub, device, precision: str):
    """A group's spectra: computed on the host, or dispatched to the device (asynchronous)."""
    if not on_device(device):
        return _spectra.host_spectra([k.matrices(np.asarray(values[k.leaf])) for k in sub], precision=precision)
    specs = static_specs(sub, used)
    return _device_spectra(jax.device_put(tuple(values[j] for j in used), device), specs, precision)


def _finish(group, evals: list, leaves, budget: int, device, tracker) -> None:
    """Wait for a dispatched group's spectra (a device's out of memory surfaces here when
    it happened while the group ran), store them and count the group done."""
    members, sub, n, out = group
    with _memory(sub, n, budget, device):
        out = _ready(out)
    for i, ev in zip(members, out):
        evals[i] = ev
    used = {k.leaf for k in sub}
    tracker.advance(len(members), sum(stored_bytes(leaves[j]) for j in used), sum(map(cost, sub)))


def _ready(out):
    """``out`` once computed (:func:`jax.block_until_ready`)."""
    return jax.block_until_ready(out)


def _ahead(plan, used, leaves, budget: int, device: bool) -> list[bool]:
    """Per group, whether the next group's tensors may be read while it is computed: on the
    host, what it needs and what the next one reads fit the budget together; on a device
    always (each tensor is put on the device as it is read, and :data:`DEVICE_SHARE` leaves
    room for the next group beside those in flight)."""
    if device:
        return [True] * (len(plan) - 1) + [False]
    read = [sum(stored_bytes(leaves[j]) for j in u if isinstance(leaves[j], LazyTensor)) for u in used]
    return [n + r <= budget for (_, n), r in zip(plan, read[1:])] + [False]


class _Reader:
    """Reads each group's leaves in order on a daemon thread, at most one group ahead of the
    group being computed: group ``g + 1`` once group ``g`` is taken where ``ahead[g]``, else
    once group ``g`` is released. ``put``: applied to each tensor as it is read (``device_put``
    on the device path, so that the host holds one tensor of a group at a time), or None.
    An error of a read is raised by :meth:`take`."""

    def __init__(self, leaves, used: list[list[int]], ahead: list[bool], put=None):
        self._ahead, self._granted, self._stop = ahead, 0, threading.Event()
        self._put = put or (lambda value: value)
        self._permits, self._done = threading.Semaphore(1), queue.Queue()
        self._thread = threading.Thread(target=self._run, args=(leaves, used), daemon=True, name="jaxww-reader")
        self._thread.start()

    def _run(self, leaves, used) -> None:
        for u in used:
            while not self._permits.acquire(timeout=0.1):
                if self._stop.is_set():
                    return
            if self._stop.is_set():
                return
            try:
                self._done.put(({j: self._put(read(leaves[j])) for j in u}, None))
            except BaseException as err:   # raised where the group is taken
                self._done.put((None, err))
                return

    def take(self, g: int) -> dict:
        """Group ``g``'s ``{leaf: value}`` (groups are taken in order)."""
        values, err = self._done.get()
        if err is not None:
            raise err
        if self._ahead[g]:
            self._grant(g + 1)
        return values

    def release(self, g: int) -> None:
        """Group ``g``'s values are no longer held: the next group may be read."""
        self._grant(g + 1)

    def _grant(self, g: int) -> None:
        if self._granted < g:
            self._granted = g
            self._permits.release()

    def close(self) -> None:
        """Stop reading and join the thread (a read under way is finished first)."""
        self._stop.set()
        self._thread.join()


@contextlib.contextmanager
def _memory(sub: Sequence, n: int, budget: int, device, fitting: bool = False):
    """Out of host or device memory (``MemoryError``, ``RESOURCE_EXHAUSTED``) in the block is
    the :class:`MemoryError` naming the layers ``sub``, the bytes ``n`` and the budget
    (:func:`_out_of_memory`)."""
    try:
        yield
    except MemoryError as err:
        raise _out_of_memory(sub, n, budget, device, fitting) from err
    except jax.errors.JaxRuntimeError as err:
        if "RESOURCE_EXHAUSTED" not in str(err):
            raise
        raise _out_of_memory(sub, n, budget, device, fitting) from err


def fitting(kerns, devices, budget: int, precision: str):
    """Decorates the fit stage of ``kerns`` on ``devices``: an out of memory in it, when a
    group is dispatched or when its results are waited for, is the :class:`MemoryError`
    naming the layers, the bytes of their spectra and the device's budget
    (:func:`device_budget`), not a raw ``JaxRuntimeError``.

    Example:
      ``results = fitting(kerns, devices, budget, "float32")(fit_stage)(kerns, evals, ...)``
    """
    device = next((d for d in devices if on_device(d)), devices[0])
    nbytes = sum(k.num_evals for k in kerns) * np.dtype(precision).itemsize

    def wrap(fn):
        @functools.wraps(fn)
        def run(*args, **kwargs):
            with _memory(kerns, nbytes, device_budget(device, budget), device, fitting=True):
                return fn(*args, **kwargs)
        return run
    return wrap


@functools.partial(jax.jit, static_argnames=("specs", "precision"))
def _device_spectra(values, specs, precision):
    """:func:`jaxww.batched_spectra` of the kernels ``specs`` (named "" and numbering their
    leaves in ``values``, so that groups of the same structure share one program)."""
    return _spectra.batched_spectra([k.matrices(values[k.leaf]) for k in specs], precision=precision)


def _out_of_memory(sub: Sequence, n: int, budget: int, device, fitting: bool = False) -> MemoryError:
    names = ", ".join(k.name for k in sub[:3]) + (f" and {len(sub) - 3} more" if len(sub) > 3 else "")
    where = f"device {device}" if on_device(device) else "host"
    if fitting:
        return MemoryError(f"out of {where} memory fitting the spectra of {names} (their spectra: "
                           f"{human_bytes(n)}; memory budget {human_bytes(budget)}); analyse fewer "
                           "layers (layers=) or on the CPU (devices=jax.devices('cpu'))")
    return MemoryError(f"out of {where} memory computing the spectra of {names}: they need about "
                       f"{human_bytes(n)} (memory budget {human_bytes(budget)}); pass a smaller "
                       "memory_budget= (command line: --memory-budget) or fewer layers (layers=)")
