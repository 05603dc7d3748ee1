"""Pruning by magnitude to a uniform sparsity, against AlphaPruning's alpha-allocated one.

The question of AlphaPruning (Lu et al., NeurIPS 2024), asked at laptop scale: at the same
overall sparsity, does giving each layer its own sparsity from its heavy-tail metric
(``jaxww.layerwise_sparsity``: lower alpha, a better-trained layer, keeps more) lose less
test accuracy than pruning every layer alike? The MLP and the small CNN of
``bench/digits_alpha.py`` are trained with plain adam on scikit-learn's digits (same
settings, one split and initialisation per seed), then pruned one-shot by magnitude
(``jaxww.prune_by_magnitude``, no fine-tuning after, as AlphaPruning's LLM results) at
50, 70 and 90% of the weights of every matrix but the 10-class head.

The verdict per (model, sparsity) is fixed before the run: the mean paired difference
(alpha-allocated - uniform test accuracy, same seed) over seeds, "better" or "worse" when
it is beyond twice its standard error, else "no difference".

Run::

    PYTHONPATH=. python bench/pruning_digits.py            # 5 seeds
    PYTHONPATH=. python bench/pruning_digits.py --seeds 2  # quicker
"""

from __future__ import annotations

import argparse
import os
import re
import sys

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import digits_alpha  # noqa: E402
import jaxww  # noqa: E402

SPARSITIES = (0.5, 0.7, 0.9)
EPSILON = 0.3
#: The matrices pruned: every layer but the 10-class head, which AlphaPruning leaves alone too
#: (it prunes the transformer blocks' linear layers, not the LM head).
HIDDEN = {"mlp": r"^Dense_[01]/", "cnn": r"^(Conv_[01]|Dense_0)/"}


def trained_params(model_name, seed, settings, data):
    """Train with plain adam (digits_alpha's loop), return (params, test accuracy fn)."""
    model = digits_alpha._model(model_name)
    params = digits_alpha.train(model_name, "plain", seed, settings, data=data, log=False)["params"]
    Xte, yte = jnp.asarray(data[1]), jnp.asarray(data[3])

    def accuracy(p):
        return float((model.apply({"params": p}, Xte).argmax(-1) == yte).mean())

    return params, accuracy


def one_seed(model_name, seed, settings):
    data = digits_alpha.load_data(seed, settings.test_size)
    params, accuracy = trained_params(model_name, seed, settings, data)
    params = jax.tree.map(np.asarray, params)
    report = jaxww.analyze(params, layers=HIDDEN[model_name], **digits_alpha.READ)
    out = {"dense": accuracy(params)}
    for s in SPARSITIES:
        out[("uniform", s)] = accuracy(jaxww.prune_by_magnitude(params, report, s))
        ratios, eps = allocate(report, s)
        out[("alpha", s)] = accuracy(jaxww.prune_by_magnitude(params, report, ratios))
        out[("epsilon", s)] = eps
        if seed == 0:
            print(f"  {model_name} seed 0, {s:.0%}, epsilon {eps:.3f}: " + ", ".join(
                f"{r['name']} alpha {r['alpha']:.2f} -> {x:.0%}" for r, x in zip(report.rows, ratios)),
                flush=True)
    return out


def allocate(report, sparsity):
    """AlphaPruning's rule at its epsilon 0.3, or at the largest epsilon that fits where 0.3
    would ask a layer for more than all its weights (few layers, a high target)."""
    try:
        return jaxww.layerwise_sparsity(report, sparsity, epsilon=EPSILON), EPSILON
    except ValueError as err:
        eps = float(re.search(r"fits is ([0-9.]+)", str(err)).group(1))
        return jaxww.layerwise_sparsity(report, sparsity, epsilon=eps), eps


def verdict(diffs):
    mean = float(np.mean(diffs))
    se = float(np.std(diffs, ddof=1) / np.sqrt(len(diffs))) if len(diffs) > 1 else float("inf")
    word = "better" if mean > 2 * se else "worse" if mean < -2 * se else "no difference"
    return mean, se, word


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=40)
    args = parser.parse_args(argv)
    settings = digits_alpha.Settings(epochs=args.epochs)
    print("model  sparsity  dense acc       uniform         alpha-allocated  "
          "paired diff (se)   verdict")
    for model_name in digits_alpha.MODELS:
        runs = [one_seed(model_name, seed, settings) for seed in range(args.seeds)]
        dense = np.array([r["dense"] for r in runs])
        for s in SPARSITIES:
            uni = np.array([r[("uniform", s)] for r in runs])
            alp = np.array([r[("alpha", s)] for r in runs])
            eps = np.array([r[("epsilon", s)] for r in runs])
            mean, se, word = verdict(alp - uni)
            print(f"{model_name:5s}  {s:8.0%}  {dense.mean():.4f}+-{dense.std():.4f}  "
                  f"{uni.mean():.4f}+-{uni.std():.4f}  {alp.mean():.4f}+-{alp.std():.4f}   "
                  f"{mean:+.4f} ({se:.4f})   {word}   (epsilon {eps.min():.3f}-{eps.max():.3f})",
                  flush=True)


if __name__ == "__main__":
    main()
