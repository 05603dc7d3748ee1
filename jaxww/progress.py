"""Progress of :func:`jaxww.analyze`: events, and the text bar of ``progress=True``.

``analyze`` computes the spectra a group of layers at a time (as many as its memory
budget holds) and reports after each group, then once more when the fits are done.
Each report is a :class:`ProgressEvent`; ``progress=`` takes ``True`` (a bar on
stderr: redrawn in place on a terminal or in a notebook, a line every
``interval`` seconds otherwise) or any callable receiving the events.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, NamedTuple, TextIO, Union


class ProgressEvent(NamedTuple):
    """Where an analysis stands.

    Attributes:
      stage: ``"spectra"`` (a group of layers done) or ``"done"`` (every spectrum computed;
        the fits and metrics that follow take a small part of the time).
      layers_done, layers_total: weight matrices (rows of the report) whose spectra are done.
      bytes_done, bytes_total: bytes of the weights read, as stored (a bf16 checkpoint
        counts 2 bytes a value).
      elapsed: seconds since the analysis started.
      eta: estimated seconds left (from the compute work done, ``rf (N + M) M^2`` per
        layer), or None before the first group.
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


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def format_event(e: ProgressEvent, width: int = 24) -> str:
    """One line: layers and bytes done of total, a bar, elapsed time and ETA.

    Example:
      >>> print(format_event(ProgressEvent("spectra", 39, 156, 2**29, 2**31, 30.0, 90.0), width=8))
      jaxww [##......]  39/156 layers  512.0 MiB/2.0 GiB  elapsed 0:30  ETA 1:30
    """
    frac = e.layers_done / e.layers_total if e.layers_total else 1.0
    bar = "#" * int(round(frac * width))
    eta = "done" if e.stage == "done" else f"ETA {_clock(e.eta)}"
    return (f"jaxww [{bar:.<{width}}] {e.layers_done:>{len(str(e.layers_total))}}/{e.layers_total} layers  "
            f"{human_bytes(e.bytes_done)}/{human_bytes(e.bytes_total)}  elapsed {_clock(e.elapsed)}  {eta}")


class TextBar:
    """The bar of ``progress=True``: a callable receiving :class:`ProgressEvent`.

    Args:
      stream: where to write (default ``sys.stderr`` at call time).
      interval: on a stream that is not a terminal nor a notebook, seconds between lines
        (the first and the last event are always written).
    """

    def __init__(self, stream: TextIO | None = None, interval: float = 10.0):
        self._stream, self._interval, self._last = stream, interval, -float("inf")

    def __call__(self, e: ProgressEvent) -> None:
        out = self._stream or sys.stderr
        if _live(out):
            out.write("\r" + format_event(e) + ("\n" if e.stage == "done" else ""))
        elif e.stage == "done" or e.layers_done == 0 or time.monotonic() - self._last >= self._interval:
            out.write(format_event(e) + "\n")
            self._last = time.monotonic()
        out.flush()


def _live(out) -> bool:
    """Whether ``out`` redraws a line on ``"\\r"``: a terminal, or the standard streams of a
    Jupyter kernel (not merely a process that has imported ipykernel)."""
    if getattr(out, "isatty", lambda: False)():
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


class Tracker:
    """Counts what is done and sends :class:`ProgressEvent` to a reporter (no-op without one).

    Args:
      report: the callable from :func:`reporter`, or None.
      layers, nbytes, work: totals (matrices, stored bytes, compute work).
    """

    def __init__(self, report, layers: int, nbytes: int, work: float):
        self._report, self._start = report, time.monotonic()
        self._totals = (layers, nbytes, work)
        self._done = [0, 0, 0.0]
        self._send("spectra")

    def advance(self, layers: int, nbytes: int, work: float) -> None:
        """Record a group whose spectra are done."""
        for i, v in enumerate((layers, nbytes, work)):
            self._done[i] += v
        self._send("spectra")

    def finish(self) -> None:
        self._done = [*self._totals[:2], self._totals[2]]
        self._send("done")

    def _send(self, stage: str) -> None:
        if self._report is None:
            return
        elapsed = time.monotonic() - self._start
        work_done, work = self._done[2], self._totals[2]
        eta = elapsed * (work - work_done) / work_done if work_done > 0 else None
        self._report(ProgressEvent(stage, self._done[0], self._totals[0], self._done[1],
                                   self._totals[1], elapsed, 0.0 if stage == "done" else eta))
