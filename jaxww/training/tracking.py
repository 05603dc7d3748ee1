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
* :class:`History` (step x layer, as :class:`jaxww.Report` is layer), :func:`from_checkpoints`
  (the history of a finished run, from its checkpoints) and :func:`plot_history` live in
  :mod:`jaxww.training.history`; the worker's side (the copy of the params, the worker's
  start, priority and work) in :mod:`jaxww.training.worker`.

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
import functools
import multiprocessing
import threading
import weakref

import jax

from jaxww import checks
from jaxww.reading import layers as _layers
from jaxww.reading import params as _params
from jaxww.training import worker as _worker
from jaxww.training.history import (  # noqa: F401  (part of this module's API)
    METRICS, History, Writer, cpu_devices, from_checkpoints, plot_history, scalars,
)

__all__ = ["METRICS", "History", "Tracker", "TrackingError", "Writer", "from_checkpoints", "plot_history",
           "scalars"]


class TrackingError(RuntimeError):
    """The background analysis, or the writer, of a tracked step failed (the cause is
    chained as ``__cause__``); raised at the next :meth:`Tracker.update` or
    :meth:`Tracker.close`."""


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
        every, max_pending = checks.positive_int(every, "every"), checks.positive_int(max_pending, "max_pending")
        checks.callable_or_none(writer, "writer", "(step, Mapping[str, float])")
        checks.one_of(background, ("thread", "process"), "background")
        nice = checks.int_or_none(nice, "nice")
        if background == "thread":
            analyze_options.setdefault("devices", cpu_devices())
            self._stop = threading.Event()
            self._pool = concurrent.futures.ThreadPoolExecutor(1, "jaxww-tracker", initializer=_worker.start_worker,
                                                               initargs=(nice, True, self._stop))
        else:
            spawn = multiprocessing.get_context("spawn")
            self._stop = spawn.Event()
            self._pool = concurrent.futures.ProcessPoolExecutor(1, mp_context=spawn, initializer=_worker.start_worker,
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
            copy = _worker.snapshot(params)
        except jax.errors.ConcretizationTypeError:   # traced params after the first call (x.devices())
            raise _layers.traced_error("Tracker.update") from None
        self._pending.append((step, self._pool.submit(_worker.analyze_copy, copy, self.options)))
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
    try:
        _params.nnx_module(params)
    except TypeError:   # an nnx.Optimizer without its model
        raise TypeError("Tracker.update: got an nnx.Optimizer, which holds the optimizer state, not the "
                        "weights: pass the model, tracker.update(step, model)") from None
    parts = params if type(params) in (tuple, list) else (params,)
    state = next((p for p in parts if type(p).__module__.split(".")[0] == "optax"), None)
    if state is not None:
        raise TypeError(f"Tracker.update: got optax optimizer state ({type(state).__name__}), not the "
                        "weights: pass the params, tracker.update(step, params)")
    _layers.check_concrete(params, "Tracker.update")


_OPEN: weakref.WeakSet = weakref.WeakSet()   # the trackers not yet closed


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
