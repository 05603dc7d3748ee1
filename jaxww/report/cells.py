"""How a table shows its values: one format per column, the same in the notebook's HTML
(:mod:`jaxww.report.html`) and in text tables (:func:`text_table`, ``print(diff)``).

* integer columns (every value an ``int``): as integers;
* :data:`jaxww.report.columns.THREE_DECIMALS` (alpha, the log norms, ...): 3 decimals;
* other float columns: one fixed number of decimals per column, from its largest value
  (4 significant digits there, at least one decimal below 1e4), or ``1.234e+05`` for the
  whole column when its largest value is ``>= 1e5`` or ``< 0.01``;
* a ``*_delta`` column: its metric's format, with a sign;
* NaN (a value that could not be computed: the row's status and reason say why): ``–``.
"""

from __future__ import annotations

import math

import numpy as np

from jaxww.report.columns import THREE_DECIMALS

#: What a missing (NaN) number shows.
MISSING = "\u2013"


def is_number(v) -> bool:
    """Whether ``v`` is an int or float (NumPy's too), not a bool."""
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def formatter(column: str, values, like=None):
    """The function that formats every value of one column, or ``None`` when the
    column holds something other than numbers (names, shapes, statuses).

    Args:
      column: the column's name (``*_delta`` columns are signed).
      values: all its values.
      like: the values of the metric a ``*_delta`` column is the difference of (its
        integer-ness decides the delta's format); default ``values``.

    Returns:
      ``fmt(v) -> str``, or ``None``.

    Example:
      >>> f = formatter("spectral_norm", [0.9805, 11.95])
      >>> f(0.9805), f(11.95), f(float("nan"))
      ('0.98', '11.95', '–')
      >>> formatter("alpha_delta", [0.5, -1.25])(0.5)
      '+0.500'
    """
    values = list(values)
    if not values or not all(is_number(v) for v in values):
        return None
    base = column[:-len("_delta")] if column.endswith("_delta") else column
    sign = "+" if base != column else ""
    finite = [float(v) for v in values if math.isfinite(v)]
    if all(_is_int(v) for v in (values if like is None else like) if not _nan(v)):
        spec = f"{sign}.0f"
    elif base in THREE_DECIMALS:
        spec = f"{sign}.3f"
    else:
        spec = sign + _float_spec(max(map(abs, finite), default=0.0))
    return lambda v: MISSING if _nan(v) else format(v, spec)


def _nan(v) -> bool:
    return isinstance(v, (float, np.floating)) and math.isnan(v)


def _float_spec(largest: float) -> str:
    """Fixed decimals giving ``largest`` 4 significant digits (at least one below 1e4), or
    scientific outside [0.01, 1e5)."""
    if largest == 0:
        return ".3f"
    if largest >= 1e5 or largest < 0.01:
        return ".3e"
    return f".{max(1 if largest < 1e4 else 0, 3 - math.floor(math.log10(largest)))}f"


def formatters(rows, columns) -> dict:
    """:func:`formatter` of each column of ``rows`` (``None`` for the non-numeric ones); a
    ``*_delta`` column takes its integer-ness from its ``*_a`` column when there is one."""
    rows = list(rows)
    out = {}
    for c in columns:
        sibling = c[:-len("_delta")] + "_a" if c.endswith("_delta") else None
        like = [r[sibling] for r in rows] if sibling and rows and sibling in rows[0] else None
        out[c] = formatter(c, [r[c] for r in rows], like)
    return out


def text_table(rows, columns, *, widest: int = 40) -> str:
    """A plain-text table: a header line, then one line per row; numbers right-aligned at
    one precision per column (:func:`formatter`), text left-aligned and cut to ``widest``
    characters (with ``…``).

    Example:
      >>> print(text_table([{"name": "a", "k": 3, "alpha": 2.5}, {"name": "bb", "k": 10, "alpha": 11.0}],
      ...                  ("name", "k", "alpha")))
      name   k   alpha
      a      3   2.500
      bb    10  11.000
    """
    rows = list(rows)
    fmts = formatters(rows, columns)
    cells = [[fmts[c](r[c]) if fmts[c] else _cut(str(r[c]), widest) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(line[i]) for line in cells]) for i, c in enumerate(columns)]
    def line(items):
        return "  ".join((s.rjust(w) if fmts[c] else s.ljust(w))
                         for s, w, c in zip(items, widths, columns)).rstrip()
    return "\n".join([line(list(columns))] + [line(x) for x in cells])


def _cut(s: str, widest: int) -> str:
    return s if len(s) <= widest else s[:widest - 1] + "\u2026"
