"""``analyze(vectors=True)``: localization of the singular vectors (weightwatcher 0.7.7's
``vectors=True``, ``apply_analyze_eigenvectors``).

For each matrix ``W`` of a layer (its taps, ``(a, b)`` as read), the eigenvectors ``v`` of
the smaller Gram matrix (``W W^T`` if ``a <= b``, else ``W^T W``: the left or right singular
vectors) and three numbers per vector:

* ``loc_ratio``: ``||v||_1 / ||v||_inf`` (localization ratio);
* ``part_ratio``: ``||v||_2 / ||v||_4`` (participation ratio);
* ``vec_entropy``: weightwatcher's ``discrete_entropy``: the entropy of the 100-bin
  histogram (NumPy's ``np.histogram`` bins, ``density=True``, plus 1e-10 per bin,
  normalised) of ``|v| - mean(|v|)``.

The vectors of a layer's taps are pooled and split at the power-law ``xmin`` by their
eigenvalue: ``tail`` the vectors of the ``num_pl_spikes`` largest eigenvalues (those
``>= xmin``), ``bulk`` the others. (By rank, not by comparing with ``xmin``: the
eigenvalue equal to ``xmin`` comes out of this second eigensolver a rounding error
apart, and could fall on either side.) The columns are the mean and the (population) variance of each
number over each part, weightwatcher's names ``{bulk,tail}_{mean,var}_{vec_entropy,
loc_ratio,part_ratio}``; NaN for an empty part or a failed fit. Eigenvectors of repeated
eigenvalues (a rank-deficient layer's zeros) are any basis of their eigenspace, so their
numbers depend on the eigensolver (weightwatcher's too).

The eigendecompositions of the matrices of one shape are batched ``eigh`` calls, as many
matrices at once as the memory budget holds (each needs its matrix, its Gram matrix and
its eigenvectors).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxww.linalg.batching import group_indices
from jaxww.analysis import streaming as _streaming

#: weightwatcher's names of the per-vector numbers.
NAMES = ("vec_entropy", "loc_ratio", "part_ratio")
#: The columns ``vectors=True`` adds, in weightwatcher's order.
COLUMNS = tuple(f"{part}_{stat}_{n}" for n in NAMES for part in ("bulk", "tail") for stat in ("mean", "var"))
#: Bins of the histogram of ``vec_entropy`` and the constant added to each (weightwatcher's).
BINS, EPSILON = 100, 1e-10


def columns(kerns, leaves, rows, precision: str, budget: int) -> list[dict]:
    """The :data:`COLUMNS` of every kernel (host floats), in order.

    Args:
      kerns: the kernels.
      leaves: the leaves they read (``kernel.leaf`` indexes them).
      rows: each kernel's report row (its ``xmin``, NaN if the fit failed, and
        ``num_pl_spikes``).
      precision: ``"float32"`` or ``"float64"``.
      budget: bytes the matrices of one batched ``eigh`` may take (at least one matrix).
    """
    per = [None] * len(kerns)
    shapes = [tuple(jax.eval_shape(k.matrices, jax.ShapeDtypeStruct(leaves[k.leaf].shape, leaves[k.leaf].dtype)).shape)
              for k in kerns]
    for shape, members in group_indices(shapes).items():
        each = (shape[1] * shape[2] + 2 * min(shape[1:]) ** 2) * np.dtype(precision).itemsize
        for chunk in chunks(members, [kerns[i].rf * each for i in members], budget):
            W = np.concatenate([np.asarray(kerns[i].matrices(_streaming.read(leaves[kerns[i].leaf]))) for i in chunk])
            evals, nums = jax.device_get(vector_numbers(jnp.asarray(W, precision)))
            start = 0
            for i in chunk:
                part = slice(start, start + kerns[i].rf)
                tail = -1 if math.isnan(rows[i]["xmin"]) else rows[i]["num_pl_spikes"]
                per[i] = _split(evals[part].ravel(), nums[:, part].reshape(3, -1), tail)
                start += kerns[i].rf
    return per


@jax.jit
def vector_numbers(W):
    """Eigenvalues ``(B, m)`` of the smaller Gram matrices of a ``(B, a, b)`` stack and the
    :data:`NAMES` numbers of their eigenvectors, ``(3, B, m)``."""
    X = W @ jnp.swapaxes(W, 1, 2) if W.shape[1] <= W.shape[2] else jnp.swapaxes(W, 1, 2) @ W
    evals, V = jnp.linalg.eigh(X)
    v = jnp.swapaxes(V, 1, 2)          # (B, m, m): one eigenvector per row
    a = jnp.abs(v)
    loc = a.sum(-1) / a.max(-1)
    part = jnp.sqrt((a ** 2).sum(-1)) / jnp.sqrt(jnp.sqrt((a ** 4).sum(-1)))
    ent = discrete_entropy(a.reshape(-1, a.shape[-1])).reshape(loc.shape)
    return evals, jnp.stack([ent, loc, part])


def discrete_entropy(a):
    """weightwatcher's ``discrete_entropy`` of each row of ``a`` (absolute values), with
    ``np.histogram``'s binning (edges ``linspace(min, max, BINS + 1)``, a value on an inner
    edge in the bin above, the maximum in the last bin; min == max: edges min -/+ 0.5)."""
    x = a - a.mean(-1, keepdims=True)
    lo, hi = x.min(-1, keepdims=True), x.max(-1, keepdims=True)
    flat = lo == hi
    lo, hi = jnp.where(flat, lo - 0.5, lo), jnp.where(flat, hi + 0.5, hi)
    edges = jax.vmap(lambda l, h: jnp.linspace(l, h, BINS + 1))(lo[:, 0], hi[:, 0])   # (R, BINS + 1)
    idx = jnp.clip(jnp.floor((x - lo) * (BINS / (hi - lo))).astype(jnp.int32), 0, BINS - 1)
    idx = idx - (x < jnp.take_along_axis(edges, idx, -1))
    idx = idx + ((x >= jnp.take_along_axis(edges, idx + 1, -1)) & (idx != BINS - 1))
    rows = jnp.arange(x.shape[0])[:, None]
    counts = jnp.zeros((x.shape[0], BINS), x.dtype).at[rows, idx].add(1.0)
    h = counts / jnp.diff(edges, axis=-1) / x.shape[-1] + EPSILON
    p = h / h.sum(-1, keepdims=True)
    return -(p * jnp.log(p)).sum(-1)


def chunks(members: list, nbytes: list, budget: int) -> list:
    """``members`` in consecutive chunks of at most ``budget`` bytes (at least one each)."""
    out, size = [], budget
    for m, n in zip(members, nbytes):
        if size + n > budget:
            out.append([])
            size = 0
        out[-1].append(m)
        size += n
    return out


def _split(evals: np.ndarray, nums: np.ndarray, n_tail: int) -> dict:
    """Mean and variance of each number over the bulk and the tail (the ``n_tail`` largest
    eigenvalues; -1: no fit, every column NaN)."""
    tail = np.zeros(evals.shape, bool)
    tail[np.argsort(evals)[len(evals) - max(n_tail, 0):]] = True
    out = {}
    for name, v in zip(NAMES, nums):
        for part, keep in (("bulk", ~tail), ("tail", tail)):
            ok = n_tail >= 0 and keep.any()
            out[f"{part}_mean_{name}"] = float(np.mean(v[keep])) if ok else math.nan
            out[f"{part}_var_{name}"] = float(np.var(v[keep])) if ok else math.nan
    return out
