"""A :class:`jaxww.Report` as a JSON document, CSV or an HTML page (``Report.to_dict``,
``Report.save``); the command line's ``--format json`` is :func:`document` too.

Nothing here needs pandas: CSV is written with :mod:`csv`, HTML by :mod:`jaxww.report.html`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os

from jaxww import __version__
from jaxww.report import html

#: The suffixes :func:`save` writes.
SUFFIXES = (".csv", ".json", ".html")


def json_value(v):
    """``v`` as JSON takes it: NaN/inf -> None, named tuples (``jaxww.Farms``) -> dicts, tuples
    -> lists, NumPy scalars -> Python.

    Example:
      >>> json_value(float("nan")), json_value((3, 4))
      (None, [3, 4])
    """
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, tuple) and hasattr(v, "_asdict"):
        return json_value(dict(v._asdict()))
    if isinstance(v, tuple):
        return [json_value(x) for x in v]
    if isinstance(v, dict):
        return {str(k): json_value(x) for k, x in v.items()}
    return json_value(v.item()) if hasattr(v, "item") else v


def jsonable(options: dict) -> dict:
    """The entries of ``options`` that JSON can hold (after :func:`json_value`), converted;
    the others (keys, devices, callables, trees) are left out."""
    out = {}
    for k, v in options.items():
        try:
            out[k] = json.loads(json.dumps(json_value(v)))
        except (TypeError, ValueError):
            continue
    return out


def document(report, options: dict | None = None, **extra) -> dict:
    """The report as a JSON-able dict: ``jaxww_version``, ``extra`` (e.g. ``checkpoint``),
    ``options``, ``summary``, ``rows``, ``skipped``, ``limited``; NaN is None.

    Args:
      report: a :class:`jaxww.Report`.
      options: the analyze options to record (default ``report.options``); entries JSON
        cannot hold, and ``progress``, are left out.
      **extra: more top-level entries, after the version.

    Returns:
      A dict that ``json.dumps`` takes (``allow_nan=False`` too).

    Example:
      >>> import numpy as np, jaxww
      >>> doc = jaxww.analyze({"w": np.eye(32, dtype=np.float32)}, min_evals=4).to_dict()
      >>> sorted(doc)
      ['jaxww_version', 'limited', 'options', 'rows', 'skipped', 'summary']
    """
    opts = report.options if options is None else options
    return {"jaxww_version": __version__, **extra,
            "options": jsonable({k: v for k, v in opts.items() if k != "progress"}),
            "summary": json_value(report.summary),
            "rows": [{c: json_value(r[c]) for c in report.columns} for r in report.rows],
            "skipped": [json_value(s._asdict()) for s in report.skipped_rows],
            "limited": list(report.limited)}


def csv_text(rows, columns) -> str:
    """``rows`` (dicts) as CSV with a header of ``columns``; NaN is an empty field (as pandas
    writes it)."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow(["" if isinstance(r[c], float) and math.isnan(r[c]) else r[c] for c in columns])
    return out.getvalue()


def save(report, path) -> str:
    """Write ``report`` to ``path`` by its suffix: ``.csv`` (the rows), ``.json``
    (:func:`document`) or ``.html`` (a page of :func:`jaxww.report.html.report_html`).

    Args:
      report: a :class:`jaxww.Report`.
      path: the file to write (a str or ``os.PathLike``).

    Returns:
      The path written, as a str.

    Raises:
      ValueError: another suffix (the message names those accepted).

    Example:
      >>> report.save("run.json")                 # doctest: +SKIP
      'run.json'
    """
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"save: unknown suffix {suffix!r} of {path!r}; use one of {', '.join(SUFFIXES)}")
    if suffix == ".csv":
        text = csv_text(report.rows, report.columns)
    elif suffix == ".json":
        text = json.dumps(document(report), indent=1) + "\n"
    else:
        text = html.page(html.report_html(report), "jaxww report")
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)
    return path
