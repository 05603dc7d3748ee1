"""Cost of the optional analyses of ``analyze``, side by side in one run.

    python bench/analyses.py

On one tree (8 Student-t layers of 1024 x 512 and 8 of 512 x 512, float32) it times,
warm (best of 3 interleaved rounds, compilation excluded), ``analyze`` with no option, with each of
``mp_fit``, ``detX`` and ``randomize``, and with all three, and prints each time over
the plain one. ``mp_fit`` and ``detX`` reuse the spectra (expected near 1x);
``randomize`` computes a second set of spectra, of the permuted matrices, and sorts
every layer's entries by random keys to permute them. Measured on the shared 2-core
CPU (noisy: the plain time varied 1.4-2.5 s between runs): randomize 3.6x-7x plain,
most of it XLA's CPU sort (8 x 512K entries: 2.0 s; ``jax.random.permutation``,
two sorts: 4.2 s); mp_fit and detX within the noise of 1x.
"""

from __future__ import annotations

import time

import jax
import numpy as np

import jaxww


def seconds(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main():
    rng = np.random.default_rng(0)
    params = {f"a{i}": {"kernel": (rng.standard_t(3, (1024, 512)) / 32).astype(np.float32)} for i in range(8)}
    params |= {f"b{i}": {"kernel": (rng.standard_t(3, (512, 512)) / 32).astype(np.float32)} for i in range(8)}
    key = jax.random.key(0)
    runs = {
        "plain": {},
        "mp_fit": {"mp_fit": True},
        "detX": {"detX": True},
        "randomize": {"randomize": True, "key": key},
        "all three": {"mp_fit": True, "detX": True, "randomize": True, "key": key},
    }
    for kw in runs.values():   # compile
        jaxww.analyze(params, **kw)
    best = {name: float("inf") for name in runs}
    for _ in range(3):          # interleaved rounds: a busy machine slows all options alike
        for name, kw in runs.items():
            best[name] = min(best[name], seconds(lambda: jaxww.analyze(params, **kw)))
    print(f"{'options':<12} {'time (s)':>9} {'x plain':>8}")
    for name, t in best.items():
        print(f"{name:<12} {t:9.3f} {t / best['plain']:8.2f}")


if __name__ == "__main__":
    main()
