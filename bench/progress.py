"""The relative costs behind the progress bar's estimate of the time left.

    python bench/progress.py

``jaxww.analysis.progress`` counts the work of every phase in the units of the spectra,
``rf (N + M) M^2`` a layer, so that one elapsed-time rate gives the estimate. This times,
warm (best of 3), on one tree (8 Student-t layers of 1024 x 512): the spectra, the
randomised spectra, the host fit, a bootstrap of 50 replicas and the figures, and prints
each phase's cost in those units, the numbers of ``PERMUTE_WORK``, ``FIT_WORK``,
``BOOTSTRAP_WORK`` and ``PLOT_WORK``, per core (the spectra spread over the cores, the
rest runs on one). On the shared 2-core CPU at a load of 3, per core: 4600 an entry
permuted, 120-190 n^2 a fit, 18-90 n^2 a replica, 6e9 a figure (at a load of 7-14 the
ratios came out 1.5-4x lower: the spectra slow down most); jaxww uses 4500, 150, 50, 6e9.

    python bench/progress.py --bar

times instead one event of ``progress=True``'s bar (a redraw: best of 5 runs of 2000
events), on a terminal (a stream whose ``isatty`` is true) and on a log stream (a line
at each phase: the events within a phase write nothing), in microseconds. It uses only
``TextBar`` and ``ProgressEvent``, so it runs against an older jaxww as well
(``PYTHONPATH=<old checkout> python bench/progress.py --bar``). On the shared 2-core CPU
(load 11), the tqdm bar: 100-107 us an event on a terminal, 0.9 in a log; jaxww's own bar
before it (a9c45cb): 11-15 and 12-16. At two or three events a second (the half-second
tick and the groups) either is under 0.05% of a core.
"""

from __future__ import annotations

import io
import sys
import tempfile
import time

import jax
import numpy as np

from jaxww.linalg import pool as _pool

from jaxww.linalg import placement

from jaxww.report import plots

from jaxww.fit import scan

from jaxww.analysis import randomize

from jaxww.linalg import spectra
import jaxww


def best(fn, rounds: int = 3) -> float:
    out = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        out = min(out, time.perf_counter() - t)
    return out


class _Null:
    """A progress tracker that counts nothing."""

    def reading(self): pass
    def begin(self, phase): pass
    def add_work(self, work): pass
    def advance(self, *args): pass


def main():
    rng = np.random.default_rng(0)
    params = {f"l{i}": {"kernel": (rng.standard_t(3, (1024, 512)) / 32).astype(np.float32)} for i in range(8)}
    rep = jaxww.analyze(params)
    kerns = rep.kernels
    units = sum(map(placement.cost, kerns))
    mats = [params[f"l{i}"]["kernel"][None] for i in range(8)]
    rate = best(lambda: spectra.host_spectra(mats)) / units            # seconds per unit
    flat = jax.tree_util.tree_leaves(params)   # the leaves the kernels number
    key = jax.random.key(0)
    randomize.host_spectra(key, kerns, flat, "float32", 1 << 30, _Null())
    t_rand = best(lambda: randomize.host_spectra(key, kerns, flat, "float32", 1 << 30, _Null()))
    entries = sum(k.rf * k.N * k.M for k in kerns)
    n2 = sum(k.num_evals ** 2 for k in kerns)
    E = np.stack([rep.esd(k.name)[::-1] for k in kerns])
    t_fit = best(lambda: scan.fit_host(E, np.float32(np.inf)))
    boot = dict(bootstrap=50, key=key)
    jaxww.analyze(params, **boot)
    t_boot = best(lambda: jaxww.analyze(params, **boot)) - best(lambda: jaxww.analyze(params, mp_fit=True))
    with tempfile.TemporaryDirectory() as d:
        t_plot = best(lambda: plots.draw_all(rep, d, show=False), 1) / len(kerns)
    cores = _pool.workers()   # the spectra run on all of them, the rest on one
    print(f"spectra: {rate:.3g} s per unit on {cores} cores; per core:")
    print(f"PERMUTE_WORK  {(t_rand / rate - units) / entries / cores:10.3g} units an entry")
    print(f"FIT_WORK      {t_fit / rate / n2 / cores:10.3g} units per n^2")
    print(f"BOOTSTRAP_WORK{t_boot / rate / n2 / 50 / cores:10.3g} units per n^2 a replica")
    print(f"PLOT_WORK     {t_plot / rate / cores:10.3g} units a figure")


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def bar_overhead(events: int = 2000) -> None:
    """Microseconds an event of the bar of ``progress=True`` takes, terminal and log."""
    from jaxww.analysis import progress

    def run(stream):
        bar = progress.TextBar(stream)
        for i in range(events):
            bar(progress.ProgressEvent("spectra", i, events, i << 20, events << 20, 0.5 * i, 10.0))
        bar(progress.ProgressEvent("done", events, events, events << 20, events << 20, 0.5 * events, 0.0))

    for name, stream in (("terminal", _Terminal), ("log", io.StringIO)):
        print(f"{name:<9} {best(lambda: run(stream()), 5) / (events + 1) * 1e6:7.1f} us an event")


if __name__ == "__main__":
    bar_overhead() if sys.argv[1:] == ["--bar"] else main()
