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
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert {"ESD", "randomised ESD", "xmin", "Marchenko-Pastur"} <= set(labels)
    fig = rep.plot_alphas()
    assert isinstance(fig, matplotlib.figure.Figure) and len(fig.axes[0].lines[0].get_xdata()) == 2
    with pytest.raises(KeyError):
        rep.plot_esd("nope")


def test_narrow_spectrum_gets_few_minor_ticks():
    """A random layer's spectrum spans about one decade: matplotlib would label every minor
    tick (2, 3, ..., 9 x 10^k) and the labels overlap; only 2 and 5 are kept there. A
    spectrum over many decades keeps matplotlib's ticks."""
    pytest.importorskip("matplotlib", reason="plots need matplotlib")
    rng = np.random.default_rng(0)
    narrow = (rng.standard_normal((1408, 512)) / np.sqrt(512)).astype(np.float32)
    wide = (rng.standard_t(2.5, (512, 512)) / 30).astype(np.float32)
    rep = jaxww.analyze({"narrow": narrow, "wide": wide})

    def mantissas(name):
        ax = rep.plot_esd(name).axes[0]
        lo, hi = ax.get_xlim()
        ticks = [t for t in ax.xaxis.get_minorticklocs() if lo <= t <= hi]
        return {round(t / 10 ** np.floor(np.log10(t)), 6) for t in ticks}

    assert mantissas("narrow") <= {2.0, 5.0} and mantissas("narrow")
    assert len(mantissas("wide")) > 2

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
