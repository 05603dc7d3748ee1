"""A one-page picture of a model (:func:`plot_summary`, ``Report.plot_summary``): alpha by
depth per layer kind (:func:`jaxww.report.plots.draw_alphas`) over the ESDs of the worst
layers (:func:`worst_layers`, :func:`jaxww.report.plots.draw_esd`), under a title with
the model's mean alpha and its count of warnings. Needs matplotlib.
"""

from __future__ import annotations

import math

from jaxww.fit import metrics as _metrics
from jaxww.report import plots

#: Middle of the band of well-trained alpha: among layers as far from the band, the one
#: farther from it is worse.
_BAND_MIDDLE = (_metrics.OVER_TRAINED + _metrics.UNDER_TRAINED) / 2


def worst_layers(report, k: int = 3) -> list:
    """Names of the ``k`` layers whose alpha is farthest from ``[2, 6]``: layers with a
    warning first (a verdict needs enough eigenvalues), then the rest; layers without an
    alpha never.

    Example:
      >>> import numpy as np, jaxww
      >>> rng = np.random.default_rng(0)
      >>> params = {"a": rng.standard_normal((256, 128)), "b": rng.standard_t(2, (256, 128))}
      >>> worst_layers(jaxww.analyze(params), k=1)
      ['a']
    """
    def badness(r):
        a = r["alpha"]
        outside = max(_metrics.OVER_TRAINED - a, a - _metrics.UNDER_TRAINED, 0.0)
        return (not r["warning"], -outside, -abs(a - _BAND_MIDDLE))

    fitted = [r for r in report.rows if math.isfinite(r["alpha"])]
    return [r["name"] for r in sorted(fitted, key=badness)[:k]]


def title(report) -> str:
    """The summary figure's title: layers, mean alpha over successful fits, warnings."""
    rows = report.rows
    ok = sum(r["status"] == "success" for r in rows)
    warned = [r["warning"] for r in rows if r["warning"]]
    counts = ", ".join(f"{warned.count(w)} {w}" for w in ("over-trained", "under-trained") if w in warned)
    mean = f"mean α {report.summary['alpha']:.2f} over {ok} fits" if ok else "no successful fit"
    return (f"{len(rows)} layer{'s' * (len(rows) != 1)}: {mean}; "
            f"{len(warned)} with warnings" + (f" ({counts})" if counts else ""))


def plot_summary(report, path=None):
    """A page-wide figure of the model: alpha by depth per layer kind, then the ESDs of
    the (up to) three :func:`worst_layers`, under :func:`title`.

    Args:
      report: a :class:`jaxww.Report`.
      path: also save the figure there (a PNG at :data:`jaxww.report.plots.DPI`, or the
        format of the suffix), or None.

    Returns:
      The matplotlib Figure (closed, so a notebook shows it once, where it is returned).

    Example:
      >>> report.plot_summary("summary.png")        # doctest: +SKIP
    """
    plt = plots.pyplot()
    with plt.rc_context(plots.STYLE):
        fig = plt.figure(figsize=(plots.PAGE_WIDTH, 6.2), dpi=plots.SCREEN_DPI, layout="constrained")
        plt.close(fig)
        top, bottom = fig.subfigures(2, 1, height_ratios=(1.0, 1.15))
        plots.draw_alphas(top.subplots(), report)
        top.suptitle("α by depth, by layer kind", fontsize=8)
        _worst_esds(bottom, report)
        fig.suptitle(title(report))
        if path is not None:
            fig.savefig(path, dpi=plots.DPI)
    return fig


def _worst_esds(subfig, report) -> None:
    """The ESDs of the worst layers side by side in ``subfig``, one legend below."""
    names = worst_layers(report)
    if not names:
        subfig.text(0.5, 0.5, "no layer with a fitted alpha", ha="center", va="center")
        return
    axes = subfig.subplots(1, 3)
    for ax, name in zip(axes, names):
        plots.draw_esd(ax, report, name, title_width=28)
    for ax in axes[len(names):]:
        ax.set_axis_off()
    seen = {}
    for ax in axes[:len(names)]:
        for h, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label.split(" = ")[0], h)
    subfig.legend(list(seen.values()), list(seen), loc="outside lower center", ncols=len(seen), frameon=False)
    subfig.suptitle(f"ESD of the {len(names)} layer{'s' * (len(names) > 1)} with α farthest from "
                    "the band 2 to 6", fontsize=8)
