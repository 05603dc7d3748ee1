"""Pictures of a :class:`jaxww.Report` (needs matplotlib; the rest of jaxww never imports it).

* :func:`plot_esd`: a layer's ESD on log-log axes (a density histogram on
  logarithmic bins), the fitted power law ``p(x) = (alpha - 1) / xmin (x / xmin)^-alpha``
  above ``xmin`` (scaled by the tail's share of the eigenvalues) and ``xmin``; with
  ``mp_fit`` the Marchenko-Pastur density of the bulk (scaled by the bulk's share);
  with ``randomize`` the randomised ESD over the real one. One paper column wide.
* :func:`plot_alphas`: alpha by layer, coloured by :func:`layer_kind`, with the band
  ``2 <= alpha <= 6`` of well-trained layers shaded. A page wide, whatever the number
  of layers (the markers shrink).
* :func:`save_all`: one PNG per layer (``analyze(plot=True, savefig=DIR)``).
* :func:`draw_all`: what ``analyze(plot=True)`` does: in a Jupyter notebook the figures
  are shown inline (and saved only with ``savefig``), elsewhere saved (default ``ww-img``).
* :func:`draw_esd`, :func:`draw_alphas`: the same pictures into a given Axes (the model
  summary of :mod:`jaxww.report.summary_figure` is made of them).

The figures use matplotlib's constrained layout, so no label is clipped; save them with
``dpi=DPI`` for a crisp PNG. The functions returning a Figure close it first
(``plt.close``): pyplot forgets it, so the inline backend does not draw it a second time
besides the returned Figure's own display; it can still be saved or shown.
"""

from __future__ import annotations

import math
import os
import re
import sys

import numpy as np

from jaxww.fit import metrics as _metrics
from jaxww.fit import mp as _mp

#: Width in inches of a figure of one layer (a paper's column) and of a model (a page).
COLUMN_WIDTH = 3.5
PAGE_WIDTH = 7.0
#: Resolution of the PNG files written here.
DPI = 200
#: Resolution of the figures returned (what a notebook shows and ``savefig`` uses by default):
#: a column-wide figure about 450 pixels wide, a page-wide one about 900.
SCREEN_DPI = 130
#: Font sizes for a figure printed at its own size.
STYLE = {"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "xtick.labelsize": 7,
         "ytick.labelsize": 7, "legend.fontsize": 7, "figure.titlesize": 9}
#: Layer kinds of :func:`layer_kind`, in legend order, with their colours.
KIND_COLORS = {"attention": "tab:blue", "MLP": "tab:orange", "conv": "tab:purple",
               "embedding": "tab:brown", "other": "tab:gray"}
_ATTENTION = re.compile(r"attn|attention|(^|[/_.])(q|k|v|o|query|key|value|qkv|wq|wk|wv|wo)(_proj)?([/_.]|$)",
                        re.IGNORECASE)
_HEAD = re.compile(r"head|classifier|logits|readout", re.IGNORECASE)
_PARAM_NAMES = ("kernel", "weight", "embedding", "w", "scale")


def pyplot():
    """``matplotlib.pyplot``, or an ``ImportError`` that says how to install it."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover - exercised without matplotlib only
        raise ImportError("plots need matplotlib: pip install 'jaxww[plots]'") from err
    return plt


def layer_kind(name: str, layer_type: str) -> str:
    """The kind a figure colours a layer by: ``attention``, ``MLP``, ``conv``, ``embedding``
    or ``other``, from the report's ``layer_type`` and, for a dense layer, its name.

    Example:
      >>> layer_kind("block_0/attn/query/kernel", "dense"), layer_kind("mlp/fc1/kernel", "dense")
      ('attention', 'MLP')
      >>> layer_kind("lm_head/kernel", "dense"), layer_kind("conv/kernel", "conv2d")
      ('other', 'conv')
    """
    if layer_type.startswith("conv"):
        return "conv"
    if layer_type in ("attention", "embedding"):
        return layer_type
    if layer_type != "dense":
        return "other"
    if _ATTENTION.search(name):
        return "attention"
    return "other" if _HEAD.search(name) else "MLP"


def plot_esd(report, name: str):
    """Figure of the ESD of layer ``name`` with its power-law (and MP, randomised) overlays,
    one paper column wide; the title names the layer and its alpha.

    Example:
      >>> fig = report.plot_esd("dense/kernel")                    # doctest: +SKIP
      >>> fig.savefig("dense.png", dpi=jaxww.report.plots.DPI)     # doctest: +SKIP
    """
    plt = pyplot()
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(COLUMN_WIDTH, 2.5), dpi=SCREEN_DPI, layout="constrained")
        plt.close(fig)
        draw_esd(ax, report, name, title_width=44)
        handles, labels = ax.get_legend_handles_labels()
        if handles:
            fig.legend(handles, labels, loc="outside lower center", ncols=2, frameon=False)
            fig.set_size_inches(COLUMN_WIDTH, 2.5 + 0.15 * math.ceil(len(handles) / 2))
    return fig


def draw_esd(ax, report, name: str, title_width: int = 30) -> None:
    """Draw :func:`plot_esd`'s picture of layer ``name`` into ``ax`` (legend entries labelled,
    no legend drawn); the title's lines are at most ``title_width`` characters."""
    row = next((r for r in report.rows if r["name"] == name), None)
    if row is None:
        raise KeyError(f"no analysed layer named {name!r}; layers: {list(report.evals)}")
    ev = report.esd(name)
    pos = ev[ev > 0]
    ax.set(xscale="log", yscale="log", xlabel=r"eigenvalue $\lambda$", ylabel="density")
    ax.set_title(_esd_title(row, title_width))
    if pos.size < 2 or pos.min() == pos.max():
        ax.text(0.5, 0.5, "fewer than 2 distinct positive eigenvalues", ha="center",
                transform=ax.transAxes)
        return
    bins = np.geomspace(pos.min(), pos.max(), int(np.clip(2 * np.sqrt(pos.size), 5, 60)) + 1)
    spectra = [(pos, pos.size / ev.size, "ESD", "tab:blue", True)]
    if name in report.rand_evals:
        rnd = report.rand_evals[name]
        spectra.append((rnd[rnd > 0], (rnd > 0).sum() / rnd.size, "randomised ESD", "tab:red", False))
    hists = [np.histogram(x, bins=bins, density=True)[0] * share for x, share, *_ in spectra]
    floor = min(h[h > 0].min() for h in hists if (h > 0).any()) / 3
    for h, (_, _, label, color, fill) in zip(hists, spectra):
        _density(ax, h, bins, floor, label, color, fill)
    _power_law(ax, row, ev, pos.max())
    _marchenko_pastur(ax, row, ev, pos.min())
    ax.set_ylim(bottom=floor)
    readable_log_ticks(ax)


def _esd_title(row, width: int) -> str:
    """``layer ID: name`` (wrapped at ``width`` characters) over ``alpha = ...`` and its
    verdict, or why it has none."""
    alpha = row["alpha"]
    verdict = (f" ({row['warning']})" if row["warning"] else
               f" (no verdict: {row['num_evals']} λ)" if row["reason"].startswith("no verdict") else "")
    line = f"α = {alpha:.2f}{verdict}" if math.isfinite(alpha) else f"no α ({row['status']})"
    return wrap_name(f"layer {row['layer_id']}: {row['name']}", width) + "\n" + line


def wrap_name(name: str, width: int) -> str:
    """``name`` on at most two lines of ``width`` characters, broken after a ``/`` or ``.``
    where one is in the second half of the line; the middle of a longer name is left out
    (``…``).

    Example:
      >>> print(wrap_name("params/blocks_11/attention/query/kernel", 24))
      params/blocks_11/
      attention/query/kernel
    """
    lines, rest = [], name
    while len(rest) > width:
        cut = max(rest.rfind("/", 0, width), rest.rfind(".", 0, width)) + 1
        cut = cut if cut > width // 2 else width
        lines.append(rest[:cut])
        rest = rest[cut:]
    lines.append(rest)
    if len(lines) > 2:
        start = max(len(lines[0]), len(name) - (width - 1))
        lines = [lines[0], "…" + name[start:]]
    return "\n".join(lines)


def _density(ax, h, edges, floor, label, color, fill):
    """A density histogram ``h`` on ``edges`` as a step line; empty bins sit at ``floor``,
    the bottom of the axis, instead of falling off the log scale."""
    h = np.maximum(h, floor)
    if fill:
        ax.stairs(h, edges, baseline=floor, fill=True, color=color, alpha=0.25, lw=0)
    ax.stairs(h, edges, baseline=floor, color=color, lw=0.9, label=label)


def _power_law(ax, row, ev, top):
    """The fitted power law above ``xmin``, scaled by the tail's share, and ``xmin``."""
    alpha, xmin = row["alpha"], row["xmin"]
    if not (math.isfinite(alpha) and math.isfinite(xmin)):
        return
    x = np.geomspace(xmin, max(top, xmin), 100)
    tail = (ev >= xmin).sum() / ev.size
    ax.plot(x, tail * (alpha - 1) / xmin * (x / xmin) ** -alpha, "k-", lw=1.2, label="power-law fit")
    ax.axvline(xmin, color="k", ls="--", lw=0.9, label=r"$x_{\min}$" + f" = {xmin:.3g}")


def _marchenko_pastur(ax, row, ev, bottom):
    """With ``mp_fit``: the MP density of the bulk, scaled by its share, and the TW bound."""
    if not math.isfinite(row.get("sigma_mp", math.nan)):
        return
    x = np.geomspace(max(row["bulk_min"], bottom), row["bulk_max"], 200)
    bulk = (ev.size - row["num_spikes"]) / ev.size
    dens = bulk * _mp.mp_density(x, row["sigma_mp"], row["N"], row["M"])
    ax.plot(x[dens > 0], dens[dens > 0], color="tab:green", lw=1, label="Marchenko-Pastur")
    ax.axvline(row["bulk_max_tw"], color="tab:green", ls=":", lw=1, label="Tracy-Widom bound")


def readable_log_ticks(ax) -> None:
    """At least three labelled ticks on each log axis of ``ax`` at its current limits.

    Where three powers of ten are in range matplotlib's decade ticks stay; on a shorter
    range the ticks are the 1, 2, 5 multiples of powers of ten in range, or, where those
    are fewer than three (a range under about a factor 5), evenly spaced round values;
    minor ticks carry no label.
    """
    from matplotlib import ticker

    for axis, (lo, hi) in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
        if axis.get_scale() != "log" or not 0 < lo < hi:
            continue
        if len(_log_multiples(lo, hi, (1,))) >= 3:
            continue   # decades: matplotlib's own ticks and labels
        ticks = _log_multiples(lo, hi, (1, 2, 5))
        if len(ticks) < 3:
            ticks = [t for t in ticker.MaxNLocator(4).tick_values(lo, hi) if lo <= t <= hi]
        axis.set_major_locator(ticker.FixedLocator(ticks))
        axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: tick_text(v)))
        axis.set_minor_formatter(ticker.NullFormatter())


def _log_multiples(lo: float, hi: float, subs) -> list:
    """The values ``s * 10**k`` (``s`` in ``subs``) within ``[lo, hi]``, ascending."""
    decades = range(math.floor(math.log10(lo)), math.floor(math.log10(hi)) + 1)
    return [v for k in decades for s in subs if lo <= (v := s * 10.0 ** k) <= hi]


def tick_text(v: float) -> str:
    """A tick label: ``0.05``, ``300``; far from 1 ``2×10^{-5}`` in mathtext.

    Example:
      >>> tick_text(0.05), tick_text(1e6)
      ('0.05', '$10^{6}$')
    """
    if 1e-3 <= abs(v) < 1e4:
        return f"{v:.4g}"
    exp = math.floor(math.log10(abs(v)))
    mant = f"{v / 10.0 ** exp:.3g}"
    return f"$10^{{{exp}}}$" if mant == "1" else f"${mant}\\times10^{{{exp}}}$"


def plot_alphas(report):
    """Figure of alpha by layer (``layer_id`` order), a page wide, coloured by
    :func:`layer_kind`; the band ``2 <= alpha <= 6`` of well-trained layers shaded.

    Each kind is a line through its own layers along depth (up to 100 layers; points
    beyond), never a line from one kind to another. The layers are named on the x axis
    when there are at most 24 of them, else numbered. Layers without an alpha are
    counted in the x label.

    Example:
      >>> report.plot_alphas().savefig("alphas.png", dpi=200)   # doctest: +SKIP
    """
    plt = pyplot()
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(PAGE_WIDTH, 2.6), dpi=SCREEN_DPI, layout="constrained")
        plt.close(fig)
        named = draw_alphas(ax, report)
        fig.set_size_inches(PAGE_WIDTH, 2.6 + 0.045 * max(map(len, named), default=0))
        ax.set_title("α by layer")
    return fig


def draw_alphas(ax, report, max_named: int = 24) -> list:
    """Draw :func:`plot_alphas`'s picture into ``ax``, with its legend at the right of ``ax``;
    the layers are named on the x axis when at most ``max_named``: those names (else [])."""
    from matplotlib import ticker

    rows = report.rows
    ax.axhspan(_metrics.OVER_TRAINED, _metrics.UNDER_TRAINED, color="tab:green", alpha=0.12, lw=0,
               label="well-trained\n(2 ≤ α ≤ 6)")
    size = float(np.clip(5 * math.sqrt(30 / max(len(rows), 1)), 1.2, 5))
    fitted = [r for r in rows if math.isfinite(r["alpha"])]
    for kind, color in KIND_COLORS.items():
        pts = sorted((r["layer_id"], r["alpha"]) for r in fitted if layer_kind(r["name"], r["layer_type"]) == kind)
        if pts:
            ax.plot(*zip(*pts), marker="o", ms=size, color=color, lw=0.7 if len(rows) <= 100 else 0,
                    label=f"{kind} ({len(pts)})")
    top = max([_metrics.UNDER_TRAINED + 1.5] + [1.08 * r["alpha"] for r in fitted])
    ax.set(ylim=(0, top), ylabel="α")
    missing = len(rows) - len(fitted)
    note = f" ({missing} without α, not shown)" if missing else ""
    named = short_names([r["name"] for r in rows]) if len(rows) <= max_named else []
    if named:
        ax.set_xticks([r["layer_id"] for r in rows], named, rotation=40, ha="right", rotation_mode="anchor")
    else:
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax.set_xlabel(("layer" if named else "layer_id") + note)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0, frameon=False)
    return named


def short_names(names, width: int = 24) -> list:
    """Layer names for tick labels: without the leading path all share, without a last
    part that only names the parameter (``kernel``, ``weight``, ...), each part but the
    last cut to 12 characters, at most ``width`` characters (leading parts left out:
    ``…/``). The parts are separated by ``/`` (flax) or, where no name has one, ``.``
    (PyTorch).

    Example:
      >>> short_names(["params/b0/attn/kernel", "params/b1/mlp/kernel"])
      ['b0/attn', 'b1/mlp']
      >>> short_names(["MultiHeadDotProductAttention_0/query/kernel", "Dense_0/kernel"])
      ['MultiHeadDo…/query', 'Dense_0']
      >>> short_names(["encoder.layer.0.attention.self.query.weight", "encoder.layer.0.output.dense.weight"])
      ['attention.self.query', 'output.dense']
    """
    sep = "/" if any("/" in n for n in names) else "."
    parts = [n.split(sep) for n in names]
    common = 0
    while parts and all(len(p) > common + 1 and p[common] == parts[0][common] for p in parts):
        common += 1
    out = []
    for p in parts:
        p = p[common:]
        p = p[:-1] if len(p) > 1 and p[-1] in _PARAM_NAMES else p
        p = [q if len(q) <= 12 else q[:11] + "…" for q in p[:-1]] + p[-1:]
        dropped = False
        while len(p) > 1 and len(("…" + sep) * dropped + sep.join(p)) > width:
            p, dropped = p[1:], True
        label = ("…" + sep) * dropped + sep.join(p)
        out.append(label if len(label) <= width else label[:width - 1] + "…")
    return out


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
            fig.savefig(path, dpi=DPI)
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
