"""What a notebook shows of a report (short repr, ``_repr_html_``), ``print(report)``,
``report.save`` and figures that are drawn once."""

from __future__ import annotations

import json
import os
import re
import sys
from html.parser import HTMLParser
from xml.etree import ElementTree

import numpy as np
import pytest

import jaxww
from jaxww.report import cells as display_cells
from jaxww.report import html as display
from jaxww.report import plots


def _mixed():
    """A fitted layer named with ``<``, a NaN layer, a warned (Gaussian) layer, a bias and
    an embedding over ``max_N``."""
    rng = np.random.default_rng(0)
    nan = np.eye(64, dtype=np.float32)
    nan[0, 0] = np.nan
    return {"a<b": {"kernel": rng.standard_normal((128, 64)).astype(np.float32)},
            "nan": {"kernel": nan},
            "gauss": {"kernel": rng.standard_normal((512, 512)).astype(np.float32)},
            "bias": np.zeros(5, np.float32),
            "embed": {"embedding": np.ones((60000, 16), np.float32)}}


@pytest.fixture(scope="module")
def mixed():
    rep = jaxww.analyze(_mixed(), min_evals=4)
    assert [r["status"] for r in rep.rows] == ["success", "failed", "success"]
    assert rep.rows[2]["warning"] and len(rep.limited) == 1 and len(rep.skipped_rows) == 2
    return rep


def test_repr_is_short_for_twelve_big_layers():
    rng = np.random.default_rng(1)
    params = {f"l{i}": {"kernel": rng.standard_normal((512, 512)).astype(np.float32)} for i in range(12)}
    rep = jaxww.analyze(params)
    assert len(repr(rep)) < 500 and "12 layers" in repr(rep)
    html = rep._repr_html_()
    assert html.count("<tr") == 13 and len(html) < 20000


def test_html_has_summary_rows_marks_skipped_and_limits(mixed):
    html = mixed._repr_html_()
    assert "3 layers analysed: 2 fitted, 1 failed, 1 with warnings" in html and "alpha_<wbr>weighted" in html
    assert html.count("<tbody>") == 2           # the layers, then the folded skipped leaves
    layer_rows = html.split("</tbody>")[0].count("<tr")
    assert layer_rows == 1 + 3                  # header + one per layer
    assert '<tr class="failed"' in html and "weights contain NaN or Inf" in html
    assert '<tr class="warning"' in html and "under-trained" in html
    assert "2 leaves skipped" in html and "left out by size limits" in html
    assert "a&lt;b/kernel" in html and "a<b" not in html


def test_print_names_failures_with_reasons_and_warnings(mixed):
    text = str(mixed)
    assert "3 layers analysed (2 successful fits)" in text
    assert "1 failed:\n  nan/kernel: weights contain NaN or Inf" in text
    assert "1 with warnings:\n  gauss/kernel: under-trained" in text
    assert mixed.problems_text(limit=0).endswith("  ... and 1 more")


def test_save_csv_json_html_round_trip(mixed, tmp_path):
    mixed.save(tmp_path / "r.json")
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["jaxww_version"] == jaxww.__version__ and doc["options"] == {"min_evals": 4}
    assert [r["name"] for r in doc["rows"]] == [r["name"] for r in mixed.rows]
    assert doc["rows"][1]["alpha"] is None and doc["summary"]["alpha"] == pytest.approx(mixed.summary["alpha"])
    assert {s["name"] for s in doc["skipped"]} == {s.name for s in mixed.skipped_rows}
    assert doc["limited"] == list(mixed.limited)
    mixed.save(tmp_path / "r.csv")
    lines = (tmp_path / "r.csv").read_text().splitlines()
    assert lines[0] == ",".join(mixed.columns) and len(lines) == 4 and '"(128, 64)"' in lines[1]
    assert mixed.save(str(tmp_path / "r.html")) == str(tmp_path / "r.html")
    page = (tmp_path / "r.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and mixed._repr_html_() in page
    with pytest.raises(ValueError, match=r"\.csv, \.json, \.html"):
        mixed.save(tmp_path / "r.txt")


def test_csv_matches_pandas(mixed):
    pd = pytest.importorskip("pandas")
    import io

    from jaxww.report import export

    back = pd.read_csv(io.StringIO(export.csv_text(mixed.rows, mixed.columns)))
    np.testing.assert_allclose(back["alpha"], mixed.details["alpha"])
    assert list(back["name"]) == list(mixed.details["name"])


def test_options_record_non_defaults_that_json_holds():
    import jax

    params = {"w": np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)}
    rep = jaxww.analyze(params, min_evals=4, layers=lambda n: True, mp_fit=True, base=params,
                        devices=jax.local_devices(), progress=False)
    assert rep.options == {"min_evals": 4, "mp_fit": True, "base": True}
    assert jaxww.analyze(params).options == {}


def test_description_and_diff_reprs_are_short_with_html():
    params = _mixed()
    d = jaxww.describe(params, min_evals=4)
    assert repr(d) == "<jaxww.Description: 3 layers to analyse, 2 leaves skipped>"
    assert "a&lt;b/kernel" in d._repr_html_() and d._repr_html_().count("<tbody>") == 2
    assert "jaxww.Description" not in d._repr_html_() and "3 layers to analyse" in d._repr_html_()
    assert len(re.findall(r"\b2 leaves skipped", d._repr_html_())) == 1
    b = dict(params, gauss={"kernel": 2 * params["gauss"]["kernel"]})
    diff = jaxww.diff_models(params, b, min_evals=4)
    assert len(repr(diff)) < 200 and "1 failed" in repr(diff), repr(diff)
    lines = str(diff).splitlines()               # print(diff): a header, then a row per layer
    assert lines[0].startswith("jaxww diff: 3 layers (2 success, 1 failed)")
    assert lines[1].split()[:5] == ["name", "shape", "k", "overlap_left", "overlap_right"]
    assert [ln.split()[0] for ln in lines[2:]] == [r["name"] for r in diff.rows]
    gauss = next(ln for ln in lines if ln.startswith("gauss/kernel"))
    assert " 1.000 " in gauss and "+0.602" in gauss   # same subspaces; log10(4) on log_spectral_norm
    html = diff._repr_html_()
    assert "overlap_<wbr>left" in html and "alpha_<wbr>delta" in html and '<tr class="failed"' in html
    assert html.split("</tbody>")[0].count("<tr") == 1 + len(diff.rows)


def test_figures_are_closed_and_shown_once(mixed, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib", reason="plots need matplotlib")
    import matplotlib.pyplot as plt

    plt.close("all")
    fig = mixed.plot_esd("a<b/kernel")
    mixed.plot_alphas()
    assert plt.get_fignums() == []
    fig.savefig(tmp_path / "still.png")         # a closed figure is still a figure
    monkeypatch.chdir(tmp_path)
    w = np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)
    assert not plots.in_notebook()
    jaxww.analyze({"w": w}, min_evals=4, plot=True)
    assert os.listdir(tmp_path / "ww-img") == ["layer0_w.png"] and plt.get_fignums() == []


def test_in_a_notebook_plot_shows_and_saves_only_with_savefig(mixed, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib", reason="plots need matplotlib")
    pytest.importorskip("IPython")
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython.display, "display", shown.append)
    monkeypatch.setattr(plots, "in_notebook", lambda: True)
    monkeypatch.chdir(tmp_path)
    assert plots.draw_all(mixed) == [] and len(shown) == 3 and not os.path.exists("ww-img")
    assert len(plots.draw_all(mixed, "figs")) == 3 and len(shown) == 6
    assert display.counts(["a", "b", "a"]) == "2 a, 1 b"


_REPORT_ALONE = """
import sys
from jaxww.report import columns, export, html, report, table
from jaxww.reading.kernels import Skipped

class Desc:   # what describe returns, without importing analysis
    rows = ({c: 0 for c in columns.DESCRIBE_COLUMNS},)
    skipped_rows = (Skipped("b", (3,), "float32", "ndim < 2", "ndim"),)

class Diff:
    rows = ({**{c: 0 for c in columns.DIFF_COLUMNS}, "alpha_a": 1.0, "alpha_b": 1.5, "alpha_delta": 0.5,
             "status": "success", "reason": ""},)
    metrics = ("alpha",)

assert "<table" in html.description_html(Desc()) and "<table" in html.diff_html(Diff())
rep = report.Report(({c: 0.0 for c in columns.COLUMNS} | {"status": "success", "warning": "", "reason": ""},), (), {})
assert "<table" in html.report_html(rep) and export.document(rep)["rows"] and table.table_text(rep, "")
print(sorted(m for m in sys.modules if m.startswith("jaxww.analysis")))
"""


def test_report_stage_imports_no_analysis_module():
    """The report stage (columns, HTML of every result, export, the terminal table) works
    without the analysis stage above it: rendering imports no ``jaxww.analysis`` module."""
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, "-c", _REPORT_ALONE], env=dict(os.environ, PYTHONPATH=root),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


class _Cells(HTMLParser):
    """The cells of the first table of an HTML text: ``[(column, td attributes, text)]``."""

    def __init__(self, text):
        super().__init__()
        self.head, self.cells, self._td, self._in, self._done = [], [], None, None, False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        if tag in ("th", "td") and not self._done:
            self._in, self._td, self._text = tag, dict(attrs), ""

    def handle_data(self, data):
        if self._in:
            self._text += data

    def handle_endtag(self, tag):
        if tag == "table":
            self._done = True
        if tag == self._in == "th":
            self.head.append(self._text)
        elif tag == self._in == "td":
            self.cells.append((self.head[len(self.cells) % len(self.head)], self._td, self._text))
        if tag == self._in:
            self._in = None


def _decimals(text):
    return len(text.split(".")[1]) if "." in text and "e" not in text else 0


def test_html_numbers_right_aligned_one_precision_per_column(mixed):
    """Every number is right-aligned by its own cell's style (a front-end that drops the
    <style> block keeps it) and a column's numbers have one precision: alpha 3 decimals,
    counts none (the old table: 0.9805 beside 11.95, left-aligned)."""
    parsed = _Cells(mixed._repr_html_())
    numeric = ("layer_id", "num_evals", "alpha", "alpha_weighted", "log_norm", "log_spectral_norm", "stable_rank")
    for col in numeric:
        cells = [(td, t) for c, td, t in parsed.cells if c == col]
        assert len(cells) == 3, col
        assert all("text-align:right" in td.get("style", "") and td.get("align") == "right" for td, _ in cells), col
        shown = [t for _, t in cells if t != display_cells.MISSING]
        assert len(shown) >= 2 and len({_decimals(t) for t in shown}) == 1, (col, shown)
    assert {_decimals(t) for c, _, t in parsed.cells if c == "alpha" and t != display_cells.MISSING} == {3}
    assert {_decimals(t) for c, _, t in parsed.cells if c in ("layer_id", "num_evals")} == {0}
    assert all("style" not in td and "align" not in td for c, td, _ in parsed.cells if c in ("name", "status"))
    f = display_cells.formatter("spectral_norm", [0.9805, 11.95, float("nan")])
    assert [f(v) for v in (0.9805, 11.95, float("nan"))] == ["0.98", "11.95", display_cells.MISSING]
    f = display_cells.formatter("norm", [0.5, 2.5e5])
    assert [f(0.5), f(2.5e5)] == ["5.000e-01", "2.500e+05"]


def test_html_skipped_counted_once_and_sortable(mixed):
    html = mixed._repr_html_()
    assert len(re.findall(r"\b2 leaves skipped", html)) == 1 and "skipped (1 not_matrix, 1 size_limit)" in html
    assert html.count('<table class="jaxww-t" border="1">') == 2 and html.count("<script>") == 1


def test_html_alpha_figure_is_well_formed_svg(mixed):
    svgs = re.findall(r"<svg.*?</svg>", mixed._repr_html_(), re.S)
    assert len(svgs) == 1
    root = ElementTree.fromstring(svgs[0])          # raises on malformed XML
    ns = "{http://www.w3.org/2000/svg}"
    tips = [t.text for t in root.iter(ns + "title")]
    fitted = [r["name"] for r in mixed.rows if r["status"] == "success"]
    dots = [c for c in root.iter(ns + "circle") if c.find(ns + "title") is not None]
    assert len(dots) == len(fitted) == 2
    assert any(t.startswith("a<b/kernel (dense): alpha ") for t in tips)
    assert any(t.startswith("nan/kernel: failed: weights contain NaN") for t in tips)


def test_treescope_renders_a_report(mixed):
    treescope = pytest.importorskip("treescope")
    page = treescope.render_to_html(mixed, compressed=False)
    assert "jaxww.Report: 3 layers" in page and "<b>jaxww report</b>" in page and "<svg xmlns" in page
    text = treescope.render_to_text({"r": mixed})
    assert repr(mixed) in text and "1 failed:" in text


def test_without_pandas_the_error_names_the_attribute(mixed, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)      # import pandas raises ImportError
    with pytest.raises(ImportError, match=r"^Report\.skipped needs pandas: .*Report\.skipped_rows"):
        mixed.skipped
    with pytest.raises(ImportError, match=r"^Report\.details needs pandas"):
        mixed.details
