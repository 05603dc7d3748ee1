"""The fit stage of :func:`jaxww.analyze`: spectra -> power-law fits, metrics and the
optional analyses' values, one part of the layers per device, a batch of layers at a time.

Layers are fitted in batches of one padded spectrum length (:func:`fit_groups`); each
batch gives a :class:`FitGroup`. The default analysis on a CPU is fitted on the host in
NumPy (:func:`host_fit`, nothing compiled); everything else is one jitted program per
batch on the part's device.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxww.fit import metrics as _metrics
from jaxww.fit import scan as _scan
from jaxww.linalg import pool as _pool
from jaxww.linalg import placement as _placement
from jaxww.linalg import spectra as _spectra
from jaxww.linalg.batching import group_indices
from jaxww.analysis import optional as _optional
from jaxww.analysis import progress as _progress
from jaxww.analysis import randomize as _randomize
from jaxww.analysis import streaming as _streaming
from jaxww.analysis.run import Run
from jaxww.analysis.specs import static_specs, used_leaves

#: Fit all layers in one padded batch when that costs at most this many elements.
FIT_MERGE_ELEMENTS = 1 << 26


class FitGroup(NamedTuple):
    """The results of one batch of layers fitted together (``B`` layers).

    Attributes:
      members: the index of each layer among the kernels of the analysis.
      fit: the :class:`jaxww.PowerLawFit` of each layer (fields of shape ``(B,)``), the
        one the report shows (the optional analyses may change it).
      metrics: the :class:`jaxww.SpectralMetrics` of each layer.
      evals: ``(B, n)`` pooled spectra (zero-padded past each layer's ``num_evals``).
      extra: the optional analyses' values, ``{name: (B, ...) array}``
        (:func:`jaxww.analysis.optional.compute`).
      rand: ``(B, n)`` randomised spectra (``randomize``), else None.
    """

    members: list
    fit: _scan.PowerLawFit
    metrics: _metrics.SpectralMetrics
    evals: Any
    extra: dict
    rand: Any = None


def fit_groups(kerns) -> dict[int, list[int]]:
    """Layers grouped by padded spectrum length for the vectorised fit.

    One group for all layers when the padded ``O(n^2)`` scan stays small (each group
    is a compilation, which costs more than a small scan); else one per length bucket.
    """
    sizes = [_spectra.bucket(k.num_evals) for k in kerns]
    if len(kerns) * max(sizes) ** 2 <= FIT_MERGE_ELEMENTS:
        return {max(sizes): list(range(len(kerns)))}
    return group_indices(sizes)


@functools.partial(jax.jit, static_argnames=("kerns", "groups"))
def pooled(evals, kerns, groups):
    """Per-kernel spectra ``(rf, m)`` -> per fit group, ``(B, n)`` pooled and zero-padded."""
    flat = [ev.reshape(-1) * k.esd_scale for k, ev in zip(kerns, evals)]
    return [jnp.stack([jnp.pad(flat[i], (0, nb - flat[i].shape[0])) for i in members])
            for nb, members in groups]


def fit_stage(opts: _optional.Options) -> str:
    """The name of the fit phase of the progress events."""
    return "bootstrap" if opts.bootstrap else "fits"


def fit_work(k, bootstrap: int = 0) -> float:
    """The work of a layer's fit (and its ``bootstrap`` replicas) in the units of the
    progress bar (on one core while the spectra use them all)."""
    return (_progress.FIT_WORK + bootstrap * _progress.BOOTSTRAP_WORK) * _pool.workers() * k.num_evals ** 2


def fit_parts(kerns, evals, leaves, devices, xmin_max, run: Run) -> list[FitGroup]:
    """The :class:`FitGroup` of every kernel, one part of the kernels per device (of about
    equal work), as host arrays; ``members`` index ``kerns``.

    Args:
      kerns, leaves: from :func:`jaxww.reading.layers.read_layers`.
      evals: each kernel's descending spectrum ``(rf, M)``.
      devices: where to fit (the default analysis on a CPU device, ``farms`` or not: on the host).
      xmin_max: the bound on ``xmin`` (None: none).
      run: :class:`jaxww.analysis.run.Run`.

    The parts are dispatched to their devices, then each group is counted done as its
    results are ready.
    """
    bound = np.asarray(np.inf if xmin_max is None else xmin_max, run.precision)
    results, dispatched = [], []
    for part, dev in zip(_placement.split(kerns, len(devices)), devices):
        sub, ev = [kerns[i] for i in part], [evals[i] for i in part]
        if not _placement.on_device(dev) and run.opts._replace(farms=None) == _optional.Options():
            out = host_fit(ev, sub, bound, run.tracker)        # NumPy, nothing compiled
        else:
            out = fit_part(sub, ev, leaves, dev, bound, part, run)
            dispatched += [(g, sum(fit_work(sub[i], run.opts.bootstrap) for i in g.members)) for g in out]
        results += [g._replace(members=[part[i] for i in g.members]) for g in out]
    for group, work in dispatched:
        jax.block_until_ready(group)
        run.tracker.advance(len(group.members), 0, work)
    return jax.device_get(results)


def fit_part(kerns, evals, leaves, device, bound, ids, run: Run) -> list[FitGroup]:
    """Fit, metrics and the optional analyses of some layers on one device, from their
    spectra ``evals``, dispatched (device arrays); ``members`` index ``kerns``.

    ``ids``: the global index of each kernel (the bootstrap key of a layer is
    ``fold_in(key, index)``, whatever the split over devices).

    The programs are keyed on shapes and layouts only (:mod:`jaxww.analysis.specs`).
    """
    used = used_leaves(kerns)
    specs = static_specs(kerns, used)
    groups = tuple((nb, tuple(m)) for nb, m in fit_groups(kerns).items())
    spectra = pooled(jax.device_put(evals, device), specs, groups)
    rand = [None] * len(groups) if not run.opts.randomize else _random_spectra(
        kerns, specs, groups, leaves, used, device, run)
    run.tracker.begin(fit_stage(run.opts))
    out = []
    for (_, members), E, R in zip(groups, spectra, rand):
        sub = [kerns[i] for i in members]
        counts = np.asarray([k.num_evals for k in sub])
        Ns = np.asarray([k.N for k in sub], run.precision)
        fit, extra = _optional.compute(run.opts, E, R, bound, run.key, [ids[i] for i in members], sub)
        out.append(FitGroup(list(members), fit, _metrics.spectral_metrics(E, counts, Ns, fit.alpha), E, extra, R))
    return out


def _random_spectra(kerns, specs, groups, leaves, used, device, run: Run):
    """The padded randomised spectra of each fit group (``randomize``): on a CPU computed on
    the host a group of leaves at a time (:func:`jaxww.analysis.randomize.host_spectra`: stopped
    between matrices, counted as it goes); elsewhere one program on the device, counted
    as it is dispatched."""
    tracker = run.tracker
    tracker.begin("randomize")
    if not _placement.on_device(device):
        evals = _randomize.host_spectra(run.key, kerns, leaves, run.precision, run.budget, tracker)
        return pooled(jax.device_put(evals, device), specs, groups)
    values = jax.device_put(tuple(_streaming.read(leaves[i]) for i in used), device)
    out = _optional.random_spectra(run.key, values, kerns, specs, groups, run.precision)
    tracker.advance(len(kerns), sum(_streaming.stored_bytes(leaves[j]) for j in used),
                    sum(map(_randomize.work, kerns)))
    return out


def host_fit(evals, kerns, bound, tracker) -> list[FitGroup]:
    """The default fit and metrics of host spectra in NumPy, nothing compiled (on the CPU the
    first call then costs what the second does; XLA would compile one fit and one metrics
    program per padded length).

    Args:
      evals: the descending ``(rf, m)`` spectrum of each kernel.
      kerns: their kernels.
      bound: the bound on ``xmin``.
      tracker: counts each batch done.

    Returns:
      A :class:`FitGroup` per spectrum length (fitted as one batch, unpadded), without
      optional values.
    """
    tracker.begin("fits")
    out = []
    for n, members in group_indices([k.num_evals for k in kerns]).items():
        E = np.stack([np.asarray(evals[i]).reshape(-1) * kerns[i].esd_scale for i in members])
        fit = _scan.fit_host(E, bound)
        Ns = np.asarray([kerns[i].N for i in members], E.dtype)
        out.append(FitGroup(members, fit, _metrics.host_metrics(E, np.full(len(members), n), Ns, fit.alpha), E, {}))
        tracker.advance(len(members), 0, sum(fit_work(kerns[i]) for i in members))
    return out
