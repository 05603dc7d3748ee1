"""Speed of the bootstrap goodness-of-fit test: jaxww against the ``powerlaw`` package.

    PYTHONPATH=. python bench/bootstrap.py [--n 2000] [--replicas 1000] [--powerlaw-replicas 5]

The same test both ways: fit the sample, draw ``--replicas`` semi-parametric replicas
(Clauset-Shalizi-Newman), refit each one, ``xmin`` included, and compare the KS
distances.

* jaxww: ``jaxww.bootstrap_power_law`` (all replicas in one vectorised fit), warm
  (compilation timed separately), best of ``--repeats``.
* ``powerlaw``: ``powerlaw.Fit`` on each replica in a Python loop (its alpha range
  widened to [1, 20]: powerlaw 2.0 restricts alpha to (0, 3) by default). Only
  ``--powerlaw-replicas`` are timed and the time is scaled to ``--replicas`` (the loop
  is linear in the number of replicas).

Prints both times and their ratio, measured side by side in one run.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import time
import warnings

import jax
import numpy as np

import jaxww


def csn_replicas(x, xmin, alpha, num, rng):
    body = x[x < xmin]
    for _ in range(num):
        m = rng.binomial(len(x), 1.0 - len(body) / len(x))
        tail = xmin * (1.0 - rng.random(m)) ** (-1.0 / (alpha - 1.0))
        yield np.concatenate([tail, rng.choice(body, len(x) - m)]) if len(body) else tail


def powerlaw_loop(x, num, rng):
    import powerlaw

    quiet = contextlib.ExitStack()
    quiet.enter_context(contextlib.redirect_stdout(io.StringIO()))
    quiet.enter_context(contextlib.redirect_stderr(io.StringIO()))
    quiet.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    with quiet:
        fit = powerlaw.Fit(x, parameter_ranges={"alpha": [1.0, 20.0]})
        t0 = time.perf_counter()
        ds = [powerlaw.Fit(r, parameter_ranges={"alpha": [1.0, 20.0]}).D
              for r in csn_replicas(x, fit.xmin, fit.alpha, num, rng)]
        per = (time.perf_counter() - t0) / num
    return fit, per, float(np.mean(np.array(ds) >= fit.D))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--replicas", type=int, default=1000)
    ap.add_argument("--powerlaw-replicas", type=int, default=5)
    ap.add_argument("--precision", choices=("float32", "float64"), default="float32")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    jax.config.update("jax_enable_x64", args.precision == "float64")
    rng = np.random.default_rng(0)
    x = rng.lognormal(0.0, 1.0, args.n)
    xj = x.astype(args.precision)
    key = jax.random.key(0)

    t0 = time.perf_counter()
    out = jaxww.bootstrap_power_law(xj, bootstrap=args.replicas, key=key)
    jax.block_until_ready(out)
    first = time.perf_counter() - t0
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(jaxww.bootstrap_power_law(xj, bootstrap=args.replicas, key=key))
        times.append(time.perf_counter() - t0)
    ours = min(times)

    fit, per, p_small = powerlaw_loop(x, args.powerlaw_replicas, rng)
    theirs = per * args.replicas
    print(f"backend {jax.default_backend()}, {jax.device_count()} device(s); lognormal sample, "
          f"n = {args.n}, B = {args.replicas} replicas, {args.precision}")
    print(f"jaxww   bootstrap_power_law: {ours:8.2f} s warm (first call incl. compile {first:.2f} s); "
          f"alpha {float(out.alpha):.3f}, xmin {float(out.xmin):.3f}, p {float(out.p_value):.3f}, "
          f"CI [{float(out.alpha_ci_low):.3f}, {float(out.alpha_ci_high):.3f}]")
    print(f"powerlaw Fit loop          : {theirs:8.2f} s ({per:.3f} s per replica x {args.replicas}, "
          f"{args.powerlaw_replicas} timed); alpha {fit.alpha:.3f}, xmin {fit.xmin:.3f}, "
          f"p over {args.powerlaw_replicas} replicas {p_small:.1f}")
    print(f"speed-up: {theirs / ours:.0f}x warm, {theirs / first:.0f}x including compilation")


if __name__ == "__main__":
    main()
