"""Layer-wise sparsity from a per-layer metric, and magnitude pruning to it (AlphaPruning).

AlphaPruning (Lu et al., NeurIPS 2024) prunes an LLM with a different sparsity per layer: the
better trained a layer (the lower its heavy-tail metric), the fewer of its weights go.
:func:`layerwise_sparsity` is its allocation rule (``lib/prune.py::ww_sparsity`` of the
authors' code, with ``main.py``'s defaults): the metric ``m_l`` of each matrix, averaged over
each block when blocks are given, is mapped linearly onto ``[1 - eps, 1 + eps]``,

.. math::

    r_l = (1 - \\epsilon) + 2 \\epsilon \\frac{m_l - \\min m}{\\max m - \\min m},

then scaled by one factor so that the parameter-weighted mean is the target sparsity
``s``: ``s_l = r_l \\, s \\sum_l n_l / \\sum_l n_l r_l``. :func:`prune_by_magnitude` then
zeroes the smallest-magnitude weights of each matrix to its own ratio.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np

from jaxww.report.report import Report


def layerwise_sparsity(metric, sparsity: float, *, sizes=None, blocks=None,
                       epsilon: float = 0.3, column: str = "alpha") -> np.ndarray:
    """Per-layer sparsities whose parameter-weighted mean is ``sparsity`` (AlphaPruning's rule).

    Higher metric (a less well-trained layer, by HTSR) gets a higher sparsity. Where the rule
    asks for more than all of a layer (a ratio above 1 after scaling: a high target with few
    layers or a wide ``epsilon``), it raises and names the largest ``epsilon`` that fits;
    the authors' code fails there too (an index past the end of the sorted weights).

    Args:
      metric: one value per layer in model order (an array), or a :class:`jaxww.Report`
        whose ``column`` is used, in ``report.rows`` order (the order of ``report.kernels``).
      sparsity: the target fraction of weights removed, in ``[0, 1)``.
      sizes: parameter count per layer for the weighted mean (default: all equal, or the
        matrices' sizes ``N * M * rf`` for a Report).
      blocks: None (per layer), an int ``k`` (consecutive groups of ``k`` layers share
        their mean metric: AlphaPruning's ``block_wise`` mapping, its default, with ``k=7``
        for a Llama block), or one block id per layer.
      epsilon: half-width of the ratio range (AlphaPruning's LLM default 0.3).
      column: the Report column to use (``"alpha"``; AlphaPruning uses ``alpha_peak``).

    Returns:
      float64 array of sparsities, one per layer, each in ``[0, 1]``.

    Example:
      >>> import jaxww
      >>> s = jaxww.layerwise_sparsity([2.0, 3.0, 4.0], 0.5)
      >>> [round(float(x), 2) for x in s], round(float(s.mean()), 6)
      ([0.35, 0.5, 0.65], 0.5)
    """
    m, n, names = _metric_and_sizes(metric, sizes, column)
    if not 0 <= float(sparsity) < 1:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity!r}")
    if not 0 <= float(epsilon) < 1:
        raise ValueError(f"epsilon must be in [0, 1), got {epsilon!r}")
    m = _block_means(m, blocks)
    spread = m.max() - m.min()
    unit = (m - m.min()) / spread if spread > 0 else np.full_like(m, 0.5)
    s = _allocate(unit, n, float(sparsity), float(epsilon))
    if s.max() > 1:
        fits = max_epsilon(unit, n, float(sparsity), float(epsilon))
        raise ValueError(
            f"layerwise_sparsity: at sparsity {sparsity} and epsilon {epsilon} the rule gives "
            f"{names[int(s.argmax())]} a sparsity of {s.max():.3f}, more than all its weights; "
            f"the largest epsilon that fits is {np.floor(fits * 1000) / 1000:.3f}")
    return s


def max_epsilon(unit, sizes, sparsity: float, upper: float) -> float:
    """The largest ``epsilon <= upper`` whose allocation keeps every layer's sparsity <= 1
    (bisection: the largest ratio grows with ``epsilon``)."""
    lo, hi = 0.0, upper
    if _allocate(unit, sizes, sparsity, hi).max() <= 1:
        return hi
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _allocate(unit, sizes, sparsity, mid).max() <= 1 else (lo, mid)
    return lo


def prune_by_magnitude(params, report: Report, sparsity):
    """``params`` with the smallest-magnitude weights of each analysed matrix set to zero.

    Each row of ``report`` (a layer: a matrix, a conv kernel with its taps, one layer of a
    scanned stack) loses ``round(s * size)`` of its weights, those of smallest ``|w|``
    (ties broken by position); every other leaf is returned as it is. ``params`` is not
    modified. AlphaPruning's own code removes every weight ``<=`` the threshold, one more.

    Args:
      params: the params ``report`` was computed from (same tree structure).
      report: :func:`jaxww.analyze` of ``params``: which matrices, read how.
      sparsity: one fraction for every layer (uniform pruning), or one per row of
        ``report.rows`` (:func:`layerwise_sparsity`).

    Returns:
      A params tree of the same structure; pruned leaves are NumPy arrays of their dtype.

    Example:
      >>> import numpy as np, jaxww
      >>> params = {"w": np.random.default_rng(0).standard_normal((64, 32)).astype("float32")}
      >>> report = jaxww.analyze(params, min_evals=1)
      >>> pruned = jaxww.prune_by_magnitude(params, report, 0.75)
      >>> float((pruned["w"] == 0).mean())
      0.75
    """
    leaves, treedef = jax.tree_util.tree_flatten(params)
    if report.treedef is not None and treedef != report.treedef:
        raise ValueError("prune_by_magnitude: params do not have the structure of the "
                         "analysed params; pass the params the report was computed from")
    ratios = np.broadcast_to(np.asarray(sparsity, np.float64), (len(report.rows),))
    if np.any(~np.isfinite(ratios)) or np.any((ratios < 0) | (ratios > 1)):
        raise ValueError(f"sparsity must be in [0, 1] for every layer, got {sparsity!r}")
    out = list(leaves)
    for kernel, ratio in zip(report.kernels, ratios):
        out[kernel.leaf] = _prune_kernel(kernel, out[kernel.leaf], float(ratio))
    return jax.tree_util.tree_unflatten(treedef, out)


def _prune_kernel(kernel, value, ratio):
    w = np.array(value)          # a copy: params are not modified
    if not np.issubdtype(w.dtype, np.floating) and w.dtype.kind != "V":
        raise ValueError(f"prune_by_magnitude: {kernel.name} holds {w.dtype} values (a "
                         "quantised layer); prune its float weights before quantising")
    mats = np.array(kernel.matrices(w))
    flat = mats.reshape(-1)
    k = int(round(ratio * flat.size))
    if k:
        flat[np.argpartition(np.abs(flat.astype(np.float32)), k - 1)[:k]] = 0
    return np.asarray(kernel.put(w, mats))


def _metric_and_sizes(metric, sizes, column):
    if isinstance(metric, Report):
        if column not in metric.columns:
            raise ValueError(f"column {column!r} is not a column of the report: {metric.columns}")
        names = [r["name"] for r in metric.rows]
        m = np.array([r[column] for r in metric.rows], np.float64)
        if sizes is None:
            sizes = [k.N * k.M * k.rf for k in metric.kernels]
    else:
        m = np.asarray(metric, np.float64).reshape(-1)
        names = [f"layer {i}" for i in range(m.size)]
    bad = [n for n, v in zip(names, m) if not np.isfinite(v)]
    if not m.size or bad:
        raise ValueError(f"layerwise_sparsity needs a finite metric for every layer; missing "
                         f"for {bad[:5] or 'all'}: leave those layers out of the analysis "
                         "(analyze(layers=...)) or give them a value")
    n = np.ones_like(m) if sizes is None else np.asarray(sizes, np.float64).reshape(-1)
    if n.shape != m.shape or np.any(n <= 0):
        raise ValueError(f"sizes must be {m.size} positive counts, got shape {n.shape}")
    return m, n, names


def _block_means(m, blocks):
    if blocks is None:
        return m
    if isinstance(blocks, (int, np.integer)):
        if blocks < 1:
            raise ValueError(f"blocks must be a positive int or one id per layer, got {blocks}")
        ids = np.arange(m.size) // int(blocks)
    elif isinstance(blocks, (Sequence, np.ndarray)) and len(blocks) == m.size:
        ids = np.unique(np.asarray(blocks), return_inverse=True)[1].reshape(-1)
    else:
        raise ValueError(f"blocks must be an int or {m.size} block ids, got {blocks!r}")
    means = np.bincount(ids, weights=m) / np.bincount(ids)
    return means[ids]


def _allocate(unit, n, target, epsilon):
    """AlphaPruning's ratios ``(1 - eps) + 2 eps u`` scaled to the ``n``-weighted mean ``target``."""
    r = (1 - epsilon) + 2 * epsilon * unit
    return r * target * n.sum() / (n * r).sum()
