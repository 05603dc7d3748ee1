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
from jaxww import _host_eigh
from jaxww import _mesh
from jaxww import metrics as _metrics
from jaxww import options as _options
from jaxww import placement as _placement
from jaxww import powerlaw as _powerlaw
from jaxww import progress as _progress
from jaxww import randomize as _randomize
from jaxww import spectra as _spectra
from jaxww import streaming as _streaming
from jaxww._plan import group_indices

#: Columns of ``Report.details``, in order.
COLUMNS = (
    "layer_id", "name", "layer_type", "shape", "N", "M", "Q", "rf", "num_evals",
    "alpha", "D", "xmin", "xmax", "sigma", "num_pl_spikes",
    "log_norm", "log_spectral_norm", "spectral_norm", "norm", "alpha_weighted",
    "log_alpha_norm", "stable_rank", "matrix_rank", "entropy",
    "status", "warning", "reason",
)
#: Layer-averaged metrics of ``Report.summary`` (means over successful fits).
SUMMARY_METRICS = ("log_norm", "alpha", "alpha_weighted", "log_alpha_norm",
                   "log_spectral_norm", "stable_rank")


@dataclasses.dataclass(frozen=True)
class Report:
    """Result of :func:`analyze`.

    Attributes:
      rows: one dict per analysed layer, keys :data:`COLUMNS`.
      skipped_rows: one :class:`jaxww.reading.kernels.Skipped` per leaf not analysed.
      evals: eigenvalues (ascending, as NumPy arrays) of every analysed layer by name.
      limited: names of the layers left out only by the upper size limits (``max_N``,
        ``max_evals``): ``len(report.limited)`` of them would be analysed with
        ``max_N=None, max_evals=None``. Their rows are in ``skipped_rows`` too.
      limits: the upper size limits used, ``{"max_N": ..., "max_evals": ...}``.
      columns: the columns of ``rows`` (:data:`COLUMNS`, then those of the options).
      rand_evals: randomised eigenvalues (ascending) by name, with ``randomize=True``.
      options: the arguments of :func:`analyze` other than their defaults (those JSON
        can hold), recorded by :meth:`to_dict` and :meth:`save`.

    ``print(report)`` shows :meth:`summary_text`, then the failed layers with their
    reasons and the layers with warnings (:meth:`problems_text`); ``repr(report)`` is one
    line; in Jupyter the report shows as a table (:mod:`jaxww.display`).
    """

    rows: tuple
    skipped_rows: tuple
    evals: dict
    limited: tuple = ()
    limits: dict = dataclasses.field(default_factory=dict)
    _treedef: Any = dataclasses.field(repr=False, default=None)
    columns: tuple = COLUMNS
    rand_evals: dict = dataclasses.field(repr=False, default_factory=dict)
    _kerns: tuple = dataclasses.field(repr=False, default=())
    options: dict = dataclasses.field(repr=False, default_factory=dict)

    @property
    def details(self):
        """pandas DataFrame, one row per analysed layer (needs the ``pandas`` extra)."""
        return dataframe(self.rows, self.columns)

    @property
    def skipped(self):
        """pandas DataFrame of the leaves that were not analysed: name, shape, dtype, reason."""
        return dataframe([r._asdict() for r in self.skipped_rows], _kernels.Skipped._fields)

    @property
    def summary(self) -> dict:
        """Means of :data:`SUMMARY_METRICS` over layers whose fit succeeded."""
        ok = [r for r in self.rows if r["status"] == "success"]
        return {m: (float(np.mean([r[m] for r in ok])) if ok else math.nan) for m in SUMMARY_METRICS}

    def limits_note(self, include: str = "max_N=None, max_evals=None") -> str:
        """One line saying how many layers the size limits left out, or "" when none.

        Args:
          include: how to include them, as the caller passes arguments (the command line
            passes its flags).

        Example:
          >>> import numpy as np, jaxww
          >>> params = {"embed": {"embedding": np.ones((60000, 16), np.float32)},
          ...           "dense": {"kernel": np.eye(32, dtype=np.float32)}}
          >>> jaxww.analyze(params).limits_note()
          '1 layer left out by size limits (max_N=50000, max_evals=15000); pass max_N=None, max_evals=None to include it'
        """
        n = len(self.limited)
        if not n:
            return ""
        used = ", ".join(f"{k}={v}" for k, v in self.limits.items() if v is not None)
        return (f"{n} layer{'s' * (n > 1)} left out by size limits ({used}); "
                f"pass {include} to include {'them' if n > 1 else 'it'}")

    def summary_text(self, include: str = "max_N=None, max_evals=None") -> str:
        """:attr:`summary` as lines of text, then :meth:`limits_note` if any layer was left out.

        Args:
          include: passed to :meth:`limits_note`.
        """
        ok = sum(r["status"] == "success" for r in self.rows)
        n = len(self.rows)
        lines = [f"{n} layer{'s' * (n != 1)} analysed ({ok} successful fits), "
                 f"{len(self.skipped_rows)} leaves skipped",
                 "summary (means over successful fits):"]
        lines += [f"  {k:<18} {v:.4f}" for k, v in self.summary.items()]
        note = self.limits_note(include)
        return "\n".join(lines + ([note] if note else []))

    def problems_text(self, limit: int = 20) -> str:
        """The failed layers with their reasons, then the layers with warnings, as lines
        of text ("" when none).

        Args:
          limit: at most this many layers of each kind are named (then a count of the rest).

        Example:
          >>> import numpy as np, jaxww
          >>> w = np.eye(32, dtype=np.float32); w[0, 0] = np.nan
          >>> print(jaxww.analyze({"w": w}, min_evals=4).problems_text())
          1 failed:
            w: weights contain NaN or Inf
        """
        failed = [f"  {r['name']}: {r['reason']}" for r in self.rows if r["status"] != "success"]
        warned = [f"  {r['name']}: {r['warning']}" for r in self.rows if r["warning"]]
        lines = []
        for head, items in (("failed", failed), ("with warnings", warned)):
            if items:
                more = len(items) - limit
                lines += [f"{len(items)} {head}:"] + items[:limit] + ([f"  ... and {more} more"] if more > 0 else [])
        return "\n".join(lines)

    def __str__(self) -> str:
        return "\n".join(filter(None, (self.summary_text(), self.problems_text())))

    def __repr__(self) -> str:
        ok = sum(r["status"] == "success" for r in self.rows)
        warned = sum(bool(r["warning"]) for r in self.rows)
        alpha = self.summary["alpha"]
        return (f"<jaxww.Report: {len(self.rows)} layers ({ok} fitted, {len(self.rows) - ok} failed, "
                f"{warned} with warnings), {len(self.skipped_rows)} skipped, {len(self.limited)} over size "
                f"limits, mean alpha {alpha:.3f}>")

    def _repr_html_(self) -> str:
        from jaxww import display
        return display.report_html(self)

    def to_dict(self, options: dict | None = None, **extra) -> dict:
        """The report as a JSON-able dict (see :func:`jaxww.export.document`): version,
        ``extra``, options (default :attr:`options`), summary, rows, skipped, limited."""
        from jaxww import export
        return export.document(self, options, **extra)

    def save(self, path) -> str:
        """Write the report by the suffix of ``path``: ``.csv`` (the rows), ``.json``
        (:meth:`to_dict`) or ``.html`` (the table of the notebook, as a page).

        Args:
          path: a file path ending in ``.csv``, ``.json`` or ``.html``.

        Returns:
          The path written.

        Raises:
          ValueError: another suffix.

        Example:
          >>> report.save("run.json")                  # doctest: +SKIP
          'run.json'
        """
        from jaxww import export
        return export.save(self, path)

    def esd(self, name: str, random: bool = False) -> np.ndarray:
        """Eigenvalues of one layer, ascending (zeros included); ``random=True``: of its
        randomised matrix (needs ``analyze(randomize=True)``)."""
        if name not in self.evals:
            raise KeyError(f"no analysed layer named {name!r}; layers: {list(self.evals)}")
        if random and name not in self.rand_evals:
            raise KeyError("no randomised spectrum: run analyze(..., randomize=True, key=...)")
        return (self.rand_evals if random else self.evals)[name]

    def plot_esd(self, name: str):
        """matplotlib Figure of one layer's ESD (see :func:`jaxww.plots.plot_esd`)."""
        from jaxww import plots
        return plots.plot_esd(self, name)

    def plot_alphas(self):
        """matplotlib Figure of alpha by layer (see :func:`jaxww.plots.plot_alphas`)."""
        from jaxww import plots
        return plots.plot_alphas(self)

    def tree(self, column: str = "alpha"):
        """A pytree with the structure of the analysed params holding one column.

        Analysed leaves hold the value (a float32 array with one value per kernel of
        the leaf, in kernel order, for a leaf read as several kernels, e.g. ``(L,)`` for a
        stack of ``L`` layers; else a scalar); every other leaf holds NaN. Use it with
        ``jax.tree.map`` next to the params.
        """
        if column not in self.columns or column in ("name", "layer_type", "shape", "status", "warning",
                                                    "reason", "trap_indices"):
            raise ValueError(f"column must be a numeric column of {self.columns}, got {column!r}")
        values: dict[int, list] = {}
        for r, k in zip(self.rows, self._kerns):   # rows in kernel order
            values.setdefault(k.leaf, []).append(r[column])
        stacked = {k.leaf for k in self._kerns if k.select}
        leaves = [jnp.asarray(values[i] if i in stacked else values[i][0], jnp.float32)
                  if i in values else jnp.float32(jnp.nan)
                  for i in range(self._treedef.num_leaves)]
        return jax.tree_util.tree_unflatten(self._treedef, leaves)


def dataframe(records, columns):
    """A pandas DataFrame of ``records`` (dicts) with ``columns``, or an ImportError saying
    how to install pandas."""
    try:
        import pandas as pd
    except ImportError as err:  # pragma: no cover - exercised without pandas only
        raise ImportError("Report.details needs pandas: pip install 'jaxww[pandas]' "
                          "(Report.rows has the same data as dicts)") from err
    return pd.DataFrame(list(records), columns=list(columns))


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
        share, and every process gets the whole report (:mod:`jaxww.placement`).
      fix_fingers: ``None``, ``"clip_xmax"`` or ``"xmin_peak"`` (:mod:`jaxww.fingers`).
      fit: ``"PL"``, ``"TPL"`` or ``"E_TPL"`` (truncated power law, :mod:`jaxww.tpl`).
      bootstrap: replicas per layer of the power-law goodness-of-fit test
        (:mod:`jaxww.bootstrap`; 0: none). Needs ``key``.
      key: ``jax.random`` key of ``bootstrap`` (layer ``i`` uses ``fold_in(key, i)``) and
        ``randomize`` (a layer uses ``fold_in(key, crc32(name))``).
        The extra columns of the options are listed in :mod:`jaxww.options`.
      mp_fit: add the Marchenko-Pastur fit (:mod:`jaxww.mp`): ``num_spikes``,
        ``sigma_mp``, ``mp_softrank``, ``bulk_min``, ``bulk_max``, ``bulk_max_tw``.
      randomize: add the randomised spectra and traps (:mod:`jaxww.randomize`);
        needs ``key``.
      detX: add ``detX_num``, ``detX_val``, ``detX_val_unrescaled`` (:mod:`jaxww.detx`).
      plot: draw one figure of the ESD per layer (:mod:`jaxww.plots`, needs matplotlib).
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
        their spectra are computed (:mod:`jaxww.streaming`): the leaves are read, cast
        and released a group at a time; a leaf needing more is computed alone, its row
        says so. Default: a quarter of the available host memory, within 256 MiB..1 GiB.
      progress: ``True`` for a progress bar on stderr, or a callable receiving
        :class:`jaxww.progress.ProgressEvent` as each phase (reading, spectra, randomize,
        fits, plots) begins, after each group and at the end (:mod:`jaxww.progress`).
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
    budget = _streaming.parse_budget(memory_budget)
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
            results = _analyze_parts(kerns, evals, leaves, devices, precision, xmin_max, opts, key,
                                     budget, tracker)
        notes = {i: f"computed alone: needs {_progress.human_bytes(n)}, over the memory budget "
                    f"{_progress.human_bytes(b)}" for i, (n, b) in needs.items()}
        rows, evals_by_name, rand_by_name = _assemble(kerns, ids, results, opts, notes)
        report = Report(tuple(rows), tuple(skipped), evals_by_name, limited, limits, _treedef=treedef,
                        columns=COLUMNS + opts.columns, rand_evals=rand_by_name,
                        _kerns=tuple(kerns), options=given)
        if plot:
            from jaxww import plots
            tracker.begin("plots")
            plots.draw_all(report, savefig, done=lambda: tracker.advance(1, 0, _plot_work()))
        tracker.finish()
    return report


def _given_options(args: dict) -> dict:
    """The arguments of :func:`analyze` (but ``params``) other than their defaults, those
    JSON can hold (:func:`jaxww.export.jsonable`); ``base`` is recorded as ``True``."""
    from jaxww import export

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
    """The :class:`jaxww.progress.Tracker` of an analysis, its phases and their work (this
    process's share of the spectra; the randomisation, fits and figures of every kernel),
    with the host reporting each matrix to it (:func:`jaxww._host_eigh.reporting`); on an
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
            _host_eigh.reporting(tracker.add_work), _host_eigh.pool_ended_on_error():
        yield tracker


def _fit_stage(opts) -> str:
    return "bootstrap" if opts.bootstrap else "fits"


def _fit_work(k, bootstrap: int = 0) -> float:
    """The work of a layer's fit (and its ``bootstrap`` replicas) in the units of the
    progress bar (on one core while the spectra use them all)."""
    return (_progress.FIT_WORK + bootstrap * _progress.BOOTSTRAP_WORK) * _host_eigh._workers() * k.num_evals ** 2


def _plot_work() -> float:
    """The work of a figure in the units of the progress bar."""
    return _progress.PLOT_WORK * _host_eigh._workers()


def _spectra_of(kerns, leaves, devices, precision, budget, tracker):
    """Every kernel's descending spectrum ``(rf, M)`` (host arrays, kernel order) and the
    ``{index: (bytes needed, budget)}`` of those computed alone: this process's share of
    the kernels split over its devices, read and computed a group at a time
    (:mod:`jaxww.streaming`), then gathered from every process (:mod:`jaxww.placement`).
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
    process, and only their eigenvalues leave the devices (:func:`jaxww._mesh.kernel_spectrum`);
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
    the host a group of leaves at a time (:func:`jaxww.randomize.host_spectra`: stopped
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
