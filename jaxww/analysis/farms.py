"""``analyze(..., farms=True)``: the FARMS columns (:mod:`jaxww.fit.farms`).

Each kernel's windows (:func:`jaxww.fit.farms.geometry`) are cut from its matrices and
their spectra computed by the batched spectra code, a group of leaves at a time within
the memory budget (:func:`jaxww.analysis.streaming.groups`, a leaf's need counting its
windows and their Gram matrices, :func:`need`): all windows of a kernel are matrices of
one shape, one batched call per group. The concatenated eigenvalues (times the
kernel's ``esd_scale``) are fitted by the same rule as ``alpha`` (the plain scan, or
``fix_fingers``'s), spectra of one length in one batch:

==========================  ==========================================================
``alpha_farms``             the fitted exponent of the windows' eigenvalues
``xmin_farms``, ``D_farms``  its tail start and KS distance
``num_pl_spikes_farms``     the windows' eigenvalues ``>= xmin_farms``
``num_evals_farms``         the windows' eigenvalues (windows x ``m`` x taps)
==========================  ==========================================================

Computed on the first of the ``devices`` (a CPU one: on the host, LAPACK).
"""

from __future__ import annotations

import jax
import numpy as np

from jaxww.fit import farms as _farms
from jaxww.fit import fingers as _fingers
from jaxww.fit import powerlaw as _powerlaw
from jaxww.fit import scan as _scan
from jaxww.fit import tail as _tail
from jaxww.linalg import spectra as _spectra
from jaxww.linalg.batching import group_indices
from jaxww.linalg.placement import on_device
from jaxww.reading.checkpoints import LazyTensor
from jaxww.analysis import streaming as _streaming
from jaxww.analysis.specs import used_leaves

#: Columns added by ``farms=``.
COLUMNS = ("alpha_farms", "xmin_farms", "D_farms", "num_pl_spikes_farms", "num_evals_farms")
#: Its integer columns.
COUNTS = ("num_pl_spikes_farms", "num_evals_farms")


def need(farms: _farms.Farms):
    """A ``need_of`` for :func:`jaxww.analysis.streaming.groups`: a leaf's bytes as stored
    when read from disk, its cast, its kernels' windows and their Gram matrices."""
    def of(leaf, kerns, precision: str) -> int:
        read = _streaming.stored_bytes(leaf) if isinstance(leaf, LazyTensor) else 0
        size = int(np.prod(leaf.shape))
        return read + _farms.need(size, kerns, farms, np.dtype(precision).itemsize)
    return of


def spectra(kerns, leaves, device, farms: _farms.Farms, precision: str, budget: int) -> list:
    """Each kernel's FARMS eigenvalues (NumPy, descending, times ``esd_scale``), a group of
    leaves at a time within ``budget``."""
    out: list = [None] * len(kerns)
    for members, _ in _streaming.groups(kerns, leaves, budget, precision, need(farms)):
        values = {j: _streaming.read(leaves[j]) for j in used_leaves([kerns[i] for i in members])}
        if on_device(device):
            values = jax.device_put(values, device)
        stacks = []
        for i in members:
            mats = kerns[i].matrices(values[kerns[i].leaf])
            stacks.append(_farms.windows(mats, _farms.geometry(mats.shape, farms)))
        del values
        ev = (_spectra.batched_spectra if on_device(device) else _spectra.host_spectra)(
            stacks, precision=precision)
        for i, e in zip(members, ev):
            out[i] = -np.sort(-np.asarray(e).reshape(-1) * kerns[i].esd_scale)
    return out


def fit(evals: list, fix_fingers: str | None, xmin_max, device) -> dict:
    """The :data:`COLUMNS` of every kernel (``(K,)`` NumPy arrays, kernel order) from its
    FARMS eigenvalues, fitted as ``alpha`` is (``fix_fingers``: None, ``"clip_xmax"`` or
    ``"xmin_peak"``), one batch per length; plus ``status_farms``."""
    cols = {c: np.zeros(len(evals)) for c in COLUMNS[:3]}
    cols.update({c: np.zeros(len(evals), int) for c in COUNTS + ("status_farms",)})
    for n, members in group_indices([len(e) for e in evals]).items():
        E = np.stack([evals[i] for i in members])
        f = _fit_batch(E, fix_fingers, xmin_max, device)
        for c, v in (("alpha_farms", f.alpha), ("xmin_farms", f.xmin), ("D_farms", f.D),
                     ("num_pl_spikes_farms", f.num_pl_spikes), ("status_farms", f.status)):
            cols[c][members] = np.asarray(v)
        cols["num_evals_farms"][members] = n
    return cols


def _fit_batch(E: np.ndarray, fix_fingers, xmin_max, device) -> _scan.PowerLawFit:
    """The fit of a ``(B, n)`` batch: the plain scan in NumPy on a CPU (nothing compiled),
    else the jitted one of ``fix_fingers`` on ``device``."""
    if fix_fingers is None and not on_device(device):
        return _scan.fit_host(E, np.inf if xmin_max is None else xmin_max)
    E = jax.device_put(E, device)
    if fix_fingers is None:
        return _powerlaw.fit_power_law(E, xmin_max=xmin_max)
    return _fingers.fit_fingers(E, fix_fingers, xmin_max=xmin_max).fit


def columns(kerns, leaves, devices, farms: _farms.Farms, fix_fingers, xmin_max, precision: str,
            budget: int) -> dict:
    """:func:`spectra` then :func:`fit` on the first of ``devices``."""
    evals = spectra(kerns, leaves, devices[0], farms, precision, budget)
    return fit(evals, fix_fingers, xmin_max, devices[0])


def add(groups, cols: dict) -> list:
    """The fit stage's :class:`jaxww.analysis.fitting.FitGroup` with the FARMS columns
    ``cols`` (:func:`columns`, kernel order) in their ``extra``."""
    return [g._replace(extra={**g.extra, **{c: v[np.asarray(g.members)] for c, v in cols.items()}})
            for g in groups]


def reason(values: dict, r: int) -> str:
    """Why row ``r``'s FARMS fit has no alpha (``""`` when it has one)."""
    status = int(values["status_farms"][r])
    return "" if status == _tail.FIT_OK else f"farms: {_tail.FIT_REASONS[status]}"
