"""Alpha inside training, on real data: scikit-learn's bundled digits (8x8 images, 10 classes).

An MLP and a small CNN (Flax Linen) are trained with optax, same seeds, same data
split, same initialisation, once per configuration:

=============== ==================================================================
``plain``       ``optax.adam(lr)``
``adamw``       ``optax.adamw(lr, weight_decay)``: the uniform-decay baseline
``alpha_reg``   ``jaxww.add_alpha_regularization(strength, target, every=10)``
                before ``adam`` (a coupled penalty, as if it were in the loss)
``tempbalance`` ``scale_by_adam -> jaxww.scale_by_alpha -> scale(-lr)``
                (per-layer learning rates from alpha, refreshed every epoch)
``alphadecay``  ``scale_by_adam -> jaxww.add_alpha_decayed_weights -> scale(-lr)``
                (per-layer decoupled weight decay from alpha, refreshed every epoch)
=============== ==================================================================

It prints, per model and configuration, mean +- std over seeds of the train and
test accuracy and of the final per-layer alpha (``jaxww.tree_alpha``, the exact KS
tail: the alpha of ``jaxww.analyze``), and the mean distance ``|alpha - target|``.

Run::

    PYTHONPATH=. python bench/digits_alpha.py            # the full experiment
    PYTHONPATH=. python bench/digits_alpha.py --quick    # test-sized (< 60 s)

``notebooks/02_alpha_in_training.ipynb`` is the same question as a tutorial, with plots.
"""

from __future__ import annotations

import os

# JAX's CPU LAPACK calls (eigh, qr, the tridiagonal reduction) run in OpenBLAS, whose
# worker threads busy-wait: on a loaded machine that slows them down 10-100x. One
# thread per call is the robust setting (set before numpy/jax are imported).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import time
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxww

CONFIGS = ("plain", "adamw", "alpha_reg", "tempbalance", "alphadecay")
MODELS = ("mlp", "cnn")
#: How every jaxww function here reads the layers: all of analyze's rows (min_evals=8, the
#: 10-class heads included; the transforms' default acts only on layers of >= 32 eigenvalues)
#: and the CNN's first convolution, a (3, 3, 1, 16) kernel that a params tree cannot tell
#: from a depthwise one, read as the convolution it is. The measured evidence in
#: docs/training.md acts on every layer.
READ = {"min_evals": 8, "layouts": {r"^Conv_0/kernel$": "conv"}}


class Settings(NamedTuple):
    """Hyper-parameters of the experiment (fixed before looking at test accuracy)."""

    epochs: int = 40
    batch: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-2      # adamw and alphadecay (decoupled, times lr)
    target: float = 2.0             # alpha_reg target
    strength: float = 1e-3          # alpha_reg strength
    every: int = 10                 # alpha_reg: full spectra every 10 steps
    test_size: float = 0.3


class MLP(nn.Module):
    widths: tuple = (256, 256)

    @nn.compact
    def __call__(self, x):
        x = x.reshape((x.shape[0], -1))
        for w in self.widths:
            x = nn.relu(nn.Dense(w)(x))
        return nn.Dense(10)(x)


class CNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = x.reshape((x.shape[0], 8, 8, 1))
        x = nn.relu(nn.Conv(16, (3, 3))(x))
        x = nn.relu(nn.Conv(32, (3, 3))(x))
        x = nn.avg_pool(x, (2, 2), (2, 2))
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(64)(x))
        return nn.Dense(10)(x)


def load_data(seed: int, test_size: float):
    """Digits scaled to [0, 1], a stratified train/test split that depends on ``seed``."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    return train_test_split(X, y.astype(np.int32), test_size=test_size, random_state=seed, stratify=y)


def make_optimizer(config: str, s: Settings, steps_per_epoch: int):
    if config == "plain":
        return optax.adam(s.lr)
    if config == "adamw":
        return optax.adamw(s.lr, weight_decay=s.weight_decay)
    if config == "alpha_reg":
        return optax.chain(jaxww.add_alpha_regularization(s.strength, s.target, every=s.every, **READ),
                           optax.adam(s.lr))
    if config == "tempbalance":
        return optax.chain(optax.scale_by_adam(), jaxww.scale_by_alpha(every=steps_per_epoch, **READ),
                           optax.scale(-s.lr))
    if config == "alphadecay":
        return optax.chain(optax.scale_by_adam(),
                           jaxww.add_alpha_decayed_weights(s.weight_decay, every=steps_per_epoch, **READ),
                           optax.scale(-s.lr))
    raise ValueError(f"unknown config {config!r}; choose from {CONFIGS}")


def _model(name):
    if name == "mlp":
        return MLP()
    if name == "cnn":
        return CNN()
    raise ValueError(f"unknown model {name!r}; choose from {MODELS}")


def train(model_name: str, config: str, seed: int, s: Settings, data=None, log=True):
    """Train one model with one configuration; returns a dict of histories and accuracies."""
    Xtr, Xte, ytr, yte = data if data is not None else load_data(seed, s.test_size)
    model = _model(model_name)
    key = jax.random.key(seed)
    init_key, key = jax.random.split(key)
    params = model.init(init_key, jnp.zeros((1, 64)))["params"]
    steps = len(Xtr) // s.batch
    opt = make_optimizer(config, s, steps)
    opt_state = opt.init(params)
    Xtr_j, ytr_j = jnp.asarray(Xtr), jnp.asarray(ytr)

    def loss_fn(p, x, y):
        logits = model.apply({"params": p}, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    @jax.jit
    def step(p, st, idx):
        g = jax.grad(loss_fn)(p, Xtr_j[idx], ytr_j[idx])
        u, st = opt.update(g, st, p)
        return optax.apply_updates(p, u), st

    def epoch(p, st, k):
        # A Python loop of jitted steps: XLA:CPU runs convolutions inside lax.scan ~15x slower.
        perm = jax.random.permutation(k, Xtr_j.shape[0])[: steps * s.batch].reshape(steps, s.batch)
        for idx in perm:
            p, st = step(p, st, idx)
        return p, st

    @jax.jit
    def accuracy(p, x, y):
        return (model.apply({"params": p}, x).argmax(-1) == y).mean()

    alpha_fn = jax.jit(lambda p: jaxww.tree_alpha(p, **READ))
    hist = {"epoch": [], "alpha": [], "train_acc": [], "test_acc": []}

    def record(e, p):
        hist["epoch"].append(e)
        hist["alpha"].append({k: float(v) for k, v in alpha_fn(p).items()})
        hist["train_acc"].append(float(accuracy(p, Xtr_j, ytr_j)))
        hist["test_acc"].append(float(accuracy(p, jnp.asarray(Xte), jnp.asarray(yte))))

    record(0, params)
    t0 = time.perf_counter()
    for e in range(1, s.epochs + 1):
        key, k = jax.random.split(key)
        params, opt_state = epoch(params, opt_state, k)
        record(e, params)
    seconds = time.perf_counter() - t0
    if log:
        print(f"  {model_name:4s} {config:12s} seed {seed}: test acc {hist['test_acc'][-1]:.4f} "
              f"({seconds:.1f} s)", flush=True)
    return {"model": model_name, "config": config, "seed": seed, "history": hist,
            "train_acc": hist["train_acc"][-1], "test_acc": hist["test_acc"][-1],
            "alpha": hist["alpha"][-1], "seconds": seconds, "params": params}


def run_experiment(models=MODELS, configs=CONFIGS, seeds=(0, 1, 2, 3, 4), settings=None, log=True):
    """Every (model, configuration, seed); same split and initialisation per seed."""
    s = settings or Settings()
    runs = []
    for seed in seeds:
        data = load_data(seed, s.test_size)
        for m in models:
            for c in configs:
                runs.append(train(m, c, seed, s, data=data, log=log))
    return runs


def _ms(values):
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return "nan"
    return f"{v.mean():.4f} +- {v.std(ddof=1) if v.size > 1 else 0.0:.4f}"


def summarize(runs, target: float):
    """Rows ``(model, config, train acc, test acc, mean |alpha - target|, per-layer alphas)``."""
    rows = []
    for m in dict.fromkeys(r["model"] for r in runs):
        for c in dict.fromkeys(r["config"] for r in runs):
            sel = [r for r in runs if r["model"] == m and r["config"] == c]
            if not sel:
                continue
            layers = list(sel[0]["alpha"])
            dist = [np.nanmean([abs(r["alpha"][k] - target) for k in layers]) for r in sel]
            rows.append({
                "model": m, "config": c, "seeds": len(sel),
                "train_acc": _ms([r["train_acc"] for r in sel]),
                "test_acc": _ms([r["test_acc"] for r in sel]),
                "test_acc_mean": float(np.mean([r["test_acc"] for r in sel])),
                "dist_to_target": _ms(dist),
                "dist_mean": float(np.nanmean(dist)),
                "alpha": {k.split("/")[0]: _ms([r["alpha"][k] for r in sel]) for k in layers},
            })
    return rows


def print_table(rows):
    print(f"{'model':5s} {'config':12s} {'seeds':>5s}  {'train acc':18s} {'test acc':18s} "
          f"{'|alpha-target|':18s} final alpha per layer (mean +- std)")
    for r in rows:
        alphas = ", ".join(f"{k}={v}" for k, v in r["alpha"].items())
        print(f"{r['model']:5s} {r['config']:12s} {r['seeds']:5d}  {r['train_acc']:18s} "
              f"{r['test_acc']:18s} {r['dist_to_target']:18s} {alphas}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="test-sized: MLP only, plain vs alpha_reg, one seed, 6 epochs")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--configs", default=",".join(CONFIGS))
    p.add_argument("--json", default=None, help="also write the summary and final values of every run here")
    args = p.parse_args(argv)
    s = Settings()
    models, configs, seeds = args.models.split(","), args.configs.split(","), tuple(range(args.seeds))
    if args.quick:
        s = s._replace(epochs=6)
        models, configs, seeds = ("mlp",), ("plain", "alpha_reg"), (0,)
    if args.epochs is not None:
        s = s._replace(epochs=args.epochs)
    print(f"digits: {s}", flush=True)
    t0 = time.perf_counter()
    runs = run_experiment(models, configs, seeds, s)
    rows = summarize(runs, s.target)
    print_table(rows)
    print(f"total {time.perf_counter() - t0:.1f} s")
    if args.json:
        import json

        final = [{k: r[k] for k in ("model", "config", "seed", "train_acc", "test_acc", "alpha", "seconds")}
                 for r in runs]
        with open(args.json, "w") as f:
            json.dump({"settings": s._asdict(), "rows": rows, "runs": final}, f, indent=1)
    return runs, rows


if __name__ == "__main__":
    main()
