"""What :func:`jaxww.analyze` reads from a params tree (``read_layers``), the layer table
without spectra (``describe``) and one layer's ESD (``get_esd``), as weightwatcher's
``describe()`` and ``get_ESD(layer)``."""

from __future__ import annotations

import dataclasses
import functools
import os

import jax.numpy as jnp
import numpy as np

from jaxww import deltas as _deltas
from jaxww import io as _io
from jaxww import kernels as _kernels
from jaxww import spectra as _spectra

#: Columns of ``Description.details``.
DESCRIBE_COLUMNS = ("layer_id", "name", "layer_type", "shape", "N", "M", "Q", "rf", "num_evals")


@dataclasses.dataclass(frozen=True)
class Description:
    """Result of :func:`describe`: ``rows`` (dicts of :data:`DESCRIBE_COLUMNS`), ``skipped_rows``."""

    rows: tuple
    skipped_rows: tuple

    @property
    def details(self):
        """pandas DataFrame, one row per layer that ``analyze`` would analyse."""
        from jaxww.report import _dataframe
        return _dataframe(self.rows, DESCRIBE_COLUMNS)

    @property
    def skipped(self):
        """pandas DataFrame of the leaves that would not be analysed, and why."""
        from jaxww.report import _dataframe
        return _dataframe([r._asdict() for r in self.skipped_rows], _kernels.Skipped._fields)


def read_layers(params, *, min_evals: int = 8, max_evals: int | None = 15000, max_N: int | None = 50000,
                layers: _kernels.LayerFilter = None, layouts: _kernels.LayoutOverride = None,
                scan_axis: _kernels.ScanAxis = None, base=None, lora: str | None = None,
                lora_scale: float | dict | None = None, where: str = "analyze"):
    """The weight matrices of ``params`` as :func:`jaxww.analyze` reads them, and the
    leaves they are read from: the one place that decides, for ``analyze``, ``describe``,
    ``get_esd`` and ``diff_models``.

    Quantised weights are dequantised (:func:`jaxww.kernels.read_params`), a Keras
    model's layers read as its own code says, LoRA pairs as ``lora`` asks, and a leaf
    with a ``base`` is read as ``W - W_base``.

    ``params`` (and ``base``) may be the path of a checkpoint: it is opened with
    :func:`jaxww.open_checkpoint` (its tensors stay on disk), or read whole by
    :func:`jaxww.load_params` when ``base`` or ``lora`` combine tensors.

    Returns:
      ``(kernels, skipped, leaves, treedef, limited)``: ``limited`` names the leaves that
      only ``max_N`` / ``max_evals`` left out.

    Raises:
      ValueError: ``base`` and ``lora`` both given, or a ``base`` of another structure.
    """
    whole = base is not None or lora is not None
    params, base = (_checkpoint(x, whole) for x in (params, base))
    names, leaves, treedef = _kernels.read_params(params)
    if base is not None and lora is not None:
        raise ValueError(f"{where}: pass base= or lora=, not both (a LoRA model's update is lora='delta')")
    bleaves = None if base is None else _deltas.base_leaves(names, leaves, base)
    names, leaves, skips = _deltas.read_lora(names, leaves, lora, lora_scale)
    find = functools.partial(_kernels.find_kernels, names, leaves, layers=layers, layouts=layouts,
                             min_evals=min_evals, types=_kernels.module_types(params),
                             readings=_deltas.readings(_kernels.model_readings(params), skips, len(leaves)),
                             scan_axis=scan_axis)
    kerns, skipped = find(max_evals=max_evals, max_N=max_N)
    if bleaves is not None:
        leaves = _deltas.subtract(leaves, bleaves, {k.leaf for k in kerns})
    return kerns, skipped, leaves, treedef, _limited(skipped, find)


def _checkpoint(params, whole: bool):
    """``params``, or the checkpoint at that path: opened lazily, or read whole."""
    if not isinstance(params, (str, os.PathLike)):
        return params
    return _io.load_params(params) if whole else _io.open_checkpoint(params)


def _limited(skipped, find) -> tuple:
    """Names of the size-limited leaves that ``find`` keeps without ``max_N`` / ``max_evals``.

    ``find(max_evals=, max_N=)`` is :func:`jaxww.kernels.find_kernels` with the other
    arguments bound; it runs a second time only when a size limit skipped something.
    """
    sized = [s.name for s in skipped if s.kind == "size_limit"]
    if not sized:
        return ()
    kept = {k.name for k in find(max_evals=None, max_N=None)[0]}
    return tuple(n for n in sized if n in kept)


def describe(params, *, min_evals: int = 8, max_evals: int = 15000, max_N: int = 50000,
             layers: _kernels.LayerFilter = None, layouts: _kernels.LayoutOverride = None,
             scan_axis: _kernels.ScanAxis = None, lora: str | None = None,
             lora_scale: float | dict | None = None) -> Description:
    """The layers ``analyze`` would analyse, with their shapes, and no eigenvalue computed.

    Same selection arguments as :func:`jaxww.analyze` (``base=`` changes no shape).

    Example:
      >>> import numpy as np, jaxww
      >>> d = jaxww.describe({"dense": {"kernel": np.zeros((256, 128)), "bias": np.zeros(128)}})
      >>> d.rows[0]["name"], d.rows[0]["num_evals"], d.skipped_rows[0].name
      ('dense/kernel', 128, 'dense/bias')
    """
    kerns, skipped, *_ = read_layers(params, min_evals=min_evals, max_evals=max_evals, max_N=max_N,
                                     layers=layers, layouts=layouts, scan_axis=scan_axis, lora=lora,
                                     lora_scale=lora_scale, where="describe")
    rows = tuple(dict(layer_id=i, name=k.name, layer_type=k.layer_type, shape=k.shape, N=k.N, M=k.M,
                      Q=k.Q, rf=k.rf, num_evals=k.num_evals) for i, k in enumerate(kerns))
    return Description(rows, tuple(skipped))


def get_esd(params, name: str, *, precision: str = "float32",
            layouts: _kernels.LayoutOverride = None, scan_axis: _kernels.ScanAxis = None) -> np.ndarray:
    """Eigenvalues (ascending, zeros included) of the layer ``name`` of ``params``, as
    ``analyze(params).esd(name)`` but computing only that layer (weightwatcher's
    ``get_ESD(layer)``).

    Raises:
      KeyError: no analysable layer has that name (the message lists them).

    Example:
      >>> import numpy as np, jaxww
      >>> jaxww.get_esd({"w": np.diag([3.0, 2.0, 1.0, 1, 1, 1, 1, 1])}, "w")[-2:]
      array([4., 9.], dtype=float32)
    """
    kerns, _, leaves, _, _ = read_layers(params, min_evals=1, max_evals=None, max_N=None, layouts=layouts,
                                         scan_axis=scan_axis, where="get_esd")
    k = next((k for k in kerns if k.name == name), None)
    if k is None:
        raise KeyError(f"no weight matrix named {name!r}; layers: {[k.name for k in kerns]}")
    ev = _spectra.batched_spectra([k.matrices(jnp.asarray(leaves[k.leaf]))], precision=precision)[0]
    return np.sort(np.asarray(ev.reshape(-1) * k.esd_scale))
