"""Progress of :func:`jaxww.analyze`: events, and the ``tqdm.auto`` bar of ``progress=True``.

An analysis runs in phases, in this order, each counted in layers:

* ``"spectra"``: a group of layers at a time (as many as the memory budget holds), their
  weights read (stage ``"reading"``) then their eigenvalues computed;
* ``"randomize"`` (``randomize=True``): the weights read again, permuted, and the
  eigenvalues of the permuted matrices;
* ``"fits"`` (``"bootstrap"`` with ``bootstrap=B``: each fit with its ``B`` replicas), the
  power-law fits and the metrics;
* ``"plots"`` (``plot=True``): one figure per layer;

then ``"done"``, once, when all of it is. Each :class:`ProgressEvent` says which stage
runs and how far it is; ``progress=`` takes ``True`` (a ``tqdm.auto`` bar on stderr: redrawn
in place on a terminal or in a notebook, its elapsed time ticking every half second; a
line at each new phase and every ``interval`` seconds otherwise) or any callable receiving the
events (at each new stage, after each group and at the end; from the analysing thread).

The estimated time left is the elapsed time times the work left over the work done, the
work of every phase in the units of the spectra's, ``rf (N + M) M^2`` a layer (the host
reports each matrix as it is done): the randomisation adds :data:`PERMUTE_WORK` an entry
to it, a fit of ``n`` eigenvalues is :data:`FIT_WORK` ``n^2`` (and
:data:`BOOTSTRAP_WORK` ``n^2`` a replica), a figure :data:`PLOT_WORK`, each times the
number of cores (the spectra spread over the cores, these run on one): their costs
relative to the spectra, as measured on a 2-core CPU (``bench/progress.py``). A run whose
phases cost otherwise on another machine sees its estimate corrected as they run.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Callable, NamedTuple, TextIO, Union

#: Work, in units of the spectra's ``rf (N + M) M^2`` per core, of permuting one entry
#: (``randomize``), of a fit and of a bootstrap replica per squared eigenvalue count, and
#: of one figure (module docstring).
PERMUTE_WORK, FIT_WORK, BOOTSTRAP_WORK, PLOT_WORK = 4500.0, 150.0, 50.0, 6e9

#: Seconds between two redraws of a live bar when nothing else happens.
TICK = 0.5


class ProgressEvent(NamedTuple):
    """Where an analysis stands.

    Attributes:
      stage: what runs now: ``"reading"``, ``"spectra"``, ``"randomize"``, ``"fits"`` or
        ``"bootstrap"``, ``"plots"`` (module docstring), then ``"done"`` once everything
        is done.
      layers_done, layers_total: weight matrices (rows of the report) done by the current
        phase (``"reading"``: the spectra's; ``"done"``: the spectra's, all of them).
      bytes_done, bytes_total: bytes of the weights read, as stored (a bf16 checkpoint
        counts 2 bytes a value; ``randomize`` reads them a second time).
      elapsed: seconds since the analysis started.
      eta: estimated seconds left, every phase included (module docstring); None before
        any work is done, 0 at ``"done"``.
    """

    stage: str
    layers_done: int
    layers_total: int
    bytes_done: int
    bytes_total: int
    elapsed: float
    eta: float | None


#: What ``analyze(progress=...)`` takes.
ProgressArg = Union[bool, None, Callable[[ProgressEvent], None]]


def human_bytes(n: float) -> str:
    """``1536 -> '1.5 KiB'`` (binary units).

    Example:
      >>> human_bytes(3 * 2**30)
      '3.0 GiB'
    """
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


#: The line of the bar (tqdm's ``bar_format``): the stage, the layers of the current phase,
#: then bytes read of total, elapsed time and the estimate of the time left.
BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} layers{postfix}"


def _fields(e: ProgressEvent) -> dict:
    """The ``prefix`` (desc) and ``postfix`` of the bar's line for ``e``."""
    from tqdm.std import tqdm

    clock = tqdm.format_interval
    post = f"{human_bytes(e.bytes_done)}/{human_bytes(e.bytes_total)}, elapsed {clock(e.elapsed)}"
    if e.stage != "done":
        post += f", ETA {'?' if e.eta is None else clock(e.eta)}"
    return {"prefix": f"jaxww {e.stage}", "postfix": post}


def format_event(e: ProgressEvent) -> str:
    """The bar's line for ``e`` in ASCII, as a log gets it (tqdm's ``format_meter``).

    Example:
      >>> print(format_event(ProgressEvent("spectra", 39, 156, 2**29, 2**31, 30.0, 90.0)))
      jaxww spectra:  25%|##5       | 39/156 layers, 512.0 MiB/2.0 GiB, elapsed 00:30, ETA 01:30
      >>> print(format_event(ProgressEvent("done", 156, 156, 2**31, 2**31, 125.0, 0.0)))
      jaxww done: 100%|##########| 156/156 layers, 2.0 GiB/2.0 GiB, elapsed 02:05
    """
    from tqdm.std import tqdm

    return tqdm.format_meter(e.layers_done, e.layers_total, e.elapsed, ascii=True, bar_format=BAR_FORMAT,
                             **_fields(e))


class TextBar:
    """The bar of ``progress=True``: a callable receiving :class:`ProgressEvent`.

    On a terminal or in a notebook it is a ``tqdm.auto`` bar (a widget where ipywidgets is
    installed), redrawn in place and placed below any other tqdm bar open (a training
    loop's); on any other stream (a log file, CI) it writes :func:`format_event` lines.

    Args:
      stream: where to write (default ``sys.stderr`` at call time).
      interval: on a stream that is not a terminal nor a notebook, seconds between lines
        within a phase (a new phase and the last event are always written).
    """

    def __init__(self, stream: TextIO | None = None, interval: float = 10.0):
        self._stream, self._interval, self._last = stream, interval, -float("inf")
        self._phase, self._bar = None, None

    @property
    def live(self) -> bool:
        """Whether the bar is redrawn in place (a terminal or a notebook)."""
        return _live(self._out())

    def _out(self) -> TextIO:
        return self._stream or sys.stderr

    def __call__(self, e: ProgressEvent) -> None:
        out = self._out()
        if _live(out):
            self._draw(e, out)
            return
        phase = self._phase if e.stage == "reading" else e.stage
        if phase != self._phase or e.stage == "done" or time.monotonic() - self._last >= self._interval:
            out.write(format_event(e) + "\n")
            out.flush()
            self._last = time.monotonic()
        self._phase = phase

    def _draw(self, e: ProgressEvent, out: TextIO) -> None:
        """Redraw the tqdm bar (opened at the first event, closed at ``"done"``)."""
        fields = _fields(e)
        if self._bar is None:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=e.layers_total, initial=e.layers_done, file=out, bar_format=BAR_FORMAT,
                             dynamic_ncols=True, desc=fields["prefix"], postfix=fields["postfix"])
        else:
            self._bar.total, self._bar.n = e.layers_total, e.layers_done
            self._bar.set_description_str(fields["prefix"], refresh=False)
            self._bar.set_postfix_str(fields["postfix"], refresh=False)
            self._bar.refresh()
        if e.stage == "done":
            self.close()

    def close(self) -> None:
        """Close the tqdm bar if open (an interrupted run: the next output starts on a new line)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _isatty(out) -> bool:
    return bool(getattr(out, "isatty", lambda: False)())


def _live(out) -> bool:
    """Whether ``out`` redraws a line on ``"\\r"``: a terminal, or the standard streams of a
    Jupyter kernel (not merely a process that has imported ipykernel)."""
    if _isatty(out):
        return True
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return getattr(shell, "kernel", None) is not None and out in (sys.stdout, sys.stderr)


def reporter(progress: ProgressArg) -> Callable[[ProgressEvent], None] | None:
    """The callable of an ``analyze(progress=...)`` argument (None: no progress).

    Raises:
      TypeError: ``progress`` is neither a bool, None nor a callable.
    """
    if progress is None or progress is False:
        return None
    if progress is True:
        return TextBar()
    if callable(progress):
        return progress
    raise TypeError(f"progress must be True, False, None or a callable receiving ProgressEvent, "
                    f"got {type(progress).__name__}")


class Progress:
    """Counts what each phase has done and sends :class:`ProgressEvent` to a reporter
    (a no-op without one). A context manager: its end stops the ticker of a live bar
    (also on an error or an interrupt) and ends the bar's line.

    Args:
      report: the callable from :func:`reporter`, or None.
      phases: ``[(name, layers, work)]`` in the order they run (the first runs at once).
      nbytes: bytes the whole run reads.

    Example:
      >>> with Progress(print, [("spectra", 2, 10.0), ("fits", 2, 1.0)], 0) as t:   # doctest: +ELLIPSIS
      ...     t.advance(2, 0, 10.0); t.begin("fits"); t.advance(2, 0, 1.0); t.finish()
      ProgressEvent(stage='spectra', layers_done=0, layers_total=2, ...)
      ProgressEvent(stage='spectra', layers_done=2, layers_total=2, ...)
      ProgressEvent(stage='fits', layers_done=0, layers_total=2, ...)
      ProgressEvent(stage='fits', layers_done=2, layers_total=2, ...)
      ProgressEvent(stage='done', layers_done=2, layers_total=2, ..., eta=0.0)
    """

    def __init__(self, report, phases, nbytes: int):
        self._report, self._start = report, time.monotonic()
        self._totals = {name: (layers, float(work)) for name, layers, work in phases}
        self._done = {name: [0, 0.0] for name in self._totals}
        self._bytes, self._nbytes, self._partial = 0, nbytes, 0.0
        self._phase = self._stage = phases[0][0]
        self._lock, self._stop = threading.RLock(), threading.Event()
        self._ticker = None
        with self._lock:
            self._send()
        if isinstance(report, TextBar):   # elapsed ticks; a log gets its line every interval
            self._ticker = threading.Thread(target=self._tick, name="jaxww-progress", daemon=True)
            self._ticker.start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def begin(self, phase: str) -> None:
        """The phase ``phase`` runs now (an event if it was not running)."""
        with self._lock:
            if (self._phase, self._stage) != (phase, phase):
                self._phase = self._stage = phase
                self._send()

    def reading(self) -> None:
        """The current phase reads a group of weights now."""
        with self._lock:
            if self._stage != "reading":
                self._stage = "reading"
                self._send()

    def add_work(self, work: float) -> None:
        """Work done within the current group (the host's report as each matrix is done);
        counted in the estimate until the group's :meth:`advance`."""
        with self._lock:
            self._partial += work
            if self._stage == "reading":
                self._stage = self._phase
                self._send()

    def advance(self, layers: int, nbytes: int, work: float) -> None:
        """Record a group of the current phase done: its layers, the bytes it read, its work."""
        with self._lock:
            done = self._done[self._phase]
            done[0] += layers
            done[1] += work
            self._bytes += nbytes
            self._partial = 0.0
            self._stage = self._phase
            self._send()

    def finish(self) -> None:
        """Everything is done: the ``"done"`` event."""
        self._stop_ticker()
        with self._lock:
            for name, done in self._done.items():
                done[:] = self._totals[name]
            self._bytes, self._partial, self._phase = self._nbytes, 0.0, next(iter(self._totals))
            self._stage = "done"
            self._send()

    def close(self) -> None:
        """Stop the ticker; end a line of the bar left open (an error, an interrupt)."""
        self._stop_ticker()
        if isinstance(self._report, TextBar) and self._stage != "done":
            with self._lock:
                self._report.close()

    def _stop_ticker(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()

    def _tick(self) -> None:
        while not self._stop.wait(TICK):
            with self._lock:
                self._send()

    def _send(self) -> None:
        """The event of now, to the reporter (the caller holds the lock); none once closed
        before the end."""
        if self._report is None or (self._stop.is_set() and self._stage != "done"):
            return
        elapsed = time.monotonic() - self._start
        work = sum(w for _, w in self._totals.values())
        done = sum(w for _, w in self._done.values()) + self._partial
        eta = 0.0 if self._stage == "done" else elapsed * max(work - done, 0.0) / done if done > 0 else None
        layers = self._done[self._phase][0], self._totals[self._phase][0]
        self._report(ProgressEvent(self._stage, *layers, self._bytes, self._nbytes, elapsed, eta))
