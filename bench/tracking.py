"""Cost of ``jaxww.Tracker`` on training: the digits MLP, plain vs tracked every 50 steps.

Model: the demo's MLP on sklearn's 8x8 digits (64 inputs, ``--depth`` hidden layers of
``--width``, 10 outputs), ``optax.adam(1e-3)``, minibatches of ``--batch`` in one
jitted ``step(params, state, x, y)``. ``tracked`` is the same loop with
``tracker.update(step, params)`` after every step (``jaxww.Tracker(every=50)``: a device
copy of the params every 50 steps, ``jaxww.analyze`` of it in the background thread).

The third loop, ``eigvals only``, is the floor of any tracker that computes the exact
spectra on this CPU: the same update, copy and background thread at the same (idle)
priority, but the thread only computes the eigenvalues of the same matrices with the
same LAPACK calls (``?syrk``, ``?syevd``), no reading, fit or report (no Python work
holding the GIL that the training loop needs).

Timing: the loops are compiled and warmed up first (the tracker's first analyses
included), then timed in interleaved rounds (the order rotates every round, so that
load from other processes hits every loop alike). A round is ``--round`` steps (several
``every`` cycles) ending on ``jax.block_until_ready``; the background work is not waited
for inside the round (it does not make training wait), but the tracker's final
``close()`` (the last analysis) is timed and added to its total. Printed: median step
times, the CPU time of the training loop's own thread per step (what ``update`` adds
there), and against plain: the median of the per-round ratios with its interquartile
range, and the ratio of totals.

Where a core is idle (training on an accelerator, or a CPU with a spare core), the
background work is free; where training keeps every core busy (XLA's CPU training of
this MLP takes about 1.8 of 2 cores) it costs a share of its CPU time, more for work
that holds the GIL. ``--spare-core`` measures the first case on a CPU: the training
(its XLA threads included) on every core but the last, the background threads on the
last.

Run::

    PYTHONPATH=. python bench/tracking.py                   # the demo's MLP, 30 rounds
    PYTHONPATH=. python bench/tracking.py --width 512 --depth 3 --rounds 40
    PYTHONPATH=. python bench/tracking.py --spare-core      # the analysis on a core of its own
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")   # see bench/train_step.py
import sys

SPARE = "--spare-core" in sys.argv and hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) > 1
if SPARE:   # before JAX starts its threads: they inherit this thread's cores, all but the last
    _CORES = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, _CORES[:-1])

import argparse
import concurrent.futures
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxww
from jaxww.linalg import host as _host_eigh
from jaxww.linalg import pool as _pool
from jaxww.training import worker
from train_step import MLP   # the step-time bench's MLP (bench/ is on sys.path when run)


def setup(width, depth, batch):
    from sklearn.datasets import load_digits
    digits = load_digits()
    n = len(digits.target) // batch * batch
    xs = jnp.asarray(digits.data[:n] / 16.0, jnp.float32).reshape(-1, batch, 64)
    ys = jnp.asarray(digits.target[:n]).reshape(-1, batch)
    model, opt = MLP(width, depth), optax.adam(1e-3)
    params = model.init(jax.random.key(0), xs[0, :1])["params"]

    @jax.jit
    def step(p, s, x, y):
        def loss(p):
            return optax.softmax_cross_entropy_with_integer_labels(model.apply({"params": p}, x), y).mean()
        u, s = opt.update(jax.grad(loss)(p), s, p)
        return optax.apply_updates(p, u), s

    return step, params, opt.init(params), xs, ys


def train(step, p, s, xs, ys, start, steps, tracker=None):
    for i in range(start, start + steps):
        p, s = step(p, s, xs[i % len(xs)], ys[i % len(ys)])
        if tracker is not None:
            tracker.update(i, p)
    jax.block_until_ready(p)
    return p, s


class EigvalsOnly:
    """The floor loop's tracker: :class:`jaxww.Tracker`'s copy, thread and priority, but the
    thread computes only the eigenvalues of the params' matrices (what ``analyze`` hands
    to LAPACK for this MLP: every 2-D leaf), nothing else."""

    def __init__(self, every: int):
        self.every = every
        self.pool = concurrent.futures.ThreadPoolExecutor(1, "eigvals-only", initializer=worker.lower_priority,
                                                          initargs=(None, True))

    def update(self, step, params):
        if step % self.every == 0:
            self.pool.submit(self._eigvals, worker.snapshot(params))

    @staticmethod
    def _eigvals(params):
        with _pool.on_this_thread():
            return _host_eigh.eigvals([np.asarray(x) for x in jax.tree.leaves(jax.device_get(params))
                                       if np.ndim(x) == 2])

    def close(self):
        self.pool.shutdown(wait=True)


def main():   # (under __main__: background="process" spawns a worker that imports this file)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("--round", type=int, default=500, help="steps per round")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--background", choices=("thread", "process"), default="thread")
    ap.add_argument("--spare-core", action="store_true",
                    help="training on every core but the last, the background threads on the last "
                         "(as on an accelerator, or a CPU with a core the training leaves idle)")
    args = ap.parse_args()
    if args.background == "process" and args.spare_core:
        ap.error("--spare-core pins the background threads: use it with --background thread")

    step, params, state, xs, ys = setup(args.width, args.depth, args.batch)
    trackers = {"plain": None, "tracked": jaxww.Tracker(every=args.every, background=args.background),
                "eigvals only": EigvalsOnly(args.every)}
    runs = {name: [params, state, 0, [], []] for name in trackers}
    analysis = []
    for name, r in runs.items():   # warm-up: compile, two every cycles, the tracker's first analyses
        r[0], r[1] = train(step, r[0], r[1], xs, ys, 0, 2 * args.every, trackers[name])
        r[2] = 2 * args.every
    trackers["tracked"].wait()
    if SPARE:   # the background threads (started by the warm-up) to the last core
        for pool in (trackers["tracked"]._pool, trackers["eigvals only"].pool):
            for thread in pool._threads:
                os.sched_setaffinity(thread.native_id, _CORES[-1:])
    names = list(runs)
    for k in range(args.rounds):
        for name in names[k % 3:] + names[:k % 3]:
            r = runs[name]
            t0, c0 = time.perf_counter(), time.thread_time()
            r[0], r[1] = train(step, r[0], r[1], xs, ys, r[2], args.round, trackers[name])
            r[3].append(time.perf_counter() - t0)
            r[4].append(time.thread_time() - c0)
            r[2] += args.round
    t0 = time.perf_counter()
    history = trackers["tracked"].close()
    close_s = time.perf_counter() - t0
    trackers["eigvals only"].close()
    with _pool.on_this_thread():   # as the tracker runs it
        for _ in range(6):
            t0 = time.perf_counter()
            jaxww.analyze(jax.device_get(runs["tracked"][0]))
            analysis.append(time.perf_counter() - t0)

    per_step = {n: np.asarray(r[3]) / args.round * 1e3 for n, r in runs.items()}
    layers = len(history.details.name.unique())
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, jax {jax.__version__} "
          f"({jax.default_backend()})")
    if SPARE:
        print(f"training on cores {_CORES[:-1]}, the background threads on core {_CORES[-1]} (--spare-core)")
    print(f"digits MLP 64 -> {args.depth} x {args.width} -> 10, batch {args.batch}, adam; "
          f"{layers} layers analysed, {len(history.steps)} steps tracked (every {args.every}); "
          f"{args.rounds} rounds x {args.round} steps")
    print(f"jaxww.analyze of the params: {np.median(analysis[1:]) * 1e3:.1f} ms "
          f"(= {np.median(analysis[1:]) / args.every * 1e3:.3f} ms per step at every={args.every})")
    print(f"{'':13s} {'step ms (median)':>17s} {'min':>7s} {'max':>7s} {'loop-thread CPU ms/step':>24s}")
    for name, t in per_step.items():
        cpu = np.median(runs[name][4]) / args.round * 1e3
        print(f"{name:13s} {np.median(t):17.3f} {t.min():7.3f} {t.max():7.3f} {cpu:24.3f}")
    plain = np.asarray(runs["plain"][3])
    for name, extra in (("tracked", close_s), ("eigvals only", 0.0)):
        ratios = np.asarray(runs[name][3]) / plain
        q1, q3 = np.percentile(ratios, [25, 75])
        total = (np.sum(runs[name][3]) + extra) / np.sum(plain)
        print(f"{name} / plain: {np.median(ratios):.3f}x (median of per-round ratios, interquartile "
              f"{q1:.3f}-{q3:.3f}), {total:.3f}x (totals"
              + (f", the final close() {close_s * 1e3:.1f} ms included)" if extra else ")"))


if __name__ == "__main__":
    main()
