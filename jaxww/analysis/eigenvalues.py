"""The spectra stage of :func:`jaxww.analyze`: every kernel's eigenvalues, this process's
share of them split over its devices and read a group at a time within the memory
budget (:mod:`jaxww.analysis.streaming`), then gathered from every process
(:mod:`jaxww.linalg.placement`); kernels of arrays sharded over several devices are
computed where they are (:func:`jaxww.linalg.sharded.kernel_spectrum`)."""

from __future__ import annotations

from typing import NamedTuple

from jaxww.linalg import placement as _placement
from jaxww.linalg import sharded as _mesh
from jaxww.analysis import streaming as _streaming
from jaxww.analysis.run import Run


class Spectra(NamedTuple):
    """What :func:`compute` returns.

    Attributes:
      evals: every kernel's descending spectrum ``(rf, M)`` (host arrays, kernel order).
      alone: ``{kernel index: (bytes needed, budget, "memory budget" or "device budget")}``
        of the kernels computed alone, over the budget they were planned in.
    """

    evals: list
    alone: dict


def compute(kerns, leaves, devices, run: Run) -> Spectra:
    """The :class:`Spectra` of ``kerns`` (read from ``leaves``) on ``devices``; kernels of
    arrays placed on several devices first (:func:`_placed`)."""
    placed = [i for i, k in enumerate(kerns) if _mesh.on_mesh(leaves[k.leaf])]
    if placed:
        return _placed(placed, kerns, leaves, devices, run)
    share = _placement.host_share(kerns)
    mine = [kerns[i] for i in share]
    evals: list = [None] * len(kerns)
    alone: dict = {}
    # Dispatch is asynchronous on accelerators: the parts run on their devices concurrently.
    for part, dev in zip(_placement.split(mine, len(devices)), devices):
        idx = [share[i] for i in part]
        ev, need = _streaming.compute([kerns[i] for i in idx], leaves, dev, run.precision, run.budget,
                                      run.tracker)
        for i, e in zip(idx, ev):
            evals[i] = e
        alone.update({idx[i]: v for i, v in need.items()})
    return Spectra(*_placement.gather(kerns, share, evals, alone, run.precision))


def _placed(placed, kerns, leaves, devices, run: Run) -> Spectra:
    """:func:`compute` when the kernels ``placed`` are read from ``jax.Array``s on several
    devices (params sharded over a mesh): those are computed where they are, by every
    process, and only their eigenvalues leave the devices; the others as usual."""
    evals: list = [None] * len(kerns)
    alone: dict = {}
    rest = [i for i in range(len(kerns)) if i not in set(placed)]
    seen: set = set()
    for i in placed:
        evals[i] = _mesh.kernel_spectrum(kerns[i], leaves[kerns[i].leaf], run.precision)
        new = kerns[i].leaf not in seen
        seen.add(kerns[i].leaf)
        run.tracker.advance(1, _streaming.stored_bytes(leaves[kerns[i].leaf]) if new else 0,
                                _placement.cost(kerns[i]))
    if rest:
        sub = compute([kerns[i] for i in rest], leaves, devices, run)
        for i, ev in zip(rest, sub.evals):
            evals[i] = ev
        alone = {rest[j]: v for j, v in sub.alone.items()}
    return Spectra(evals, alone)
