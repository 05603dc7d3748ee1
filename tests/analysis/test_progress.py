"""Progress that tells the truth (issue #22, item 4): every phase in the bar and its
estimate, in order, ``done`` only at the end, elapsed time that ticks, each redraw clearing
the line; drawn by ``tqdm.auto`` (issue #25, item 6)."""

from __future__ import annotations

import io
import re
import threading
import time

import jax
import numpy as np
import pytest

import jaxww
from jaxww import cli

from jaxww.analysis import progress

#: A line of the bar: the stage, layers, bytes, elapsed, then the ETA (none at ``done``).
LINE = re.compile(r"jaxww (\w+): +\d+%\|[#0-9 ]+\| (\d+)/(\d+) layers, (.+)/(.+?), elapsed ([\d:]+)(, ETA \S+)?$")
PHASES = ["spectra", "randomize", "fits", "plots", "done"]


class Terminal(io.StringIO):
    def isatty(self):
        return True


def _params(n=3):
    rng = np.random.default_rng(0)
    return {f"layer{i}": {"kernel": rng.standard_t(3, (256, 128)).astype(np.float32)} for i in range(n)}


def _phases(stages):
    """The stages in order, each once, ``reading`` (part of a phase) left out."""
    out = []
    for s in stages:
        if s != "reading" and (not out or out[-1] != s):
            out.append(s)
    return out


def test_cli_bar_shows_each_phase_in_order_and_done_last(tmp_path, capfd):
    """The bar of a run with --randomize and --plots (stderr not a terminal: a line at each
    phase): the phases in order, ``done`` on the last line only (the old bar said ``done``
    after the spectra, then the randomisation ran with nothing shown)."""
    np.savez(tmp_path / "w.npz", **{f"{k}/kernel": v["kernel"] for k, v in _params().items()})
    assert cli.main(["analyze", str(tmp_path / "w.npz"), "--randomize", "--plots", str(tmp_path / "figs")]) == 0
    lines = [line for line in capfd.readouterr().err.splitlines() if line.startswith("jaxww ")]
    parsed = [LINE.match(line) for line in lines]
    assert all(parsed), lines
    assert _phases([m[1] for m in parsed]) == PHASES, lines
    assert [m.string for m in parsed if m[1] == "done"] == lines[-1:] and not parsed[-1][7]
    assert parsed[-1].group(2, 3) == ("3", "3") and parsed[-1][4] == parsed[-1][5] == "768.0 KiB"


def test_events_of_every_phase(tmp_path):
    """``progress=callable``: each phase begins, counts its layers to the total and the
    estimate covers the phases still to come; the bytes count the second read of
    ``randomize``; ``done`` comes last, once, with nothing left."""
    events = []
    params = _params()
    jaxww.analyze(params, randomize=True, key=jax.random.key(0), plot=True, savefig=str(tmp_path),
                  progress=events.append)
    assert _phases(e.stage for e in events) == PHASES
    assert [e.stage for e in events].count("done") == 1 and events[-1].stage == "done"
    for phase in PHASES[:-1]:
        last = [e for e in events if e.stage == phase][-1]
        assert last.layers_done == last.layers_total == 3, last
    end_of_spectra = [e for e in events if e.stage == "spectra"][-1]
    assert end_of_spectra.eta > 0   # randomize, fits and plots are still to come
    stored = 3 * 256 * 128 * 4
    assert end_of_spectra.bytes_done == stored and events[-1].bytes_done == events[-1].bytes_total == 2 * stored
    assert events[-1].eta == 0.0
    elapsed = [e.elapsed for e in events]
    assert elapsed == sorted(elapsed)


def test_bootstrap_is_its_phase():
    events = []
    jaxww.analyze(_params(2), bootstrap=4, key=jax.random.key(0), progress=events.append)
    assert _phases(e.stage for e in events) == ["spectra", "bootstrap", "done"]


def _redraws(text):
    return [segment for segment in text.split("\r") if segment]


def test_terminal_bar_is_tqdm_below_a_training_bar():
    """On a terminal the bar is a ``tqdm.auto`` bar: placed below a tqdm bar already open on
    the same stream (a training loop's), closed at ``done`` (the old bar wrote over it)."""
    from tqdm.auto import tqdm

    out = Terminal()
    with tqdm(total=10, file=out, desc="train") as training:
        bar = progress.TextBar(out)
        bar(progress.ProgressEvent("spectra", 1, 3, 10, 30, 61.0, 3600.0))
        assert isinstance(bar._bar, tqdm) and bar._bar.pos == training.pos + 1
        bar(progress.ProgressEvent("done", 3, 3, 30, 30, 62.0, 0.0))
        assert bar._bar is None and training.n == 0
    ours = [LINE.match(s.rstrip(" \x1b[A\n")) for s in _redraws(out.getvalue()) if s.startswith("jaxww")]
    first, last = ours[0], ours[-1]
    assert first.group(1, 2, 3) == ("spectra", "1", "3") and first[7] == ", ETA 1:00:00"
    assert last.group(1, 2, 3) == ("done", "3", "3") and last[6] == "01:02" and not last[7]


def test_redraw_pads_over_the_longer_line(monkeypatch):
    """A live bar without terminal escapes (a notebook's stderr) pads a shorter line over the
    longer one."""
    monkeypatch.setattr(progress, "_live", lambda out: True)
    out = io.StringIO()
    bar = progress.TextBar(out)
    bar(progress.ProgressEvent("randomize", 1, 3, 10, 30, 61.0, 3600.0))
    bar(progress.ProgressEvent("done", 3, 3, 30, 30, 62.0, 0.0))
    first, last = _redraws(out.getvalue())[:2]
    assert len(last) == len(first) and re.search(r"elapsed 01:02 {10,}$", last)


def test_log_line_format():
    """The line a log gets: tqdm's layout in ASCII, the estimate ``?`` before any work."""
    line = progress.format_event(progress.ProgressEvent("reading", 0, 156, 0, 2**31, 3.0, None))
    assert line == "jaxww reading:   0%|          | 0/156 layers, 0 B/2.0 GiB, elapsed 00:03, ETA ?"


@pytest.mark.slow
def test_elapsed_ticks_and_the_ticker_stops_on_an_interrupt():
    """On a terminal the bar is redrawn at least once a second with the elapsed time, the
    estimate from the work done within a group; an interrupt stops the ticker and ends
    the line."""
    out = Terminal()
    with pytest.raises(KeyboardInterrupt):
        with progress.Progress(progress.TextBar(out), [("spectra", 2, 10.0), ("fits", 2, 10.0)], 0) as t:
            t.add_work(5.0)    # half the spectra's work done, no layer yet
            time.sleep(2.2)
            raise KeyboardInterrupt
    redraws = _redraws(out.getvalue())
    assert len(redraws) >= 3   # the first draw, then at least one tick a second
    m = re.search(r"elapsed 00:(\d\d), ETA 00:(\d\d)", redraws[-1])
    assert m and int(m[1]) >= 1 and abs(int(m[2]) - 3 * int(m[1])) <= 2, redraws[-1]   # 15 units left, 5 done
    assert out.getvalue().endswith("\n") and out.getvalue().count("\n") == 1
    assert not [th for th in threading.enumerate() if th.name == "jaxww-progress"]
    time.sleep(0.7)
    assert _redraws(out.getvalue()) == redraws   # nothing drawn after the end


def test_log_lines_each_phase_and_every_interval():
    """Not a terminal: a line at each phase (reading is part of its phase) and every
    ``interval`` seconds while nothing else comes."""
    out = io.StringIO()
    with progress.Progress(progress.TextBar(out, interval=0.4), [("spectra", 1, 1.0), ("fits", 1, 1.0)], 0) as t:
        t.reading()
        time.sleep(1.1)
        t.advance(1, 0, 1.0)
        t.begin("fits")
        t.advance(1, 0, 1.0)
        t.finish()
    stages = [LINE.match(line)[1] for line in out.getvalue().splitlines()]
    assert "reading" in stages and _phases(stages) == ["spectra", "fits", "done"], stages
    assert stages.count("done") == 1 and stages[-1] == "done" and "\r" not in out.getvalue()
