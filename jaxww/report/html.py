"""HTML of :class:`jaxww.Report`, :class:`jaxww.Description` and :class:`jaxww.ModelDiff`
(their ``_repr_html_``, shown by Jupyter when one is the last expression of a cell) and
their short ``repr`` lines. No dependency: every value is escaped with :func:`html.escape`.

A table row is marked red when the layer failed (``status`` other than ``"success"``; its
reason is in the row) and amber when it has a warning (over/under-trained).
"""

from __future__ import annotations

import html
import math

from jaxww.report.columns import DESCRIBE_COLUMNS, DIFF_COLUMNS, REPORT_COLUMNS

_STYLE = {"failed": "background:#fdd", "warning": "background:#fff1cc"}


def _cell(v) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.4g}"
    return html.escape(str(v))


def table(rows, columns) -> str:
    """An HTML table of ``rows`` (dicts) with ``columns``; rows marked failed or warning.

    Args:
      rows: dicts with at least ``columns`` (and optionally ``status``, ``warning``).
      columns: the columns shown, in order.

    Returns:
      The ``<table>`` element as a str.

    Example:
      >>> table([{"name": "a<b", "status": "failed"}], ("name",))[:40]
      '<table class="jaxww"><thead><tr><th>name'
    """
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for r in rows:
        mark = ("failed" if r.get("status", "success") != "success"
                else "warning" if r.get("warning") else "")
        attr = f' class="{mark}" style="{_STYLE[mark]}"' if mark else ""
        body.append(f"<tr{attr}>" + "".join(f"<td>{_cell(r[c])}</td>" for c in columns) + "</tr>")
    return (f'<table class="jaxww"><thead><tr>{head}</tr></thead><tbody>'
            + "".join(body) + "</tbody></table>")


def report_html(report) -> str:
    """HTML of a :class:`jaxww.Report`: its summary, the size-limit note, a compact table
    (failed rows red with their reason, warnings amber) and the skipped count.

    Example:
      >>> import numpy as np, jaxww
      >>> rep = jaxww.analyze({"w": np.eye(32, dtype=np.float32)}, min_evals=4)
      >>> "<table" in rep._repr_html_()
      True
    """
    n_fail = sum(r["status"] != "success" for r in report.rows)
    n_warn = sum(bool(r["warning"]) for r in report.rows)
    cols = [c for c in REPORT_COLUMNS if c in report.columns]
    note = report.limits_note()
    first = report.summary_text().splitlines()[0]
    parts = [f"<div class=\"jaxww-report\"><b>jaxww report</b>: {html.escape(first)}",
             f"<p>{n_fail} failed, {n_warn} with warnings; {len(report.skipped_rows)} leaves skipped"
             + (f"<br><b>{html.escape(note)}</b>" if note else "") + "</p>",
             "<p>summary (means over successful fits): "
             + ", ".join(f"{html.escape(k)} {_cell(v)}" for k, v in report.summary.items()) + "</p>",
             table(report.rows, cols), _skipped(report.skipped_rows), "</div>"]
    return "\n".join(parts)


def _skipped(skipped_rows) -> str:
    """The skipped leaves as a folded table ("" when none)."""
    if not skipped_rows:
        return ""
    rows = [s._asdict() for s in skipped_rows]
    return (f"<details><summary>{len(rows)} leaves skipped</summary>"
            + table(rows, tuple(rows[0])) + "</details>")


def description_html(desc) -> str:
    """HTML of a :class:`jaxww.Description`: the count line and its table."""
    return (f"<div class=\"jaxww-describe\"><p><b>{html.escape(repr(desc))}</b></p>"
            + table(desc.rows, DESCRIBE_COLUMNS) + _skipped(desc.skipped_rows) + "</div>")


def diff_html(diff) -> str:
    """HTML of a :class:`jaxww.ModelDiff`: the status counts and a table of the overlaps,
    the metric deltas, status and reason (other statuses than success marked red)."""
    cols = DIFF_COLUMNS + tuple(f"{m}_delta" for m in diff.metrics) + ("status", "reason")
    return (f"<div class=\"jaxww-diff\"><p><b>{html.escape(repr(diff))}</b></p>"
            + table(diff.rows, cols) + "</div>")


def counts(values) -> str:
    """``"3 success, 1 failed"`` of the values, in first-seen order."""
    seen: dict = {}
    for v in values:
        seen[v] = seen.get(v, 0) + 1
    return ", ".join(f"{n} {v}" for v, n in seen.items())


def page(body: str, title: str) -> str:
    """A standalone HTML page around ``body``."""
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            "<style>table.jaxww{border-collapse:collapse;font:12px sans-serif}"
            "table.jaxww td,table.jaxww th{border:1px solid #ccc;padding:2px 6px}</style>"
            f"</head><body>\n{body}\n</body></html>\n")
