"""Unattended device benchmark: a 7B-class layer set on whatever accelerator is present.

    python bench/device.py                     # one GPU: the full sizes, under 8 minutes
    python bench/device.py --quick             # 8x narrower, 4 blocks: a smoke run (CPU is enough)
    python bench/device.py --skip-cpu-7b       # leave out jaxww's host (LAPACK) run of section A
    python bench/device.py --budget-seconds 300

One command, one table at the end (plus one-line notes while it runs). Every section
runs in its own ``try``: a missing piece (no accelerator, jax without CUDA, no torch,
no weightwatcher, no CUDA for torch) is reported as "skipped: <why>", an error as one
line, and the next section runs. ``--budget-seconds`` (default 450) is the time of the
whole run, imports included (``--quick``: 100 s): a section started with under 10 s left is skipped; the
weightwatcher and jaxww-host runs of section A are time-boxed (below) and stop before a
chunk predicted to go past it; the accelerator runs (A 1st/2nd, B) are run whole.

Environment: jax version and devices, torch version and ``torch.cuda.is_available()``,
weightwatcher's version and the SVD path it picked, cores and free host memory.

Section A, "7B-class layer set": the matrices of Llama-2-7B (its ``config.json``:
hidden 4096, intermediate 11008, 32 layers, vocabulary 32000), i.e. per block
``q/k/v/o_proj`` 4096x4096 and ``gate/up_proj`` 4096x11008, ``down_proj`` 11008x4096
(Flax ``kernel`` layout, ``(in, out)``), and the 32000x4096 ``embed_tokens``: 225
matrices, 6.6e9 float32 numbers (26 GB). Entries are Student-t (nu = 3) scaled by
1/sqrt(fan_in), drawn in float32 from NumPy ``Generator`` streams spawned from one
seed, ``Z / sqrt(G / nu)`` with ``Z`` normal and ``G`` gamma, in chunks over all cores
(same numbers whatever the core count). Host memory: one set at a time (about 27 GB).

* ``jaxww 1st``: ``jaxww.analyze(set_1, devices=[accelerator], max_N=None,
  max_evals=None)`` in this process, XLA compilation included (unless a persistent
  compilation cache is configured; the notes say so). The weights start in host memory.
* ``jaxww 2nd``: the same call on a second, newly drawn set of the same shapes.
* ``jaxww host``: ``devices=[jax.devices("cpu")[0]]``, jaxww's LAPACK path (``?syrk`` +
  ``?syevd``, the matrices spread over the cores), on set 2, time-boxed: the embedding,
  then chunks of 8 blocks while the budget allows; when cut short, the rest is
  extrapolated from the last chunk's time per unit of work ``(N + M) M^2`` and the
  time is marked ``est.`` with the share measured.
* ``weightwatcher``: weightwatcher 0.7.7 ``WeightWatcher(model).analyze()`` (defaults;
  the embedding is within its ``max_N=50000``) on set 2 as ``nn.Linear`` /
  ``nn.Embedding`` modules holding the same numbers (no copy on the host), moved to
  CUDA when torch has it (``--ww-model-on-host`` keeps them on the host), in chunks of
  2 blocks, time-boxed and extrapolated like ``jaxww host``. What weightwatcher 0.7.7
  does (``weightwatcher/RMT_Util.py``, ``weightwatcher.py``): its SVD path is chosen
  once, when it is imported: if ``torch.cuda.is_available()``, each layer's weight is
  copied to the host as float16 (``T.to("cpu").half().numpy()``), cast to float64,
  sent back to the GPU as float32 (``torch.Tensor(M).to("cuda")``) and its singular
  values computed by ``torch.linalg.svdvals`` there, one layer at a time; the power-law
  fit runs on the host in NumPy. Without CUDA it uses ``scipy.linalg.svd`` (float64) on
  the host. So where the model lives does not change where its SVD runs; it only
  changes the copy at the start of each layer.
* ``ww/this``: weightwatcher's time / that row's time (``est.`` if either is one).
  The notes give the largest alpha difference between weightwatcher and jaxww on the
  layers both measured (weightwatcher's CUDA path reads float16 weights, so expect
  about 1e-3 there, 1e-4 on its float64 host path).

Section B, "accelerator vs host alphas on a mixed set": 32 matrices of mixed shapes
(squares 64..4096, tall and wide 4096x1024 / 1024x4096, 4096x11008, a 16000x512
embedding, Conv kernels (3, 3, 64, 128), small ones down to 64x32), Student-t,
``analyze(devices=[accelerator])`` against ``analyze(devices=[cpu])``. Printed: the
largest relative alpha difference over the layers whose fits chose the same tail (the
same xmin index, i.e. ``num_pl_spikes``), how many layers agree on the tail, and the
largest eigenvalue difference relative to the layer's largest eigenvalue. PASS when
that alpha difference is at most 1e-3. Where the tolerance comes from: both paths are
backward-stable float32 eigensolvers, so an eigenvalue moves by at most about
``c M eps32 lambda_max`` (eps32 = 6e-8, Weyl); for the tail's MLE
``alpha = 1 + n / sum log(lambda_i / xmin)`` a relative move ``kappa`` of every tail
eigenvalue moves alpha by at most ``2 kappa (alpha - 1)^2``, with
``kappa = M eps32 lambda_max / xmin`` (printed as "worst-case bound"): about 1e-3 for
M = 4096 and these spectra, while the errors seen in practice are rounding-sized,
about ``sqrt(M) eps32`` (1e-6 .. 1e-5). 1e-3 is the loose side of that. A layer whose
two fits chose a different xmin (a near-tie of the KS distance, which a rounding-level
change can flip) is counted separately, not in the maximum.

Absolute times depend on the machine and its load; the ratios measured in one run are
the figures. Under ``--quick`` every width is 8x smaller and there are 4 blocks
(section B: sizes 4x smaller): it checks that the script runs, its numbers mean little.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")   # leave GPU memory to torch too

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare_weightwatcher as cw   # noqa: E402  (run_ww, student_t)

LLAMA_7B = dict(d=4096, F=11008, blocks=32, vocab=32000)
PROJ = (("q_proj", "d", "d"), ("k_proj", "d", "d"), ("v_proj", "d", "d"), ("o_proj", "d", "d"),
        ("gate_proj", "d", "F"), ("up_proj", "d", "F"), ("down_proj", "F", "d"))
ALPHA_TOL = 1e-3
EPS32 = float(np.finfo(np.float32).eps)


# ----------------------------------------------------------------------------- output

def note(msg):
    print(f"# {msg}", flush=True)


def one_line(err) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:240] if text else ''}"


class Clock:
    """Seconds left of ``--budget-seconds``."""

    def __init__(self, budget):
        self.t0, self.budget = time.perf_counter(), budget

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.t0)


class Ctx:
    """What the sections share: arguments, environment, clock, table rows, results."""

    def __init__(self, args):
        self.args, self.clock, self.rows = args, Clock(args.budget_seconds), []
        self.env = detect()
        self.set2 = None          # section A's second set, kept for weightwatcher and the host run
        self.alphas = {}          # run label -> {layer name: (alpha, num_pl_spikes)}
        self.ww_seconds = None    # (seconds, estimated)

    def add(self, section, run, where="", layers="", seconds=None, est=False, result=""):
        self.rows.append(dict(section=section, run=run, where=where, layers=str(layers),
                              seconds=seconds, est=est, result=result))

    def skip(self, section, run, why):
        note(f"{section} {run}: skipped: {why}")
        self.add(section, run, result=f"skipped: {why}")


def print_table(ctx):
    head = f"{'sec':<4}{'run':<34}{'where':<22}{'layers':>9}{'time s':>13}{'ww/this':>12}  result"
    print("\n" + head + "\n" + "-" * len(head))
    ww = ctx.ww_seconds
    for r in ctx.rows:
        secs = "" if r["seconds"] is None else f"{r['seconds']:.2f}" + (" est." if r["est"] else "")
        ratio = ""
        if ww and r["seconds"] and r["run"].startswith("jaxww") and r["section"] == "A":
            ratio = f"{ww[0] / r['seconds']:.1f}x" + (" est." if ww[1] or r["est"] else "")
        print(f"{r['section']:<4}{r['run']:<34}{r['where']:<22}{r['layers']:>9}{secs:>13}{ratio:>12}  "
              f"{r['result']}", flush=True)


# ----------------------------------------------------------------------------- environment

def detect():
    """Which pieces are present: ``dict`` of modules/devices, or the reason each is missing."""
    env = {"why": {}}
    try:
        import jax
        import jaxww
        env["jax"], env["jaxww"] = jax, jaxww
        env["cpu"] = jax.devices("cpu")[0]
        acc = [d for d in jax.devices() if d.platform != "cpu"]
        env["acc"] = acc[0] if acc else None
        if not acc:
            env["why"]["acc"] = f"no accelerator (jax {jax.__version__} devices: {jax.devices()})"
    except Exception as err:
        env["jax"] = env["acc"] = None
        env["why"]["jax"] = env["why"]["acc"] = f"jax/jaxww not importable ({one_line(err)})"
    try:
        import torch
        env["torch"], env["cuda"] = torch, torch.cuda.is_available()
    except Exception as err:
        env["torch"], env["cuda"] = None, False
        env["why"]["torch"] = f"torch not importable ({one_line(err)})"
    try:
        import logging

        logging.getLogger("weightwatcher").setLevel(logging.ERROR)
        import weightwatcher
        from weightwatcher import RMT_Util
        env["ww"] = weightwatcher
        on_gpu = RMT_Util._svd_vals_fast is not RMT_Util._svd_vals_accurate
        env["ww_path"] = ("torch.linalg.svdvals on CUDA, weights read as float16" if on_gpu
                          else "scipy.linalg.svd float64 on the host")
    except Exception as err:
        env["ww"] = None
        env["why"]["ww"] = f"weightwatcher not importable ({one_line(err)})"
    return env


def print_env(ctx):
    env = ctx.env
    if env["jax"] is not None:
        jax = env["jax"]
        note(f"jax {jax.__version__}, default backend {jax.default_backend()}, devices {jax.devices()}; "
             f"jaxww {getattr(env['jaxww'], '__version__', '?')} from {os.path.dirname(env['jaxww'].__file__)}")
        cache = jax.config.jax_compilation_cache_dir
        if cache:
            note(f"persistent compilation cache {cache}: '1st' may not include compilation")
    else:
        note(env["why"]["jax"])
    torch = env["torch"]
    if torch is not None:
        name = f" ({torch.cuda.get_device_name(0)})" if env["cuda"] else ""
        note(f"torch {torch.__version__}, cuda available: {env['cuda']}{name}")
    else:
        note(env["why"]["torch"])
    if env["ww"] is not None:
        note(f"weightwatcher {env['ww'].__version__}: SVD path {env['ww_path']}")
    else:
        note(env["why"]["ww"])
    free = _available_memory()
    note(f"{os.cpu_count()} cores, {free / 2**30:.1f} GiB host memory available" if free else
         f"{os.cpu_count()} cores")
    note(f"budget {ctx.args.budget_seconds:.0f} s, XLA_PYTHON_CLIENT_PREALLOCATE="
         f"{os.environ.get('XLA_PYTHON_CLIENT_PREALLOCATE')}, memory_budget={ctx.args.memory_budget}")


def _available_memory():
    try:
        from jaxww.streaming import available_memory
        return available_memory()
    except Exception:
        return None


# ----------------------------------------------------------------------------- weights

def student_t_fast(shape, seed, nu=3.0, chunk=1 << 22):
    """Student-t(nu) / sqrt(fan_in), float32, drawn in chunks over all cores.

    Chunk ``i`` uses its own stream spawned from ``seed``, so the numbers do not depend
    on the number of threads; NumPy releases the GIL while it fills the arrays.
    """
    out = np.empty(shape, np.float32)
    flat = out.reshape(-1)
    starts = range(0, flat.size, chunk)
    seqs = np.random.SeedSequence(seed).spawn(len(starts))
    scale = np.float32(1.0 / math.sqrt(shape[0]))

    def fill(i):
        rng, s = np.random.default_rng(seqs[i]), slice(starts[i], starts[i] + chunk)
        n = flat[s].size
        g = rng.standard_gamma(nu / 2, n, dtype=np.float32)
        np.multiply(g, np.float32(2.0 / nu) / scale ** 2, out=g)
        np.sqrt(g, out=g)
        np.divide(rng.standard_normal(n, dtype=np.float32), g, out=flat[s])

    with ThreadPoolExecutor(os.cpu_count()) as ex:
        list(ex.map(fill, range(len(starts))))
    return out


def llama_dims(quick):
    if not quick:
        return dict(LLAMA_7B)
    return dict(d=LLAMA_7B["d"] // 8, F=LLAMA_7B["F"] // 8, blocks=4, vocab=LLAMA_7B["vocab"] // 8)


def llama_tree(dims, seed):
    """``{"embed_tokens": {"embedding"}, "layers_NN": {proj: {"kernel": (in, out)}}}``."""
    ss = iter(np.random.SeedSequence(seed).generate_state(1 + 7 * dims["blocks"]))
    tree = {"embed_tokens": {"embedding": student_t_fast((dims["vocab"], dims["d"]), next(ss))}}
    for b in range(dims["blocks"]):
        tree[f"layers_{b:02d}"] = {p: {"kernel": student_t_fast((dims[i], dims[o]), next(ss))}
                                   for p, i, o in PROJ}
    return tree


def leaves(tree):
    """``[(jaxww name, array)]`` in jaxww's order (sorted keys, as ``jax.tree`` flattens)."""
    out = []
    for k in sorted(tree):
        v = tree[k]
        out += [(f"{k}/{n}", a) for n, a in leaves(v)] if isinstance(v, dict) else [(k, v)]
    return out


def cost(shape) -> float:
    """Work of one spectrum, ``(N + M) M^2`` (Gram matrix and eigenvalues)."""
    M, N = sorted(shape[-2:])
    return (N + M) * float(M) ** 2 * int(np.prod(shape[:-2]))


def tree_cost(tree) -> float:
    return sum(cost(a.shape) for _, a in leaves(tree))


def timed_set(dims, seed):
    t = time.perf_counter()
    tree = llama_tree(dims, seed)
    n = sum(a.size for _, a in leaves(tree))
    note(f"drew {len(leaves(tree))} matrices, {n:.3g} numbers ({4 * n / 2**30:.1f} GiB) "
         f"in {time.perf_counter() - t:.1f} s")
    return tree


# ----------------------------------------------------------------------------- runners

def run_jaxww(ctx, tree, device):
    jaxww = ctx.env["jaxww"]
    t = time.perf_counter()
    report = jaxww.analyze(tree, devices=[device], max_N=None, max_evals=None,
                           memory_budget=ctx.args.memory_budget)
    seconds = time.perf_counter() - t
    bad = [r["name"] for r in report.rows if r["status"] != "success"]
    if bad:
        note(f"jaxww on {device}: {len(bad)} fits not successful, e.g. {bad[:3]}")
    return seconds, {r["name"]: (r["alpha"], r["num_pl_spikes"]) for r in report.rows}, report


def torch_model(tree, device):
    """``nn.Linear`` / ``nn.Embedding`` modules holding the arrays of ``tree`` (no host copy),
    in :func:`leaves` order, and their names."""
    torch = sys.modules["torch"]
    names, mods = [], []
    for name, w in leaves(tree):
        if name.endswith("embedding"):
            m = torch.nn.Embedding(*w.shape, device="meta")
            m.weight = torch.nn.Parameter(torch.from_numpy(w), requires_grad=False)
        else:
            m = torch.nn.Linear(*w.shape, bias=False, device="meta")
            m.weight = torch.nn.Parameter(torch.from_numpy(w).T, requires_grad=False)
        names.append(name)
        mods.append(m)
    return torch.nn.Sequential(*mods).to(device), names


def run_ww(ctx, tree):
    device = "cuda" if ctx.env["cuda"] and not ctx.args.ww_model_on_host else "cpu"
    model, names = torch_model(tree, device)
    seconds, details = cw.run_ww(model)
    del model
    if ctx.env["cuda"]:
        ctx.env["torch"].cuda.empty_cache()
    if len(details) != len(names):
        raise RuntimeError(f"weightwatcher analysed {len(details)} of {len(names)} layers")
    alphas = dict(zip(names, zip(details["alpha"].to_numpy(), details["num_pl_spikes"].to_numpy())))
    return seconds, alphas, None


def chunks(tree, per_chunk):
    """The embedding alone, then ``per_chunk`` blocks at a time (sub-trees of ``tree``)."""
    blocks = sorted(k for k in tree if k.startswith("layers_"))
    out = [{k: tree[k] for k in tree if not k.startswith("layers_")}]
    return out + [{k: tree[k] for k in blocks[i:i + per_chunk]} for i in range(0, len(blocks), per_chunk)]


def time_boxed(ctx, label, run, tree, per_chunk, allowance):
    """``run(sub_tree)`` over :func:`chunks` while the next chunk's predicted time (by
    :func:`cost`, at the last chunk's rate) fits ``allowance``; the rest extrapolated.

    Returns ``(seconds, estimated, layers measured, alphas)``.
    """
    end = time.perf_counter() + allowance
    spent, done_cost, rate, alphas = 0.0, 0.0, None, {}
    parts = chunks(tree, per_chunk)
    for i, sub in enumerate(parts):
        c = tree_cost(sub)
        if rate is not None and time.perf_counter() + rate * c > end:
            note(f"{label}: stopped after {i} of {len(parts)} chunks (next predicted {rate * c:.0f} s, "
                 f"{end - time.perf_counter():.0f} s left of its allowance)")
            break
        seconds, a, _ = run(sub)
        spent, done_cost, rate = spent + seconds, done_cost + c, seconds / c
        alphas.update(a)
        note(f"{label}: chunk {i + 1}/{len(parts)} ({len(a)} layers) {seconds:.2f} s")
    left = tree_cost(tree) - done_cost
    return spent + (rate * left if rate else 0.0), left > 0, len(alphas), alphas


# ----------------------------------------------------------------------------- section A

def section_a_accelerator(ctx, dims):
    env, n = ctx.env, 1 + 7 * dims["blocks"]
    acc = env["acc"]
    set1 = timed_set(dims, ctx.args.seed) if acc is not None else None
    if acc is None:
        ctx.skip("A", "jaxww 1st (compile)", env["why"]["acc"])
        ctx.skip("A", "jaxww 2nd", env["why"]["acc"])
    else:
        seconds, _, _ = run_jaxww(ctx, set1, acc)
        ctx.add("A", "jaxww 1st (compile)", str(acc), n, seconds)
        note(f"A jaxww 1st on {acc}: {seconds:.2f} s")
    del set1
    ctx.set2 = timed_set(dims, ctx.args.seed + 1)
    if acc is not None:
        seconds, ctx.alphas["accelerator"], _ = run_jaxww(ctx, ctx.set2, acc)
        ctx.add("A", "jaxww 2nd", str(acc), n, seconds)
        note(f"A jaxww 2nd on {acc}: {seconds:.2f} s")


def section_a_ww(ctx, dims, allowance):
    env = ctx.env
    if env["ww"] is None or env["torch"] is None:
        return ctx.skip("A", "weightwatcher", env["why"].get("ww") or env["why"]["torch"])
    per = max(1, dims["blocks"] // 16)
    seconds, est, done, alphas = time_boxed(ctx, "A weightwatcher", lambda t: run_ww(ctx, t),
                                            ctx.set2, per, allowance)
    ctx.ww_seconds = (seconds, est)
    where = "torch cuda" if env["cuda"] else "scipy host"
    ctx.add("A", f"weightwatcher {env['ww'].__version__}", where, f"{done}/{1 + 7 * dims['blocks']}",
            seconds, est, "est.: extrapolated from the chunks measured" if est else "")
    ctx.alphas["weightwatcher"] = alphas


def section_a_host(ctx, dims, allowance):
    if ctx.env["jax"] is None:
        return ctx.skip("A", "jaxww host", ctx.env["why"]["jax"])
    if ctx.args.skip_cpu_7b:
        return ctx.skip("A", "jaxww host", "--skip-cpu-7b")
    cpu, per = ctx.env["cpu"], max(1, dims["blocks"] // 4)
    seconds, est, done, alphas = time_boxed(ctx, "A jaxww host", lambda t: run_jaxww(ctx, t, cpu),
                                            ctx.set2, per, allowance)
    ctx.add("A", "jaxww host", f"cpu x{os.cpu_count()} LAPACK", f"{done}/{1 + 7 * dims['blocks']}",
            seconds, est, "est.: extrapolated from the chunks measured, compilation incl." if est else
            "compilation of its fit incl.")
    ctx.alphas["host"] = alphas


def alpha_notes(ctx):
    """One line per pair of runs of section A that share layers."""
    a = ctx.alphas
    ours = "accelerator" if "accelerator" in a else "host"
    short = {"weightwatcher": "ww", "accelerator": "jaxww accel", "host": "jaxww host"}
    for x, y in (("weightwatcher", ours), ("accelerator", "host")):
        if x not in a or y not in a or x == y:
            continue
        common = sorted(set(a[x]) & set(a[y]))
        if not common:
            continue
        d = np.array([abs(a[x][k][0] - a[y][k][0]) for k in common])
        rel = d / np.array([abs(a[y][k][0]) for k in common])
        same = sum(a[x][k][1] == a[y][k][1] for k in common)
        ctx.add("A", f"alphas {short[x]} vs {short[y]}", "", len(common), None, False,
                f"max |d alpha| {np.nanmax(d):.2e}, max rel {np.nanmax(rel):.2e}; "
                f"same tail {same}/{len(common)}")


# ----------------------------------------------------------------------------- section B

def mixed_set(quick, seed):
    """32 matrices of mixed shapes (module docstring), Student-t (``compare_weightwatcher``)."""
    s = 4 if quick else 1
    dense = ([(4096, 4096), (4096, 11008), (4096, 1024), (1024, 4096), (2048, 2048), (2048, 2048),
              (1024, 1024), (1024, 1024), (1024, 1024), (768, 3072), (3072, 768), (512, 512),
              (512, 512), (512, 2048), (2048, 512), (256, 256), (256, 1024), (128, 128),
              (128, 512), (256, 64), (64, 256), (128, 32 * s), (64 * s, 64 * s), (96 * s, 48 * s)]
             + [(16000, 512)])
    rng = np.random.default_rng(seed)
    tree = {f"dense_{i:02d}": {"kernel": cw.student_t(rng, (a // s, b // s))} for i, (a, b) in enumerate(dense)}
    tree["embed"] = {"embedding": tree.pop(f"dense_{len(dense) - 1:02d}")["kernel"]}
    for i in range(4):
        tree[f"conv_{i}"] = {"kernel": cw.student_t(rng, (3, 3, 64, 128))}
    for i in range(3):
        tree[f"small_{i}"] = {"kernel": cw.student_t(rng, (100 + 10 * i, 40 + 5 * i))}
    return tree


def compare_reports(r_acc, r_cpu):
    """``(rows compared, max rel alpha diff on same tails, same tails, max |d lambda| / lambda_max,
    worst-case bound)`` of two reports of the same tree."""
    a, b = {r["name"]: r for r in r_acc.rows}, {r["name"]: r for r in r_cpu.rows}
    rel, same, dlam, bound = [], 0, [], []
    for name, rb in b.items():
        ra = a[name]
        if ra["num_pl_spikes"] == rb["num_pl_spikes"]:
            same += 1
            rel.append(abs(ra["alpha"] - rb["alpha"]) / abs(rb["alpha"]))
        ea, eb = r_acc.esd(name), r_cpu.esd(name)
        dlam.append(np.max(np.abs(ea - eb)) / np.max(eb))
        kappa = rb["M"] * EPS32 * np.max(eb) / rb["xmin"]
        bound.append(2 * kappa * (rb["alpha"] - 1) ** 2 / rb["alpha"])
    # np.max propagates NaN (a failed fit on one side), so such a run cannot PASS
    return len(b), float(np.max(rel)) if rel else math.nan, same, float(np.max(dlam)), float(np.nanmax(bound))


def section_b(ctx):
    env = ctx.env
    if env["acc"] is None:
        return ctx.skip("B", "alphas accel vs host", env["why"]["acc"])
    tree = mixed_set(ctx.args.quick, ctx.args.seed + 2)
    t_acc, _, r_acc = run_jaxww(ctx, tree, env["acc"])
    t_cpu, _, r_cpu = run_jaxww(ctx, tree, env["cpu"])
    n, rel, same, dlam, bound = compare_reports(r_acc, r_cpu)
    ok = rel <= ALPHA_TOL
    ctx.add("B", "jaxww accelerator", str(env["acc"]), n, t_acc, result="one call, compilation incl.")
    ctx.add("B", "jaxww host", "cpu LAPACK", n, t_cpu, result="one call, compilation incl.")
    ctx.add("B", "alphas accel vs host", "", n, None, False,
            f"{'PASS' if ok else 'FAIL'}: max rel d alpha {rel:.2e} (tol {ALPHA_TOL:g}; worst-case "
            f"bound {bound:.1e}), same xmin {same}/{n}, max |d lambda|/lambda_max {dlam:.1e}")
    note(f"B: {ctx.rows[-1]['result']}")


# ----------------------------------------------------------------------------- main

def guarded(ctx, section, run, fn, *args, min_left=10.0):
    """``fn(ctx, *args)``: skipped when under ``min_left`` s of the budget are left; an
    error is one line of the table and the run goes on."""
    left = ctx.clock.left()
    if left < min_left:
        return ctx.skip(section, run, f"budget: {max(left, 0):.0f} s left of {ctx.args.budget_seconds:.0f} s")
    try:
        fn(ctx, *args)
    except Exception as err:   # noqa: BLE001 - report and go on, by design
        note(f"{section} {run}: failed: {one_line(err)}")
        ctx.add(section, run, result=f"failed: {one_line(err)}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="8x narrower, 4 blocks (smoke run)")
    ap.add_argument("--budget-seconds", type=float, default=None,
                    help="time of the whole run (default 450, with --quick 100)")
    ap.add_argument("--skip-cpu-7b", action="store_true", help="no jaxww host run of section A")
    ap.add_argument("--ww-model-on-host", action="store_true",
                    help="keep weightwatcher's torch model in host memory even with CUDA")
    ap.add_argument("--memory-budget", default=None, help="analyze(memory_budget=...), e.g. 8GiB")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.budget_seconds is None:
        args.budget_seconds = 100.0 if args.quick else 450.0
    ctx = Ctx(args)
    guarded(ctx, "-", "environment", print_env, min_left=0)
    dims = llama_dims(args.quick)
    note(f"section A: {dims['blocks']} blocks, d={dims['d']}, F={dims['F']}, vocab={dims['vocab']}")
    guarded(ctx, "A", "jaxww accelerator", section_a_accelerator, dims)
    guarded(ctx, "B", "alphas accel vs host", section_b)
    if ctx.set2 is not None:
        share = 1.0 if args.skip_cpu_7b or ctx.env["jax"] is None else 0.6
        guarded(ctx, "A", "weightwatcher", lambda c: section_a_ww(c, dims, share * (c.clock.left() - 5)))
        guarded(ctx, "A", "jaxww host", lambda c: section_a_host(c, dims, c.clock.left() - 5))
        guarded(ctx, "A", "alpha agreement", alpha_notes, min_left=0)
    print_table(ctx)
    note(f"total {time.perf_counter() - ctx.clock.t0:.1f} s")


if __name__ == "__main__":
    main()
