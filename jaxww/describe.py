"""The layer table without spectra (``describe``) and one layer's ESD (``get_esd``),
as weightwatcher's ``describe()`` and ``get_ESD(layer)``."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from jaxww import deltas as _deltas
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


def describe(params, *, min_evals: int = 8, max_evals: int = 15000, max_N: int = 50000,
             layers: _kernels.LayerFilter = None, layouts: _kernels.LayoutOverride = None) -> Description:
    """The layers ``analyze`` would analyse, with their shapes, and no eigenvalue computed.

    Same selection arguments as :func:`jaxww.analyze`.

    Example:
      >>> import numpy as np, jaxww
      >>> d = jaxww.describe({"dense": {"kernel": np.zeros((256, 128)), "bias": np.zeros(128)}})
      >>> d.rows[0]["name"], d.rows[0]["num_evals"], d.skipped_rows[0].name
      ('dense/kernel', 128, 'dense/bias')
    """
    kerns, skipped = _find(params, min_evals, max_evals, max_N, layers, layouts)
    rows = tuple(dict(layer_id=i, name=k.name, layer_type=k.layer_type, shape=k.shape, N=k.N, M=k.M,
                      Q=k.Q, rf=k.rf, num_evals=k.num_evals) for i, k in enumerate(kerns))
    return Description(rows, tuple(skipped))


def get_esd(params, name: str, *, precision: str = "float32",
            layouts: _kernels.LayoutOverride = None) -> np.ndarray:
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
    kerns, _ = _find(params, 1, 1 << 62, 1 << 62, None, layouts)
    k = next((k for k in kerns if k.name == name), None)
    if k is None:
        raise KeyError(f"no weight matrix named {name!r}; layers: {[k.name for k in kerns]}")
    leaf = _kernels.read_params(params)[1][k.leaf]
    ev = _spectra.batched_spectra([k.matrices(jnp.asarray(leaf))], precision=precision)[0]
    return np.sort(np.asarray(ev.reshape(-1) * k.esd_scale))


def _find(params, min_evals, max_evals, max_N, layers, layouts):
    names, leaves, _ = _kernels.read_params(params)
    _, _, skips = _deltas.read_lora(names, leaves, None, None)  # LoRA factors: skipped as by analyze
    return _kernels.find_kernels(names, leaves, layers=layers, layouts=layouts, min_evals=min_evals,
                                 max_evals=max_evals, max_N=max_N, types=_kernels.module_types(params),
                                 readings=_deltas.readings(None, skips, len(leaves)))
