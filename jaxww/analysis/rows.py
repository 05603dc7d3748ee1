"""The rows of a :class:`jaxww.Report` from the fit stage's :class:`FitGroup` values:
one dict per layer, keys :data:`jaxww.report.columns.COLUMNS` then the optional analyses'
columns, with the status, warning and reason of each layer."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from jaxww.fit import metrics as _metrics
from jaxww.fit import tail as _tail
from jaxww.reading.kernels import Kernel
from jaxww.report.columns import COLUMNS
from jaxww.analysis import optional as _optional
from jaxww.analysis.fitting import FitGroup


class Rows(NamedTuple):
    """What :func:`assemble` returns.

    Attributes:
      rows: one dict per kernel, in kernel order.
      evals: each layer's eigenvalues, ascending (NumPy), by name.
      rand_evals: each layer's randomised eigenvalues, ascending, by name (``randomize``).
    """

    rows: tuple
    evals: dict
    rand_evals: dict


def assemble(kerns, ids, groups: list[FitGroup], opts: _optional.Options, notes: dict) -> Rows:
    """The rows in kernel order and the spectra by name.

    Args:
      kerns: the analysed kernels.
      ids: each kernel's layer id (:attr:`jaxww.reading.layers.Layers.ids`).
      groups: the host :class:`FitGroup` of every kernel (:func:`jaxww.analysis.fitting.fit_parts`).
      opts: the optional analyses.
      notes: extra text for the reason of some rows, by kernel index.
    """
    rows: list = [None] * len(kerns)
    evals, rand_evals = {}, {}
    for g in groups:
        for r, i in enumerate(g.members):
            k = kerns[i]
            finite = not np.isnan(g.evals[r][: k.num_evals]).any()
            row = _row(k, ids[i], {f: v[r] for f, v in g.fit._asdict().items()},
                       {f: v[r] for f, v in g.metrics._asdict().items()}, finite)
            cols, why = _optional.row(opts, g.extra, r, k.num_evals, row["status"] == "success", finite)
            bound = _optional.at_bound(opts, row["alpha"]) if row["warning"] else ""
            row.update(cols, reason="; ".join(filter(None, (row["reason"], why, bound, notes.get(i)))),
                       warning="" if bound else row["warning"])
            rows[i] = row
            evals[k.name] = np.sort(g.evals[r][: k.num_evals])
            if g.rand is not None:
                rand_evals[k.name] = np.sort(g.rand[r][: k.num_evals])
    return Rows(tuple(rows), evals, rand_evals)


def _row(k: Kernel, layer_id: int, fit: dict, met: dict, finite: bool) -> dict:
    """The :data:`COLUMNS` of one layer from its fit and metrics (host scalars)."""
    status, reason = "success", ""
    if not finite:
        status, reason = "failed", "weights contain NaN or Inf"
    elif fit["status"] != _tail.FIT_OK:
        status, reason = "failed", _tail.FIT_REASONS[int(fit["status"])]
    nan = math.nan
    row = dict(layer_id=layer_id, name=k.name, layer_type=k.layer_type, shape=k.shape,
               N=k.N, M=k.M, Q=k.Q, rf=k.rf, num_evals=k.num_evals)
    for col in ("alpha", "D", "xmin", "xmax", "sigma"):
        row[col] = float(fit[col]) if finite else nan
    row["num_pl_spikes"] = int(fit["num_pl_spikes"]) if finite else 0
    for col in _metrics.SpectralMetrics._fields:
        v = met[col]
        row[col] = (int(v) if col == "matrix_rank" else float(v)) if finite else nan
    row["warning"], why = _metrics.verdict(row["alpha"], k.num_evals) if status == "success" else ("", "")
    row["status"], row["reason"] = status, "; ".join(filter(None, (reason, why)))
    return {c: row[c] for c in COLUMNS}
