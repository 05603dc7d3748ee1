"""HTML of :class:`jaxww.Report`, :class:`jaxww.Description` and :class:`jaxww.ModelDiff`
(their ``_repr_html_``, shown by Jupyter when one is the last expression of a cell; their
``__treescope_repr__``) and their short ``repr`` lines. No dependency: every value is
escaped with :func:`html.escape`, the figure is inline SVG (:mod:`jaxww.report.svg`).

* Numbers are right-aligned at one precision per column (:mod:`jaxww.report.cells`).
* A row is marked red when the layer failed (``status`` other than ``"success"``; its
  reason is in the row) and amber when it has a warning (over/under-trained).
* The columns sort on a click on their header, by a small inline script. Where a front-end
  drops scripts and styles (an untrusted notebook, GitHub's renderer) the table reads the
  same, unsorted: alignment, row marks and borders are attributes of the cells, rows and
  table (alignment twice: ``align="right"`` where a sanitiser drops ``style``).
* The skipped leaves are counted once, by reason, in a folded table.
"""

from __future__ import annotations

import html

from jaxww.report import cells, svg
from jaxww.report.columns import DESCRIBE_COLUMNS, DIFF_COLUMNS, REPORT_COLUMNS, SUMMARY_METRICS

_MARK = {"failed": "background-color:rgba(230,40,40,.16)", "warning": "background-color:rgba(240,170,0,.2)"}
_NUM = "text-align:right"
_CSS = ("<style>.jaxww{font:12px/1.35 sans-serif}.jaxww p{margin:3px 0}"
        ".jaxww table{border-collapse:collapse;margin:4px 0;border:0}"
        ".jaxww td,.jaxww th{border:1px solid rgba(128,128,128,.35);padding:2px 7px;white-space:nowrap}"
        ".jaxww th{background:rgba(128,128,128,.1);text-align:center;white-space:normal}"
        ".jaxww td{font-variant-numeric:tabular-nums}.jaxww td.why div{white-space:normal;min-width:12em;max-width:30em}"
        ".jaxww-sortable th{cursor:pointer}.jaxww th[data-dir='1']::after{content:' \\25B4'}"
        ".jaxww th[data-dir='-1']::after{content:' \\25BE'}.jaxww summary{cursor:pointer;margin:4px 0}"
        ".jaxww .jaxww-scroll{max-height:460px;overflow:auto}.jaxww-scroll th{position:sticky;top:0}</style>")
# Sorts the tables of its own <div> on a click on a header: numbers (cells of class "num")
# numerically with missing ones last, text in natural order ("layer_2" before "layer_10").
_SORT = ("<script>(function(){var s=document.currentScript;if(!s)return;"
         "s.parentNode.querySelectorAll('table.jaxww-t').forEach(function(t){"
         "var hs=t.tHead.rows[0].cells;t.classList.add('jaxww-sortable');"
         "Array.prototype.forEach.call(hs,function(h,i){h.title='sort by '+h.textContent;h.onclick=function(){"
         "var b=t.tBodies[0],d=h.dataset.dir==='1'?-1:1,rs=Array.prototype.slice.call(b.rows);"
         "Array.prototype.forEach.call(hs,function(x){delete x.dataset.dir});h.dataset.dir=String(d);"
         "rs.sort(function(p,q){var a=p.cells[i],c=q.cells[i];"
         "if(a.className!=='num')return d*a.textContent.localeCompare(c.textContent,undefined,{numeric:true});"
         "var x=parseFloat(a.textContent),y=parseFloat(c.textContent);"
         "return isNaN(x)?(isNaN(y)?0:1):isNaN(y)?-1:d*(x-y)});"
         "rs.forEach(function(r){b.appendChild(r)})}})})})();</script>")


def table(rows, columns, *, scroll_after: int = 25) -> str:
    """An HTML table of ``rows`` (dicts) with ``columns``: numbers right-aligned at one
    precision per column, rows marked failed or warning.

    Args:
      rows: dicts with at least ``columns`` (and optionally ``status``, ``warning``).
      columns: the columns shown, in order.
      scroll_after: more rows than this scroll under a fixed header.

    Returns:
      The ``<table>`` element (in a scrolling ``<div>`` when long) as a str.

    Example:
      >>> t = table([{"name": "a<b", "alpha": 3.0}], ("name", "alpha"))
      >>> t[t.index("<tbody>"):]
      '<tbody><tr><td>a&lt;b</td><td class="num" align="right" style="text-align:right">3.000</td></tr></tbody></table>'
    """
    rows = list(rows)
    fmts = cells.formatters(rows, columns)
    head = "".join(f"<th>{html.escape(c).replace('_', '_<wbr>')}</th>" for c in columns)
    body = []
    for r in rows:
        mark = ("failed" if r.get("status", "success") != "success" else
                "warning" if r.get("warning") else "")
        attr = f' class="{mark}" style="{_MARK[mark]}"' if mark else ""
        body.append(f"<tr{attr}>" + "".join(_cell(r[c], fmts[c], c) for c in columns) + "</tr>")
    out = f'<table class="jaxww-t" border="1"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
    return f'<div class="jaxww-scroll">{out}</div>' if len(rows) > scroll_after else out


def _cell(v, fmt, column: str) -> str:
    if fmt is not None:
        return f'<td class="num" align="right" style="{_NUM}">{fmt(v)}</td>'
    if column == "reason" and v:   # wraps at 30em (a table cell cannot be given a max-width)
        return f'<td class="why"><div>{html.escape(str(v))}</div></td>'
    return f"<td>{html.escape(str(v))}</td>"


def _box(kind: str, *parts: str) -> str:
    """The ``<div>`` of one result: its style, its parts, the sorting script."""
    return f'<div class="jaxww jaxww-{kind}">{_CSS}' + "".join(p for p in parts if p) + _SORT + "</div>"


def report_html(report) -> str:
    """HTML of a :class:`jaxww.Report`: the counts (failed, with warnings), the size-limit
    note, the means, an alpha-by-layer figure, the layer table and the skipped leaves.

    Example:
      >>> import numpy as np, jaxww
      >>> rep = jaxww.analyze({"w": np.eye(32, dtype=np.float32)}, min_evals=4)
      >>> "<table" in rep._repr_html_()
      True
    """
    n_fail = sum(r["status"] != "success" for r in report.rows)
    n_warn = sum(bool(r["warning"]) for r in report.rows)
    n = len(report.rows)
    head = (f"<p><b>jaxww report</b>: {n} layer{'s' * (n != 1)} analysed: {n - n_fail} fitted, "
            f"{n_fail} failed, {n_warn} with warnings</p>")
    note = report.limits_note()
    means = ", ".join(f"{html.escape(k)} <b>{cells.formatter(k, [v])(v)}</b>" for k, v in report.summary.items())
    cols = [c for c in REPORT_COLUMNS if c in report.columns]
    return _box("report", head, f"<p><b>{html.escape(note)}</b></p>" if note else "",
                f"<p>means over fitted layers: {means}</p>", _alpha_figure(report.rows),
                table(report.rows, cols), _skipped(report.skipped_rows))


def _alpha_figure(rows) -> str:
    """:func:`jaxww.report.svg.alpha_figure` of report rows, by layer type."""
    points = [(r["layer_id"], r["alpha"], r["layer_type"], f"{r['name']} ({r['layer_type']}): alpha {r['alpha']:.3f}")
              for r in rows if r["status"] == "success"]
    missing = [(r["layer_id"], f"{r['name']}: {r['status']}: {r['reason']}") for r in rows if r["status"] != "success"]
    return svg.alpha_figure(points, missing)


def _skipped(skipped_rows) -> str:
    """The skipped leaves, counted by reason, as a folded table ("" when none)."""
    if not skipped_rows:
        return ""
    rows = [s._asdict() for s in skipped_rows]
    n = len(rows)
    return (f"<details><summary>{n} lea{'ves' if n > 1 else 'f'} skipped "
            f"({html.escape(counts(s.kind for s in skipped_rows))})</summary>"
            + table(rows, tuple(rows[0])) + "</details>")


def description_html(desc) -> str:
    """HTML of a :class:`jaxww.Description`: the count line, its table, the skipped leaves."""
    n = len(desc.rows)
    head = f"<p><b>jaxww describe</b>: {n} layer{'s' * (n != 1)} to analyse</p>"
    return _box("describe", head, table(desc.rows, DESCRIBE_COLUMNS), _skipped(desc.skipped_rows))


def diff_columns(diff) -> tuple:
    """The columns of the compact diff table: overlaps, alpha of both models, the deltas
    of the summary metrics (:data:`SUMMARY_METRICS`, those compared), status and reason.
    Every metric's ``_a``, ``_b`` and ``_delta`` are in ``diff.rows`` (``diff.details``)."""
    alpha = ("alpha_a", "alpha_b") if "alpha" in diff.metrics else ()
    first = ("alpha",) + tuple(m for m in SUMMARY_METRICS if m != "alpha")
    deltas = tuple(f"{m}_delta" for m in first if m in diff.metrics)
    return DIFF_COLUMNS + alpha + deltas + ("status", "reason")


def diff_html(diff) -> str:
    """HTML of a :class:`jaxww.ModelDiff`: the status counts, alpha of both models by layer
    and a table of the overlaps, the metric deltas, status and reason (other statuses
    than success marked red)."""
    n = len(diff.rows)
    head = (f"<p><b>jaxww diff</b>: {n} layer{'s' * (n != 1)}: "
            f"{html.escape(counts(r['status'] for r in diff.rows))}; deltas are b \u2212 a</p>")
    figure = ""
    if "alpha" in diff.metrics:
        points = [(i + (0.15 if s == "b" else -0.15), r[f"alpha_{s}"], s, f"{r['name']} ({s}): alpha {r[f'alpha_{s}']:.3f}")
                  for s in "ab" for i, r in enumerate(diff.rows) if r[f"alpha_{s}"] == r[f"alpha_{s}"]]
        figure = svg.alpha_figure(points, xlabel="row")
    return _box("diff", head, figure, table(diff.rows, diff_columns(diff)))


def diff_text(diff) -> str:
    """``print(diff)``: the status counts, then one line per layer (:func:`diff_columns`)."""
    n = len(diff.rows)
    return (f"jaxww diff: {n} layer{'s' * (n != 1)} ({counts(r['status'] for r in diff.rows)}); "
            f"deltas are b - a (every metric: diff.details)\n" + cells.text_table(diff.rows, diff_columns(diff)))


def treescope_part(obj, path):
    """What ``__treescope_repr__`` returns for a result: a foldable node labelled with its
    ``repr``, holding its HTML (text mode: its ``str``).

    Args:
      obj: a Report, Description or ModelDiff.
      path: the path treescope passes.
    """
    from treescope import rendering_parts as rp

    return rp.build_custom_foldable_tree_node(
        label=rp.text(repr(obj)), path=path, expand_state=rp.ExpandState.EXPANDED,
        # max-content: treescope sizes the frame by the content's height at width 0
        contents=rp.embedded_iframe(f'<div style="width:max-content">{obj._repr_html_()}</div>',
                                    fallback_in_text_mode=rp.text("\n" + str(obj))))


def counts(values) -> str:
    """``"3 success, 1 failed"`` of the values, in first-seen order."""
    seen: dict = {}
    for v in values:
        seen[v] = seen.get(v, 0) + 1
    return ", ".join(f"{n} {v}" for v, n in seen.items())


def page(body: str, title: str) -> str:
    """A standalone HTML page around ``body``."""
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"</head><body>\n{body}\n</body></html>\n")
