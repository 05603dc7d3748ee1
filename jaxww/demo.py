"""The built-in demo: what alpha says about three small networks trained on digits.

``python -m jaxww demo`` trains the same MLP (64 -> 256 -> 256 -> 10) on scikit-learn's
bundled digits (no download) three ways, then shows each one's alphas and verdicts next
to its test accuracy:

=============== ========================== ==========================================
model           recipe                     measured over seeds 0, 1, 2 (this machine)
=============== ========================== ==========================================
under-trained   30 steps, adam 1e-3, b 32  test accuracy 0.87-0.92; alphas 4.1-8.2, the
                                           middle layer > 6 ("under-trained")
well-trained    600 steps, adam 1e-3, b 32 accuracy 0.98-0.99; alphas 2.4-3.7, no warning
over-trained    3000 steps, adam 1e-2, b 8 accuracy 0.92-0.98; first layer 1.70-1.72 < 2
                                           ("over-trained"), the next 1.96-2.01
=============== ========================== ==========================================

The 10-class head has 10 eigenvalues, too few for a verdict (docs/conventions.md,
section 4): its alpha is shown, its verdict is not. :func:`demo_params` is a freshly
initialised Flax network with every kind of layer jaxww reads (embedding, attention,
convolution, dense), for trying the reading rules.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn

#: ``(label, steps, learning rate, batch size)`` of the three models.
RECIPES = (("under-trained", 30, 1e-3, 32), ("well-trained", 600, 1e-3, 32), ("over-trained", 3000, 1e-2, 8))


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


def story_text(results) -> str:
    """The three models side by side, then what alpha says."""
    lines = [f"{'model':<14} {'recipe':<26} {'test acc':>8}  {'mean alpha':>10}   per layer: alpha (verdict)"]
    for label, (steps, lr, batch), acc, report in results:
        layers = ", ".join(f"{r['alpha']:.2f}" + (f" ({r['warning']})" if r["warning"] else
                                                   " (no verdict)" if r["reason"].startswith("no verdict") else "")
                           for r in report.rows)
        recipe = f"{steps} steps, lr {lr:g}, batch {batch}"
        lines.append(f"{label:<14} {recipe:<26} {acc:>8.3f}  {report.summary['alpha']:>10.2f}   {layers}")
    return "\n".join(lines + ["", _MEANING])


_MEANING = """What alpha says (no data needed, only the weights):
  alpha > 6: the layer's spectrum is close to a random matrix's: it has learned little (under-trained);
  2 <= alpha <= 6: a heavy-tailed spectrum, the signature of a well-trained layer;
  alpha < 2: very heavy: the layer may be over-fitted (over-trained), here by long training at a large step.
The 10-class head has 10 eigenvalues, too few for a verdict; its alpha is shown for completeness."""


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
