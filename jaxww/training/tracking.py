"""Alpha through training: :func:`jaxww.analyze` every ``k`` steps, without making the
training step wait.

* :class:`Tracker`: ``tracker.update(step, params)`` copies ``params`` to the host
  every ``every`` steps (a device copy of its arrays, one jitted program queued without
  waiting; the worker brings it to the host) and runs ``jaxww.analyze`` on it in one background thread at
  idle priority, its LAPACK work included (one worker, so the results come in step order;
  the eigenvalues run outside the GIL). Each
  call first collects the analyses that finished, in order: they join
  :attr:`Tracker.history` and go to ``writer(step, {name: float})`` (clu
  ``metric_writers``' ``write_scalars``, a TensorBoard or wandb logging function).
  An error of the analysis or of the writer is raised at the next call
  (:class:`TrackingError`, the cause chained), never dropped; what was computed stays.
  An interrupt (or any error) that ends a ``with`` block, or a ``KeyboardInterrupt`` while
  a call waits, stops the worker: the analyses not started are dropped, the running one
  stops between two matrices, the thread or process ends. At the interpreter's exit a
  tracker left open is stopped so.
* :class:`History`: step x layer, as :class:`jaxww.Report` is layer: ``rows``,
  ``details`` (DataFrame: ``step`` then :data:`jaxww.COLUMNS`), ``summary`` (per-step
  means of :data:`jaxww.SUMMARY_METRICS`), ``scalars(step)``, ``plot()``.
* :func:`from_checkpoints`: every step of a finished run's Orbax ``CheckpointManager``
  directory, as the same :class:`History`.
* :func:`plot_history`: alpha by layer over steps.

Flat scalars of a step (``metrics=("alpha", "alpha_weighted")``)::

    {"alpha/<layer name>": alpha_l, "alpha_weighted/<layer name>": alpha_l log10(lambda_max_l),
     "summary/alpha": mean_l alpha_l, "summary/alpha_weighted": ..., ...}

Example:
  >>> with jaxww.Tracker(every=50, writer=writer.write_scalars) as tracker:  # doctest: +SKIP
  ...     for step in range(steps):
  ...         params, opt_state = train_step(params, opt_state, batch)
  ...         tracker.update(step, params)
  >>> tracker.history.details                                              # doctest: +SKIP
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import functools
import multiprocessing
import os
import signal
import sys
import threading
import weakref
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxww.linalg import pool as _pool

from jaxww.linalg import sharded as _mesh
from jaxww.analysis import analyze as _report
from jaxww.report import report as _result
from jaxww.reading import layers as _layers

#: Per-layer metrics handed to the writer by default.
METRICS = ("alpha", "alpha_weighted")

Writer = Callable[[int, Mapping[str, float]], object]


class TrackingError(RuntimeError):
    """The background analysis, or the writer, of a tracked step failed (the cause is
    chained as ``__cause__``); raised at the next :meth:`Tracker.update` or
    :meth:`Tracker.close`."""


@dataclasses.dataclass(frozen=True)
class History:
    """Analyses of several steps: the rows of each step's :class:`jaxww.Report`, with ``step``.

    Attributes:
      rows: one dict per (step, layer), keys ``step`` then the report's columns, in step order.
      summaries: ``{step: Report.summary}`` in step order.
      columns: the columns of ``rows`` (``step``, then :attr:`jaxww.Report.columns`:
        those of the options, such as ``mp_fit=True``, included).
    """

    rows: tuple = ()
    summaries: dict = dataclasses.field(default_factory=dict)
    columns: tuple = ("step",) + _result.COLUMNS

    @property
    def steps(self) -> list:
        """The analysed steps, ascending."""
        return list(self.summaries)

    @property
    def details(self):
        """pandas DataFrame, one row per (step, layer): ``step`` then the report's columns."""
        return _result.dataframe(self.rows, self.columns)

    @property
    def summary(self):
        """pandas DataFrame, one row per step (index ``step``): the layer means of
        :data:`jaxww.SUMMARY_METRICS` (:attr:`jaxww.Report.summary`)."""
        df = _result.dataframe([{"step": s, **m} for s, m in self.summaries.items()],
                               ("step",) + _result.SUMMARY_METRICS)
        return df.set_index("step")

    def scalars(self, step: int, metrics=METRICS) -> dict:
        """The flat scalars of ``step`` (:func:`scalars`)."""
        return scalars([r for r in self.rows if r["step"] == step], self.summaries[step], metrics)

    def plot(self, metric: str = "alpha"):
        """:func:`plot_history` of this history."""
        return plot_history(self, metric)


def scalars(rows, summary: Mapping[str, float], metrics=METRICS) -> dict:
    """Flat ``{"<metric>/<layer name>": value, "summary/<metric>": mean}`` of one step.

    Args:
      rows: the report rows of the step (:attr:`jaxww.Report.rows`).
      summary: its :attr:`jaxww.Report.summary`.
      metrics: the per-layer columns to hand out.

    Returns:
      a dict of Python floats (NaN where a fit failed), per-layer entries in layer order.

    Example:
      >>> jaxww.training.tracking.scalars(report.rows, report.summary)    # doctest: +SKIP
      {'alpha/Dense_0/kernel': 3.1, ..., 'summary/alpha': 3.4, ...}
    """
    out = {f"{m}/{r['name']}": float(r[m]) for m in metrics for r in rows}
    out.update({f"summary/{k}": float(v) for k, v in summary.items()})
    return out


class Tracker:
    """``jaxww.analyze`` of the params every ``every`` steps, in a background thread.

    Args:
      every: analyse the steps with ``step % every == 0``.
      writer: ``writer(step, {name: float})`` called with the flat scalars
        (:func:`scalars`) of each analysed step, in step order, from the thread that
        calls :meth:`update` / :meth:`close` (clu ``writer.write_scalars``,
        ``lambda s, m: wandb.log(dict(m), step=s)``, a TensorBoard ``add_scalar`` loop).
      metrics: the per-layer columns handed to ``writer``.
      background: ``"thread"`` (default: one worker thread; ``devices`` defaults to the
        CPU, so the analysis never queues behind the training on an accelerator) or
        ``"process"`` (one spawned worker process on the CPU, started at the first
        analysis: no GIL shared with the training loop; the copy is pickled to it by the
        pool's feeding thread, which waits for the copy: ``update`` does not).
      nice: the worker's priority. ``None`` (default): Linux ``SCHED_IDLE`` (the
        thread's own policy), so the analysis only takes CPU time the training and
        everything else leave; an int: that niceness added instead; 0 keeps it.
      max_pending: at most this many analyses queued; a tracked step beyond waits for
        the oldest (each queued step holds one copy of the params).
      **analyze_options: keyword arguments of :func:`jaxww.analyze` (``layers=``,
        ``fit=``, ``precision=``...; picklable ones with ``background="process"``).

    ``update`` never waits for an analysis; :meth:`wait` and :meth:`close` (also the end
    of a ``with`` block) do. An error of an analysis or of the writer is raised, as
    :class:`TrackingError` naming the step, by the next ``update``/``wait``/``close``;
    the history keeps every step computed (a step whose writer failed included).

    Example:
      >>> tracker = jaxww.Tracker(every=50, writer=print)        # doctest: +SKIP
      >>> for step in range(1000):                                # doctest: +SKIP
      ...     params, state = train_step(params, state, batch)
      ...     tracker.update(step, params)
      >>> tracker.close(); tracker.history.summary                # doctest: +SKIP
    """

    def __init__(self, every: int = 50, writer: Writer | None = None, *, metrics=METRICS,
                 background: str = "thread", nice: int | None = None, max_pending: int = 4,
                 **analyze_options):
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise ValueError(f"every must be a positive int, got {every!r}")
        if writer is not None and not callable(writer):
            raise TypeError(f"writer must be a callable (step, Mapping[str, float]), got {writer!r}")
        if not isinstance(max_pending, int) or max_pending < 1:
            raise ValueError(f"max_pending must be a positive int, got {max_pending!r}")
        if background not in ("thread", "process"):
            raise ValueError(f"background must be 'thread' or 'process', got {background!r}")
        if background == "thread":
            analyze_options.setdefault("devices", _cpu())
            self._stop = threading.Event()
            self._pool = concurrent.futures.ThreadPoolExecutor(1, "jaxww-tracker", initializer=_start_worker,
                                                               initargs=(nice, True, self._stop))
        else:
            spawn = multiprocessing.get_context("spawn")
            self._stop = spawn.Event()
            self._pool = concurrent.futures.ProcessPoolExecutor(1, mp_context=spawn, initializer=_start_worker,
                                                                initargs=(nice, False, self._stop))
        _stop_at_exit(self)
        self.every, self.writer, self.metrics, self.options = every, writer, tuple(metrics), analyze_options
        self.max_pending = max_pending
        self._pending = collections.deque()    # (step, future), submission order
        self._rows, self._summaries, self._columns = [], {}, History.columns
        self._lock = threading.Lock()
        self._closed = False
        self._last = None
        self._checked = False   # the first update checks what it is given (_check_params)

    def update(self, step: int, params) -> bool:
        """Collect the finished analyses, then submit ``params`` if ``step % every == 0``.

        Args:
          step: the training step (an int; analysed steps must increase).
          params: the pytree to analyse (anything :func:`jaxww.analyze` takes). Its arrays
            are copied (on their device, queued after the step computing them, so
            ``update`` does not wait; donating them to the next step is safe); the worker
            waits for the copies and reads them to the host.

        Returns:
          whether ``step`` was submitted.

        Raises:
          TrackingError: an earlier analysis, or the writer, failed.
          ValueError: ``step`` is tracked and not above the last tracked step.
          TypeError: called under ``jax.jit`` / ``nnx.jit`` (a traced ``step``, or traced
            params at the first call or a tracked step), or given an optimizer or its
            state rather than the params or the model (checked at the first call).
        """
        if self._closed:
            raise RuntimeError("this Tracker is closed")
        try:
            step = int(step)
        except jax.errors.ConcretizationTypeError:
            raise _layers.traced_error("Tracker.update") from None
        if not self._checked:   # the first call, tracked or not: under jit it may be the only one
            _check_params(params)
            self._checked = True
        self._collect(wait=False)
        if step % self.every:
            return False
        if self._last is not None and step <= self._last:
            raise ValueError(f"tracked steps must increase: step {step} after step {self._last}")
        self._last = step
        while len(self._pending) >= self.max_pending:   # bounded memory: wait for the oldest
            self._collect(wait=True, limit=1)
        # Copies on the device: nothing here waits for them. The worker thread reads them to
        # the host; for a worker process, the pool's feeding thread does as it pickles them.
        try:
            copy = _snapshot(params)
        except jax.errors.ConcretizationTypeError:   # traced params after the first call (x.devices())
            raise _layers.traced_error("Tracker.update") from None
        self._pending.append((step, self._pool.submit(_analyze, copy, self.options)))
        return True

    def wait(self) -> History:
        """Wait for every submitted analysis and collect it; the history.

        Raises:
          TrackingError: an analysis or the writer failed (the rest are still collected
            by the next call).
        """
        self._collect(wait=True)
        return self.history

    def close(self) -> History:
        """:meth:`wait`, then stop the background thread; the history."""
        try:
            return self.wait()
        finally:
            if not self._pending:
                self._closed = True
                self._pool.shutdown(wait=True)

    def __enter__(self):
        return self

    def __exit__(self, kind, err, tb):
        if kind is None:
            self.close()
        else:   # an error or an interrupt on its way: stop without masking it
            self._stop_work()

    def _stop_work(self):
        """Drop the analyses not started, stop the running one between two matrices and end
        the worker (thread or process); what was collected stays."""
        self._closed = True
        self._stop.set()
        self._pending.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)

    @property
    def history(self) -> History:
        """A :class:`History` of the steps collected so far (a snapshot)."""
        with self._lock:
            return History(tuple(self._rows), dict(self._summaries), self._columns)

    def _collect(self, wait: bool, limit: int | None = None):
        """Take the analyses done (all, or ``limit``, with ``wait``) in step order; raise
        the first error."""
        taken = 0
        while self._pending and (wait or self._pending[0][1].done()) and taken != limit:
            taken += 1
            step, future = self._pending.popleft()
            try:
                rows, summary, columns = future.result()
            except KeyboardInterrupt:
                self._stop_work()
                raise
            except Exception as err:
                raise TrackingError(f"the analysis of step {step} failed: {type(err).__name__}: {err}") from err
            with self._lock:
                self._rows.extend({"step": step, **r} for r in rows)
                self._summaries[step] = summary
                self._columns = ("step",) + columns
            if self.writer is not None:
                try:
                    self.writer(step, scalars(rows, summary, self.metrics))
                except Exception as err:
                    raise TrackingError(f"the writer failed at step {step}: {type(err).__name__}: {err}") from err


def _check_params(params) -> None:
    """``TypeError`` unless ``params`` can be what :meth:`Tracker.update` analyses: not
    traced (:func:`jaxww.reading.layers.check_concrete`), not an ``nnx.Optimizer`` (flax
    >= 0.11 keeps no model in it) nor an optax state (an object of optax's, or a tuple of
    them: ``optax.chain``'s)."""
    nnx = sys.modules.get("flax.nnx")   # an nnx.Optimizer can only exist once flax.nnx is imported
    if nnx is not None and isinstance(params, nnx.Optimizer) and getattr(params, "model", None) is None:
        raise TypeError("Tracker.update: got an nnx.Optimizer, which holds the optimizer state, not the "
                        "weights: pass the model, tracker.update(step, model)")
    parts = params if type(params) in (tuple, list) else (params,)
    state = next((p for p in parts if type(p).__module__.split(".")[0] == "optax"), None)
    if state is not None:
        raise TypeError(f"Tracker.update: got optax optimizer state ({type(state).__name__}), not the "
                        "weights: pass the params, tracker.update(step, params)")
    _layers.check_concrete(params, "Tracker.update")


def _cpu() -> list:
    """Where tracking analyses by default: one CPU device (never queued behind the
    training on an accelerator; the same numbers live and from checkpoints)."""
    return jax.devices("cpu")[:1]


_WORKER = threading.local()   # the stop event of a tracker's worker, in its thread
_OPEN: weakref.WeakSet = weakref.WeakSet()


def _stop_at_exit(tracker: Tracker) -> None:
    """Stop ``tracker`` at the interpreter's exit if it is still open, before the worker
    threads are joined: ``threading._register_atexit`` (CPython 3.9+, what
    ``concurrent.futures`` itself uses; ``atexit`` runs after the joins, which would
    first run every queued analysis)."""
    _register_stop_open()
    _OPEN.add(tracker)


@functools.cache
def _register_stop_open() -> None:
    threading._register_atexit(_stop_open)


def _stop_open() -> None:
    for tracker in list(_OPEN):
        if not tracker._closed:
            tracker._stop_work()
    _OPEN.clear()


def _start_worker(nice: int, thread: bool, stop) -> None:
    """The worker's start: its stop event (:meth:`Tracker._stop_work` sets it) and its
    priority (:func:`_lower_priority`). A worker process computes on the CPU only and
    ignores SIGINT: a Ctrl-C in a terminal reaches the whole process group, and the
    tracker, in the parent, decides what stops."""
    _WORKER.stop = stop
    if not thread:
        os.environ["JAX_PLATFORMS"] = "cpu"   # before the worker's first JAX computation
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    _lower_priority(nice, thread)


def _lower_priority(nice: int, thread: bool):
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


def _snapshot(params):
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
        for i, y in zip(idx, _copy_arrays([leaves[i] for i in idx])):
            out[i] = y
    return jax.tree_util.tree_unflatten(treedef, out)


@jax.jit
def _copy_arrays(xs: list) -> list:
    return [jnp.copy(x) for x in xs]


def _analyze(params, options) -> tuple:
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


def checkpoint_steps(directory: str | os.PathLike) -> list:
    """The steps of an Orbax ``CheckpointManager`` directory (its digit-named
    subdirectories), ascending; :class:`jaxww.CheckpointError` naming it if it has none."""
    from jaxww.reading.checkpoints import CheckpointError
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise CheckpointError(f"{directory}: not a directory (expected an Orbax CheckpointManager directory)")
    steps = sorted((int(e) for e in os.listdir(directory)
                    if e.isdigit() and os.path.isdir(os.path.join(directory, e))))
    if not steps:
        raise CheckpointError(f"{directory}: no checkpoint steps in it (an Orbax CheckpointManager "
                              "directory holds one digit-named subdirectory per saved step)")
    return steps


def from_checkpoints(directory: str | os.PathLike, *, item: str | None = None,
                     writer: Writer | None = None, metrics=METRICS, **analyze_options) -> History:
    """Every step of a finished run, read from its Orbax ``CheckpointManager`` directory.

    Each step ``directory/<step>`` (or ``directory/<step>/<item>``) is analysed by
    ``jaxww.analyze(path)``, which reads its arrays lazily, one group at a time.

    Args:
      directory: the ``CheckpointManager`` directory.
      item: the item to read in each step (e.g. ``"params"`` of a
        ``Composite(params=..., opt_state=...)``); default the step as
        :func:`jaxww.analyze` reads it (its single item).
      writer: optional ``writer(step, {name: float})`` replaying the run's scalars.
      metrics: the per-layer columns handed to ``writer``.
      **analyze_options: keyword arguments of :func:`jaxww.analyze`; ``devices``
        defaults to the CPU, as the tracker's, so that the two histories are the same
        computation on any machine.

    Returns:
      a :class:`History`, as :attr:`Tracker.history` of the live run.

    Raises:
      jaxww.CheckpointError: ``directory`` holds no steps (or a step cannot be read).

    Example:
      >>> history = jaxww.from_checkpoints("/tmp/run/checkpoints")   # doctest: +SKIP
      >>> history.plot().savefig("alpha.png")                         # doctest: +SKIP
    """
    analyze_options.setdefault("devices", _cpu())
    rows, summaries, columns = [], {}, History.columns
    for step in checkpoint_steps(directory):
        path = os.path.join(os.fspath(directory), str(step), *([item] if item else []))
        report = _report.analyze(path, **analyze_options)
        rows.extend({"step": step, **r} for r in report.rows)
        summaries[step] = report.summary
        columns = ("step",) + tuple(report.columns)
        if writer is not None:
            writer(step, scalars(report.rows, report.summary, metrics))
    return History(tuple(rows), summaries, columns)


def plot_history(history: History, metric: str = "alpha"):
    """Figure of ``metric`` (default alpha) by layer over steps, one line per layer, with
    the over-trained (``alpha < 2``) and under-trained (``alpha > 6``) bands for alpha.

    Args:
      history: a :class:`History` (:attr:`Tracker.history`, :func:`from_checkpoints`).
      metric: a numeric column of :attr:`History.details`.

    Returns:
      the matplotlib Figure (closed, so a notebook shows it once, where it is returned).

    Example:
      >>> jaxww.plot_history(tracker.history).savefig("alpha.png")   # doctest: +SKIP
    """
    from jaxww.fit import metrics as _metrics
    from jaxww.report.plots import _pyplot
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    by_layer = {}
    for r in history.rows:
        by_layer.setdefault((r["layer_id"], r["name"]), []).append((r["step"], r[metric]))
    for (_, name), points in sorted(by_layer.items()):
        ax.plot(*zip(*points), "o-", ms=3, label=name)
    if metric == "alpha":
        ax.axhspan(0, _metrics.OVER_TRAINED, color="tab:red", alpha=0.1)
        ax.axhline(_metrics.UNDER_TRAINED, color="tab:orange", lw=0.8, ls="--")
    ax.set(xlabel="step", ylabel=metric, title=f"{metric} by layer over training")
    if by_layer:
        ax.legend(fontsize=7, loc="best")
    plt.close(fig)
    return fig
