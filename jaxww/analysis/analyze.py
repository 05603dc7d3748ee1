"""``jaxww.analyze``: pytree -> kernels -> spectra -> power-law fit -> metrics -> report."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxww.defaults import MAX_EVALS, MAX_N, MIN_EVALS
from jaxww.reading.layers import LayerSelection, read_layers
from jaxww.reading import kernels as _kernels
from jaxww.linalg import pool as _pool
from jaxww.linalg import sharded as _mesh
from jaxww.fit import metrics as _metrics
from jaxww.analysis import options as _options
from jaxww.linalg import placement as _placement
from jaxww.fit import powerlaw as _powerlaw
from jaxww.analysis import progress as _progress
from jaxww.analysis import randomize as _randomize
from jaxww.linalg import spectra as _spectra
from jaxww.analysis import streaming as _streaming
from jaxww.analysis import budget as _budget
from jaxww.linalg.batching import group_indices
from jaxww.report.report import COLUMNS, Report

#: Fit all layers in one padded batch when that costs at most this many elements.
_FIT_MERGE_ELEMENTS = 1 << 26


def _fit_groups(kerns) -> dict[int, list[int]]:
    """Layers grouped by padded spectrum length for the vectorised fit.

    One group for all layers when the padded ``O(n^2)`` scan stays small (each group
    is a compilation, which costs more than a small scan); else one per length bucket.
    """
    sizes = [_spectra.bucket(k.num_evals) for k in kerns]
    if len(kerns) * max(sizes) ** 2 <= _FIT_MERGE_ELEMENTS:
        return {max(sizes): list(range(len(kerns)))}
    return group_indices(sizes)


@functools.partial(jax.jit, static_argnames=("kerns", "groups"))
def _pooled(evals, kerns, groups):
    """Per-kernel spectra ``(rf, m)`` -> per fit group, ``(B, n)`` pooled and zero-padded."""
    pooled = [ev.reshape(-1) * k.esd_scale for k, ev in zip(kerns, evals)]
    return [jnp.stack([jnp.pad(pooled[i], (0, nb - pooled[i].shape[0])) for i in members])
            for nb, members in groups]


def analyze(
    params,
    *,
    precision: str = "float32",
    min_evals: int = MIN_EVALS,
    max_evals: int | None = MAX_EVALS,
    max_N: int | None = MAX_N,
    layers: LayerSelection = None,
    layouts: _kernels.LayoutOverride = None,
    scan_axis: _kernels.ScanAxis = None,
    xmin_max: float | None = None,
    devices: Sequence[jax.Device] | jax.sharding.Mesh | None = None,
    fix_fingers: str | None = None,
    fit: str = "PL",
    bootstrap: int = 0,
    key: jax.Array | None = None,
    mp_fit: bool = False,
    randomize: bool = False,
    detX: bool = False,
    plot: bool = False,
    savefig: str | None = None,
    base=None,
    lora: str | None = None,
    lora_scale: float | dict | None = None,
    memory_budget: int | str | None = None,
    progress: _progress.ProgressArg = None,
) -> Report:
    """Analyse every weight matrix of ``params``: spectrum, power-law fit, metrics.

    Args:
      params: a pytree of arrays (Flax Linen variables, a dict loaded from a
        checkpoint), an ``nnx.State``, an ``nnx.Module`` (its ``nnx.Param`` state), a
        Keras 3 model (its variables by path, read as its layers use them), or the path
        of a checkpoint (:func:`jaxww.open_checkpoint`: planned from its headers, its
        tensors read a group at a time).
      precision: ``"float32"`` (default) or ``"float64"`` for the spectra, fit and
        metrics. float64 runs under ``jax.enable_x64()`` if x64 is off.
      min_evals, max_evals, max_N: size limits of the reference (layer kept when
        ``min_evals <= M * rf <= max_evals`` and ``N <= max_N``). ``max_N=None,
        max_evals=None`` analyses every layer (LLM vocabularies are above ``max_N``);
        the report lists the layers the limits left out in ``Report.limited``.
      layers: the layers to analyse: a regex (``re.search`` on the layer name), a
        callable ``name -> bool``, a layer id (weightwatcher's ``layers=``: the
        ``layer_id`` of :func:`jaxww.describe`, which stays the layer's id in the report)
        or a list of ids and names.
      layouts: how to read leaves whose layout cannot be inferred (e.g. PyTorch
        convolutions in a plain dict): ``{regex: layout}`` or a callable
        ``(name, shape) -> layout or None``; see :mod:`jaxww.reading.layouts`.
      scan_axis: position of the layer axis of scanned stacks (e.g. 1 for MaxText's
        ``param_scan_axis: 1``): an int, or ``{regex: int}`` per leaf name. Default:
        found from the scanned subtree; a stack whose layer axis cannot be told apart
        is skipped with this hint.
      xmin_max: only tails starting at ``xmin <= xmin_max`` are candidates.
      devices: where to compute: devices, or a ``jax.sharding.Mesh`` (its devices of
        this process); default ``jax.local_devices()``. With several, the layers are
        split into one part per device, of about equal work, and the parts run
        concurrently (each part batched as on one device). Under ``jax.distributed``
        the layers are first split over the processes, each reads and computes its
        share, and every process gets the whole report (:mod:`jaxww.linalg.placement`).
      fix_fingers: ``None``, ``"clip_xmax"`` or ``"xmin_peak"`` (:mod:`jaxww.fit.fingers`).
      fit: ``"PL"``, ``"TPL"`` or ``"E_TPL"`` (truncated power law, :mod:`jaxww.fit.tpl`).
      bootstrap: replicas per layer of the power-law goodness-of-fit test
        (:mod:`jaxww.fit.bootstrap`; 0: none). Needs ``key``.
      key: ``jax.random`` key of ``bootstrap`` (layer ``i`` uses ``fold_in(key, i)``) and
        ``randomize`` (a layer uses ``fold_in(key, crc32(name))``).
        The extra columns of the options are listed in :mod:`jaxww.analysis.options`.
      mp_fit: add the Marchenko-Pastur fit (:mod:`jaxww.fit.mp`): ``num_spikes``,
        ``sigma_mp``, ``mp_softrank``, ``bulk_min``, ``bulk_max``, ``bulk_max_tw``.
      randomize: add the randomised spectra and traps (:mod:`jaxww.analysis.randomize`);
        needs ``key``.
      detX: add ``detX_num``, ``detX_val``, ``detX_val_unrescaled`` (:mod:`jaxww.fit.detx`).
      plot: draw one figure of the ESD per layer (:mod:`jaxww.report.plots`, needs matplotlib).
        In a Jupyter notebook (IPython with a kernel) they are shown inline, and saved
        only when ``savefig`` is given; elsewhere they are saved as PNG files into
        ``savefig`` (default ``"ww-img"``).
      savefig: directory of the PNG files of ``plot=True``.
      base: a base model's params (same paths and shapes): every leaf is read as
        ``W - W_base`` (:mod:`jaxww.reading.deltas`).
      lora: how LoRA factor pairs (``lora_a``/``lora_b``, PEFT ``lora_A``/``lora_B``) are
        read: None (the factors are skipped), ``"delta"`` (the update ``s B A``) or
        ``"merged"`` (the base weight plus the update); see :mod:`jaxww.reading.deltas`.
      lora_scale: the scale ``s`` of the LoRA updates, a number or ``{regex: number}``
        (default: 1 for NNX pairs; required for PEFT pairs).
      memory_budget: bytes (or a size like ``"2GiB"``) the weights may take at once while
        their spectra are computed (:mod:`jaxww.analysis.streaming`): the leaves are read, cast
        and released a group at a time; a leaf needing more is computed alone, its row
        says so. Default: a quarter of the available host memory, within 256 MiB..1 GiB.
      progress: ``True`` for a progress bar on stderr, or a callable receiving
        :class:`jaxww.analysis.progress.ProgressEvent` as each phase (reading, spectra, randomize,
        fits, plots) begins, after each group and at the end (:mod:`jaxww.analysis.progress`).
        An interrupt (Ctrl-C) stops the work between two matrices: no thread of jaxww
        runs on once the ``KeyboardInterrupt`` is raised.

    Returns:
      A :class:`Report` (``details``, ``summary``, ``skipped``, ``esd(name)``, ``tree()``).

    Raises:
      ValueError: the tree is empty or has no leaf that can be analysed;
        ``randomize=True`` without ``key``; ``base`` with other paths or shapes (the
        message names the first mismatched path); ``base`` with ``lora``.
      MemoryError: the host or a device ran out of memory (the message names the
        layers, the bytes they need and the budget).
      TypeError: called under ``jax.jit``, ``jax.vmap``, ``jax.grad`` or ``nnx.jit`` (a
        traced leaf): ``analyze`` reads concrete weights; the message names the
        jit-safe functions (``jaxww.tree_alpha``, ``jaxww.alpha_penalty``...).

    Example:
      >>> import jax, jaxww
      >>> params = {"dense": {"kernel": jax.random.normal(jax.random.key(0), (256, 128))}}
      >>> report = jaxww.analyze(params)
      >>> report.rows[0]["name"], report.rows[0]["status"]
      ('dense/kernel', 'success')
    """
    given = _given_options(locals())
    if precision not in _spectra.PRECISIONS:
        raise ValueError(f"precision must be one of {_spectra.PRECISIONS}, got {precision!r}")
    opts = _options.check(fix_fingers=fix_fingers, fit=fit, bootstrap=bootstrap, key=key,
                          mp_fit=mp_fit, randomize=randomize, detX=detX)
    budget = _budget.parse_budget(memory_budget)
    report_progress = _progress.reporter(progress)   # a bad argument fails before any work
    kerns, skipped, leaves, treedef, limited, ids = read_layers(
        params, min_evals=min_evals, max_evals=max_evals, max_N=max_N, layers=layers, layouts=layouts,
        scan_axis=scan_axis, base=base, lora=lora, lora_scale=lora_scale)
    if not leaves:
        raise ValueError("analyze: the params tree is empty (no leaves to search for weight matrices)")
    limits = {"max_N": max_N, "max_evals": max_evals}
    if not kerns:
        raise _nothing_to_analyze(len(leaves), skipped, Report((), (), {}, limited, limits).limits_note())
    devices = _placement.local_devices(devices)
    with _running(report_progress, kerns, leaves, opts, plot) as tracker:
        with _spectra.precision_scope(precision):
            evals, needs = _spectra_of(kerns, leaves, devices, precision, budget, tracker)
            results = _streaming.fitting(kerns, devices, budget, precision)(_analyze_parts)(
                kerns, evals, leaves, devices, precision, xmin_max, opts, key, budget, tracker)
        notes = {i: f"computed alone: needs {_progress.human_bytes(n)}, over the memory budget "
                    f"{_progress.human_bytes(b)}" for i, (n, b) in needs.items()}
        rows, evals_by_name, rand_by_name = _assemble(kerns, ids, results, opts, notes)
        report = Report(tuple(rows), tuple(skipped), evals_by_name, limited, limits, treedef=treedef,
                        columns=COLUMNS + opts.columns, rand_evals=rand_by_name,
                        kernels=tuple(kerns), options=given)
        if plot:
            from jaxww.report import plots
            tracker.begin("plots")
            plots.draw_all(report, savefig, done=lambda: tracker.advance(1, 0, _plot_work()))
        tracker.finish()
    return report


def _given_options(args: dict) -> dict:
    """The arguments of :func:`analyze` (but ``params``) other than their defaults, those
    JSON can hold (:func:`jaxww.report.export.jsonable`); ``base`` is recorded as ``True``."""
    from jaxww.report import export

    given = {n: args[n] for n, d in _defaults().items() if args[n] is not d and not _equal(args[n], d)}
    if "base" in given:
        given["base"] = True
    return export.jsonable({n: v for n, v in given.items() if n not in ("progress", "devices", "key")})


@functools.cache
def _defaults() -> dict:
    """The defaults of :func:`analyze`'s options (every argument but ``params``)."""
    return {n: p.default for n, p in inspect.signature(analyze).parameters.items() if n != "params"}


def _equal(a, b) -> bool:
    try:
        return bool(a == b)
    except Exception:   # arrays, trees
        return False



def _assemble(kerns, ids, results, opts, notes):
    """Rows in kernel order, and the spectra (and randomised spectra) by name, from the
    per-group ``results`` of :func:`_analyze_part` (host arrays); ``notes``: extra text
    for the reason of some rows, by kernel index."""
    rows: list = [None] * len(kerns)
    evals_by_name, rand_by_name = {}, {}
    for members, fit, met, E, extra, R in results:
        for r, i in enumerate(members):
            k = kerns[i]
            finite = not np.isnan(E[r][: k.num_evals]).any()
            row = _row(k, ids[i], {f: v[r] for f, v in fit._asdict().items()},
                       {f: v[r] for f, v in met._asdict().items()}, finite)
            cols, why = _options.row(opts, extra, r, k.num_evals, row["status"] == "success", finite)
            bound = _options.at_bound(opts, row["alpha"]) if row["warning"] else ""
            row.update(cols, reason="; ".join(filter(None, (row["reason"], why, bound, notes.get(i)))),
                       warning="" if bound else row["warning"])
            rows[i] = row
            evals_by_name[k.name] = np.sort(E[r][: k.num_evals])
            if R is not None:
                rand_by_name[k.name] = np.sort(R[r][: k.num_evals])
    return rows, evals_by_name, rand_by_name

def _nothing_to_analyze(num_leaves, skipped, note) -> ValueError:
    why = "; ".join(f"{s.name}: {s.reason}" for s in skipped[:10])
    return ValueError(f"analyze: no eligible weight matrix among {num_leaves} leaves "
                      f"(searched floating-point leaves with ndim >= 2). Skipped: {why}"
                      + (f". {note}" if note else ""))


@contextlib.contextmanager
def _running(report_progress, kerns, leaves, opts, plot):
    """The :class:`jaxww.analysis.progress.Tracker` of an analysis, its phases and their work (this
    process's share of the spectra; the randomisation, fits and figures of every kernel),
    with the host reporting each matrix to it (:func:`jaxww.linalg.pool.reporting`); on an
    error or an interrupt, the host's threads ended before it propagates."""
    mine = [kerns[i] for i in _placement.host_share(kerns)]
    phases = [("spectra", len(mine), sum(map(_placement.cost, mine)))]
    nbytes = sum(_streaming.stored_bytes(leaves[j]) for j in {k.leaf for k in mine})
    if opts.randomize:
        phases.append(("randomize", len(kerns), sum(map(_randomize.work, kerns))))
        nbytes += sum(_streaming.stored_bytes(leaves[j]) for j in {k.leaf for k in kerns})
    phases.append((_fit_stage(opts), len(kerns), sum(_fit_work(k, opts.bootstrap) for k in kerns)))
    if plot:
        phases.append(("plots", len(kerns), len(kerns) * _plot_work()))
    with _progress.Tracker(report_progress, phases, nbytes) as tracker, \
            _pool.reporting(tracker.add_work), _pool.pool_ended_on_error():
        yield tracker


def _fit_stage(opts) -> str:
    return "bootstrap" if opts.bootstrap else "fits"


def _fit_work(k, bootstrap: int = 0) -> float:
    """The work of a layer's fit (and its ``bootstrap`` replicas) in the units of the
    progress bar (on one core while the spectra use them all)."""
    return (_progress.FIT_WORK + bootstrap * _progress.BOOTSTRAP_WORK) * _pool.workers() * k.num_evals ** 2


def _plot_work() -> float:
    """The work of a figure in the units of the progress bar."""
    return _progress.PLOT_WORK * _pool.workers()


def _spectra_of(kerns, leaves, devices, precision, budget, tracker):
    """Every kernel's descending spectrum ``(rf, M)`` (host arrays, kernel order) and the
    ``{index: (bytes needed, budget)}`` of those computed alone: this process's share of
    the kernels split over its devices, read and computed a group at a time
    (:mod:`jaxww.analysis.streaming`), then gathered from every process (:mod:`jaxww.linalg.placement`).
    Kernels of arrays placed on several devices first (:func:`_placed_spectra`)."""
    placed = [i for i, k in enumerate(kerns) if _mesh.on_mesh(leaves[k.leaf])]
    if placed:
        return _placed_spectra(placed, kerns, leaves, devices, precision, budget, tracker)
    share = _placement.host_share(kerns)
    mine = [kerns[i] for i in share]
    evals: list = [None] * len(kerns)
    needs: dict = {}
    # Dispatch is asynchronous on accelerators: the parts run on their devices concurrently.
    for part, dev in zip(_placement.split(mine, len(devices)), devices):
        idx = [share[i] for i in part]
        ev, need = _streaming.compute([kerns[i] for i in idx], leaves, dev, precision, budget, tracker)
        for i, e in zip(idx, ev):
            evals[i] = e
        needs.update({idx[i]: v for i, v in need.items()})
    return _placement.gather(kerns, share, evals, needs, precision)


def _placed_spectra(placed, kerns, leaves, devices, precision, budget, tracker):
    """:func:`_spectra_of` when the kernels ``placed`` are read from ``jax.Array``s on several
    devices (params sharded over a mesh): those are computed where they are, by every
    process, and only their eigenvalues leave the devices (:func:`jaxww.linalg.sharded.kernel_spectrum`);
    the others as usual."""
    evals: list = [None] * len(kerns)
    needs: dict = {}
    rest = [i for i in range(len(kerns)) if i not in set(placed)]
    seen: set = set()
    for i in placed:
        evals[i] = _mesh.kernel_spectrum(kerns[i], leaves[kerns[i].leaf], precision)
        new = kerns[i].leaf not in seen
        seen.add(kerns[i].leaf)
        tracker.advance(1, _streaming.stored_bytes(leaves[kerns[i].leaf]) if new else 0, _placement.cost(kerns[i]))
    if rest:
        sub, sub_needs = _spectra_of([kerns[i] for i in rest], leaves, devices, precision, budget, tracker)
        for i, ev in zip(rest, sub):
            evals[i] = ev
        needs = {rest[j]: v for j, v in sub_needs.items()}
    return evals, needs


def _analyze_parts(kerns, evals, leaves, devices, precision, xmin_max, opts, key, budget, tracker) -> list:
    """:func:`_analyze_part` of one part of the kernels per device (of about equal work),
    on the host: ``[(kernel indices, fit, metrics, E, extra, R)]``. The default analysis
    on a CPU is fitted on the host (:func:`_host_fit`); the others are dispatched to
    their devices, then each group is counted as its results are ready."""
    bound = np.asarray(np.inf if xmin_max is None else xmin_max, precision)
    results, dispatched = [], []
    for part, dev in zip(_placement.split(kerns, len(devices)), devices):
        sub, ev = [kerns[i] for i in part], [evals[i] for i in part]
        if not _placement.on_device(dev) and opts == _options.Options():   # the default analysis on the host:
            out = _host_fit(ev, sub, bound, tracker)                  # NumPy, nothing compiled
        else:
            out = _analyze_part(sub, ev, leaves, dev, precision, bound, opts, key, part, budget, tracker)
            dispatched += [(group, sum(_fit_work(sub[i], opts.bootstrap) for i in group[0])) for group in out]
        results += [([part[i] for i in members], *rest) for members, *rest in out]
    for (members, *arrays), work in dispatched:
        jax.block_until_ready(arrays)
        tracker.advance(len(members), 0, work)
    return jax.device_get(results)


def _analyze_part(kerns, evals, leaves, device, precision, bound, opts, key, ids, budget, tracker):
    """Fit, metrics and the optional analyses of some layers on one device, from their
    spectra ``evals``: ``[(members, fit, metrics, E, extra, R)]`` (``R``: randomised
    spectra or None), dispatched.

    ``ids``: the global index of each kernel (the bootstrap key of a layer is
    ``fold_in(key, index)``, whatever the split over devices).

    The programs (spectra, fit, metrics) are keyed on shapes and layouts only, not on names:
    the static description of each kernel drops its name and numbers its leaf among
    the leaves actually used.
    """
    used = list(dict.fromkeys(k.leaf for k in kerns))
    specs = tuple(dataclasses.replace(k, name="", leaf=used.index(k.leaf)) for k in kerns)
    groups = tuple((nb, tuple(m)) for nb, m in _fit_groups(kerns).items())
    spectra = _pooled(jax.device_put(evals, device), specs, groups)
    rand = [None] * len(groups) if not opts.randomize else _random_spectra(
        key, kerns, specs, groups, leaves, used, device, precision, budget, tracker)
    tracker.begin(_fit_stage(opts))
    out = []
    for (_, members), E, R in zip(groups, spectra, rand):
        counts = np.asarray([kerns[i].num_evals for i in members])
        Ns = np.asarray([kerns[i].N for i in members], precision)
        fit, extra = _options.compute(opts, E, R, bound, key, [ids[i] for i in members],
                                      [kerns[i] for i in members])
        out.append((members, fit, _metrics.spectral_metrics(E, counts, Ns, fit.alpha), E, extra, R))
    return out


def _random_spectra(key, kerns, specs, groups, leaves, used, device, precision, budget, tracker):
    """The padded randomised spectra of each fit group (``randomize``): on a CPU computed on
    the host a group of leaves at a time (:func:`jaxww.analysis.randomize.host_spectra`: stopped
    between matrices, counted as it goes); elsewhere one program on the device, counted
    as it is dispatched."""
    tracker.begin("randomize")
    if not _placement.on_device(device):
        evals = _randomize.host_spectra(key, kerns, leaves, precision, budget, tracker)
        return _pooled(jax.device_put(evals, device), specs, groups)
    out = _options.random_spectra(key, _put(leaves, used, device), kerns, specs, groups, precision)
    tracker.advance(len(kerns), sum(_streaming.stored_bytes(leaves[j]) for j in used),
                    sum(map(_randomize.work, kerns)))
    return out


def _host_fit(evals, kerns, bound, tracker):
    """The default fit and metrics of host spectra in NumPy, nothing compiled (on the CPU the
    first call then costs what the second does; XLA would compile one fit and one metrics
    program per padded length). ``evals``: the descending ``(rf, m)`` spectrum of each
    kernel; layers of the same pooled length are fitted as one batch, unpadded, and
    counted by ``tracker``.
    Returns what :func:`_analyze_part` does: ``[(members, fit, metrics, E, {}, None)]``.
    """
    tracker.begin("fits")
    out = []
    for n, members in group_indices([k.num_evals for k in kerns]).items():
        E = np.stack([np.asarray(evals[i]).reshape(-1) * kerns[i].esd_scale for i in members])
        fit = _powerlaw.fit_host(E, bound)
        Ns = np.asarray([kerns[i].N for i in members], E.dtype)
        out.append((members, fit, _metrics.host_metrics(E, np.full(len(members), n), Ns, fit.alpha),
                    E, {}, None))
        tracker.advance(len(members), 0, sum(_fit_work(kerns[i]) for i in members))
    return out


def _put(leaves, used, device):
    return jax.device_put(tuple(_streaming.read(leaves[i]) for i in used), device)


def _row(k: _kernels.Kernel, layer_id: int, fit: dict, met: dict, finite: bool) -> dict:
    status, reason = "success", ""
    if not finite:
        status, reason = "failed", "weights contain NaN or Inf"
    elif fit["status"] != _powerlaw.FIT_OK:
        status, reason = "failed", _powerlaw.FIT_REASONS[int(fit["status"])]
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
