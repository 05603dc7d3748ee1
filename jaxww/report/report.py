"""The result of :func:`jaxww.analyze`: :class:`Report` and its DataFrames (its columns:
:mod:`jaxww.report.columns`)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxww.fit import estimators as _estimators
from jaxww.reading import kernels as _kernels
from jaxww.report import export, html, plots, summary_figure
from jaxww.report.columns import COLUMNS, NOT_NUMERIC, SUMMARY_METRICS


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
      kernels: the :class:`jaxww.reading.kernels.Kernel` of each row, in row order.
      treedef: the tree structure of the analysed params (:meth:`tree`).

    ``print(report)`` shows :meth:`text`: :meth:`summary_text`, then the failed layers with
    their reasons and the layers with warnings (:meth:`problems_text`); ``repr(report)`` is one
    line; in Jupyter the report shows as a table (:mod:`jaxww.report.html`).
    """

    rows: tuple
    skipped_rows: tuple
    evals: dict
    limited: tuple = ()
    limits: dict = dataclasses.field(default_factory=dict)
    columns: tuple = COLUMNS
    rand_evals: dict = dataclasses.field(repr=False, default_factory=dict)
    kernels: tuple = dataclasses.field(repr=False, default=())
    treedef: Any = dataclasses.field(repr=False, default=None)
    options: dict = dataclasses.field(repr=False, default_factory=dict)

    @property
    def details(self):
        """pandas DataFrame, one row per analysed layer (needs the ``pandas`` extra)."""
        return dataframe(self.rows, self.columns, "Report.details", "Report.rows")

    @property
    def skipped(self):
        """pandas DataFrame of the leaves that were not analysed: name, shape, dtype, reason."""
        return dataframe([r._asdict() for r in self.skipped_rows], _kernels.Skipped._fields, "Report.skipped", "Report.skipped_rows")

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

    def estimator_note(self) -> str:
        """One line naming the tail estimator when it is not weightwatcher's (``"csn"``), else "".

        Example:
          >>> import jax, jaxww
          >>> params = {"dense": {"kernel": jax.random.normal(jax.random.key(0), (128, 64))}}
          >>> jaxww.analyze(params, estimator="alpha_peak").estimator_note()
          "alpha by estimator alpha_peak: AlphaPruning (Lu et al., NeurIPS 2024), fix_fingers='xmin_peak' (not weightwatcher's fit)"
        """
        name = self.options.get("estimator", "csn")
        return "" if name == "csn" else f"alpha by estimator {_estimators.describe(name)} (not weightwatcher's fit)"

    def summary_text(self, include: str = "max_N=None, max_evals=None") -> str:
        """:attr:`summary` as lines of text, then :meth:`limits_note` if any layer was left out.

        Args:
          include: passed to :meth:`limits_note`.
        """
        ok = sum(r["status"] == "success" for r in self.rows)
        n = len(self.rows)
        lines = [f"{n} layer{'s' * (n != 1)} analysed ({ok} successful fits), "
                 f"{len(self.skipped_rows)} leaves skipped", self.estimator_note(),
                 "summary (means over successful fits):"]
        lines += [f"  {k:<18} {v:.4f}" for k, v in self.summary.items()]
        note = self.limits_note(include)
        return "\n".join(filter(None, lines + [note]))

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

    def text(self, include: str = "max_N=None, max_evals=None") -> str:
        """What ``print(report)`` shows: :meth:`summary_text`, then :meth:`problems_text`
        (the command line's table ends with it too).

        Args:
          include: passed to :meth:`limits_note`.
        """
        return "\n".join(filter(None, (self.summary_text(include), self.problems_text())))

    def __str__(self) -> str:
        return self.text()

    def __repr__(self) -> str:
        ok = sum(r["status"] == "success" for r in self.rows)
        warned = sum(bool(r["warning"]) for r in self.rows)
        alpha = self.summary["alpha"]
        return (f"<jaxww.Report: {len(self.rows)} layers ({ok} fitted, {len(self.rows) - ok} failed, "
                f"{warned} with warnings), {len(self.skipped_rows)} skipped, {len(self.limited)} over size "
                f"limits, mean alpha {alpha:.3f}{self._estimator_tag()}>")

    def _estimator_tag(self) -> str:
        name = self.options.get("estimator", "csn")
        return "" if name == "csn" else f" (estimator {name})"

    def _repr_html_(self) -> str:
        return html.report_html(self)

    def __treescope_repr__(self, path, subtree_renderer):
        """treescope's view: the one-line repr, folding open on the HTML table."""
        return html.treescope_part(self, path)

    def to_dict(self, options: dict | None = None, **extra) -> dict:
        """The report as a JSON-able dict (see :func:`jaxww.report.export.document`): version,
        ``extra``, options (default :attr:`options`), summary, rows, skipped, limited."""
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
        """matplotlib Figure of one layer's ESD (see :func:`jaxww.report.plots.plot_esd`)."""
        return plots.plot_esd(self, name)

    def plot_alphas(self):
        """matplotlib Figure of alpha by layer (see :func:`jaxww.report.plots.plot_alphas`)."""
        return plots.plot_alphas(self)

    def plot_summary(self, path=None):
        """matplotlib Figure of the model on one page, also saved to ``path`` if given (see
        :func:`jaxww.report.summary_figure.plot_summary`)."""
        return summary_figure.plot_summary(self, path)

    def tree(self, column: str = "alpha"):
        """A pytree with the structure of the analysed params holding one column.

        Analysed leaves hold the value (a float32 array with one value per kernel of
        the leaf, in kernel order, for a leaf read as several kernels, e.g. ``(L,)`` for a
        stack of ``L`` layers; else a scalar); every other leaf holds NaN. Use it with
        ``jax.tree.map`` next to the params.
        """
        if column not in self.columns or column in NOT_NUMERIC:
            raise ValueError(f"column must be a numeric column of {self.columns}, got {column!r}")
        values: dict[int, list] = {}
        for r, k in zip(self.rows, self.kernels):   # rows in kernel order
            values.setdefault(k.leaf, []).append(r[column])
        stacked = {k.leaf for k in self.kernels if k.select}
        leaves = [jnp.asarray(values[i] if i in stacked else values[i][0], jnp.float32)
                  if i in values else jnp.float32(jnp.nan)
                  for i in range(self.treedef.num_leaves)]
        return jax.tree_util.tree_unflatten(self.treedef, leaves)


def dataframe(records, columns, attribute: str, plain: str):
    """A pandas DataFrame of ``records`` (dicts) with ``columns``, or an ImportError naming
    the ``attribute`` asked for (``"Report.skipped"``), how to install pandas and the
    attribute with the same data without pandas (``plain``, ``"Report.skipped_rows"``)."""
    try:
        import pandas as pd
    except ImportError as err:
        raise ImportError(f"{attribute} needs pandas: pip install 'jaxww[pandas]' "
                          f"({plain} has the same data without it)") from err
    return pd.DataFrame(list(records), columns=list(columns))
