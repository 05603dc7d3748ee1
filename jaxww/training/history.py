"""Analyses of several steps of a training run: :class:`History`, and where it comes from
besides :class:`jaxww.Tracker`.

* :class:`History`: step x layer, as :class:`jaxww.Report` is layer: ``rows``,
  ``details`` (DataFrame: ``step`` then :data:`jaxww.COLUMNS`), ``summary`` (per-step
  means of :data:`jaxww.SUMMARY_METRICS`), ``scalars(step)``, ``plot()``.
* :func:`scalars`: the flat scalars of one step, as a writer gets them.
* :func:`from_checkpoints`: every step of a finished run's Orbax ``CheckpointManager``
  directory, as the same :class:`History`.
* :func:`plot_history`: alpha by layer over steps.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Mapping

import jax

from jaxww.analysis import analyze as _report
from jaxww.fit import metrics as _metrics
from jaxww.reading.checkpoints import CheckpointError
from jaxww.report import report as _result
from jaxww.report.plots import pyplot

#: Per-layer metrics handed to the writer by default.
METRICS = ("alpha", "alpha_weighted")

Writer = Callable[[int, Mapping[str, float]], object]


@dataclasses.dataclass(frozen=True)
class History:
    """Analyses of several steps: the rows of each step's :class:`jaxww.Report`, with ``step``.

    Attributes:
      rows: one dict per (step, layer), keys ``step`` then the report's columns, in step order.
      summaries: ``{step: Report.summary}`` in step order.
      columns: the columns of ``rows`` (``step``, then :attr:`jaxww.Report.columns`:
        those of the options, such as ``mp_fit=True``, included).
    """

    rows: tuple = ()
    summaries: dict = dataclasses.field(default_factory=dict)
    columns: tuple = ("step",) + _result.COLUMNS

    @property
    def steps(self) -> list:
        """The analysed steps, ascending."""
        return list(self.summaries)

    @property
    def details(self):
        """pandas DataFrame, one row per (step, layer): ``step`` then the report's columns."""
        return _result.dataframe(self.rows, self.columns, "History.details", "History.rows")

    @property
    def summary(self):
        """pandas DataFrame, one row per step (index ``step``): the layer means of
        :data:`jaxww.SUMMARY_METRICS` (:attr:`jaxww.Report.summary`)."""
        df = _result.dataframe([{"step": s, **m} for s, m in self.summaries.items()],
                               ("step",) + _result.SUMMARY_METRICS, "History.summary", "History.summaries")
        return df.set_index("step")

    def scalars(self, step: int, metrics=METRICS) -> dict:
        """The flat scalars of ``step`` (:func:`scalars`)."""
        return scalars([r for r in self.rows if r["step"] == step], self.summaries[step], metrics)

    def plot(self, metric: str = "alpha"):
        """:func:`plot_history` of this history."""
        return plot_history(self, metric)


def scalars(rows, summary: Mapping[str, float], metrics=METRICS) -> dict:
    """Flat ``{"<metric>/<layer name>": value, "summary/<metric>": mean}`` of one step.

    Args:
      rows: the report rows of the step (:attr:`jaxww.Report.rows`).
      summary: its :attr:`jaxww.Report.summary`.
      metrics: the per-layer columns to hand out.

    Returns:
      a dict of Python floats (NaN where a fit failed), per-layer entries in layer order.

    Example:
      >>> jaxww.training.history.scalars(report.rows, report.summary)    # doctest: +SKIP
      {'alpha/Dense_0/kernel': 3.1, ..., 'summary/alpha': 3.4, ...}
    """
    out = {f"{m}/{r['name']}": float(r[m]) for m in metrics for r in rows}
    out.update({f"summary/{k}": float(v) for k, v in summary.items()})
    return out



def cpu_devices() -> list:
    """Where tracking analyses by default: one CPU device (never queued behind the
    training on an accelerator; the same numbers live and from checkpoints)."""
    return jax.devices("cpu")[:1]


def checkpoint_steps(directory: str | os.PathLike) -> list:
    """The steps of an Orbax ``CheckpointManager`` directory (its digit-named
    subdirectories), ascending; :class:`jaxww.CheckpointError` naming it if it has none."""
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise CheckpointError(f"{directory}: not a directory (expected an Orbax CheckpointManager directory)")
    steps = sorted((int(e) for e in os.listdir(directory)
                    if e.isdigit() and os.path.isdir(os.path.join(directory, e))))
    if not steps:
        raise CheckpointError(f"{directory}: no checkpoint steps in it (an Orbax CheckpointManager "
                              "directory holds one digit-named subdirectory per saved step)")
    return steps


def from_checkpoints(directory: str | os.PathLike, *, item: str | None = None,
                     writer: Writer | None = None, metrics=METRICS, **analyze_options) -> History:
    """Every step of a finished run, read from its Orbax ``CheckpointManager`` directory.

    Each step ``directory/<step>`` (or ``directory/<step>/<item>``) is analysed by
    ``jaxww.analyze(path)``, which reads its arrays lazily, one group at a time.

    Args:
      directory: the ``CheckpointManager`` directory.
      item: the item to read in each step (e.g. ``"params"`` of a
        ``Composite(params=..., opt_state=...)``); default the step as
        :func:`jaxww.analyze` reads it (its single item).
      writer: optional ``writer(step, {name: float})`` replaying the run's scalars.
      metrics: the per-layer columns handed to ``writer``.
      **analyze_options: keyword arguments of :func:`jaxww.analyze`; ``devices``
        defaults to the CPU, as the tracker's, so that the two histories are the same
        computation on any machine.

    Returns:
      a :class:`History`, as :attr:`Tracker.history` of the live run.

    Raises:
      jaxww.CheckpointError: ``directory`` holds no steps (or a step cannot be read).

    Example:
      >>> history = jaxww.from_checkpoints("/tmp/run/checkpoints")   # doctest: +SKIP
      >>> history.plot().savefig("alpha.png")                         # doctest: +SKIP
    """
    analyze_options.setdefault("devices", cpu_devices())
    rows, summaries, columns = [], {}, History.columns
    for step in checkpoint_steps(directory):
        path = os.path.join(os.fspath(directory), str(step), *([item] if item else []))
        report = _report.analyze(path, **analyze_options)
        rows.extend({"step": step, **r} for r in report.rows)
        summaries[step] = report.summary
        columns = ("step",) + tuple(report.columns)
        if writer is not None:
            writer(step, scalars(report.rows, report.summary, metrics))
    return History(tuple(rows), summaries, columns)


def plot_history(history: History, metric: str = "alpha"):
    """Figure of ``metric`` (default alpha) by layer over steps, one line per layer, with
    the over-trained (``alpha < 2``) and under-trained (``alpha > 6``) bands for alpha.

    Args:
      history: a :class:`History` (:attr:`Tracker.history`, :func:`from_checkpoints`).
      metric: a numeric column of :attr:`History.details`.

    Returns:
      the matplotlib Figure (closed, so a notebook shows it once, where it is returned).

    Example:
      >>> jaxww.plot_history(tracker.history).savefig("alpha.png")   # doctest: +SKIP
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    by_layer = {}
    for r in history.rows:
        by_layer.setdefault((r["layer_id"], r["name"]), []).append((r["step"], r[metric]))
    for (_, name), points in sorted(by_layer.items()):
        ax.plot(*zip(*points), "o-", ms=3, label=name)
    if metric == "alpha":
        ax.axhspan(0, _metrics.OVER_TRAINED, color="tab:red", alpha=0.1)
        ax.axhline(_metrics.UNDER_TRAINED, color="tab:orange", lw=0.8, ls="--")
    ax.set(xlabel="step", ylabel=metric, title=f"{metric} by layer over training")
    if by_layer:
        ax.legend(fontsize=7, loc="best")
    plt.close(fig)
    return fig
