"""Step time of the alpha transforms against the plain optax step, side by side in one run.

Models: a 4x512 MLP (four hidden layers of 512, 10 outputs) on 64 inputs (``digits``,
the shapes of sklearn's 8x8 digits) or 512 inputs (``mlp``), and a small
Transformer block (d_model 256, 4 heads, MLP 1024, sequence 64). Every configuration
is ``optax.chain(<transform>, optax.adam(1e-3))`` (TempBalance: between
``scale_by_adam`` and the learning rate) in one jitted ``step(params, state, batch)``.

Timing: all steps are compiled and warmed up first (one full ``every`` cycle), then
the configurations are timed in interleaved rounds (so that load from other
processes hits all of them alike). A round runs ``block`` consecutive steps of each
configuration (``block`` = 10, a whole ``every=10`` cycle, so full spectra are
amortised as in training) and blocks on the result; the step time is the round time
divided by ``block``; the table shows medians over rounds and the ratio to ``plain``.

The floor of any transform that takes exact spectra every 10 steps is measured in
the same rounds: the exact eigenvalues of every weight matrix (BLAS ``syrk`` and LAPACK
``syevd`` without vectors with its optimal workspace, one thread, one matrix after the
other) once per round,
so ``floor = plain + eigenvalues / 10``; the table gives each configuration's ratio
to ``plain`` and to that floor.

``--accuracy`` also measures how close the gradient that ``add_alpha_regularization``
adds is to the exact gradient of ``jaxww.alpha_penalty`` along a training run of the
MLP (cosine and norm ratio on the cheap steps, tail coverage, alpha error).

Run::

    PYTHONPATH=. python bench/train_step.py                # timings: MLP (batch 128, 512), Transformer
    PYTHONPATH=. python bench/train_step.py --accuracy     # plus the gradient accuracy
"""

from __future__ import annotations

import os

# JAX's CPU LAPACK calls (eigh, qr, the tridiagonal reduction) run in OpenBLAS, whose
# worker threads busy-wait: on a loaded machine that slows them down 10-100x. One
# thread per call is the robust setting (set before numpy/jax are imported).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import platform
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import threadpoolctl

import jaxww
from jaxww.linalg import lapack as _lapack


class MLP(nn.Module):
    width: int = 512
    depth: int = 4

    @nn.compact
    def __call__(self, x):
        for _ in range(self.depth):
            x = nn.relu(nn.Dense(self.width)(x))
        return nn.Dense(10)(x)


class Block(nn.Module):
    d: int = 256
    heads: int = 4
    mlp: int = 1024

    @nn.compact
    def __call__(self, x):
        h = nn.LayerNorm()(x)
        x = x + nn.MultiHeadDotProductAttention(num_heads=self.heads)(h, h)
        h = nn.LayerNorm()(x)
        h = nn.Dense(self.d)(nn.gelu(nn.Dense(self.mlp)(h)))
        return x + h


def configs(lr=1e-3):
    adam = optax.adam(lr)
    return {
        "plain": adam,
        "alpha_reg every=1": optax.chain(jaxww.add_alpha_regularization(1e-3, 2.0, every=1), adam),
        "alpha_reg every=10": optax.chain(jaxww.add_alpha_regularization(1e-3, 2.0, every=10), adam),
        "alpha_reg every=100": optax.chain(jaxww.add_alpha_regularization(1e-3, 2.0, every=100), adam),
        "scale_by_alpha every=10": optax.chain(optax.scale_by_adam(), jaxww.scale_by_alpha(every=10),
                                               optax.scale(-lr)),
        "alpha_decayed every=10": optax.chain(jaxww.add_alpha_decayed_weights(1e-2, every=10), adam),
    }


def problem(name, batch, key):
    k1, k2, k3 = jax.random.split(key, 3)
    if name in ("mlp", "digits"):   # digits: the 8x8 = 64 inputs of sklearn's digits
        model = MLP()
        x = jax.random.normal(k1, (batch, 64 if name == "digits" else 512))
        y = jax.random.randint(k2, (batch,), 0, 10)

        def loss(p, x, y):
            return optax.softmax_cross_entropy_with_integer_labels(model.apply({"params": p}, x), y).mean()
    else:
        model = Block()
        x = jax.random.normal(k1, (batch, 64, 256))
        y = jax.random.normal(k2, (batch, 64, 256))

        def loss(p, x, y):
            return jnp.mean((model.apply({"params": p}, x) - y) ** 2)
    params = model.init(k3, x[:1])["params"]
    return params, (x, y), loss


def _kernels(params):
    names, leaves, _ = jaxww.flatten_params(params)
    kerns, _ = jaxww.find_kernels(names, leaves)
    return [(k, leaves[k.leaf]) for k in kerns]


def floor_eigenvalues(mats):
    """The issue's floor: ``?syrk`` + ``?syevd`` (no vectors, LAPACK's optimal workspace),
    one BLAS thread, one matrix after the other (jaxww's CPU eigenvalue routine, unthreaded)."""
    with threadpoolctl.threadpool_limits(1, "blas"):
        for W in mats:
            _lapack.eigvalsh(_lapack.gram(W), np.empty(W.shape[1], W.dtype))


def make_step(opt, loss):
    @jax.jit
    def step(p, st, x, y):
        g = jax.grad(loss)(p, x, y)
        u, st = opt.update(g, st, p)
        return optax.apply_updates(p, u), st
    return step


def time_model(name, batch, rounds, block, key):
    params, (x, y), loss = problem(name, batch, key)
    runs = {}
    for cname, opt in configs().items():
        step = make_step(opt, loss)
        p, st = params, opt.init(params)
        t0 = time.perf_counter()
        p, st = step(p, st, x, y)
        jax.block_until_ready(p)
        compile_s = time.perf_counter() - t0
        for _ in range(2 * block):   # warm-up: a full every=10 cycle, both branches run
            p, st = step(p, st, x, y)
        jax.block_until_ready(p)
        runs[cname] = dict(step=step, p=p, st=st, times=[], compile_s=compile_s)
    # The floor: exact eigenvalues (LAPACK syevd, jobz='N', one thread, one matrix after
    # the other) of every weight matrix, once per round, amortised over 10 steps.
    mats = [np.ascontiguousarray(m if m.shape[0] >= m.shape[1] else m.T)
            for k, leaf in _kernels(params) for m in np.asarray(k.matrices(leaf))]
    floor_eigenvalues(mats)
    eig_times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        floor_eigenvalues(mats)
        eig_times.append(time.perf_counter() - t0)
        for r in runs.values():
            p, st = r["p"], r["st"]
            t0 = time.perf_counter()
            for _ in range(block):
                p, st = r["step"](p, st, x, y)
            jax.block_until_ready(p)
            r["times"].append((time.perf_counter() - t0) / block)
            r["p"], r["st"] = p, st
    base = np.median(runs["plain"]["times"])
    floor = base + np.median(eig_times) / 10
    kernels = len(jaxww.tree_alpha(params))
    print(f"\n{name}: batch {batch}, {kernels} weight matrices, "
          f"{sum(a.size for a in jax.tree.leaves(params)) / 1e6:.2f} M params, {rounds} rounds x {block} steps")
    print(f"eigenvalues of all layers (syevd, no vectors): {np.median(eig_times) * 1e3:.2f} ms; "
          f"floor = plain + that / 10 = {floor * 1e3:.2f} ms = {floor / base:.3f}x plain")
    print(f"{'configuration':30s} {'step ms (median)':>17s} {'p10-p90 ms':>14s} {'ratio':>7s} "
          f"{'/ floor':>8s} {'compile s':>10s}")
    out = {}
    for cname, r in runs.items():
        t = np.asarray(r["times"]) * 1e3
        ratios = np.asarray(r["times"]) / np.asarray(runs["plain"]["times"])
        ratio = np.median(t) / (base * 1e3)
        out[cname] = ratio
        print(f"{cname:30s} {np.median(t):17.2f} {np.percentile(t, 10):6.2f}-{np.percentile(t, 90):<7.2f} "
              f"{ratio:7.2f} {np.median(t) / (floor * 1e3):8.2f} {r['compile_s']:10.1f}"
              f"   (per-round ratio median {np.median(ratios):.2f})")
    return out


def accuracy(steps, key):
    """Cosine and norm ratio of the transform's gradient against the exact one, MLP, adam.

    The exact gradient is ``jax.grad(jaxww.alpha_penalty)`` at the same weights (a full
    ``eigh`` and, for ``"ks"``, a fresh KS tail choice at every step).
    """
    params, (x, y), loss = problem("digits", 256, key)
    zeros = jax.tree.map(jnp.zeros_like, params)
    train = optax.adam(1e-3)
    tstep = jax.jit(lambda p, s: (lambda g, s2: (optax.apply_updates(p, g), s2))(
        *train.update(jax.grad(loss)(p, x, y), s, p)))
    print(f"\ngradient of add_alpha_regularization(strength=1, target=2) against the exact gradient "
          f"(4x512 MLP on 64 inputs trained by adam 1e-3, batch 256, {steps} steps; between = "
          f"steps between refreshes)")
    print(f"{'tail':>8s} {'every':>5s} {'cos all':>8s} {'cos between (median, min)':>26s} "
          f"{'|g|/|g*| between':>17s} {'|alpha - alpha*| max':>21s}")
    for tail in ("ks", "fraction", 0.1):
        exact = jax.jit(jax.grad(lambda q: jaxww.alpha_penalty(q, 2.0, tail=tail)))
        exact_alpha = jax.jit(lambda q: jaxww.tree_alpha(q, tail=tail))
        for every in (1, 10):
            reg = jaxww.add_alpha_regularization(1.0, 2.0, every=every, tail=tail)
            rst, tst, p = reg.init(params), train.init(params), params
            rupd = jax.jit(reg.update)
            cos, between, ratio, aerr = [], [], [], []
            for i in range(steps):
                g, rst = rupd(zeros, rst, p)
                want = exact(p)
                a = np.concatenate([np.ravel(v) for v in jax.tree.leaves(g)])
                b = np.concatenate([np.ravel(v) for v in jax.tree.leaves(want)])
                c = a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30)
                cos.append(c)
                if i % every:
                    between.append(c)
                    ratio.append(np.linalg.norm(a) / (np.linalg.norm(b) + 1e-30))
                ta = exact_alpha(p)
                aerr.append(max(abs(float(rst.alpha[k]) - float(ta[k])) for k in ta))
                p, tst = tstep(p, tst)
            cc = f"{np.median(between):.3f}, {np.min(between):.3f}" if between else "-"
            rr = f"{np.median(ratio):.3f}" if ratio else "-"
            print(f"{str(tail):>8s} {every:5d} {np.median(cos):8.3f} {cc:>26s} {rr:>17s} "
                  f"{np.max(aerr):21.3f}", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="digits:256,mlp:128,transformer:16",
                    help="model:batch pairs (models: mlp, transformer)")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--block", type=int, default=10)
    ap.add_argument("--accuracy", action="store_true")
    ap.add_argument("--accuracy-steps", type=int, default=30)
    args = ap.parse_args(argv)
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, {jax.devices()[0].device_kind}, "
          f"{platform.processor() or platform.machine()}, {jax.local_device_count()} device(s)")
    key = jax.random.key(0)
    print(f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}")
    for run in filter(None, args.runs.split(",")):
        name, batch = run.split(":")
        time_model(name, int(batch), args.rounds, args.block, key)
    if args.accuracy:
        accuracy(args.accuracy_steps, key)


if __name__ == "__main__":
    main()
