"""``jaxww.distances``: weightwatcher 0.7.7's ``distances(model_1, model_2)`` per layer.

Both trees are read as :func:`jaxww.analyze` reads them (:func:`jaxww.reading.layers.read_layers`,
the same options), layers matched by name. For a layer with matrices ``W_t`` (its ``rf``
convolution taps, ``(rows, cols)`` as jaxww reads the leaf, :meth:`jaxww.Kernel.matrices`):

=============  =========================================================================
method         ``delta_W``
=============  =========================================================================
``"raw"``      ``||W_a - W_b||_F`` over the whole kernel (every tap); ``delta_b`` is
               ``||b_a - b_b||`` of the layer's bias (the leaf ``bias`` beside the
               kernel), 0 when there is none (``b_shape`` then ``"unknown"``); weightwatcher 0.7.7 reports 0 for a
               ``Conv2d``'s bias
``"euclidean"``  the mean over the taps of ``||W_a,t - W_b,t||_F``; ``delta_b`` 0
``"cka"``      the mean over the taps of ``||W_a^T W_b||_F / sqrt(||W_a^T W_a||_F ||W_b W_b^T||_F)``
               (weightwatcher's uncentred form; 1e-6 is added to a denominator under
               1e-6); ``delta_b`` 0
=============  =========================================================================

``"cka"`` is a similarity (1 for ``W_b = c W_a``), not a distance, and depends on which
side of the matrix is ``rows``: weightwatcher takes PyTorch's ``(out, in)`` for a
``Linear`` (as jaxww reads a PyTorch state dict) and Keras' ``(in, out)`` for a ``Dense``.
Computed on the host in float64, one layer at a time.

Example:
  >>> import numpy as np, jaxww
  >>> w = np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)
  >>> d = jaxww.distances({"dense": {"kernel": w}}, {"dense": {"kernel": 2 * w}}, method="cka")
  >>> round(d.rows[0]["delta_W"], 6)
  1.0
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from jaxww.reading.layers import check_concrete, read_layers
from jaxww.report.report import dataframe
from jaxww.analysis import streaming as _streaming

#: The ``method=`` choices (weightwatcher's names).
METHODS = ("raw", "euclidean", "cka")
#: Columns of :attr:`Distances.rows` (weightwatcher's, ``slice_id`` with ``pool=False``).
COLUMNS = ("method", "layer_id", "name", "delta_W", "delta_b", "M", "N", "b_shape")


class Distances(NamedTuple):
    """What :func:`distances` returns (weightwatcher's ``(avg_dW, avg_db, details)``).

    Attributes:
      delta_W: mean of the rows' ``delta_W``.
      delta_b: mean of the rows' ``delta_b``.
      rows: one dict per layer, keys :data:`COLUMNS` (and ``slice_id`` with ``pool=False``).
    """

    delta_W: float
    delta_b: float
    rows: tuple

    @property
    def details(self):
        """pandas DataFrame of :attr:`rows` (needs the ``pandas`` extra)."""
        return dataframe(self.rows, tuple(self.rows[0]) if self.rows else COLUMNS)


def distances(model_a, model_b, *, method: str = "raw", **reading) -> Distances:
    """Per-layer distance of two models of the same structure (weightwatcher's ``distances``).

    Args:
      model_a, model_b: anything :func:`jaxww.analyze` reads, with the same layers.
      method: ``"raw"`` (default), ``"euclidean"`` or ``"cka"`` (module docstring;
        case-insensitive, as weightwatcher).
      **reading: the reading options of :func:`jaxww.analyze` (``layers``, ``pool``,
        ``layouts``, ``min_evals``, ``base``...), applied to both models.

    Returns:
      :class:`Distances`.

    Raises:
      ValueError: an unknown ``method``; the models' layers differ (the message names
        the first layer found in one only, or read with other shapes).
    """
    check_concrete((model_a, model_b), "distances")
    m = method.lower() if isinstance(method, str) else method
    if m not in METHODS:
        raise ValueError(f"distances: method must be one of {METHODS}, got {method!r}")
    read_a, read_b = (read_layers(x, **reading, where="distances") for x in (model_a, model_b))
    by_b = {k.name: k for k in read_b.kernels}
    rows = []
    for kern, layer_id in zip(read_a.kernels, read_a.ids):
        other = by_b.pop(kern.name, None)
        if other is None or other.shape != kern.shape:
            why = "not read in model_b" if other is None else f"shape {kern.shape} in model_a, {other.shape} in model_b"
            raise ValueError(f"distances: the models' layers differ: '{kern.name}' {why}")
        wa, wb = (np.asarray(k.matrices(_streaming.read(r.leaves[k.leaf])), np.float64)
                  for k, r in ((kern, read_a), (other, read_b)))
        row = dict(method=m, layer_id=layer_id, name=kern.name, delta_W=_delta_w(wa, wb, m),
                   delta_b=0.0, M=kern.M, N=kern.N, b_shape="unknown")
        if m == "raw":
            row.update(_bias_delta(kern, read_a, read_b))
        if reading.get("pool", True) is False:
            row["slice_id"] = kern.tap or 0
        rows.append(row)
    if by_b:
        raise ValueError(f"distances: the models' layers differ: '{next(iter(by_b))}' not read in model_a")
    mean = (lambda c: float(np.mean([r[c] for r in rows]))) if rows else (lambda c: math.nan)
    return Distances(mean("delta_W"), mean("delta_b"), tuple(rows))


def _delta_w(wa: np.ndarray, wb: np.ndarray, method: str) -> float:
    """``delta_W`` of two ``(rf, a, b)`` stacks (module docstring)."""
    if method == "raw":
        return float(np.linalg.norm((wa - wb).ravel()))
    if method == "euclidean":
        return float(np.mean(np.linalg.norm(wa - wb, axis=(1, 2))))
    cross = np.linalg.norm(np.swapaxes(wa, 1, 2) @ wb, axis=(1, 2))
    norm = np.sqrt(np.linalg.norm(np.swapaxes(wa, 1, 2) @ wa, axis=(1, 2))
                   * np.linalg.norm(wb @ np.swapaxes(wb, 1, 2), axis=(1, 2)))
    return float(np.mean(cross / np.where(norm < 1e-6, norm + 1e-6, norm)))


def _bias_delta(kern, read_a, read_b) -> dict:
    """``delta_b`` and ``b_shape`` of ``raw``: the 1-D ``bias`` leaf beside the kernel's leaf
    in both models (none for a slice of a stacked leaf), else ``{}``."""
    if kern.select and kern.tap is None:
        return {}
    name = read_a.names[kern.leaf]
    bias = name.rsplit("/", 1)[0] + "/bias" if "/" in name else "bias"
    found = [r.leaves[r.names.index(bias)] if bias in r.names else None for r in (read_a, read_b)]
    if any(b is None or len(getattr(b, "shape", ())) != 1 for b in found):
        return {}
    ba, bb = (np.asarray(_streaming.read(b), np.float64) for b in found)
    if ba.shape != bb.shape:
        return {}
    return {"delta_b": float(np.linalg.norm(ba - bb)), "b_shape": ba.shape}
