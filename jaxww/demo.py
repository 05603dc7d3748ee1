"""The built-in demo: what alpha says about three small networks trained on digits.

``python -m jaxww demo`` trains the same MLP (64 -> 256 -> 256 -> 10) on scikit-learn's
bundled digits (no download) three ways, then shows each layer's alpha, each model's mean
alpha over the layers that carry a verdict and that mean's verdict (:func:`model_verdict`),
next to its test accuracy. The models are named by recipe; the verdict is what alpha says:

=============== ========================== ==========================================
model           recipe                     measured over seeds 0-4 (this machine)
=============== ========================== ==========================================
short           30 steps, adam 1e-3, b 32  test accuracy 0.87-0.92; mean alpha 5.4-7.0:
                                           under-trained on seeds 0, 2, 4, well-trained
                                           on 1, 3 (layers near their random start fit
                                           noisy alphas: 3.8-30 at initialisation, 0-7)
standard        600 steps, adam 1e-3, b 32 accuracy 0.98-0.99; mean 2.9-3.1, well-trained
long, big steps 3000 steps, adam 1e-2, b 8 accuracy 0.92-0.99; mean 1.81-1.87, over-trained
=============== ========================== ==========================================

The 10-class head has 10 eigenvalues, too few for a verdict (docs/conventions.md,
section 4): its alpha is shown in parentheses and left out of the mean. :func:`demo_params`
is a freshly initialised Flax network with every kind of layer jaxww reads (embedding,
attention, convolution, dense), for trying the reading rules.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn

#: ``(label, steps, learning rate, batch size)`` of the three models.
RECIPES = (("short", 30, 1e-3, 32), ("standard", 600, 1e-3, 32), ("long, big steps", 3000, 1e-2, 8))


class DigitsMLP(nn.Module):
    """64 -> 256 -> 256 -> 10, ReLU."""

    @nn.compact
    def __call__(self, x):
        for width in (256, 256):
            x = nn.relu(nn.Dense(width)(x))
        return nn.Dense(10)(x)


def digits(seed: int = 0):
    """scikit-learn's digits scaled to [0, 1]: ``(x_train, y_train, x_test, y_test)``, 1400 / 397.

    Raises:
      ImportError: scikit-learn is missing (``pip install 'jaxww[notebooks]'``).
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise ImportError("the demo trains on scikit-learn's digits: pip install 'jaxww[all]'") from err
    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = (x / 16.0).astype(np.float32)[order], y[order].astype(np.int32)
    return x[:1400], y[:1400], x[1400:], y[1400:]


def train(steps: int, lr: float, batch: int, seed: int = 0, data=None):
    """The MLP trained with adam on minibatches drawn with replacement: ``(params, test accuracy)``.

    The whole loop is one ``jax.lax.scan`` over precomputed batch indices.
    """
    x_tr, y_tr, x_te, y_te = digits() if data is None else data
    x_tr, y_tr = jnp.asarray(x_tr), jnp.asarray(y_tr)
    model, tx = DigitsMLP(), optax.adam(lr)
    params = model.init(jax.random.key(seed), x_tr[:1])["params"]
    picks = jnp.asarray(np.random.default_rng(seed).integers(0, len(x_tr), (steps, batch)))

    def loss(p, i):
        logits = model.apply({"params": p}, x_tr[i])
        return optax.softmax_cross_entropy_with_integer_labels(logits, y_tr[i]).mean()

    def step(carry, i):
        p, s = carry
        u, s = tx.update(jax.grad(loss)(p, i), s, p)
        return (optax.apply_updates(p, u), s), None

    (params, _), _ = jax.jit(lambda c: jax.lax.scan(step, c, picks))((params, tx.init(params)))
    accuracy = float((model.apply({"params": params}, x_te).argmax(-1) == y_te).mean())
    return jax.device_get(params), accuracy


def story(seed: int = 0) -> list:
    """``[(label, recipe, test accuracy, Report)]`` of the three :data:`RECIPES`."""
    import jaxww

    data = digits()
    out = []
    for label, steps, lr, batch in RECIPES:
        params, acc = train(steps, lr, batch, seed, data)
        out.append((label, (steps, lr, batch), acc, jaxww.analyze(params)))
    return out


def model_verdict(report) -> tuple[list, float, str]:
    """A model's verdict from its own alphas: ``(rows with a verdict, their mean alpha, verdict)``.

    The rows with a verdict are those with enough eigenvalues for one (at least
    ``MIN_VERDICT_EVALS``, docs/conventions.md section 4) and a fitted alpha; the verdict of
    their mean is ``"under-trained"`` above 6, ``"over-trained"`` below 2, else
    ``"well-trained"`` (:func:`jaxww.fit.metrics.warning` of the mean rounded as printed, to 2
    decimals). No row with a verdict: NaN and ``"none: no layer carries one"``.
    """
    from jaxww.fit.metrics import warning

    rows = [r for r in report.rows if not r["reason"].startswith("no verdict") and np.isfinite(r["alpha"])]
    if not rows:
        return rows, float("nan"), "none: no layer carries one"
    mean = float(np.mean([r["alpha"] for r in rows]))
    return rows, mean, warning(round(mean, 2)) or "well-trained"


def _table(cells: list, right: set) -> list:
    """Rows of cells as lines, each column as wide as its widest cell, two spaces apart,
    the columns in ``right`` right-aligned."""
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    return ["  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()
            for row in cells]


def story_text(results) -> str:
    """The models side by side: each layer's alpha (in parentheses where it has too few
    eigenvalues for a verdict), the mean over the layers with one and its verdict, then
    the rule that gives it (:func:`model_verdict`)."""
    names = [r["name"].removesuffix("/kernel") for r in results[0][3].rows]
    cells = [["model", "recipe", "test acc", *names, "mean alpha", "verdict"]]
    for label, (steps, lr, batch), acc, report in results:
        rows, mean, verdict = model_verdict(report)
        alphas = [f"{r['alpha']:.2f}" if r in rows else f"({r['alpha']:.2f})" for r in report.rows]
        cells.append([label, f"{steps} steps, lr {lr:g}, batch {batch}", f"{acc:.3f}", *alphas, f"{mean:.2f}", verdict])
    without = sorted({(n, r["reason"].removeprefix("no verdict: ")) for *_, rep in results
                      for n, r in zip(names, rep.rows) if r not in model_verdict(rep)[0]})
    return "\n".join(_table(cells, set(range(2, len(cells[0]) - 1))) + ["", *_rule(without), "", _MEANING])


def _rule(without) -> list:
    """The lines that say how a model's verdict is computed, and which alphas carry none."""
    from jaxww.fit.metrics import OVER_TRAINED, UNDER_TRAINED

    return ["mean alpha: over the layers that carry a verdict; in parentheses, those that do not "
            "(left out of the mean):", *[f"  {n}: {why}" for n, why in without],
            f"verdict of the mean: under-trained above {UNDER_TRAINED:g}, well-trained from {OVER_TRAINED:g} "
            f"to {UNDER_TRAINED:g}, over-trained below {OVER_TRAINED:g}."]


_MEANING = """What alpha says (no data needed, only the weights):
  alpha > 6: the layer's spectrum is close to a random matrix's: it has learned little;
  2 <= alpha <= 6: a heavy-tailed spectrum, the signature of a well-trained layer;
  alpha < 2: very heavy: the layer may be over-fitted, here by long training at a large step.
A layer near its random start fits a noisy alpha (3.8 to 30 over seeds at initialisation), so a
short training can read as well-trained on some seeds (--seed): the verdict is what alpha says."""


class DemoNet(nn.Module):
    """Embedding -> self-attention block -> 2-D convolution -> MLP head."""

    vocab: int = 2000
    width: int = 128
    heads: int = 4

    @nn.compact
    def __call__(self, tokens):
        x = nn.Embed(self.vocab, self.width)(tokens)
        x = x + nn.MultiHeadDotProductAttention(num_heads=self.heads)(nn.LayerNorm()(x))
        h = nn.Dense(4 * self.width)(nn.LayerNorm()(x))
        x = x + nn.Dense(self.width)(nn.gelu(h))
        img = x.reshape(x.shape[0], 8, -1, self.width)
        img = nn.relu(nn.Conv(64, (3, 3))(img))
        return nn.Dense(10)(img.mean(axis=(1, 2)))


def demo_params(seed: int = 0):
    """Linen variables of :class:`DemoNet` initialised from ``jax.random.key(seed)`` (random
    weights: their fitted alphas are those of random matrices, usually above 6 but noisy)."""
    return DemoNet().init(jax.random.key(seed), jnp.zeros((1, 64), jnp.int32))
