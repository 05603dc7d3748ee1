"""The layer table without spectra (``describe``) and one layer's ESD (``get_esd``), as
weightwatcher's ``describe()`` and ``get_ESD(layer)``, from what :func:`jaxww.analyze`
reads (:func:`jaxww.reading.read_layers`)."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from jaxww.defaults import MAX_EVALS, MAX_N, MIN_EVALS
from jaxww.linalg import spectra as _spectra
from jaxww.reading import kernels as _kernels
from jaxww.reading.layers import LayerSelection, read_layers
from jaxww.report import html
from jaxww.report.columns import DESCRIBE_COLUMNS
from jaxww.report.report import dataframe


@dataclasses.dataclass(frozen=True)
class Description:
    """Result of :func:`describe`: ``rows`` (dicts of :data:`DESCRIBE_COLUMNS`), ``skipped_rows``."""

    rows: tuple
    skipped_rows: tuple

    def __repr__(self) -> str:
        return f"<jaxww.Description: {len(self.rows)} layers to analyse, {len(self.skipped_rows)} leaves skipped>"

    def _repr_html_(self) -> str:
        return html.description_html(self)

    def __treescope_repr__(self, path, subtree_renderer):
        return html.treescope_part(self, path)

    @property
    def details(self):
        """pandas DataFrame, one row per layer that ``analyze`` would analyse."""
        return dataframe(self.rows, DESCRIBE_COLUMNS, "Description.details", "Description.rows")

    @property
    def skipped(self):
        """pandas DataFrame of the leaves that would not be analysed, and why."""
        return dataframe([r._asdict() for r in self.skipped_rows], _kernels.Skipped._fields, "Description.skipped", "Description.skipped_rows")


def describe(params, *, min_evals: int = MIN_EVALS, max_evals: int | None = MAX_EVALS, max_N: int | None = MAX_N,
             layers: LayerSelection = None, layouts: _kernels.LayoutOverride = None,
             scan_axis: _kernels.ScanAxis = None, lora: str | None = None,
             lora_scale: float | dict | None = None) -> Description:
    """The layers ``analyze`` would analyse, with their shapes, and no eigenvalue computed.

    Same selection arguments as :func:`jaxww.analyze` (``base=`` changes no shape), and
    the same ``TypeError`` under a JAX transformation (it reads what ``analyze`` reads).

    Example:
      >>> import numpy as np, jaxww
      >>> d = jaxww.describe({"dense": {"kernel": np.zeros((256, 128)), "bias": np.zeros(128)}})
      >>> d.rows[0]["name"], d.rows[0]["num_evals"], d.skipped_rows[0].name
      ('dense/kernel', 128, 'dense/bias')
    """
    read = read_layers(params, min_evals=min_evals, max_evals=max_evals, max_N=max_N, layers=layers,
                       layouts=layouts, scan_axis=scan_axis, lora=lora, lora_scale=lora_scale, where="describe")
    rows = tuple(dict(layer_id=i, name=k.name, layer_type=k.layer_type, shape=k.shape, N=k.N, M=k.M,
                      Q=k.Q, rf=k.rf, num_evals=k.num_evals) for i, k in zip(read.ids, read.kernels))
    return Description(rows, tuple(read.skipped))


def get_esd(params, name: str, *, precision: str = "float32",
            layouts: _kernels.LayoutOverride = None, scan_axis: _kernels.ScanAxis = None) -> np.ndarray:
    """Eigenvalues (ascending, zeros included) of the layer ``name`` of ``params``, as
    ``analyze(params).esd(name)`` but computing only that layer (weightwatcher's
    ``get_ESD(layer)``).

    Raises:
      KeyError: no analysable layer has that name (the message lists them).
      TypeError: called under a JAX transformation (a traced leaf), as :func:`jaxww.analyze`.

    Example:
      >>> import numpy as np, jaxww
      >>> jaxww.get_esd({"w": np.diag([3.0, 2.0, 1.0, 1, 1, 1, 1, 1])}, "w")[-2:]
      array([4., 9.], dtype=float32)
    """
    read = read_layers(params, min_evals=1, max_evals=None, max_N=None, layouts=layouts, scan_axis=scan_axis,
                       where="get_esd")
    k = next((k for k in read.kernels if k.name == name), None)
    if k is None:
        raise KeyError(f"no weight matrix named {name!r}; layers: {[k.name for k in read.kernels]}")
    ev = _spectra.batched_spectra([k.matrices(jnp.asarray(read.leaves[k.leaf]))], precision=precision)[0]
    return np.sort(np.asarray(ev.reshape(-1) * k.esd_scale))
