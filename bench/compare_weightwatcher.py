"""jaxww against weightwatcher 0.7.7 on identical weights, side by side in one run.

    python bench/compare_weightwatcher.py            # both sets, prints a table of ratios
    python bench/compare_weightwatcher.py --quick    # smaller matrices (a smoke run)

Two sets of weights (Student-t entries, nu = 3, a fixed seed):

* ``compute-heavy``: six 1024x1024, four 4096x1024 and one 2048x2048 dense matrices;
* ``many-small``: a 6-block, 384-wide Transformer encoder (q, k, v, out, MLP 384x1536
  and 1536x384 per block) with a 30000x384 embedding: 37 layers.

weightwatcher gets a PyTorch model holding the same numbers (``nn.Linear`` /
``nn.Embedding``); jaxww gets the Flax-layout pytree. "first" is jaxww's first call
in this process (compilation included), "second" the faster of two later calls on
new weights of the same structure; weightwatcher's time is the faster of two runs. Ratios are weightwatcher time / jaxww time; the absolute times
of this noisy machine mean little, the ratio measured in one run is the figure.
It also checks that both tools report the same alphas.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import time

import numpy as np


def student_t(rng, shape, nu=3.0):
    return (rng.standard_t(nu, size=shape) / np.sqrt(shape[0])).astype(np.float32)


def compute_heavy(rng, scale=1):
    shapes = [(1024 // scale,) * 2] * 6 + [(4096 // scale, 1024 // scale)] * 4 + [(2048 // scale,) * 2]
    return {f"dense_{i}": {"kernel": student_t(rng, s)} for i, s in enumerate(shapes)}


def encoder(rng, scale=1, blocks=6, width=384, heads=6, vocab=30000):
    width //= scale
    hd = width // heads
    p = {"embed": {"embedding": student_t(rng, (vocab // scale, width))}}
    for b in range(blocks):
        p[f"block_{b}"] = {
            "attention": {n: {"kernel": student_t(rng, (width, width)).reshape(width, heads, hd)}
                          for n in ("query", "key", "value")}
            | {"out": {"kernel": student_t(rng, (width, width)).reshape(heads, hd, width)}},
            "mlp_up": {"kernel": student_t(rng, (width, 4 * width))},
            "mlp_down": {"kernel": student_t(rng, (4 * width, width))},
        }
    return p


def torch_model(params):
    """A torch module whose Linear / Embedding weights are the matrices of ``params``."""
    import torch

    import jaxww

    names, leaves, _ = jaxww.flatten_params(params)
    kernels, _ = jaxww.find_kernels(names, leaves)
    mods = []
    for k in kernels:
        w = np.asarray(k.matrices(leaves[k.leaf])[0])
        if k.layer_type == "embedding":
            m = torch.nn.Embedding(*w.shape)
            m.weight.data = torch.from_numpy(w.copy())
        else:
            m = torch.nn.Linear(w.shape[0], w.shape[1], bias=False)
            m.weight.data = torch.from_numpy(w.T.copy())
        mods.append(m)
    return torch.nn.Sequential(*mods)


def run_ww(model):
    import weightwatcher as ww

    with contextlib.redirect_stdout(io.StringIO()):
        t = time.perf_counter()
        details = ww.WeightWatcher(model=model).analyze()
        return time.perf_counter() - t, details


def run_jaxww(params):
    import jax

    import jaxww

    t = time.perf_counter()
    report = jaxww.analyze(params)
    jax.block_until_ready(report.rows)
    return time.perf_counter() - t, report


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="matrices 4x smaller")
    args = ap.parse_args()
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    scale = 4 if args.quick else 1
    rng = np.random.default_rng(0)
    print(f"{'set':<15}{'layers':>7}{'ww s':>9}{'jaxww 1st s':>13}{'jaxww 2nd s':>13}"
          f"{'ratio 1st':>11}{'ratio 2nd':>11}{'max |d alpha|':>15}")
    for label, make in (("compute-heavy", compute_heavy), ("many-small", encoder)):
        p1, p2, p3 = make(rng, scale), make(rng, scale), make(rng, scale)
        t_first, r1 = run_jaxww(p1)
        t_second = min(run_jaxww(p3)[0], run_jaxww(p2)[0])
        r2 = run_jaxww(p2)[1]
        model = torch_model(p2)
        t_ww, d_ww = min(run_ww(model), run_ww(model), key=lambda r: r[0])
        ours = np.array([r["alpha"] for r in r2.rows])
        diff = np.max(np.abs(np.sort(ours) - np.sort(d_ww["alpha"].to_numpy())))
        print(f"{label:<15}{len(r2.rows):>7}{t_ww:>9.2f}{t_first:>13.2f}{t_second:>13.2f}"
              f"{t_ww / t_first:>10.1f}x{t_ww / t_second:>10.1f}x{diff:>15.2e}", flush=True)


if __name__ == "__main__":
    main()
