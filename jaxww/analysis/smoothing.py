"""SVD smoothing: every analysed weight matrix truncated to its top singular directions.

With the singular value decomposition ``W = sum_i s_i u_i v_i^T`` (``s_1 >= s_2 >= ...``),
the rank-``k`` truncation is

.. math::

    W_k = \\sum_{i \\le k} s_i u_i v_i^T,

the closest rank-``k`` matrix to ``W`` in the Frobenius and spectral norms
(Eckart-Young). A convolution's ``rf`` taps share one pooled spectrum, so for them the
``k`` largest singular values over all taps are kept (each tap keeps those of its own
that are among them). ``k`` is a count of eigenvalues ``lambda_i = s_i^2`` of the layer,
as weightwatcher 0.7.7's ``SVDSmoothing(method=...)`` takes it:

============== =============================================== =========================
method         ``k``                                           column of ``analyze``
============== =============================================== =========================
``"detX"``     the detX tail (default, as the reference)       ``detX_num``
``"alpha_min"`` the power-law tail, ``lambda >= xmin``          ``num_pl_spikes``
``"rmt"``      the Marchenko-Pastur spikes above the bulk       ``num_spikes``
``"svd"``      ``int(percent * M * rf)``                        (``num_evals``)
============== =============================================== =========================

A layer whose ``k`` cannot be found (failed power-law or MP fit, NaN/Inf weights) is
left unchanged, and a layer with ``k = 0`` becomes zero (the rank-0 truncation; the
reference leaves it unchanged): both are listed in a ``UserWarning``.
"""

from __future__ import annotations

import functools
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from jaxww.defaults import MAX_EVALS, MAX_N, MIN_EVALS
from jaxww.linalg import host as _host_eigh
from jaxww.reading import kernels as _kernels
from jaxww.reading import params as _params
from jaxww.reading.layers import LayerSelection, check_concrete
from jaxww.analysis.analyze import analyze
from jaxww.analysis.specs import static_specs, used_leaves
from jaxww.linalg import spectra as _spectra
from jaxww.linalg.batching import group_indices

#: ``method`` of :func:`smooth` -> the column of ``analyze`` giving ``k`` (None: ``percent``).
METHODS = {"detX": "detX_num", "alpha_min": "num_pl_spikes", "rmt": "num_spikes", "svd": None}


def smooth(params, *, method: str = "detX", percent: float = 0.8, precision: str = "float32",
           min_evals: int = MIN_EVALS, max_evals: int | None = MAX_EVALS, max_N: int | None = MAX_N,
           layers: LayerSelection = None, layouts: _kernels.LayoutOverride = None,
           scan_axis: _kernels.ScanAxis = None):
    """``params`` with each weight matrix replaced by its rank-``k`` truncation ``W_k``.

    The matrices are those :func:`jaxww.analyze` analyses with the same selection
    arguments (stacked layers, einsum weights and convolution taps are truncated one
    matrix at a time and written back into their leaves); ``k`` per layer is given by
    ``method`` (see the module docstring). Same-shape matrices share one batched SVD.

    Args:
      params: as :func:`jaxww.analyze` (an ``nnx.Module`` gives its ``nnx.Param`` state,
        a Keras model its ``{variable path: value}`` dict).
      method: ``"detX"`` (default), ``"alpha_min"``, ``"rmt"`` or ``"svd"``.
      percent: the fraction of the eigenvalues kept with ``method="svd"`` (in ``[0, 1]``).
      precision: ``"float32"`` or ``"float64"`` for the analysis and the SVD.
      min_evals, max_evals, max_N, layers, layouts, scan_axis: which matrices, as in
        :func:`jaxww.analyze`; the others are left unchanged.

    Returns:
      A new pytree of the same structure as ``params`` (its flattened form, for a module)
      with the same dtypes; truncated leaves are new arrays (NumPy where the input leaf
      was NumPy), every other leaf is the input's object. ``params`` is never modified.

    Raises:
      ValueError: an unknown ``method`` or a ``percent`` outside ``[0, 1]``; the errors
        of :func:`jaxww.analyze`.
      TypeError: called under a JAX transformation (a traced leaf).

    Example:
      >>> import numpy as np, jaxww
      >>> w = np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)
      >>> out = jaxww.smooth({"dense": {"kernel": w}}, method="svd", percent=0.25)
      >>> int(np.linalg.matrix_rank(out["dense"]["kernel"]))
      8
    """
    check_concrete(params, "smooth")
    if method not in METHODS:
        raise ValueError(f"method must be one of {tuple(METHODS)}, got {method!r}")
    if method == "svd" and not 0 <= percent <= 1:
        raise ValueError(f"percent must be in [0, 1], got {percent!r}")
    report = analyze(params, precision=precision, min_evals=min_evals, max_evals=max_evals,
                     max_N=max_N, layers=layers, layouts=layouts, scan_axis=scan_axis,
                     mp_fit=method == "rmt", detX=method == "detX")
    ks = [_rank(row, METHODS[method], percent) for row in report.rows]
    _warn(report.rows, ks, METHODS[method])
    kerns = [k for k, n in zip(report.kernels, ks) if n is not None]
    counts = np.asarray([n for n in ks if n is not None], np.int32)
    _, leaves, treedef = _params.flatten_params(params)
    if kerns:
        used = used_leaves(kerns)
        specs = static_specs(kerns, used)
        with _spectra.precision_scope(precision):
            new = _truncate(tuple(leaves[i] for i in used), specs, counts, precision)
        leaves = list(leaves)
        for i, value in zip(used, new):
            leaves[i] = np.asarray(value) if isinstance(leaves[i], np.ndarray) else value
    return _in_order_of(params, jax.tree_util.tree_unflatten(treedef, leaves))


def _in_order_of(template, tree):
    """``tree`` with its dicts' keys in ``template``'s order (``tree_unflatten`` sorts them),
    so the smoothed params keep the model's order (:func:`jaxww.reading.params.model_order`)."""
    if isinstance(template, dict) and isinstance(tree, dict) and template.keys() == tree.keys():
        return {k: _in_order_of(template[k], tree[k]) for k in template}
    return tree


def _rank(row: dict, column: str | None, percent: float) -> int | None:
    """``k`` of one row of the report, or None when it is not known."""
    if not math.isfinite(row["norm"]):
        return None
    if column is None:
        return int(percent * row["num_evals"])
    if column == "num_pl_spikes" and row["status"] != "success":
        return None
    return None if row[column] < 0 else int(row[column])


def _warn(rows, ks, column) -> None:
    unchanged = [f"{r['name']} ({r['reason'] or 'no ' + column})" for r, k in zip(rows, ks) if k is None]
    zeroed = [r["name"] for r, k in zip(rows, ks) if k == 0]
    if unchanged:
        warnings.warn(f"smooth: {len(unchanged)} layers left unchanged, k unknown: {'; '.join(unchanged)}",
                      stacklevel=3)
    if zeroed:
        warnings.warn(f"smooth: {len(zeroed)} layers have k = 0 and are now zero: {', '.join(zeroed)}",
                      stacklevel=3)


@functools.partial(jax.jit, static_argnames=("specs", "precision"))
def _truncate(leaves, specs, counts, precision):
    """The ``leaves`` with each kernel of ``specs`` truncated to its ``counts`` largest
    singular values; one batched SVD per matrix shape."""
    mats = [k.matrices(leaves[k.leaf]).astype(precision) for k in specs]
    out = list(leaves)
    for _, members in group_indices([m.shape for m in mats]).items():
        stack = jnp.stack([mats[i] for i in members])                        # (n, rf, a, b)
        u, sv, vh = _host_eigh.svd(stack)
        kept = jnp.where(_keep(sv, counts[np.asarray(members)]), sv, 0)
        trunc = jnp.matmul(u * kept[..., None, :], vh)
        for j, i in enumerate(members):
            out[specs[i].leaf] = specs[i].put(out[specs[i].leaf], trunc[j])
    return tuple(out)


def _keep(s, counts):
    """Mask of the ``counts[j]`` largest of the singular values ``s[j]`` ``(n, rf, m)``,
    pooled over the taps."""
    flat = s.reshape(s.shape[0], -1)
    rank = jnp.argsort(jnp.argsort(-flat, axis=-1, stable=True), axis=-1, stable=True)
    return (rank < counts[:, None]).reshape(s.shape)


