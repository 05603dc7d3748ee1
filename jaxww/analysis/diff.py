"""Two checkpoints layer by layer: metric deltas and the overlap of top singular subspaces.

:func:`diff_models` analyses both trees with :func:`jaxww.analyze` (the same options),
matches layers by name, and for every layer read with the same shape in both gives
the metrics of ``a`` and ``b``, their deltas ``b - a``, and the overlap of the top-``k``
left and right singular subspaces of the two matrices.

Subspace overlap. With ``W_a = U_a S_a V_a^T`` and ``W_b = U_b S_b V_b^T`` (singular
values descending) and ``U_a^k = U_a[:, :k]``,

.. math::

    \\mathrm{overlap}_{left} = \\frac{\\lVert (U_a^k)^T U_b^k \\rVert_F^2}{k}
    = \\frac{1}{k} \\sum_{i=1}^{k} \\cos^2 \\theta_i

the mean squared cosine of the principal angles ``theta_i`` between the two
``k``-dimensional subspaces; ``overlap_right`` likewise with ``V``. It is 1 for the same
subspace, 0 for orthogonal ones, and ``k / n`` in expectation for a uniformly random
``k``-dimensional subspace of ``R^n`` (``n`` the number of rows for the left side,
of columns for the right). ``W -> Q W`` with ``Q`` orthogonal keeps the right subspace
(overlap 1) and rotates the left one.

* Left and right are the sides of the matrix as jaxww reads the leaf
  (:attr:`jaxww.Kernel.rows` then ``cols``, :meth:`jaxww.Kernel.matrices`), not
  reoriented: for a Flax ``Dense`` kernel ``(in, out)`` left is the input side.
* ``k`` (default 10) is clipped to the numerical rank of both matrices (singular values
  above ``sigma_max * max(a, b) * eps``, as ``np.linalg.matrix_rank``); the column ``k``
  holds the value used. The top-``k`` subspace is unique only when
  ``sigma_k > sigma_{k+1}``; for equal values the overlap depends on the SVD's choice.
* A convolution's ``rf`` taps: the overlap of each tap (same ``k`` for all), averaged.

The SVDs of all same-shape layers are one batched SVD per shape (:func:`jaxww.linalg.host.svd`).

Example:
  >>> import numpy as np, jaxww
  >>> w = np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)
  >>> d = jaxww.diff_models({"dense": {"kernel": w}}, {"dense": {"kernel": 2 * w}})
  >>> r = d.rows[0]
  >>> r["status"], round(r["overlap_left"], 4), round(r["overlap_right"], 4)
  ('success', 1.0, 1.0)
  >>> round(r["log_spectral_norm_delta"], 4)  # log10(4): the eigenvalues are sigma^2
  0.6021
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxww.linalg import host as _host_eigh
from jaxww.linalg import spectra as _spectra
from jaxww.linalg.batching import group_indices
from jaxww.reading import kernels as _kernels
from jaxww.reading.layers import check_concrete, read_layers
from jaxww.report import html
from jaxww.report.columns import DIFF_LAYER_COLUMNS, NOT_METRICS
from jaxww.report.report import Report, dataframe
from jaxww.analysis import arguments
from jaxww.analysis import streaming as _streaming
from jaxww.analysis.analyze import analyze
from jaxww.analysis.specs import static_specs, used_leaves

#: Statuses of a :class:`ModelDiff` row.
STATUSES = ("success", "failed", "only_a", "only_b", "shape_mismatch")


@dataclasses.dataclass(frozen=True)
class ModelDiff:
    """Result of :func:`diff_models`.

    Attributes:
      rows: one dict per layer name found in either tree, keys :attr:`columns`: ``name``,
        ``layer_type``, ``shape``, ``N``, ``M``, ``rf``, ``k``, ``overlap_left``,
        ``overlap_right``, then for each metric ``m`` of :attr:`metrics` ``m_a``, ``m_b``,
        ``m_delta`` (``b - a``), then ``status`` (one of :data:`STATUSES`) and ``reason``.
        Layers analysed in both trees with the same matrix shape come first (in ``a``'s
        order), then those only in ``a``, then only in ``b``.
      metrics: the compared metrics (the numeric columns of the reports).
      report_a, report_b: the two :class:`jaxww.Report`.
    """

    rows: tuple
    metrics: tuple
    report_a: Report
    report_b: Report

    def __repr__(self) -> str:
        return (f"<jaxww.ModelDiff: {len(self.rows)} layers ({html.counts(r['status'] for r in self.rows)}), "
                f"{len(self.metrics)} metrics compared>")

    def __str__(self) -> str:
        return html.diff_text(self)

    def _repr_html_(self) -> str:
        return html.diff_html(self)

    def __treescope_repr__(self, path, subtree_renderer):
        return html.treescope_part(self, path)

    @property
    def columns(self) -> tuple:
        per_metric = tuple(f"{m}_{s}" for m in self.metrics for s in ("a", "b", "delta"))
        return DIFF_LAYER_COLUMNS + ("k", "overlap_left", "overlap_right") + per_metric + ("status", "reason")

    @property
    def details(self):
        """pandas DataFrame of :attr:`rows` (needs the ``pandas`` extra)."""
        return dataframe(self.rows, self.columns, "ModelDiff.details", "ModelDiff.rows")


def diff_models(params_a, params_b, *, k: int = 10, **analyze_options) -> ModelDiff:
    """Compare two checkpoints layer by layer: metric deltas and singular-subspace overlaps.

    Both trees are analysed by :func:`jaxww.analyze` with ``analyze_options``; layers are
    matched by name (see the module docstring for the overlap).

    Args:
      params_a, params_b: anything :func:`jaxww.analyze` takes (pytrees, ``nnx`` modules
        or states, Keras models).
      k: dimension of the compared top singular subspaces (clipped to the numerical rank
        of both matrices; the row's ``k`` holds the value used).
      **analyze_options: passed to :func:`jaxww.analyze` for both trees (``precision``
        also sets the precision of the SVDs).

    Returns:
      A :class:`ModelDiff`. A layer analysed in one tree only has status ``only_a`` /
      ``only_b`` (the reason says why the other tree has none); one read with different
      shapes ``shape_mismatch``; both have NaN overlaps and deltas. ``failed``: the
      layers were compared but a fit failed or the weights are not finite (the reason
      says which); the values that could be computed are filled.

    Raises:
      ValueError: ``k < 1``, or what :func:`jaxww.analyze` raises for either tree.
      TypeError: called under a JAX transformation (a traced leaf).

    Example:
      >>> import numpy as np, jaxww
      >>> rng = np.random.default_rng(0)
      >>> a = {"dense": {"kernel": rng.standard_normal((64, 32)).astype(np.float32)}}
      >>> b = {"dense": {"kernel": rng.standard_normal((64, 32)).astype(np.float32)}}
      >>> row = jaxww.diff_models(a, b, k=4).rows[0]
      >>> row["k"], bool(row["overlap_right"] < 0.5)
      (4, True)
    """
    check_concrete((params_a, params_b), "diff_models")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    rep_a = analyze(params_a, **analyze_options)
    rep_b = analyze(params_b, **analyze_options)
    metrics = _metric_columns(rep_a, rep_b)
    by_a = dict(zip((r["name"] for r in rep_a.rows), zip(rep_a.rows, rep_a.kernels)))
    by_b = dict(zip((r["name"] for r in rep_b.rows), zip(rep_b.rows, rep_b.kernels)))
    # the matrices the rows describe: dequantised, LoRA products, W - W_base (as analyze)
    read = arguments.reading(analyze_options)
    leaves_a, leaves_b = (read_layers(p, **read, where="diff_models").leaves for p in (params_a, params_b))
    same = [n for n in by_a if n in by_b and _matrix_shape(by_a[n][1], leaves_a) == _matrix_shape(by_b[n][1], leaves_b)]
    precision = analyze_options.get("precision", arguments.defaults(analyze)["precision"])
    with _spectra.precision_scope(precision):
        ov = _overlaps([by_a[n][1] for n in same], [by_b[n][1] for n in same],
                       leaves_a, leaves_b, int(k), precision)
    rows = [_pair_row(by_a[n][0], by_b[n][0], metrics, *(o[i] for o in ov)) for i, n in enumerate(same)]
    matched = set(same)
    for side, mine, other, rep_other, status in (("a", by_a, by_b, rep_b, "only_a"), ("b", by_b, by_a, rep_a, "only_b")):
        for n, (row, _) in mine.items():
            if n in matched or (side == "b" and n in by_a):
                continue
            if n in other:
                why = f"shapes differ: {by_a[n][0]['shape']} in a, {by_b[n][0]['shape']} in b"
                rows.append(_lone_row(by_a[n][0], by_b[n][0], metrics, "shape_mismatch", why))
            else:
                why = f"not analysed in {'b' if side == 'a' else 'a'}: {_absent(rep_other, n)}"
                rows.append(_lone_row(row if side == "a" else None, row if side == "b" else None,
                                      metrics, status, why))
    return ModelDiff(tuple(rows), metrics, rep_a, rep_b)


def _metric_columns(rep_a, rep_b) -> tuple:
    """Numeric columns of both reports, except those that describe the layer."""
    def numeric(rep, c):
        return all(isinstance(r[c], (int, float, np.integer, np.floating)) and not isinstance(r[c], bool)
                   for r in rep.rows)
    return tuple(c for c in rep_a.columns if c in rep_b.columns and c not in NOT_METRICS
                 and numeric(rep_a, c) and numeric(rep_b, c))


def _matrix_shape(kern: _kernels.Kernel, leaves) -> tuple:
    """``(rf, a, b)`` of the kernel's matrices, as read (not reoriented)."""
    leaf = leaves[kern.leaf]
    return jax.eval_shape(kern.matrices, jax.ShapeDtypeStruct(leaf.shape, leaf.dtype)).shape


def _absent(rep, name: str) -> str:
    """Why ``name`` has no row in ``rep``: its skip reason, or that no leaf has that name."""
    for s in rep.skipped_rows:
        if s.name == name:
            return s.reason
    return "no layer of that name"


def _overlaps(kerns_a, kerns_b, leaves_a, leaves_b, k, precision):
    """Per matched pair (host arrays, in order): ``k`` used, left and right overlap, and
    whether both matrices are finite. One batched SVD per matrix shape."""
    n = len(kerns_a)
    if not n:
        return np.zeros(0, int), np.zeros(0), np.zeros(0), np.zeros(0, bool)
    used_a, used_b = used_leaves(kerns_a), used_leaves(kerns_b)
    specs_a, specs_b = static_specs(kerns_a, used_a), static_specs(kerns_b, used_b)
    groups = group_indices([_matrix_shape(kk, leaves_a) for kk in kerns_a])
    pairs = tuple(tuple((specs_a[i], specs_b[i]) for i in members) for members in groups.values())
    out = _overlap_stage(tuple(_streaming.read(leaves_a[i]) for i in used_a),
                         tuple(_streaming.read(leaves_b[i]) for i in used_b), pairs, k, precision)
    order = np.argsort(np.concatenate([np.asarray(m) for m in groups.values()]))
    return tuple(np.concatenate(x)[order] for x in zip(*jax.device_get(out)))


@functools.partial(jax.jit, static_argnames=("pairs", "k", "precision"))
def _overlap_stage(leaves_a, leaves_b, pairs, k, precision):
    """For each group of same-shape pairs: ``(k_used, overlap_left, overlap_right, finite)``."""
    out = []
    for group in pairs:
        Wa = jnp.stack([ka.matrices(leaves_a[ka.leaf]) for ka, _ in group]).astype(precision)
        Wb = jnp.stack([kb.matrices(leaves_b[kb.leaf]) for _, kb in group]).astype(precision)
        out.append(_subspace_overlaps(Wa, Wb, k))
    return out


def _subspace_overlaps(Wa, Wb, k: int):
    """Top-``k`` singular-subspace overlaps of two stacks of matrices of one shape.

    .. math:: \\mathrm{overlap} = \\lVert (U_a^k)^T U_b^k \\rVert_F^2 / k

    for the left (``U``) and right (``V``) singular vectors, ``k`` clipped per item to
    the numerical rank of both, averaged over the ``rf`` matrices of an item.

    Args:
      Wa, Wb: ``(G, rf, a, b)`` floating arrays.
      k: the subspace dimension asked for.

    Returns:
      ``(k_used, overlap_left, overlap_right, finite)``, each of shape ``(G,)``. Items
      with a NaN or Inf in either matrix, or with ``k_used == 0``, have NaN overlaps.
    """
    finite = jnp.isfinite(Wa).all(axis=(1, 2, 3)) & jnp.isfinite(Wb).all(axis=(1, 2, 3))
    keep = finite[:, None, None, None]
    Ua, sa, Vha = _host_eigh.svd(jnp.where(keep, Wa, 0))
    Ub, sb, Vhb = _host_eigh.svd(jnp.where(keep, Wb, 0))
    kmax = min(k, sa.shape[-1])
    k_used = jnp.minimum(kmax, jnp.minimum(_rank(sa, Wa.shape), _rank(sb, Wb.shape)))
    mask = jnp.arange(kmax) < k_used[:, None, None]                       # (G, 1, kmax)
    pair = mask[..., :, None] & mask[..., None, :]

    def overlap(A, B):  # (G, rf, n, kmax) orthonormal columns each
        C = jnp.einsum("gtni,gtnj->gtij", A, B, precision=jax.lax.Precision.HIGHEST)
        per_tap = jnp.sum(jnp.where(pair, C * C, 0), axis=(-2, -1)) / k_used[:, None]
        return jnp.where(finite & (k_used > 0), per_tap.mean(axis=1), jnp.nan)

    left = overlap(Ua[..., :kmax], Ub[..., :kmax])
    right = overlap(jnp.swapaxes(Vha[..., :kmax, :], -1, -2), jnp.swapaxes(Vhb[..., :kmax, :], -1, -2))
    return k_used, left, right, finite


def _rank(s, shape):
    """Smallest numerical rank over an item's ``rf`` matrices: singular values above
    ``sigma_max * max(a, b) * eps`` (``np.linalg.matrix_rank``'s tolerance)."""
    tol = s[..., :1] * max(shape[-2:]) * jnp.finfo(s.dtype).eps
    return jnp.sum(s > tol, axis=-1).min(axis=-1)


def _layer(row_a, row_b) -> dict:
    r = row_a if row_a is not None else row_b
    return {c: r[c] for c in DIFF_LAYER_COLUMNS}


def _pair_row(row_a, row_b, metrics, k_used, left, right, finite) -> dict:
    out = _layer(row_a, row_b)
    out.update(k=int(k_used), overlap_left=float(left), overlap_right=float(right))
    for m in metrics:
        out[f"{m}_a"], out[f"{m}_b"] = row_a[m], row_b[m]
        out[f"{m}_delta"] = float(row_b[m] - row_a[m])
    why = [f"{s}: {r['reason']}" for s, r in (("a", row_a), ("b", row_b)) if r["status"] != "success"]
    if not finite:
        why.append("overlaps: weights contain NaN or Inf")
    elif int(k_used) == 0:
        why.append("overlaps: a matrix is zero (numerical rank 0)")
    out.update(status="failed" if why else "success", reason="; ".join(why))
    return out


def _lone_row(row_a, row_b, metrics, status, reason) -> dict:
    out = _layer(row_a, row_b)
    out.update(k=0, overlap_left=math.nan, overlap_right=math.nan)
    for m in metrics:
        out[f"{m}_a"] = row_a[m] if row_a is not None else math.nan
        out[f"{m}_b"] = row_b[m] if row_b is not None else math.nan
        out[f"{m}_delta"] = math.nan
    out.update(status=status, reason=reason)
    return out
