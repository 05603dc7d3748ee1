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
"""

from __future__ import annotations

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


if __name__ == "__main__":
    main()
