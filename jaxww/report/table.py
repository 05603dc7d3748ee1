"""The command line's table of a :class:`jaxww.Report` (``jaxww analyze``, ``--format table``).

Imports nothing heavy: pandas only when the table is drawn (a plain listing without it).
"""

from __future__ import annotations

from jaxww.report.columns import SHOWN, SHOWN_SKIPPED


def table_text(report, include: str) -> str:
    """The rows of :data:`jaxww.report.columns.SHOWN`, the skipped leaves, then the
    summary (:meth:`jaxww.Report.summary_text`).

    Args:
      report: a :class:`jaxww.Report`.
      include: how the caller includes the layers the size limits left out (the command
        line's flags), for the summary's note.

    Returns:
      The text, ending with a newline.

    Example:
      >>> import numpy as np, jaxww
      >>> rep = jaxww.analyze({"w": np.eye(32, dtype=np.float32)}, min_evals=4)
      >>> table_text(rep, "--max-N none").splitlines()[0].split()[:3]
      ['layer_id', 'name', 'layer_type']
    """
    try:
        import pandas as pd
    except ImportError:   # a plain listing without pandas
        lines = ["  ".join(f"{c}={row[c]}" for c in SHOWN) for row in report.rows]
    else:
        with pd.option_context("display.width", 200, "display.max_columns", 30,
                               "display.max_colwidth", 48, "display.float_format", "{:.3f}".format):
            lines = [report.details[list(SHOWN)].to_string(index=False)]
            if len(report.skipped_rows):
                lines += [f"\nskipped {len(report.skipped_rows)} leaves:",
                          report.skipped[list(SHOWN_SKIPPED)].to_string(index=False)]
    return "\n".join(lines + ["", report.summary_text(include=include), ""])


def describe_text(desc) -> str:
    """The command line's listing of a :class:`jaxww.Description` (``jaxww describe``): one
    line per layer, then the counts.

    Example:
      >>> import numpy as np, jaxww
      >>> describe_text(jaxww.describe({"w": np.zeros((64, 32))})).splitlines()[-1]
      '1 layers to analyse, 0 leaves skipped'
    """
    lines = [f"{r['layer_id']:>5}  {r['name']:<56} {r['layer_type']:<10} {str(r['shape']):<18} "
             f"N={r['N']:<7} M={r['M']:<7} rf={r['rf']:<3} num_evals={r['num_evals']}" for r in desc.rows]
    return "\n".join(lines + ["", f"{len(desc.rows)} layers to analyse, {len(desc.skipped_rows)} leaves skipped", ""])
