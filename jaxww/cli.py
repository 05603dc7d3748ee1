"""Command line: ``jaxww demo``, ``jaxww analyze CHECKPOINT`` and ``jaxww describe CHECKPOINT``
(every option: docs/cli.md).

A checkpoint is planned from its headers and read a group of tensors at a time
(``--memory-budget``), with a progress bar on stderr (``--quiet``: none). The report (or
``describe``'s layers) is printed as a table under a header row, the skipped leaves counted
by kind (``--verbose`` lists them), or written as CSV or JSON (``--format``, ``--out``). JAX's
persistent compilation cache is switched on in the user's cache directory, so later
runs reuse what the first one compiled.

A user's mistake (a missing or unreadable checkpoint, an unknown kind, nothing to
analyse, a bad option, an output path that cannot be written, a missing optional
package, too little memory) ends with a one-paragraph message on stderr and exit code
2, before any work where it can be known then; ``--debug`` shows the traceback instead.
Ctrl-C stops a run between two matrices (nothing of jaxww left running) and ends it with
one line and exit code 130. JAX is imported only once the arguments are read
(``jaxww --help`` starts at once).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys

from jaxww import __version__
from jaxww.defaults import BASE_LAYOUTS, ESTIMATOR_NAMES, FITS, FIX_FINGERS, LAYOUTS, MAX_EVALS, MAX_N, MIN_EVALS, SUPPORTED

#: How the command line includes the layers the size limits left out.
_INCLUDE = "--max-N none --max-evals none"


class UsageError(ValueError):
    """A bad option value, found after parsing (exit code 2, as argparse's own)."""


def _layers(text: str):
    """``--layers``: ``0,2,5`` (layer ids) or a regex."""
    if re.fullmatch(r"\s*\d+(\s*,\s*\d+)*\s*", text):
        return [int(t) for t in text.split(",")]
    try:
        re.compile(text)
    except re.error as err:
        raise argparse.ArgumentTypeError(f"not layer ids (0,2,5) nor a regular expression: {err}") from None
    return text


def _limit(text: str) -> int | None:
    if text.lower() == "none":
        return None
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'none', got {text!r}")
    return int(text)


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return int(text)


def _pattern_value(kind: str, convert):
    """``PATTERN=VALUE`` options (``--layouts conv=conv_torch``, ``--scan-axis layers=1``)."""
    def parse(text: str):
        pattern, sep, value = text.rpartition("=")
        try:
            re.compile(pattern)
            return pattern, convert(value)
        except (re.error, ValueError) as err:
            raise argparse.ArgumentTypeError(f"expected PATTERN={kind}, got {text!r} ({err})") from None
    return parse


def _layout(value: str) -> str:
    if value not in LAYOUTS:
        raise ValueError(f"layouts are {', '.join(BASE_LAYOUTS)}, 'stacked_' + one of them, or skip")
    return value


def _budget(text: str) -> int:
    from jaxww.analysis.budget import parse_budget

    try:
        return parse_budget(text)
    except (TypeError, ValueError) as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="jaxww", description="HTSR analysis of JAX/Flax weights")
    _version(ap)
    sub = ap.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="train three small models on digits and show what alpha says "
                                       "(no download; needs scikit-learn)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the three trainings (default 0)")
    an = sub.add_parser("analyze", help="analyse a checkpoint file or directory",
                        description=f"Analyse a checkpoint: {SUPPORTED}.")
    de = sub.add_parser("describe", help="list the layers of a checkpoint (headers only, no spectra)",
                        description=f"List the layers analyze would analyse, from the headers of: {SUPPORTED}.")
    for p in (an, de):
        _reading_options(p)
        p.add_argument("--format", choices=("table", "csv", "json"), default="table",
                       help="table (default), csv (the rows), or json (rows, skipped, options; "
                            "analyze: the summary too)")
        p.add_argument("--out", metavar="FILE", help="write the output there instead of stdout")
        p.add_argument("--verbose", action="store_true", help="list every skipped leaf (default: counted by kind)")
    _analysis_options(an)
    for p in (demo, an, de):
        p.add_argument("--debug", action="store_true", help="show the traceback of an error")
        _version(p)
    return ap


def _version(p) -> None:
    p.add_argument("--version", action="version", version=f"jaxww {__version__}")


def _reading_options(p) -> None:
    """The options choosing which leaves are read, and how (``analyze`` and ``describe``)."""
    p.add_argument("checkpoint")
    p.add_argument("--layers", type=_layers, help="layer ids (0,2,5) or a regex selecting layers by name")
    p.add_argument("--layouts", type=_pattern_value("LAYOUT", _layout), action="append", metavar="PATTERN=LAYOUT",
                   help="how to read leaves whose name matches PATTERN, e.g. conv=conv_torch (repeatable)")
    p.add_argument("--scan-axis", type=_pattern_value("AXIS", int), action="append", metavar="[PATTERN=]AXIS",
                   help="layer axis of scanned stacks: an int, or PATTERN=int per leaf (repeatable)")
    p.add_argument("--min-evals", type=_count, default=MIN_EVALS,
                   help=f"fewest eigenvalues of a layer analysed (default {MIN_EVALS})")
    p.add_argument("--max-N", type=_limit, default=MAX_N, dest="max_N",
                   help=f"largest matrix dimension analysed, or 'none' (default {MAX_N})")
    p.add_argument("--max-evals", type=_limit, default=MAX_EVALS,
                   help=f"most eigenvalues of a layer analysed, or 'none' (default {MAX_EVALS})")


def _analysis_options(an) -> None:
    """The options of ``analyze`` alone: precision, memory, fits, extra columns, output."""
    an.add_argument("--precision", choices=("float32", "float64"), default="float32",
                    help="precision of the spectra and fits (default float32)")
    an.add_argument("--memory-budget", type=_budget, default=None, metavar="SIZE",
                    help="memory the weights may take at once, e.g. 2GiB (default: a quarter of "
                         "the available memory, 256 MiB..1 GiB)")
    an.add_argument("--fix-fingers", choices=FIX_FINGERS, default=None,
                    help="discount the few largest eigenvalues ('fingers'): clip_xmax refits without them "
                         "(adds num_fingers, raw_alpha), xmin_peak starts the tail near the ESD's peak; "
                         "default: neither")
    an.add_argument("--fit", choices=FITS, default="PL",
                    help="PL: power law (default); TPL, E_TPL: truncated power law (adds Lambda, tpl_loglik, "
                         "pl_loglik)")
    an.add_argument("--bootstrap", type=_count, default=0, metavar="B",
                    help="B replicas per layer of the power-law goodness-of-fit test (adds pl_p_value, "
                         "alpha_ci_low, alpha_ci_high; default 0: none)")
    an.add_argument("--mp-fit", action="store_true", help="add the Marchenko-Pastur fit columns")
    an.add_argument("--randomize", action="store_true", help="add the randomised-spectrum columns")
    an.add_argument("--detX", action="store_true", help="add the detX columns")
    an.add_argument("--estimator", choices=ESTIMATOR_NAMES, default="csn",
                    help="how alpha is fitted: csn (weightwatcher's, default), hill_median (TempBalance), "
                         "alpha_mid or alpha_peak (AlphaPruning)")
    an.add_argument("--ERG", action="store_true", help="add the detX columns and num_ERG_spikes, ERG_gap")
    an.add_argument("--vectors", action="store_true",
                    help="add the localization columns of the singular vectors (vec_entropy, loc_ratio, part_ratio)")
    an.add_argument("--no-pool", dest="pool", action="store_false",
                    help="one row per convolution tap instead of one per kernel")
    an.add_argument("--seed", type=int, default=0, help="random seed of --randomize and --bootstrap (default 0)")
    an.add_argument("--plots", metavar="DIR", help="also save one ESD figure per layer and summary.png "
                    "(the model on one page) there (needs matplotlib)")
    an.add_argument("--quiet", action="store_true", help="no progress bar")


def _scan_axis(pairs):
    if not pairs:
        return None
    if len(pairs) == 1 and not pairs[0][0]:
        return pairs[0][1]
    if any(not pattern for pattern, _ in pairs):
        raise UsageError("--scan-axis: a bare AXIS cannot be combined with PATTERN=AXIS")
    return dict(pairs)


def _selection(args) -> dict:
    """The reading options of ``analyze`` / ``describe`` from the arguments."""
    return dict(layers=args.layers, layouts=dict(args.layouts) if args.layouts else None,
                scan_axis=_scan_axis(args.scan_axis), min_evals=args.min_evals, max_N=args.max_N,
                max_evals=args.max_evals)


def _check_outputs(args) -> None:
    """Refuse, before any work, an output that cannot be written."""
    if args.out:
        folder = os.path.dirname(os.path.abspath(args.out))
        if os.path.isdir(args.out):
            raise UsageError(f"--out {args.out}: is a directory; pass a file path")
        if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
            raise UsageError(f"--out {args.out}: no writable directory {folder}")
    plots = getattr(args, "plots", None)
    if plots:
        parent = os.path.dirname(os.path.abspath(plots))
        if os.path.exists(plots) and not os.path.isdir(plots):
            raise UsageError(f"--plots {plots}: exists and is not a directory")
        if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
            raise UsageError(f"--plots {plots}: no writable directory {parent}")


def _write(text: str, rows: int, args) -> None:
    """``text`` to ``--out`` (saying so on stderr) or to stdout."""
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(text)
        print(f"jaxww: {rows} rows written to {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)


def _render(report, args, options: dict) -> str:
    if args.format == "json":
        doc = report.to_dict({k: v for k, v in options.items() if k != "key"}, checkpoint=args.checkpoint)
        return json.dumps(doc, indent=1) + "\n"
    if args.format == "csv":
        from jaxww.report import export
        return export.csv_text(report.rows, report.columns)
    from jaxww.report.table import table_text
    return table_text(report, _INCLUDE, verbose=args.verbose)


def _render_description(desc, args, options: dict) -> str:
    from jaxww.report import table

    if args.format == "json":
        return json.dumps(table.describe_document(desc, options, checkpoint=args.checkpoint), indent=1) + "\n"
    if args.format == "csv":
        from jaxww.report import export
        from jaxww.report.columns import DESCRIBE_COLUMNS
        return export.csv_text(desc.rows, DESCRIBE_COLUMNS)
    return table.describe_text(desc, verbose=args.verbose)


def _describe(args) -> int:
    _check_outputs(args)
    from jaxww.analysis.describe import describe

    options = _selection(args)
    desc = describe(args.checkpoint, **options)
    _write(_render_description(desc, args, options), len(desc.rows), args)
    return 0


def _analyze(args) -> int:
    _check_outputs(args)
    import jax

    from jaxww.analysis.analyze import analyze

    _persistent_cache(jax)
    params = args.checkpoint    # analyze plans from the headers and streams the tensors
    seeded = args.randomize or args.bootstrap > 0
    options = dict(_selection(args), precision=args.precision, memory_budget=args.memory_budget,
                   fix_fingers=args.fix_fingers, fit=args.fit, bootstrap=args.bootstrap,
                   mp_fit=args.mp_fit, randomize=args.randomize, detX=args.detX, ERG=args.ERG,
                   vectors=args.vectors, pool=args.pool, estimator=args.estimator,
                   key=jax.random.key(args.seed) if seeded else None,
                   plot=bool(args.plots), savefig=args.plots, progress=not args.quiet)
    report = analyze(params, **options)
    if args.plots:
        report.plot_summary(os.path.join(args.plots, "summary.png"))
    _write(_render(report, args, options), len(report.rows), args)
    return 0


def _demo(args) -> int:
    from jaxww import demo

    print("jaxww demo: the same MLP trained on scikit-learn's digits three ways, then analysed "
          "(under a minute on 2 cores)\n", file=sys.stderr)
    print(demo.story_text(demo.story(args.seed)))
    return 0


def _cache_dir() -> str:
    """Where the command line keeps JAX's compilation cache: ``$JAXWW_CACHE``, else
    ``$XDG_CACHE_HOME/jaxww/xla`` (``~/.cache/jaxww/xla``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.environ.get("JAXWW_CACHE") or os.path.join(base, "jaxww", "xla")


def _persistent_cache(jax) -> None:
    """Switch on JAX's persistent compilation cache for this process (every program, however
    fast it compiled: the command line compiles few and small ones)."""
    jax.config.update("jax_compilation_cache_dir", _cache_dir())
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def _quiet_libraries() -> None:
    """Orbax (through absl) logs warnings meant for its developers on every restore."""
    logging.getLogger("absl").setLevel(logging.ERROR)


def main(argv=None) -> int:
    """Run the command line; returns the exit code (0, 2 for a user's mistake, 130 on Ctrl-C).

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
    _quiet_libraries()
    try:
        return {"describe": _describe, "analyze": _analyze, "demo": _demo}[args.command](args)
    except KeyboardInterrupt:   # the work stopped, its threads ended, the bar's line closed
        print("jaxww: interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError, TypeError, ImportError, MemoryError) as err:
        if args.debug:
            raise
        print(_message(err, getattr(args, "checkpoint", "demo")), file=sys.stderr)
        return 2


def _message(err: Exception, where: str) -> str:
    """One paragraph: what went wrong (and in which checkpoint) and how to see the
    traceback. The formats read are listed by the reading's own message where the kind of
    checkpoint was not recognised, and only there."""
    from jaxww.reading.checkpoints import CheckpointError

    text = str(err)
    if not isinstance(err, (OSError, CheckpointError, MemoryError, ImportError, UsageError)) and where not in text:
        text = f"{where}: {text}"
    return f"jaxww: error: {text}\n(--debug shows the traceback)"


if __name__ == "__main__":
    sys.exit(main())
