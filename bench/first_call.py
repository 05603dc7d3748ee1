"""The first call of ``jaxww.analyze`` in a fresh process against weightwatcher 0.7.7.

    python bench/first_call.py                  # the CNN and the Gemma tree (--quick size)
    python bench/first_call.py --repeat 3       # three rounds: the ranges of a noisy machine
    python bench/first_call.py --gemma-full     # the real Gemma3-270M shapes (~4 GB, slow)

Two sets of weights (Student-t entries, nu = 3, fixed seeds; nothing downloaded):

* ``cnn-65``: a ResNet-shaped CNN of 65 layers (a 7x7 stem, 20 bottleneck blocks of
  1x1 / 3x3 / 1x1 convolutions of widths 16, 32, 64, 112, three 1x1 downsampling
  convolutions, a 448 x 1000 classifier), Flax layouts; spectra of 16 to 1008 values.
* ``gemma3-270m``: ``bench/gemma.py``'s tree (``--quick``: every width 4x smaller
  unless ``--gemma-full``), read with ``max_N=None``.

Every figure is measured in a fresh Python process, imports excluded:

* ``ww``: weightwatcher's ``analyze`` on PyTorch modules holding the same numbers
  (``nn.Conv2d`` ``(out, in, kh, kw)``, ``nn.Linear``, ``nn.Embedding``);
* ``1st``: jaxww's first ``analyze`` in a process whose JAX persistent compilation
  cache is an empty directory;
* ``1st cached``: the first ``analyze`` of a second process using the directory the
  first one filled (as the command line does with its cache);
* ``warm``: the faster of two later calls in the first process, on new weights of the
  same structure.

``compiles`` counts the XLA compilations of the first call of each process (cache
hits are not compilations; counted with ``jax.monitoring``). Ratios are
weightwatcher time / jaxww time; ``max |d alpha|`` compares the alphas of both tools
on the same weights.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def student_t(rng, shape, fan_in, nu=3.0):
    return (rng.standard_t(nu, size=shape) / np.sqrt(fan_in)).astype(np.float32)


def cnn(rng, widths=(16, 32, 64, 112), blocks=(3, 4, 10, 3), classes=1000):
    """A bottleneck-ResNet-shaped tree of 65 layers (Flax ``(kh, kw, in, out)`` kernels)."""
    p = {"stem": {"kernel": student_t(rng, (7, 7, 3, 2 * widths[0]), 147)}}
    c = 2 * widths[0]
    for s, (w, nb) in enumerate(zip(widths, blocks)):
        for b in range(nb):
            blk = {"conv_1": {"kernel": student_t(rng, (1, 1, c, w), c)},
                   "conv_2": {"kernel": student_t(rng, (3, 3, w, w), 9 * w)},
                   "conv_3": {"kernel": student_t(rng, (1, 1, w, 4 * w), w)}}
            if b == 0 and s > 0:
                blk["downsample"] = {"kernel": student_t(rng, (1, 1, c, 4 * w), c)}
            p[f"stage{s}_block{b}"] = blk
            c = 4 * w
    p["fc"] = {"kernel": student_t(rng, (c, classes), c)}
    return p


def cnn_torch(tree):
    """The CNN's matrices as PyTorch modules: convolutions ``(out, in, kh, kw)``, the classifier."""
    import torch

    mods = []
    for name, mod in tree.items():
        for leaf in ([mod] if "kernel" in mod else mod.values()):
            w = leaf["kernel"]
            if w.ndim == 4:
                m = torch.nn.Conv2d(w.shape[2], w.shape[3], w.shape[:2], bias=False)
                m.weight.data = torch.from_numpy(np.ascontiguousarray(w.transpose(3, 2, 0, 1)))
            else:
                m = torch.nn.Linear(*w.shape, bias=False)
                m.weight.data = torch.from_numpy(np.ascontiguousarray(w.T))
            mods.append(m)
    return torch.nn.Sequential(*mods)


def _weights(model: str, seed: int, full: bool):
    rng = np.random.default_rng(seed)
    if model == "cnn":
        return cnn(rng), {}
    import gemma

    s = 1 if full else 4
    dims = dict(d=640 // s, F=2048 // s, D=256 // s, vocab=262144 // s)
    return gemma.gemma_tree(rng, **dims), {"max_N": dims["vocab"] + 1}


def _child_ww(model, full):
    import logging

    import compare_weightwatcher

    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    tree, kw = _weights(model, 1, full)
    if model == "cnn":
        mod = cnn_torch(tree)
    else:
        import gemma
        mod = gemma.torch_model(tree)
    import weightwatcher  # noqa: F401  (imports excluded from the time)
    t, details = compare_weightwatcher.run_ww(mod) if not kw else _run_ww_kw(mod, kw)
    return {"t": t, "layers": len(details), "alpha": sorted(details["alpha"].tolist())}


def _run_ww_kw(mod, kw):
    import gemma
    return gemma.run_ww(mod, **kw)


def _child_jaxww(model, full, cache):
    import jax

    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    import jaxww
    from jax._src import dispatch

    counts = {"compiles": 0, "hits": 0}

    def on_duration(event, _secs, **_):
        counts["compiles"] += event == dispatch.BACKEND_COMPILE_EVENT

    def on_event(event, **_):
        counts["hits"] += event == "/jax/compilation_cache/cache_hits"

    jax.monitoring.register_event_duration_secs_listener(on_duration)
    jax.monitoring.register_event_listener(on_event)
    kw = {} if model == "cnn" else {"max_N": None}
    trees = [_weights(model, seed, full)[0] for seed in (1, 2, 3)]

    def timed(tree):
        t = time.perf_counter()
        report = jaxww.analyze(tree, **kw)
        jax.block_until_ready(report.rows)
        return time.perf_counter() - t, report

    t_first, report = timed(trees[0])
    first = dict(counts)
    warm = min(timed(trees[1])[0], timed(trees[2])[0])
    return {"t": t_first, "warm": warm, "compiles": first["compiles"] - first["hits"],
            "hits": first["hits"], "layers": len(report.rows),
            "alpha": sorted(r["alpha"] for r in report.rows)}


def _run(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, os.path.abspath(__file__), *args], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=1, help="rounds (each with a new empty cache)")
    ap.add_argument("--gemma-full", action="store_true", help="the real Gemma3-270M widths")
    ap.add_argument("--only", choices=("cnn", "gemma"), help="one set only")
    ap.add_argument("--child", nargs=2, metavar=("TOOL", "MODEL"), help=argparse.SUPPRESS)
    ap.add_argument("--cache", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        tool, model = args.child
        res = (_child_ww(model, args.gemma_full) if tool == "ww"
               else _child_jaxww(model, args.gemma_full, args.cache))
        print(json.dumps(res))
        return
    full = ["--gemma-full"] if args.gemma_full else []
    print(f"{'set':<22}{'layers':>9}{'ww s':>7}{'1st s':>7}{'cached s':>9}{'warm s':>8}"
          f"{'ratio 1st':>10}{'cached':>8}{'warm':>7}{'compiles':>10}{'max |d alpha|':>15}")
    sets = [m for m in ("cnn", "gemma") if args.only in (None, m)]
    for _ in range(args.repeat):
        for model in sets:
            label = "cnn-65" if model == "cnn" else "gemma3-270m" + ("" if args.gemma_full else " (quick)")
            ww = _run(["--child", "ww", model, *full])
            with tempfile.TemporaryDirectory() as cache:
                cold = _run(["--child", "jaxww", model, "--cache", cache, *full])
                hot = _run(["--child", "jaxww", model, "--cache", cache, *full])
            diff = np.max(np.abs(np.array(cold["alpha"]) - np.array(ww["alpha"]))) \
                if len(cold["alpha"]) == len(ww["alpha"]) else float("nan")
            print(f"{label:<22}{cold['layers']:>5}/{ww['layers']:<3}{ww['t']:>7.2f}{cold['t']:>7.2f}"
                  f"{hot['t']:>9.2f}{cold['warm']:>8.2f}{ww['t'] / cold['t']:>9.1f}x"
                  f"{ww['t'] / hot['t']:>7.1f}x{ww['t'] / cold['warm']:>6.1f}x"
                  f"{cold['compiles']:>6}/{hot['compiles']:<3}{diff:>15.2e}", flush=True)


if __name__ == "__main__":
    main()
