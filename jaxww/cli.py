"""Command line: ``jaxww demo``, ``jaxww analyze CHECKPOINT`` and ``jaxww describe CHECKPOINT``.

A checkpoint is planned from its headers and read a group of tensors at a time
(``--memory-budget``), with a progress bar on stderr (``--quiet``: none). JAX's
persistent compilation cache is switched on in the user's cache directory, so later
runs reuse what the first one compiled.

A user's mistake (a missing or unreadable checkpoint, an unknown kind, nothing to
analyse, a missing optional package, too little memory) ends with a short message on
stderr and exit code 2; ``--debug`` shows the traceback instead. Ctrl-C ends a run
with one line and exit code 130.
"""

from __future__ import annotations

import argparse
import inspect
import os
import re
import sys

from jaxww.reading.checkpoints import SUPPORTED, CheckpointError
from jaxww.report import Report, analyze
from jaxww.streaming import parse_budget

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


def _budget(text: str) -> int:
    try:
        return parse_budget(text)
    except (TypeError, ValueError) as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _cache_dir() -> str:
    """Where the command line keeps JAX's compilation cache: ``$JAXWW_CACHE``, else
    ``$XDG_CACHE_HOME/jaxww/xla`` (``~/.cache/jaxww/xla``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.environ.get("JAXWW_CACHE") or os.path.join(base, "jaxww", "xla")


def _persistent_cache() -> None:
    """Switch on JAX's persistent compilation cache for this process (every program, however
    fast it compiled: the command line compiles few and small ones)."""
    import jax

    jax.config.update("jax_compilation_cache_dir", _cache_dir())
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="jaxww", description="HTSR analysis of JAX/Flax weights")
    sub = ap.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="analyse the built-in demo model (no download)")
    an = sub.add_parser("analyze", help="analyse a checkpoint file or directory",
                        description=f"Analyse a checkpoint: {SUPPORTED}.")
    an.add_argument("checkpoint")
    de = sub.add_parser("describe", help="list the layers of a checkpoint (headers only, no spectra)",
                        description=f"List the layers analyze would analyse, from the headers of: {SUPPORTED}.")
    de.add_argument("checkpoint")
    for p in (demo, an, de):
        p.add_argument("--layers", type=_regex, help="regex selecting the layers to analyse")
        p.add_argument("--max-N", type=_limit, default=_LIMITS["max_N"], dest="max_N",
                       help=f"largest matrix dimension analysed, or 'none' (default {_LIMITS['max_N']})")
        p.add_argument("--max-evals", type=_limit, default=_LIMITS["max_evals"],
                       help=f"most eigenvalues of a layer analysed, or 'none' (default {_LIMITS['max_evals']})")
        p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    for p in (demo, an):
        p.add_argument("--precision", choices=("float32", "float64"), default="float32")
        p.add_argument("--memory-budget", type=_budget, default=None, metavar="SIZE",
                       help="memory the weights may take at once, e.g. 2GiB (default: a quarter of "
                            "the available memory, 256 MiB..1 GiB)")
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        p.add_argument("--csv", help="also write the details table to this CSV file")
    return ap


def _describe(args) -> int:
    from jaxww.describe import describe

    d = describe(args.checkpoint, layers=args.layers, max_N=args.max_N, max_evals=args.max_evals)
    for r in d.rows:
        print(f"{r['layer_id']:>5}  {r['name']:<56} {r['layer_type']:<10} {str(r['shape']):<18} "
              f"N={r['N']:<7} M={r['M']:<7} rf={r['rf']:<3} num_evals={r['num_evals']}")
    print(f"\n{len(d.rows)} layers to analyse, {len(d.skipped_rows)} leaves skipped")
    return 0


def _run(args) -> int:
    if args.command == "describe":
        return _describe(args)
    _persistent_cache()
    if args.command == "demo":
        from jaxww.demo import demo_params

        params = demo_params()
        print("jaxww demo: a freshly initialised Flax model (embedding, attention, MLP, conv)\n")
    else:
        params = args.checkpoint    # analyze plans from the headers and streams the tensors
    try:
        report = analyze(params, precision=args.precision, layers=args.layers,
                         max_N=args.max_N, max_evals=args.max_evals,
                         memory_budget=args.memory_budget, progress=not args.quiet)
    except CheckpointError:
        raise
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
    except KeyboardInterrupt:
        print("\njaxww: interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError, ImportError, MemoryError) as err:
        if args.debug:
            raise
        named = isinstance(err, (OSError, CheckpointError)) and SUPPORTED not in str(err)
        where = f"jaxww analyze reads {SUPPORTED}.\n" if named else ""
        print(f"jaxww: error: {err}\n{where}(--debug shows the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
