"""Pictures (matplotlib, Agg) and describe()/get_esd()."""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import jaxww
from jaxww.report.columns import DESCRIBE_COLUMNS


@pytest.mark.slow
def test_importing_jaxww_does_not_import_matplotlib():
    code = "import sys, jaxww; jaxww.analyze; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": os.getcwd()}, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.slow
def test_plot_true_writes_one_png_per_layer_and_figures(h, tmp_path):
    pytest.importorskip("matplotlib", reason="plots need matplotlib")
    import matplotlib.figure

    params = {"a": {"kernel": h.student_t(0)}, "b": {"kernel": h.low_rank_plus_noise(1)}}
    rep = jaxww.analyze(params, mp_fit=True, randomize=True, key=jax.random.key(0), plot=True,
                        savefig=str(tmp_path))
    files = sorted(os.listdir(tmp_path))
    assert len(files) == 2 and all(f.endswith(".png") and os.path.getsize(tmp_path / f) > 1000 for f in files)
    fig = rep.plot_esd("a/kernel")
    assert isinstance(fig, matplotlib.figure.Figure)
    labels = {t.get_text().split(" = ")[0] for t in fig.legends[0].get_texts()}
    assert {"ESD", "randomised ESD", r"$x_{\min}$", "power-law fit", "Marchenko-Pastur"} <= labels
    assert _inside(fig)   # six legend entries below the axes
    fig = rep.plot_alphas()
    assert isinstance(fig, matplotlib.figure.Figure) and len(fig.axes[0].lines[0].get_xdata()) == 2
    with pytest.raises(KeyError):
        rep.plot_esd("nope")


def _spectrum(values, n=None, seed=0):
    """A float32 matrix (n x len(values), square by default) whose eigenvalues of W^T W are ``values``."""
    values = np.asarray(values, np.float64)
    n = n or values.size
    rng = np.random.default_rng(seed)
    u = np.linalg.qr(rng.standard_normal((n, values.size)))[0]
    v = np.linalg.qr(rng.standard_normal((values.size, values.size)))[0]
    return ((u * np.sqrt(values)) @ v.T).astype(np.float32)


@pytest.fixture(scope="module")
def model():
    """A small report with every layer kind, long names, a short-range and a gapped ESD."""
    rng = np.random.default_rng(0)
    ht = lambda *s: (rng.standard_t(2.5, s) / 20).astype(np.float32)   # noqa: E731
    params = {"embed": {"embedding": ht(96, 16)},
              "encoder": {"layers_11": {"self_attention": {"query": {"kernel": ht(48, 48)}},
                                        "mlp": {"fc1": {"kernel": ht(48, 48)}}}},
              "conv": {"kernel": ht(3, 3, 8, 16)},
              "short": _spectrum(np.linspace(1.0, 3.0, 48)),
              "gapped": _spectrum(np.r_[np.linspace(1, 1.5, 40), np.linspace(80, 100, 8)]),
              "lm_head": {"kernel": ht(48, 48)}}
    return jaxww.analyze(params)   # few shapes: few compilations


def _fake_report(n):
    """A Report of ``n`` rows, alternating attention and MLP (only what plot_alphas reads)."""
    rows = tuple(dict(layer_id=i, name=f"blocks/{i}/{'attn' if i % 2 else 'mlp'}/kernel", layer_type="dense",
                      alpha=2.0 + (i % 7), warning="", status="success") for i in range(n))
    return jaxww.Report(rows=rows, skipped_rows=(), evals={})


def _drawn(fig):
    """``fig`` drawn on an Agg canvas (a closed figure has none); its renderer."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def _inside(fig):
    """Whether everything drawn (every text included) lies inside the figure."""
    box = fig.get_tightbbox(_drawn(fig))
    w, h = fig.get_size_inches()
    return box.x0 >= -1e-3 and box.y0 >= -1e-3 and box.x1 <= w + 1e-3 and box.y1 <= h + 1e-3


def _labels(axis):
    """The labelled major ticks of ``axis`` within its view: (value, text) pairs."""
    lo, hi = sorted(axis.get_view_interval())
    return [(t.get_loc(), t.label1.get_text()) for t in axis.get_major_ticks()
            if lo <= t.get_loc() <= hi and t.label1.get_visible() and t.label1.get_text()]


def test_no_text_is_clipped(model):
    """Every figure, at the sizes users make it: nothing drawn outside the figure (a long
    name, rotated layer names, 1000 layers; the summary page: in test_summary_figure; six
    legend entries: in test_plot_true_writes_one_png_per_layer_and_figures)."""
    pytest.importorskip("matplotlib", reason="plots need matplotlib")
    figs = [model.plot_esd("encoder/layers_11/self_attention/query/kernel")]
    figs += [model.plot_alphas(), _fake_report(1000).plot_alphas()]
    assert [_inside(f) for f in figs] == [True] * len(figs)
    title = figs[0].axes[0].get_title()
    assert "encoder/layers_11/" in title and f"α = {model.rows[1]['alpha']:.2f}" in title


def test_short_log_range_gets_three_readable_tick_labels(model):
    """An ESD within a factor 3 (1 to 3): at least three labelled ticks on x, and no two
    tick labels overlap; empty bins of a gapped ESD sit on the axis, not below it."""
    pytest.importorskip("matplotlib", reason="plots need matplotlib")
    for name in ("short", "gapped"):
        fig = model.plot_esd(name)
        renderer = _drawn(fig)
        ax = fig.axes[0]
        assert len(_labels(ax.xaxis)) >= 3 and len(_labels(ax.yaxis)) >= 3, name
        boxes = sorted((t.get_window_extent(renderer) for t in ax.get_xticklabels()
                        if t.get_text() and ax.get_xlim()[0] <= t.get_position()[0] <= ax.get_xlim()[1]),
                       key=lambda b: b.x0)
        assert all(a.x1 <= b.x0 for a, b in zip(boxes, boxes[1:])), name
    ax = model.plot_esd("gapped").axes[0]
    values = np.concatenate([p.get_data().values for p in ax.patches])
    assert np.isfinite(values).all() and values.min() >= ax.get_ylim()[0] * (1 - 1e-9)


def test_esd_shows_the_fit_and_xmin(model):
    """The power-law line starts at xmin, falls with slope -alpha on log-log axes, and a
    vertical line marks xmin."""
    pytest.importorskip("matplotlib", reason="plots need matplotlib")
    row = next(r for r in model.rows if r["name"] == "encoder/layers_11/mlp/fc1/kernel")
    ax = model.plot_esd(row["name"]).axes[0]
    fit = next(ln for ln in ax.lines if ln.get_label() == "power-law fit")
    x, y = fit.get_data()
    assert x[0] == pytest.approx(row["xmin"], rel=1e-6)
    assert np.polyfit(np.log(x), np.log(y), 1)[0] == pytest.approx(-row["alpha"], rel=1e-6)
    assert any(ln.get_xdata()[0] == row["xmin"] and ln.get_label().startswith("$x_") for ln in ax.lines)


def test_alphas_colour_by_kind_and_never_join_two_kinds(model):
    pytest.importorskip("matplotlib", reason="plots need matplotlib")
    from jaxww.report.plots import layer_kind

    kind = {r["layer_id"]: layer_kind(r["name"], r["layer_type"]) for r in model.rows}
    assert set(kind.values()) == {"attention", "MLP", "conv", "embedding", "other"}
    for rep, kinds in ((model, kind), (_fake_report(40), None)):
        kinds = kinds or {r["layer_id"]: layer_kind(r["name"], "dense") for r in rep.rows}
        ax = rep.plot_alphas().axes[0]
        lines = [ln for ln in ax.lines if len(ln.get_xdata())]
        assert {len({kinds[int(i)] for i in ln.get_xdata()}) for ln in lines} == {1}
        assert sum(len(ln.get_xdata()) for ln in lines) == len(rep.rows)


def test_alphas_width_ticks_and_names(model):
    """A fixed width from 1 to 1000 layers; integer layer ids; the names where few."""
    pytest.importorskip("matplotlib", reason="plots need matplotlib")
    widths = {float(_fake_report(n).plot_alphas().get_size_inches()[0]) for n in (1, 2, 100, 1000)}
    assert len(widths) == 1
    for n in (2, 1000):
        ax = _fake_report(n).plot_alphas().axes[0]
        _drawn(ax.figure)
        assert all(float(v).is_integer() for v, _ in _labels(ax.xaxis)) and len(_labels(ax.xaxis)) >= 2
    ax = model.plot_alphas().axes[0]
    _drawn(ax.figure)
    assert [t for _, t in _labels(ax.xaxis)][:3] == ["embed", "…/self_attent…/query", "…/layers_11/mlp/fc1"]
    band = [p for p in ax.patches if p.get_label().startswith("well-trained")]
    assert len(band) == 1 and band[0].get_extents().height > 0


def test_figures_of_a_report_without_fits():
    """No layer, or only failed fits: the figures say so instead of failing."""
    pytest.importorskip("matplotlib", reason="plots need matplotlib")
    failed = tuple(r | dict(alpha=float("nan"), status="failed") for r in _fake_report(3).rows)
    for rows in ((), failed):
        rep = jaxww.Report(rows=rows, skipped_rows=(), evals={})
        ax = rep.plot_alphas().axes[0]
        assert not any(len(ln.get_xdata()) for ln in ax.lines)
        assert ("(3 without α, not shown)" in ax.get_xlabel()) == bool(rows)
        assert rep.plot_summary()._suptitle.get_text() == f"{len(rows)} layers: no successful fit; 0 with warnings"


@pytest.mark.slow
def test_summary_figure(model, tmp_path):
    """The page: alpha by depth over the ESDs of the three layers farthest from the band,
    the mean alpha and the warnings count in its title; written where asked."""
    pytest.importorskip("matplotlib", reason="plots need matplotlib")
    from jaxww.report.summary_figure import worst_layers

    path = tmp_path / "summary.png"
    fig = model.plot_summary(str(path))
    assert path.stat().st_size > 10_000
    warned = sum(bool(r["warning"]) for r in model.rows)
    assert f"mean α {model.summary['alpha']:.2f}" in fig._suptitle.get_text()
    assert f"{warned} with warnings" in fig._suptitle.get_text()
    worst = worst_layers(model)
    ids = {r["name"]: r["layer_id"] for r in model.rows}
    assert [ax.get_title().split(":")[0] for ax in fig.axes[1:]] == [f"layer {ids[n]}" for n in worst]
    assert _inside(fig)
    rows = (_fake_report(8).rows[0] | dict(alpha=1.5, warning="over-trained"),
            _fake_report(8).rows[1] | dict(alpha=9.0, warning=""),
            _fake_report(8).rows[2] | dict(alpha=7.0, name="c", warning="under-trained"),
            _fake_report(8).rows[3] | dict(alpha=float("nan"), name="d", status="failed"))
    assert worst_layers(jaxww.Report(rows=rows, skipped_rows=(), evals={})) == ["c", rows[0]["name"], rows[1]["name"]]


def test_describe_lists_layers_without_spectra(h):
    params = {"conv": {"kernel": h.gaussian(0, h.CONV), "bias": np.zeros(32, np.float32)},
              "dense": {"kernel": h.gaussian(1)}}
    d = jaxww.describe(params)
    rows = {r["name"]: r for r in d.rows}
    assert rows["conv/kernel"] == dict(layer_id=0, name="conv/kernel", layer_type="conv2d", shape=h.CONV,
                                       N=32, M=16, Q=2.0, rf=9, num_evals=144)
    assert rows["dense/kernel"]["num_evals"] == 128
    assert list(d.skipped["name"]) == ["conv/bias"]
    assert list(d.details.columns) == list(DESCRIBE_COLUMNS)


@pytest.mark.slow
def test_get_esd_equals_report_esd(h):
    params = {"conv": {"kernel": h.gaussian(0, h.CONV)}, "dense": {"kernel": h.gaussian(1)}}
    rep = jaxww.analyze(params)
    for name in ("conv/kernel", "dense/kernel"):
        # one layer alone or in the tree: the same host LAPACK call per matrix (one BLAS
        # thread each), whatever else is analysed: the same bits
        np.testing.assert_array_equal(jaxww.get_esd(params, name), rep.esd(name))
    with pytest.raises(KeyError, match="dense/kernel"):
        jaxww.get_esd(params, "missing")
