"""Cost of ``jaxww.Tracker`` on training: the digits MLP, plain vs tracked every 50 steps.

Model: an MLP on sklearn's 8x8 digits (64 inputs, ``--depth`` hidden layers of
``--width``, 10 outputs), ``optax.adam(1e-3)``, minibatches of ``--batch`` in one
jitted ``step(params, state, x, y)``. ``tracked`` is the same loop with
``tracker.update(step, params)`` after every step (``jaxww.Tracker(every=50)``: the host
copy of the params every 50 steps, ``jaxww.analyze`` of it in the background thread).

Timing: both loops are compiled and warmed up first (the tracker's first analyses
included), then timed in interleaved rounds (plain then tracked, tracked then plain,
alternately, so that load from other processes hits both alike). A round is
``--round`` steps (several ``every`` cycles) ending on ``jax.block_until_ready``; the
tracker is not waited for inside the round (it does not make training wait), but its
final ``close()`` (the last analysis) is timed and added to the tracked total. Printed:
median step times, the CPU time of the training loop's own thread per step (what
``update`` adds there), the ratio of medians, the median of the per-round ratios, the
ratio of totals (close included) and the analysis time per tracked step.

The analysis is CPU work (about 5 ms for the 3 layers of the default MLP, i.e. 0.1 ms per
step at ``every=50``, against a training step of about 0.6 ms on the CPU): it is free
where a core is idle (training on an accelerator, or a CPU with a spare core) and
costs up to its CPU share where every core is busy. The third loop, ``cpu floor``, is
plain training while a separate process at the tracker's idle priority burns the same
CPU time as one analysis once per ``every`` steps (no GIL, no copy, no jaxww): what
that CPU time alone costs the training on this machine, the floor of any tracker that
computes the analysis here.

Run::

    PYTHONPATH=. python bench/tracking.py                   # 4 x 512 MLP, batch 128, 10 rounds
    PYTHONPATH=. python bench/tracking.py --width 256 --depth 2 --rounds 20
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")   # see bench/train_step.py

import argparse
import multiprocessing
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxww
from jaxww import _host_eigh
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


def burn(go, stop, ms: float, period: float):
    """The cpu floor's worker: while ``go`` is set, ``ms`` of single-threaded matrix products
    every ``period`` ms, at idle priority (the tracker's)."""
    if hasattr(os, "SCHED_IDLE"):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    a = np.random.default_rng(0).standard_normal((128, 128))
    while not stop.is_set():
        if not go.wait(0.05):
            continue
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < ms / 1e3:
            a = a @ a / np.linalg.norm(a)
        time.sleep(max(period - ms, 0) / 1e3)


def main():   # (under __main__: background="process" spawns a worker that imports this file)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("--round", type=int, default=500, help="steps per round")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--background", choices=("thread", "process"), default="thread")
    args = ap.parse_args()

    step, params, state, xs, ys = setup(args.width, args.depth, args.batch)
    runs = {name: [params, state, 0, [], []] for name in ("plain", "tracked", "cpu floor")}
    tracker = jaxww.Tracker(every=args.every, background=args.background)
    analysis, cpu = [], []
    with _host_eigh.on_this_thread():   # as the tracker runs it: CPU time of one thread
        for _ in range(6):
            t0, c0 = time.perf_counter(), time.thread_time()
            jaxww.analyze(jax.device_get(params))
            analysis.append(time.perf_counter() - t0)
            cpu.append(time.thread_time() - c0)
    cpu_ms = float(np.median(cpu[1:])) * 1e3
    for name, r in runs.items():   # warm-up: compile, one every cycle, the tracker's first analyses
        r[0], r[1] = train(step, r[0], r[1], xs, ys, 0, 2 * args.every, tracker if name == "tracked" else None)
        r[2] = 2 * args.every
    tracker.wait()
    t0 = time.perf_counter()
    train(step, runs["plain"][0], runs["plain"][1], xs, ys, 0, args.round)
    step_ms = (time.perf_counter() - t0) / args.round * 1e3
    ctx = multiprocessing.get_context("spawn")
    go, stop = ctx.Event(), ctx.Event()
    burner = ctx.Process(target=burn, args=(go, stop, cpu_ms, args.every * step_ms), daemon=True)
    burner.start()
    orders = [("plain", "tracked", "cpu floor"), ("tracked", "cpu floor", "plain"), ("cpu floor", "plain", "tracked")]
    for k in range(args.rounds):
        for name in orders[k % 3]:
            r = runs[name]
            if name == "cpu floor":
                go.set()
            t0, c0 = time.perf_counter(), time.thread_time()
            r[0], r[1] = train(step, r[0], r[1], xs, ys, r[2], args.round, tracker if name == "tracked" else None)
            r[3].append(time.perf_counter() - t0)
            r[4].append(time.thread_time() - c0)
            r[2] += args.round
            go.clear()
    stop.set()
    burner.join()
    t0 = time.perf_counter()
    history = tracker.close()
    close_s = time.perf_counter() - t0
    for _ in range(5):
        t0 = time.perf_counter()
        jaxww.analyze(jax.device_get(runs["tracked"][0]))
        analysis.append(time.perf_counter() - t0)

    plain, tracked, floor = (np.asarray(runs[n][3]) / args.round * 1e3 for n in runs)
    layers = len(history.details.name.unique())
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, jax {jax.__version__} "
          f"({jax.default_backend()})")
    print(f"digits MLP 64 -> {args.depth} x {args.width} -> 10, batch {args.batch}, adam; "
          f"{layers} layers analysed, {len(history.steps)} steps tracked (every {args.every}); "
          f"{args.rounds} rounds x {args.round} steps")
    print(f"jaxww.analyze of the params: {np.median(analysis[1:]) * 1e3:.1f} ms "
          f"(= {np.median(analysis[1:]) / args.every * 1e3:.3f} ms per step at every={args.every})")
    print(f"{'':10s} {'step ms (median)':>17s} {'min':>7s} {'max':>7s} {'loop-thread CPU ms/step':>24s}")
    for name, t in (("plain", plain), ("tracked", tracked), ("cpu floor", floor)):
        cpu = np.median(runs[name][4]) / args.round * 1e3
        print(f"{name:10s} {np.median(t):17.3f} {t.min():7.3f} {t.max():7.3f} {cpu:24.3f}")
    total = (np.sum(runs["tracked"][3]) + close_s) / np.sum(runs["plain"][3])
    print(f"ratio tracked / plain: {np.median(tracked) / np.median(plain):.3f}x (medians), "
          f"{np.median(tracked / plain):.3f}x (median of per-round ratios), "
          f"{total:.3f}x (totals, the final close() {close_s * 1e3:.1f} ms included)")
    print(f"cpu floor / plain: {np.median(floor) / np.median(plain):.3f}x (medians), "
          f"{np.median(floor / plain):.3f}x (median of per-round ratios): the same CPU time, "
          f"{cpu_ms:.1f} ms per {args.every} steps, spent by another process at idle priority")


if __name__ == "__main__":
    main()
