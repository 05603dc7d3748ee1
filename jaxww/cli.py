"""Command line: ``jaxww demo`` and ``jaxww analyze CHECKPOINT``.

A user's mistake (a missing or unreadable checkpoint, an unknown kind, nothing to
analyse, a missing optional package) ends with a short message on stderr and exit
code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys

from jaxww.io import SUPPORTED, CheckpointError, load_params
from jaxww.report import Report, analyze

_SHOWN = ["name", "layer_type", "N", "M", "rf", "alpha", "D", "xmin", "alpha_weighted",
          "log_spectral_norm", "stable_rank", "status", "warning"]
#: How the command line includes the layers the size limits left out.
_INCLUDE = "--max-N none --max-evals none"
_LIMITS = {k: inspect.signature(analyze).parameters[k].default for k in ("max_N", "max_evals")}


def _print(report: Report, csv: str | None) -> None:
    try:
        import pandas as pd
    except ImportError:
        pd = None
    if pd is not None:
        with pd.option_context("display.width", 200, "display.max_columns", 30,
                               "display.max_colwidth", 48, "display.float_format", "{:.3f}".format):
            print(report.details[_SHOWN].to_string(index=False))
            if len(report.skipped_rows):
                print(f"\nskipped {len(report.skipped_rows)} leaves:")
                print(report.skipped[["name", "shape", "dtype", "reason"]].to_string(index=False))
        if csv:
            report.details.to_csv(csv, index=False)
            print(f"\ndetails written to {csv}")
    else:
        for row in report.rows:
            print("  ".join(f"{c}={row[c]}" for c in _SHOWN))
        if csv:
            raise ImportError("--csv needs pandas: pip install 'jaxww[pandas]'")
    print("\n" + report.summary_text(include=_INCLUDE))


def _regex(text: str) -> str:
    try:
        re.compile(text)
    except re.error as err:
        raise argparse.ArgumentTypeError(f"not a regular expression: {err}") from None
    return text


def _limit(text: str) -> int | None:
    if text.lower() == "none":
        return None
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'none', got {text!r}")
    return int(text)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="jaxww", description="HTSR analysis of JAX/Flax weights")
    sub = ap.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="analyse the built-in demo model (no download)")
    an = sub.add_parser("analyze", help="analyse a checkpoint file or directory",
                        description=f"Analyse a checkpoint: {SUPPORTED}.")
    an.add_argument("checkpoint")
    for p in (demo, an):
        p.add_argument("--precision", choices=("float32", "float64"), default="float32")
        p.add_argument("--layers", type=_regex, help="regex selecting the layers to analyse")
        p.add_argument("--max-N", type=_limit, default=_LIMITS["max_N"], dest="max_N",
                       help=f"largest matrix dimension analysed, or 'none' (default {_LIMITS['max_N']})")
        p.add_argument("--max-evals", type=_limit, default=_LIMITS["max_evals"],
                       help=f"most eigenvalues of a layer analysed, or 'none' (default {_LIMITS['max_evals']})")
        p.add_argument("--csv", help="also write the details table to this CSV file")
        p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    return ap


def _run(args) -> int:
    if args.command == "demo":
        from jaxww.demo import demo_params

        params = demo_params()
        print("jaxww demo: a freshly initialised Flax model (embedding, attention, MLP, conv)\n")
    else:
        params = load_params(args.checkpoint)
    try:
        report = analyze(params, precision=args.precision, layers=args.layers,
                         max_N=args.max_N, max_evals=args.max_evals)
    except ValueError as err:  # nothing analysable: say in which checkpoint
        raise ValueError(f"{getattr(args, 'checkpoint', 'demo')}: {err}") from err
    _print(report, args.csv)
    return 0


def main(argv=None) -> int:
    """Run the command line; returns the exit code (0, or 2 for a user's mistake).

    Args:
      argv: the arguments (default ``sys.argv[1:]``).

    Example:
      >>> from jaxww import cli
      >>> cli.main(["analyze", "no/such/file.npz"])  # doctest: +SKIP
      jaxww: error: no checkpoint at 'no/such/file.npz'
      ...
      2
    """
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except (OSError, ValueError, ImportError) as err:
        if args.debug:
            raise
        named = isinstance(err, (OSError, CheckpointError)) and SUPPORTED not in str(err)
        where = f"jaxww analyze reads {SUPPORTED}.\n" if named else ""
        print(f"jaxww: error: {err}\n{where}(--debug shows the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
