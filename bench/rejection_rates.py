"""Rejection rates of the bootstrap goodness-of-fit test (the table of docs/bootstrap.md).

For each distribution and sample size, ``--samples`` independent samples are tested
with ``--replicas`` replicas each; a sample is rejected when ``p <= 0.1`` (Clauset,
Shalizi, Newman's rule). Two settings: ``xmin`` free, and tails held to at least 200
values (``min_tail=200``, sizes >= 500 only). Seeded: the same table on every run
(up to float rounding across machines).

    PYTHONPATH=. python bench/rejection_rates.py [--samples 50] [--replicas 100]
"""

from __future__ import annotations

import argparse

import jax
import numpy as np

import jaxww

DISTRIBUTIONS = {
    "Pareto (alpha = 2.5)": lambda rng, s: (1.0 - rng.random(s)) ** (-1.0 / 1.5),
    "exponential": lambda rng, s: rng.exponential(1.0, s),
    "lognormal (mu 0, sigma 1)": lambda rng, s: rng.lognormal(0.0, 1.0, s),
}
SIZES = (100, 500, 2000)
MIN_TAIL = 200
P_REJECT = 0.1


def rate(draw, n, samples, replicas, min_tail, seed):
    rng = np.random.default_rng(seed)
    x = draw(rng, (samples, n)).astype(np.float32)
    t = jaxww.bootstrap_power_law(x, bootstrap=replicas, key=jax.random.key(seed), min_tail=min_tail)
    p = np.asarray(t.p_value)
    return float(np.mean(p <= P_REJECT)), float(np.median(np.asarray(t.num_pl_spikes)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=50)
    ap.add_argument("--replicas", type=int, default=100)
    args = ap.parse_args()
    print(f"{args.samples} samples per cell, {args.replicas} replicas per sample, reject at p <= {P_REJECT}")
    print("| distribution | n | rejected, xmin free | median tail | "
          f"rejected, tail >= {MIN_TAIL} | median tail |")
    print("| --- | --- | --- | --- | --- | --- |")
    for d, (name, draw) in enumerate(DISTRIBUTIONS.items()):
        for n in SIZES:
            seed = 1000 * d + n
            free, tail_free = rate(draw, n, args.samples, args.replicas, None, seed)
            if n > MIN_TAIL:
                held, tail_held = rate(draw, n, args.samples, args.replicas, MIN_TAIL, seed)
                cells = f"{held:.0%} | {tail_held:.0f}"
            else:
                cells = "n/a | n/a"
            print(f"| {name} | {n} | {free:.0%} | {tail_free:.0f} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
