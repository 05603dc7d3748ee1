"""``jaxww.analyze``: pytree -> kernels -> spectra -> power-law fit -> metrics -> report."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxww import kernels as _kernels
from jaxww import metrics as _metrics
from jaxww import powerlaw as _powerlaw
from jaxww import spectra as _spectra
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
      skipped_rows: one :class:`jaxww.kernels.Skipped` per leaf not analysed.
      evals: eigenvalues (ascending, as NumPy arrays) of every analysed layer by name.
    """

    rows: tuple
    skipped_rows: tuple
    evals: dict
    _treedef: Any = dataclasses.field(repr=False, default=None)
    _leaf_of: dict = dataclasses.field(repr=False, default_factory=dict)
    _stacked_leaves: frozenset = dataclasses.field(repr=False, default=frozenset())

    @property
    def details(self):
        """pandas DataFrame, one row per analysed layer (needs the ``pandas`` extra)."""
        return _dataframe(self.rows, COLUMNS)

    @property
    def skipped(self):
        """pandas DataFrame of the leaves that were not analysed: name, shape, dtype, reason."""
        return _dataframe([r._asdict() for r in self.skipped_rows], _kernels.Skipped._fields)

    @property
    def summary(self) -> dict:
        """Means of :data:`SUMMARY_METRICS` over layers whose fit succeeded."""
        ok = [r for r in self.rows if r["status"] == "success"]
        return {m: (float(np.mean([r[m] for r in ok])) if ok else math.nan) for m in SUMMARY_METRICS}

    def esd(self, name: str) -> np.ndarray:
        """Eigenvalues of one layer, ascending (zeros included)."""
        if name not in self.evals:
            raise KeyError(f"no analysed layer named {name!r}; layers: {list(self.evals)}")
        return self.evals[name]

    def tree(self, column: str = "alpha"):
        """A pytree with the structure of the analysed params holding one column.

        Analysed leaves hold the value (a float32 array of shape ``(L,)`` for a stack
        of ``L`` layers, else a scalar); every other leaf holds NaN. Use it with
        ``jax.tree.map`` next to the params.
        """
        if column not in COLUMNS or column in ("name", "layer_type", "shape", "status", "warning", "reason"):
            raise ValueError(f"column must be a numeric column of {COLUMNS}, got {column!r}")
        values: dict[int, list] = {}
        for r in self.rows:
            values.setdefault(self._leaf_of[r["name"]], []).append(r[column])
        leaves = [jnp.asarray(values[i] if i in self._stacked_leaves else values[i][0], jnp.float32)
                  if i in values else jnp.float32(jnp.nan)
                  for i in range(self._treedef.num_leaves)]
        return jax.tree_util.tree_unflatten(self._treedef, leaves)


def _dataframe(records, columns):
    try:
        import pandas as pd
    except ImportError as err:  # pragma: no cover - exercised without pandas only
        raise ImportError("Report.details needs pandas: pip install 'jaxww[pandas]' "
                          "(Report.rows has the same data as dicts)") from err
    return pd.DataFrame(list(records), columns=list(columns))


@contextlib.contextmanager
def _precision_scope(precision: str):
    if precision == "float64" and not jax.config.jax_enable_x64:
        with jax.enable_x64(True):
            yield
    else:
        yield


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


def _cost(k: _kernels.Kernel) -> int:
    """Work of one layer's spectrum: Gram matrix and eigenvalues, ``rf (N M^2 + M^3)``."""
    return k.rf * (k.N + k.M) * k.M ** 2


def _split(kerns, n_parts: int) -> list[list[int]]:
    """Kernel indices in ``n_parts`` parts of about equal :func:`_cost` (largest first,
    each to the lightest part); empty parts are dropped, each part keeps kernel order."""
    parts: list[list[int]] = [[] for _ in range(n_parts)]
    load = [0] * n_parts
    for i in sorted(range(len(kerns)), key=lambda i: -_cost(kerns[i])):
        j = load.index(min(load))
        parts[j].append(i)
        load[j] += _cost(kerns[i])
    return [sorted(p) for p in parts if p]


@functools.partial(jax.jit, static_argnames=("kerns", "groups", "precision"))
def _spectra_stage(leaves, kerns, groups, precision):
    """Kernels -> spectra: the zero-padded pooled spectrum of every layer, per fit group.

    Same-shape matrices are batched (one call per shape bucket); ``groups`` is
    :func:`_fit_groups` as a tuple. Everything is static, so a model structure
    compiles once.
    """
    stacks = [k.matrices(leaves[k.leaf]) for k in kerns]
    evals = _spectra.batched_spectra(stacks, precision=precision)
    pooled = [ev.reshape(-1) * k.esd_scale for k, ev in zip(kerns, evals)]
    return [jnp.stack([jnp.pad(pooled[i], (0, nb - pooled[i].shape[0])) for i in members])
            for nb, members in groups]


@jax.jit
def _fit_stage(E, num_evals, N, xmin_max):
    """Spectra -> power-law fit -> metrics for a ``(B, n)`` batch of padded spectra."""
    fit = _powerlaw.fit_batch(E, xmin_max)
    return fit, _metrics.spectral_metrics(E, num_evals, N, fit.alpha)


def analyze(
    params,
    *,
    precision: str = "float32",
    min_evals: int = 8,
    max_evals: int = 15000,
    max_N: int = 50000,
    layers: _kernels.LayerFilter = None,
    layouts: _kernels.LayoutOverride = None,
    xmin_max: float | None = None,
    devices: Sequence[jax.Device] | None = None,
) -> Report:
    """Analyse every weight matrix of ``params``: spectrum, power-law fit, metrics.

    Args:
      params: a pytree of arrays (Flax Linen variables, a dict loaded from a
        checkpoint), an ``nnx.State`` or an ``nnx.Module`` (its ``nnx.Param`` state).
      precision: ``"float32"`` (default) or ``"float64"`` for the spectra, fit and
        metrics. float64 runs under ``jax.enable_x64()`` if x64 is off.
      min_evals, max_evals, max_N: size limits of the reference (layer kept when
        ``min_evals <= M * rf <= max_evals`` and ``N <= max_N``).
      layers: regex (``re.search`` on the layer name) or callable ``name -> bool``
        selecting the layers to analyse.
      layouts: how to read leaves whose layout cannot be inferred (e.g. PyTorch
        convolutions in a plain dict): ``{regex: layout}`` or a callable
        ``(name, shape) -> layout or None``; see :mod:`jaxww.kernels`.
      xmin_max: only tails starting at ``xmin <= xmin_max`` are candidates.
      devices: where to compute (default: ``jax.local_devices()``). With several, the
        layers are split into one part per device, of about equal work, and the parts
        run concurrently (each part batched as on one device).

    Returns:
      A :class:`Report` (``details``, ``summary``, ``skipped``, ``esd(name)``, ``tree()``).

    Raises:
      ValueError: the tree is empty or has no leaf that can be analysed.

    Example:
      >>> import jax, jaxww
      >>> params = {"dense": {"kernel": jax.random.normal(jax.random.key(0), (256, 128))}}
      >>> report = jaxww.analyze(params)
      >>> report.rows[0]["name"], report.rows[0]["status"]
      ('dense/kernel', 'success')
    """
    if precision not in _spectra.PRECISIONS:
        raise ValueError(f"precision must be one of {_spectra.PRECISIONS}, got {precision!r}")
    names, leaves, treedef = _kernels.flatten_params(params)
    if not leaves:
        raise ValueError("analyze: the params tree is empty (no leaves to search for weight matrices)")
    kerns, skipped = _kernels.find_kernels(
        names, leaves, layers=layers, layouts=layouts,
        min_evals=min_evals, max_evals=max_evals, max_N=max_N, types=_kernels.module_types(params))
    if not kerns:
        why = "; ".join(f"{s.name}: {s.reason}" for s in skipped[:10])
        raise ValueError(f"analyze: no eligible weight matrix among {len(leaves)} leaves "
                         f"(searched floating-point leaves with ndim >= 2). Skipped: {why}")
    devices = list(jax.local_devices() if devices is None else devices)
    if not devices:
        raise ValueError("analyze: devices is empty")
    with _precision_scope(precision):
        bound = np.asarray(np.inf if xmin_max is None else xmin_max, precision)
        # Dispatch is asynchronous: the parts run on their devices concurrently, and
        # the fit compiles while the spectra are being computed.
        results = []
        for part, dev in zip(_split(kerns, len(devices)), devices):
            sub = [kerns[i] for i in part]
            for members, *out in _analyze_part(sub, leaves, dev, precision, bound):
                results.append(([part[i] for i in members], *out))
        results = jax.device_get(results)

    rows: list = [None] * len(kerns)
    evals_by_name = {}
    for members, fit, met, E in results:
        for r, i in enumerate(members):
            k = kerns[i]
            row = _row(k, i, {f: v[r] for f, v in fit._asdict().items()},
                       {f: v[r] for f, v in met._asdict().items()},
                       not np.isnan(E[r][: k.num_evals]).any())
            rows[i] = row
            evals_by_name[k.name] = np.sort(E[r][: k.num_evals])
    leaf_of = {k.name: k.leaf for k in kerns}
    stacked = frozenset(k.leaf for k in kerns if k.index is not None)
    return Report(tuple(rows), tuple(skipped), evals_by_name, treedef, leaf_of, stacked)


def _analyze_part(kerns, leaves, device, precision, bound):
    """Spectra, fit and metrics of some layers on one device: ``[(members, fit, metrics, E)]``.

    Two programs (spectra, then fit), keyed on shapes and layouts only, not on names:
    the static description of each kernel drops its name and numbers its leaf among
    the leaves actually used.
    """
    used = list(dict.fromkeys(k.leaf for k in kerns))
    specs = tuple(dataclasses.replace(k, name="", leaf=used.index(k.leaf)) for k in kerns)
    groups = tuple((nb, tuple(m)) for nb, m in _fit_groups(kerns).items())
    spectra = _spectra_stage(jax.device_put(tuple(leaves[i] for i in used), device),
                             specs, groups, precision)
    out = []
    for (_, members), E in zip(groups, spectra):
        counts = np.asarray([kerns[i].num_evals for i in members])
        Ns = np.asarray([kerns[i].N for i in members], precision)
        out.append((members, *_fit_stage(E, counts, Ns, bound), E))
    return out


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
    row["status"], row["reason"] = status, reason
    row["warning"] = _metrics.warning(row["alpha"]) if status == "success" else ""
    return {c: row[c] for c in COLUMNS}
