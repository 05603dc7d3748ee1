"""Does FARMS remove the aspect-ratio dependence of alpha? Random matrices of shape
``(128 Q) x 128``, Q = 1, 2, 4, 8, 16, Gaussian and Student-t (3 degrees of freedom),
one per seed: the plain alpha and ``alpha_farms`` (32 x 32 windows on an 8 x 8 grid,
every Q seeing the same 64 window positions), each by the plain CSN scan and by
``fix_fingers="xmin_peak"`` (the paper's ``alpha_peak``). Prints, per Q, the mean, the
seed-to-seed standard deviation and the range over the seeds.

Run::

    PYTHONPATH=. python bench/farms_aspect.py             # 20 seeds
    PYTHONPATH=. python bench/farms_aspect.py --seeds 5   # quicker
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import jaxww

QS = (1, 2, 4, 8, 16)
DRAWS = {"gauss": lambda r, s: r.standard_normal(s), "t3": lambda r, s: r.standard_t(3, s)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--rows", type=int, default=128, help="the short side M of every matrix")
    ap.add_argument("--window", type=int, default=32)
    ap.add_argument("--grid", type=int, default=8)
    args = ap.parse_args()
    t0 = time.perf_counter()
    params = {f"{d}/q{Q}/s{s}": draw(np.random.default_rng(s), (args.rows * Q, args.rows)).astype(np.float32)
              for d, draw in DRAWS.items() for Q in QS for s in range(args.seeds)}
    knobs = {"window": args.window, "grid": args.grid}
    for fit in (None, "xmin_peak"):
        rows = jaxww.analyze(params, fix_fingers=fit, farms=knobs, max_N=None).rows
        for d in DRAWS:
            for col in ("alpha", "alpha_farms"):
                cells = []
                for Q in QS:
                    a = np.array([r[col] for r in rows if r["name"].startswith(f"{d}/q{Q}/")])
                    cells.append(f"Q={Q:<2} {a.mean():5.2f} ± {a.std():4.2f} [{a.min():5.2f}, {a.max():5.2f}]")
                print(f"{fit or 'CSN':9} {d:5} {col:11} " + "   ".join(cells))
    print(f"{args.seeds} seeds, {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
