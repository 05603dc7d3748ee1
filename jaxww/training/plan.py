"""Which weight matrices of a params tree are computed together, and how results go back.

A :class:`Plan` is built once per params structure (at trace time, from shapes only):
the layers :func:`jaxww.analyze` reads (:func:`jaxww.reading.layers.read_layers`, the one
reading of a layer: module configuration, Keras layers, scan axes, quantised weights),
less those an optax-style mask leaves out, grouped by matrix shape, so that each group
is one batched computation. It gathers the
``(G, rf, N, M)`` stack of every group (:meth:`Plan.stacks`) and scatters per-group
results back to kernel order (:meth:`Plan.scatter`) or to per-leaf factors
(:meth:`Plan.per_leaf`).
"""

from __future__ import annotations

import math
import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxww.defaults import MIN_EVALS
from jaxww.reading.kernels import LayoutOverride
from jaxww.reading.params import flatten_params, param_tree
from jaxww.linalg.batching import as_float, group_indices, oriented
from jaxww.reading.layers import read_layers
from jaxww.typing import Mask, ScanAxis


class Group(NamedTuple):
    """Kernels whose matrices have the same shape: one batched computation."""

    members: tuple          # indices into the plan's kernels
    rf: int
    N: int                  # the larger dimension (stacks are oriented N >= M)
    M: int
    scale: float            # Kernel.esd_scale (0.5 for 2-D convolutions)

    def pooled(self, lam):
        """``(G, rf, M)`` eigenvalues -> ``(G, rf * M)`` pooled ESD (2-D convs scaled)."""
        return lam.reshape(lam.shape[0], -1) * self.scale


class Plan(NamedTuple):
    """Eligible kernels of a params tree, grouped by shape; see the module docstring.

    ``frozen`` holds the indices of the leaves with a kernel whose stored values are not
    floating point (quantised codes, read dequantised in ``leaves``): measured, never
    updated by the transforms.
    """

    kernels: tuple
    groups: tuple
    leaves: list
    treedef: Any
    frozen: frozenset = frozenset()

    @property
    def names(self) -> list:
        return [k.name for k in self.kernels]

    def stacks(self, leaves=None) -> list:
        """The ``(G, rf, N, M)`` stack of every group (larger dimension first)."""
        leaves = self.leaves if leaves is None else leaves
        out = []
        for g in self.groups:
            mats = jnp.stack([oriented(as_float(self.kernels[i].matrices(leaves[self.kernels[i].leaf])))
                              for i in g.members])
            if jnp.dtype(mats.dtype).itemsize < 4:  # bfloat16 / float16: LAPACK needs float32
                mats = mats.astype(jnp.float32)
            out.append(mats)
        return out

    def scatter(self, per_group) -> jax.Array:
        """Per-group ``(G, ...)`` arrays -> one array in kernel order."""
        order = np.concatenate([np.asarray(g.members) for g in self.groups])
        return jnp.concatenate(per_group)[np.argsort(order)]

    def per_leaf(self, values, fill) -> dict:
        """``{leaf index: factor}`` of per-kernel ``values``, broadcastable against the leaf.

        A leaf read as one kernel gets a scalar. A leaf split into several kernels
        (layers of a stack on any axis, Gemma's k/v, ...) gets an array with the size of
        the leaf on its split axes and 1 elsewhere: each kernel's value at its indices,
        ``fill`` where no kernel was analysed.
        """
        out = {}
        for i, k in enumerate(self.kernels):
            if not k.select:
                out[k.leaf] = values[i]
                continue
            shape, at = self.leaves[k.leaf].shape, dict(k.select)
            if k.leaf not in out:
                out[k.leaf] = jnp.full([n if a in at else 1 for a, n in enumerate(shape)], fill, values.dtype)
            out[k.leaf] = out[k.leaf].at[tuple(at.get(a, 0) for a in range(len(shape)))].set(values[i])
        return out


def make_plan(params, mask: Mask = None, layouts: LayoutOverride = None, *, min_evals: int = MIN_EVALS,
              scan_axis: ScanAxis = None, where: str = "jaxww") -> Plan:
    """The layers :func:`jaxww.analyze` reads in ``params`` (with ``layouts``, ``scan_axis``
    and ``min_evals``; its default size limits otherwise), less those ``mask`` leaves out,
    grouped by matrix shape.

    Raises:
      ValueError: no floating-point weight matrix is left after the mask.
    """
    flags = resolve_mask(mask, params)
    names, stored, _ = flatten_params(params)
    left_out = {n for n, f in zip(names, flags) if not f}
    read = read_layers(params, layouts=layouts, scan_axis=scan_axis, min_evals=min_evals, where=where,
                       concrete=False, layers=(lambda name: name not in left_out) if left_out else None)
    if not read.kernels:
        why = "; ".join(f"{s.name}: {s.reason}" for s in read.skipped[:8]) or "no leaves selected"
        raise ValueError(f"{where}: no eligible weight matrix in the params ({len(names)} leaves, "
                         f"{len(names) - len(left_out)} selected by the mask). Skipped: {why}")
    _warn_refused(read.skipped, min_evals, where)
    keys = []
    for k in read.kernels:
        leaf = read.leaves[k.leaf]
        rf, a, b = jax.eval_shape(k.matrices, jax.ShapeDtypeStruct(leaf.shape, leaf.dtype)).shape
        keys.append((rf, max(a, b), min(a, b), k.esd_scale, jnp.dtype(leaf.dtype).name))
    groups = tuple(Group(tuple(m), *key[:4]) for key, m in group_indices(keys).items())
    frozen = frozenset(k.leaf for k in read.kernels if not _floating(stored[k.leaf]))
    return Plan(tuple(read.kernels), groups, read.leaves, read.treedef, frozen)


def _floating(leaf) -> bool:
    """Whether a leaf as stored (array, tracer, Keras variable...) holds floating-point values."""
    return jnp.issubdtype(jnp.dtype(leaf.dtype), jnp.inexact)


def _warn_refused(skipped, min_evals: int, where: str) -> None:
    """A warning naming the leaves left out because a tree cannot tell how to read them
    (``analyze`` marks such rows; training has no rows to mark), unless even their largest
    reading (all leading axes as pooled taps) has fewer than ``min_evals`` eigenvalues."""
    refused = [s for s in skipped if s.kind == "layout"
               and math.prod(s.shape[:-2]) * min(s.shape[-2:], default=0) >= min_evals]
    if refused:
        warnings.warn(f"{where}: {len(refused)} weight(s) left out, their layout cannot be told apart "
                      "in a tree: " + "; ".join(f"{s.name}: {s.reason}" for s in refused), stacklevel=3)


def resolve_mask(mask: Mask, params) -> list:
    """Per-leaf booleans of an optax-style mask (a tree, a prefix tree or a callable)."""
    _, leaves, _ = flatten_params(params)
    if mask is None:
        return [True] * len(leaves)
    tree = param_tree(params)
    if callable(mask):
        mask = mask(tree)
    try:
        full = jax.tree.map(lambda m, sub: jax.tree.map(lambda _: m, sub), mask, tree)
    except ValueError as err:
        raise ValueError("mask must have the structure of the params (or a prefix of it)") from err
    _, flags, _ = flatten_params(full)
    if any(isinstance(f, jax.core.Tracer) for f in flags):
        raise ValueError("mask values must be static Python bools, not traced arrays")
    if len(flags) != len(leaves):
        raise ValueError(f"mask has {len(flags)} leaves, params have {len(leaves)}")
    return [bool(f) for f in flags]
