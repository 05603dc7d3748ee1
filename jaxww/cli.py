"""Command line: ``jaxww demo`` and ``jaxww analyze CHECKPOINT``."""

from __future__ import annotations

import argparse
import sys

from jaxww.io import load_params
from jaxww.report import Report, analyze

_SHOWN = ["name", "layer_type", "N", "M", "rf", "alpha", "D", "xmin", "alpha_weighted",
          "log_spectral_norm", "stable_rank", "status", "warning"]


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
                print(report.skipped.to_string(index=False))
        if csv:
            report.details.to_csv(csv, index=False)
            print(f"\ndetails written to {csv}")
    else:
        for row in report.rows:
            print("  ".join(f"{c}={row[c]}" for c in _SHOWN))
        if csv:
            raise SystemExit("--csv needs pandas: pip install 'jaxww[pandas]'")
    print("\nsummary (means over successful fits):")
    for k, v in report.summary.items():
        print(f"  {k:<18} {v:.4f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="jaxww", description="HTSR analysis of JAX/Flax weights")
    sub = ap.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="analyse the built-in demo model (no download)")
    an = sub.add_parser("analyze", help="analyse a .npz / .safetensors file or Orbax directory")
    an.add_argument("checkpoint")
    for p in (demo, an):
        p.add_argument("--precision", choices=("float32", "float64"), default="float32")
        p.add_argument("--layers", help="regex selecting the layers to analyse")
        p.add_argument("--csv", help="also write the details table to this CSV file")
    args = ap.parse_args(argv)
    if args.command == "demo":
        from jaxww.demo import demo_params

        params = demo_params()
        print("jaxww demo: a freshly initialised Flax model (embedding, attention, MLP, conv)\n")
    else:
        params = load_params(args.checkpoint)
    _print(analyze(params, precision=args.precision, layers=args.layers), args.csv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
