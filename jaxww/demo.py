"""A built-in demo model: a small Flax network with every kind of layer jaxww reads.

No download and no data: the weights come from a PRNG key. Freshly initialised
weights are close to random matrices, so their alphas are large (the report calls
many of them under-trained, as it should); see ``notebooks/`` for trained models.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn


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
    """Linen variables of :class:`DemoNet` initialised from ``jax.random.key(seed)``."""
    return DemoNet().init(jax.random.key(seed), jnp.zeros((1, 64), jnp.int32))
