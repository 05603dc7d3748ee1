"""The command line's outputs: the table of a :class:`jaxww.Report` (``jaxww analyze``) and of
a :class:`jaxww.Description` (``jaxww describe``), each with a header row, the skipped leaves
counted by kind (listed with ``verbose``), and ``describe``'s JSON document.

Imports nothing heavy: pandas only when a table is drawn (aligned plain text without it).
"""

from __future__ import annotations

import collections

from jaxww import __version__
from jaxww.report.columns import COLUMNS, DESCRIBE_COLUMNS, SHOWN, SHOWN_SKIPPED
from jaxww.report.export import json_value, jsonable

#: How the concise listing names each kind of skipped leaf
#: (:class:`jaxww.reading.kernels.Skipped`; an unknown kind is shown as it is).
SKIP_KINDS = {
    "not_matrix": "not a matrix (0-D/1-D or empty: biases, norm scales)",
    "not_weight": "not weight matrices (biases, normalisation, depthwise filters)",
    "filter": "excluded by the layers filter",
    "size_limit": "outside the size limits (--min-evals, --max-evals, --max-N)",
    "optimizer": "optimizer state",
    "lora": "LoRA factors (read only as pairs)",
    "override": "skipped by --layouts",
    "dtype": "not floating-point",
    "not_array": "not arrays",
}
#: Kinds whose leaves are listed even without ``verbose``: the layout could not be told
#: apart, and each reason says which option resolves it.
LISTED_KINDS = ("layout",)
#: Most leaves of :data:`LISTED_KINDS` listed without ``verbose``.
MAX_LISTED = 10
#: The columns of ``jaxww describe``'s table (``Q`` is ``N / M``: left to the CSV and JSON).
DESCRIBE_SHOWN = tuple(c for c in DESCRIBE_COLUMNS if c != "Q")


def frame_text(rows, columns) -> str:
    """``rows`` (dicts) as an aligned table of ``columns`` under a header row; floats with
    three decimals (pandas' ``to_string`` when pandas is installed).

    Example:
      >>> print(frame_text([{"a": 1, "b": 0.5}], ("a", "b")))
       a     b
       1 0.500
    """
    try:
        import pandas as pd
    except ImportError:   # a plain table without pandas
        return _plain(rows, columns)
    with pd.option_context("display.width", 200, "display.max_columns", 40,
                           "display.max_colwidth", 60, "display.float_format", "{:.3f}".format):
        return pd.DataFrame([{c: r[c] for c in columns} for r in rows], columns=list(columns)).to_string(index=False)


def _plain(rows, columns) -> str:
    cells = [list(columns)] + [[f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in columns]
                               for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return "\n".join("".join(" " + v.rjust(w) for v, w in zip(row, widths)) for row in cells)


def skipped_text(skipped_rows, verbose: bool = False) -> str:
    """The skipped leaves (their number is in the summary's line): one line counting them by kind (:data:`SKIP_KINDS`), then the
    leaves of :data:`LISTED_KINDS` with their reasons; with ``verbose`` every leaf, as a
    table. "" when none was skipped.

    Example:
      >>> import numpy as np, jaxww
      >>> d = jaxww.describe({"a": {"kernel": np.ones((16, 8)), "bias": np.ones(8)}, "b": np.ones(3)})
      >>> skipped_text(d.skipped_rows)
      'skipped: 2 not a matrix (0-D/1-D or empty: biases, norm scales); --verbose lists them'
    """
    if not skipped_rows:
        return ""
    if verbose:
        return "skipped leaves:\n" + frame_text([s._asdict() for s in skipped_rows], SHOWN_SKIPPED)
    kinds = collections.Counter(s.kind for s in skipped_rows)
    counts = ", ".join(f"{n} {SKIP_KINDS.get(kind, kind)}" for kind, n in kinds.most_common()
                       if kind not in LISTED_KINDS)
    listed = [s for s in skipped_rows if s.kind in LISTED_KINDS]
    lines = [f"skipped: {counts}{'; ' if counts else ''}--verbose lists them"]
    if listed:
        lines.append(f"{len(listed)} whose layout could not be told apart:")
        lines += [f"  {s.name} {tuple(s.shape)}: {s.reason}" for s in listed[:MAX_LISTED]]
        lines += [f"  ... and {len(listed) - MAX_LISTED} more"] if len(listed) > MAX_LISTED else []
    return "\n".join(lines)


def table_text(report, include: str, verbose: bool = False) -> str:
    """The rows of :data:`jaxww.report.columns.SHOWN` and the columns the options added
    (``--mp-fit``, ``--fit TPL``...) under a header, the skipped leaves
    (:func:`skipped_text`), then what ``print(report)`` shows (:meth:`jaxww.Report.text`).

    Args:
      report: a :class:`jaxww.Report`.
      include: how the caller includes the layers the size limits left out (the command
        line's flags), for the summary's note.
      verbose: list every skipped leaf.

    Returns:
      The text, ending with a newline.

    Example:
      >>> import numpy as np, jaxww
      >>> rep = jaxww.analyze({"w": np.eye(32, dtype=np.float32)}, min_evals=4)
      >>> table_text(rep, "--max-N none").splitlines()[0].split()[:3]
      ['layer_id', 'name', 'layer_type']
    """
    shown = SHOWN + tuple(c for c in report.columns if c not in COLUMNS)
    parts = [frame_text(report.rows, shown), skipped_text(report.skipped_rows, verbose), report.text(include)]
    return "\n\n".join(filter(None, parts)) + "\n"


def describe_text(desc, verbose: bool = False) -> str:
    """The command line's listing of a :class:`jaxww.Description` (``jaxww describe``): the
    layers under a header row, the skipped leaves (:func:`skipped_text`), then the counts.

    Example:
      >>> import numpy as np, jaxww
      >>> describe_text(jaxww.describe({"w": np.zeros((64, 32))})).splitlines()[-1]
      '1 layers to analyse, 0 leaves skipped'
    """
    count = f"{len(desc.rows)} layers to analyse, {len(desc.skipped_rows)} leaves skipped"
    parts = [frame_text(desc.rows, DESCRIBE_SHOWN), skipped_text(desc.skipped_rows, verbose), count]
    return "\n\n".join(filter(None, parts)) + "\n"


def describe_document(desc, options: dict, **extra) -> dict:
    """A :class:`jaxww.Description` as a JSON-able dict (``jaxww describe --format json``):
    ``jaxww_version``, ``extra`` (e.g. ``checkpoint``), ``options``, ``rows``, ``skipped``.

    Example:
      >>> import numpy as np, jaxww
      >>> sorted(describe_document(jaxww.describe({"w": np.zeros((64, 32))}), {}))
      ['jaxww_version', 'options', 'rows', 'skipped']
    """
    return {"jaxww_version": __version__, **extra, "options": jsonable(options),
            "rows": [{c: json_value(r[c]) for c in DESCRIBE_COLUMNS} for r in desc.rows],
            "skipped": [json_value(s._asdict()) for s in desc.skipped_rows]}
