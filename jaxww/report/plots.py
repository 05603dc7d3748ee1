"""Pictures of a :class:`jaxww.Report` (needs matplotlib; the rest of jaxww never imports it).

* :func:`plot_esd`: a layer's ESD on log-log axes (a density histogram on
  logarithmic bins), the fitted power law ``p(x) = (alpha - 1) / xmin (x / xmin)^-alpha``
  above ``xmin`` (scaled by the tail's share of the eigenvalues) and ``xmin``; with
  ``mp_fit`` the Marchenko-Pastur density of the bulk (scaled by the bulk's share);
  with ``randomize`` the randomised ESD over the real one.
* :func:`plot_alphas`: alpha by layer, with the bands ``alpha < 2`` (over-trained)
  and ``alpha > 6`` (under-trained).
* :func:`save_all`: one PNG per layer (``analyze(plot=True, savefig=DIR)``).
* :func:`draw_all`: what ``analyze(plot=True)`` does: in a Jupyter notebook the figures
  are shown inline (and saved only with ``savefig``), elsewhere saved (default ``ww-img``).

The functions returning a Figure close it first (``plt.close``): pyplot forgets it, so the
inline backend does not draw it a second time besides the returned Figure's own display;
it can still be saved or shown.
"""

from __future__ import annotations

import math
import os
import re
import sys

import numpy as np

from jaxww.fit import metrics as _metrics
from jaxww.fit import mp as _mp


def pyplot():
    """``matplotlib.pyplot``, or an ``ImportError`` that says how to install it."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover - exercised without matplotlib only
        raise ImportError("plots need matplotlib: pip install 'jaxww[plots]'") from err
    return plt


def plot_esd(report, name: str):
    """Figure of the ESD of layer ``name`` with its power-law (and MP, randomised) overlays.

    Example:
      >>> fig = report.plot_esd("dense/kernel")      # doctest: +SKIP
      >>> fig.savefig("dense.png")                    # doctest: +SKIP
    """
    plt = pyplot()
    row = next((r for r in report.rows if r["name"] == name), None)
    if row is None:
        raise KeyError(f"no analysed layer named {name!r}; layers: {list(report.evals)}")
    ev = report.esd(name)
    pos = ev[ev > 0]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.set(xscale="log", yscale="log", xlabel=r"eigenvalue $\lambda$", ylabel="density",
           title=f"{name}  alpha={row['alpha']:.3g}")
    plt.close(fig)
    if pos.size < 2:
        return fig
    bins = np.geomspace(pos.min(), pos.max(), 60)
    share = pos.size / ev.size
    _density(ax, pos, bins, share, "ESD", "tab:blue")
    if name in report.rand_evals:
        rnd = report.rand_evals[name]
        _density(ax, rnd[rnd > 0], bins, (rnd > 0).sum() / rnd.size, "randomised ESD", "tab:red")
    alpha, xmin = row["alpha"], row["xmin"]
    if math.isfinite(alpha) and math.isfinite(xmin):
        x = np.geomspace(xmin, pos.max(), 100)
        tail = (ev >= xmin).sum() / ev.size
        ax.plot(x, tail * (alpha - 1) / xmin * (x / xmin) ** -alpha, "k-", label=f"power law, alpha={alpha:.3g}")
        ax.axvline(xmin, color="k", ls="--", lw=1, label="xmin")
    if math.isfinite(row.get("sigma_mp", math.nan)):
        x = np.geomspace(max(row["bulk_min"], pos.min()), row["bulk_max"], 200)
        bulk = (ev.size - row["num_spikes"]) / ev.size
        dens = bulk * _mp.mp_density(x, row["sigma_mp"], row["N"], row["M"])
        ax.plot(x[dens > 0], dens[dens > 0], color="tab:green", label="Marchenko-Pastur")
        ax.axvline(row["bulk_max_tw"], color="tab:green", ls=":", lw=1, label="Tracy-Widom bound")
    _few_minor_ticks(ax)
    ax.legend(fontsize=8)
    return fig


def _few_minor_ticks(ax):
    """Minor ticks at 2 and 5 only on a log axis spanning under two decades, where matplotlib
    labels every minor tick and the labels overlap."""
    from matplotlib import ticker

    for axis, (lo, hi) in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
        if 0 < lo < hi < 100 * lo:
            axis.set_minor_locator(ticker.LogLocator(subs=(2.0, 5.0)))


def _density(ax, x, bins, share, label, color):
    """A density histogram of ``x`` on ``bins``, times ``share``, as a step line."""
    h, edges = np.histogram(x, bins=bins, density=True)
    ax.stairs(np.where(h > 0, h * share, np.nan), edges, color=color, label=label)


def plot_alphas(report):
    """Figure of alpha by layer (``layer_id`` order) with the over/under-trained bands."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 0.25 * len(report.rows)), 4))
    plt.close(fig)
    ids = [r["layer_id"] for r in report.rows]
    ax.plot(ids, [r["alpha"] for r in report.rows], "o-")
    ax.axhspan(0, _metrics.OVER_TRAINED, color="tab:red", alpha=0.1, label="over-trained (alpha < 2)")
    top = max([_metrics.UNDER_TRAINED + 2] + [r["alpha"] + 1 for r in report.rows if math.isfinite(r["alpha"])])
    ax.axhspan(_metrics.UNDER_TRAINED, top, color="tab:orange", alpha=0.1, label="under-trained (alpha > 6)")
    ax.set(xlabel="layer_id", ylabel="alpha", ylim=(0, top), title="alpha by layer")
    ax.legend(fontsize=8)
    return fig


def save_all(report, directory: str) -> list:
    """One PNG of :func:`plot_esd` per layer into ``directory`` (created); the paths."""
    return draw_all(report, directory, show=False)


def draw_all(report, savefig: str | None = None, show: bool | None = None, done=None) -> list:
    """One figure of :func:`plot_esd` per layer, shown inline and/or saved as PNG.

    Args:
      report: a :class:`jaxww.Report`.
      savefig: directory of the PNG files (created); None: ``"ww-img"`` unless shown.
      show: display the figures (IPython's ``display``); None: when in a notebook
        (:func:`in_notebook`).
      done: called after each figure (the progress of ``analyze(plot=True)``), or None.

    Returns:
      The paths of the files written (none when only shown).

    Example:
      >>> plots.draw_all(report, "figs", show=False)   # doctest: +SKIP
      ['figs/layer0_dense_kernel.png']
    """
    pyplot()
    show = in_notebook() if show is None else show
    directory = "ww-img" if savefig is None and not show else savefig
    if directory is not None:
        os.makedirs(directory, exist_ok=True)
    paths = []
    for r in report.rows:
        fig = plot_esd(report, r["name"])
        if show:
            from IPython.display import display
            display(fig)
        if directory is not None:
            path = os.path.join(directory, f"layer{r['layer_id']}_{re.sub(r'[^A-Za-z0-9_.-]+', '_', r['name'])}.png")
            fig.savefig(path, dpi=80)
            paths.append(path)
        if done is not None:
            done()
    return paths


def in_notebook() -> bool:
    """Whether we run in IPython with a kernel (Jupyter), where figures show inline."""
    if "IPython" not in sys.modules:
        return False
    shell = sys.modules["IPython"].get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None
