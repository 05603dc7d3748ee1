"""Matrices batched by shape: which positions share a key, and the orientation and
dtype every spectrum routine expects."""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp


def group_indices(keys: Sequence) -> dict:
    """``{key: [positions]}`` of equal keys, in order of first appearance."""
    groups: dict = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    return groups


def oriented(W):
    """``W`` with its larger dimension first (the spectrum does not change)."""
    return jnp.swapaxes(W, -1, -2) if W.shape[-2] < W.shape[-1] else W


def as_float(W):
    """``W`` as a JAX array of a floating dtype (integers become float32)."""
    W = jnp.asarray(W)
    return W if jnp.issubdtype(W.dtype, jnp.floating) else W.astype(jnp.float32)
