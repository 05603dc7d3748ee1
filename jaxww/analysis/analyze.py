"""``jaxww.analyze``: params -> layers -> spectra -> fits and metrics -> rows -> :class:`Report`.

Each stage is a module of its own and hands the next a typed value:
:func:`jaxww.reading.layers.read_layers` (:class:`~jaxww.reading.layers.Layers`),
:mod:`jaxww.analysis.eigenvalues` (:class:`~jaxww.analysis.eigenvalues.Spectra`),
:mod:`jaxww.analysis.fitting` (:class:`~jaxww.analysis.fitting.FitGroup`),
:mod:`jaxww.analysis.rows` (:class:`~jaxww.analysis.rows.Rows`).
"""

from __future__ import annotations

import contextlib
from typing import Sequence

import jax

from jaxww.defaults import MAX_EVALS, MAX_N, MIN_EVALS
from jaxww.reading import kernels as _kernels
from jaxww.reading.layers import LayerSelection, read_layers
from jaxww.linalg import pool as _pool
from jaxww.linalg import placement as _placement
from jaxww.linalg import spectra as _spectra
from jaxww.report import plots
from jaxww.report.columns import COLUMNS
from jaxww.report.report import Report
from jaxww.analysis import arguments, eigenvalues, fitting, rows
from jaxww.analysis import farms as _farms
from jaxww.analysis import optional as _optional
from jaxww.analysis import progress as _progress
from jaxww.analysis import randomize as _randomize
from jaxww.analysis import streaming as _streaming
from jaxww.analysis import budget as _budget
from jaxww.analysis import vectors as _vectors
from jaxww.analysis.run import Run


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
    pool: bool = True,
    xmin_max: float | None = None,
    devices: Sequence[jax.Device] | jax.sharding.Mesh | None = None,
    fix_fingers: str | None = None,
    fit: str = "PL",
    bootstrap: int = 0,
    key: jax.Array | None = None,
    mp_fit: bool = False,
    randomize: bool = False,
    detX: bool = False,
    ERG: bool = False,
    vectors: bool = False,
    farms=False,
    estimator: str = "csn",
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
      pool: False: one row per convolution tap (weightwatcher's ``pool=False``: the row
        ``name[tap=i]``, its ``slice_id`` column ``i``, row-major over the kernel's
        spatial axes; each 2-D tap's eigenvalues scaled by ``rf / 2`` as weightwatcher
        0.7.7 does); the size limits then apply to each tap.
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
        The extra columns of the options are listed in :mod:`jaxww.analysis.optional`.
      mp_fit: add the Marchenko-Pastur fit (:mod:`jaxww.fit.mp`): ``num_spikes``,
        ``sigma_mp``, ``mp_softrank``, ``bulk_min``, ``bulk_max``, ``bulk_max_tw``.
      randomize: add the randomised spectra and traps (:mod:`jaxww.analysis.randomize`);
        needs ``key``.
      detX: add ``detX_num``, ``detX_val``, ``detX_val_unrescaled`` (:mod:`jaxww.fit.detx`).
      ERG: weightwatcher's alias of ``detX=True`` that also adds ``num_ERG_spikes``
        (``detX_num``) and ``ERG_gap`` (``detX_num - num_pl_spikes``).
      vectors: add the localization of the singular vectors, bulk and tail
        (weightwatcher's 12 columns, :mod:`jaxww.analysis.vectors`): an eigendecomposition
        of each matrix, batched per shape.
      farms: add ``alpha_farms``, ``xmin_farms``, ``D_farms``, ``num_pl_spikes_farms``,
        ``num_evals_farms``: the fit (the rule of ``alpha``) of the eigenvalues of the
        matrix's fixed-aspect-ratio windows (FARMS, :mod:`jaxww.fit.farms`). ``True`` for
        the paper's LLM setting (2000-row square windows on a 15 x 15 grid), or the knobs
        as a dict or :class:`jaxww.Farms` (``farms={"window": 256, "grid": 8}``). The
        paper's ``alpha_peak`` with FARMS: ``farms=True, fix_fingers="xmin_peak"``.
      estimator: how each layer's tail is fitted: ``"csn"`` (weightwatcher's exact scan),
        ``"hill_median"`` (TempBalance's), ``"alpha_mid"`` or ``"alpha_peak"``
        (AlphaPruning's); definitions in :mod:`jaxww.fit.estimators`. It sets ``alpha``,
        ``xmin``, ``D``, ``sigma``, ``num_pl_spikes`` and the metrics built on alpha
        (``alpha_weighted``, ``log_alpha_norm``, the verdict); the report records it and
        prints it.
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
    args = locals()
    given = arguments.given(analyze, args)
    _spectra.check_precision_name(precision)
    opts = _optional.check(fix_fingers=fix_fingers, fit=fit, bootstrap=bootstrap, key=key,
                           mp_fit=mp_fit, randomize=randomize, detX=detX, ERG=ERG, pool=pool,
                           farms=farms, estimator=estimator, xmin_max=xmin_max)
    budget = _budget.parse_budget(memory_budget)
    report_progress = _progress.reporter(progress)   # a bad argument fails before any work
    read = read_layers(params, **arguments.reading(args))
    limits = {"max_N": max_N, "max_evals": max_evals}
    _check_found(read, limits)
    devices = _placement.local_devices(devices)
    with _running(report_progress, read, opts, plot) as tracker:
        run = Run(precision, opts, key, budget, tracker)
        out = _rows(read, devices, run, xmin_max, vectors)
        report = Report(out.rows, tuple(read.skipped), out.evals, read.limited, limits, treedef=read.treedef,
                        columns=COLUMNS + opts.columns + _vectors.COLUMNS * bool(vectors), rand_evals=out.rand_evals,
                        kernels=tuple(read.kernels), options=given)
        if plot:
            tracker.begin("plots")
            plots.draw_all(report, savefig, done=lambda: tracker.advance(1, 0, _plot_work()))
        tracker.finish()
    return report


def _rows(read, devices, run: Run, xmin_max, vectors: bool) -> rows.Rows:
    """The rows of the analysed layers: spectra, fits, the options' columns (FARMS and the
    vectors' among them) and the notes of the layers computed alone over a budget."""
    opts, precision, budget = run.opts, run.precision, run.budget
    with _spectra.precision_scope(precision):
        spectra = eigenvalues.compute(read.kernels, read.leaves, devices, run)
        groups = _streaming.fitting(read.kernels, devices, budget, precision)(fitting.fit_parts)(
            read.kernels, spectra.evals, read.leaves, devices, xmin_max, run)
        if opts.farms is not None:
            groups = _farms.add(groups, _farms.columns(read.kernels, read.leaves, devices, opts.farms,
                                                       opts.fix_fingers, xmin_max, precision, budget))
        notes = {i: f"computed alone: needs {_progress.human_bytes(n)}, over the {label} "
                    f"{_progress.human_bytes(b)}" for i, (n, b, label) in spectra.alone.items()}
        out = rows.assemble(read.kernels, read.ids, groups, opts, notes)
        if vectors:
            found = _vectors.columns(read.kernels, read.leaves, out.rows, precision, budget)
            for row, cols in zip(out.rows, found):
                row.update(cols)
    return out


def _check_found(read, limits) -> None:
    """``ValueError`` when the tree is empty or has no eligible weight matrix (the skip
    reasons of the first leaves, and the size limits' note)."""
    if not read.leaves:
        raise ValueError("analyze: the params tree is empty (no leaves to search for weight matrices)")
    if not read.kernels:
        note = Report((), (), {}, read.limited, limits).limits_note()
        why = "; ".join(f"{s.name}: {s.reason}" for s in read.skipped[:10])
        raise ValueError(f"analyze: no eligible weight matrix among {len(read.leaves)} leaves "
                         f"(searched floating-point leaves with ndim >= 2). Skipped: {why}"
                         + (f". {note}" if note else ""))


@contextlib.contextmanager
def _running(report_progress, read, opts, plot):
    """The :class:`jaxww.analysis.progress.Progress` of an analysis, its phases and their work
    (this process's share of the spectra; the randomisation, fits and figures of every
    kernel), with the host reporting each matrix to it (:func:`jaxww.linalg.pool.reporting`);
    on an error or an interrupt, the host's threads ended before it propagates."""
    kerns, leaves = read.kernels, read.leaves
    mine = [kerns[i] for i in _placement.host_share(kerns)]
    phases = [("spectra", len(mine), sum(map(_placement.cost, mine)))]
    nbytes = sum(_streaming.stored_bytes(leaves[j]) for j in {k.leaf for k in mine})
    if opts.randomize:
        phases.append(("randomize", len(kerns), sum(map(_randomize.work, kerns))))
        nbytes += sum(_streaming.stored_bytes(leaves[j]) for j in {k.leaf for k in kerns})
    phases.append((fitting.fit_stage(opts), len(kerns), sum(fitting.fit_work(k, opts.bootstrap) for k in kerns)))
    if plot:
        phases.append(("plots", len(kerns), len(kerns) * _plot_work()))
    with _progress.Progress(report_progress, phases, nbytes) as tracker, \
            _pool.reporting(tracker.add_work), _pool.pool_ended_on_error():
        yield tracker


def _plot_work() -> float:
    """The work of a figure in the units of the progress bar."""
    return _progress.PLOT_WORK * _pool.workers()
