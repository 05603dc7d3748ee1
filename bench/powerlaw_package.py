"""``jaxww.fit_power_law`` on Clauset, Shalizi & Newman's continuous data sets (their
Table 6.1), against the table, the ``powerlaw`` package and a plain NumPy scan.

The data sets are the ones the ``powerlaw`` package ships (``powerlaw/reference_data``);
the bench reads them from the installed package and says so when it is absent (it is
not a dependency of jaxww: ``pip install powerlaw``). Nothing is downloaded. Each fit
is timed in this process, side by side: jaxww's first call (it compiles nothing on the
host) and its best of ``--repeat``, ``powerlaw.Fit(x)`` (its defaults: continuous, xmin by the KS distance),
and a plain NumPy scan of the same candidate rule, one run of tied values at a time
(:func:`plain_scan`, best of ``--repeat``). Values are printed in the table's units (``x 10^3`` for
blackouts, cities, quakes and surnames).

    PYTHONPATH=. python bench/powerlaw_package.py [--candidates distinct] [--sets fires,quakes] [--repeat 3]
"""

from __future__ import annotations

import argparse
import importlib.util
import pathlib
import time

import numpy as np

import jaxww

#: Table 6.1 (continuous data): name -> (unit scale, xmin, alpha, n_tail).
TABLE_6_1 = {
    "blackouts": (1e3, 230, 2.3, 59),
    "cities": (1e3, 52.46, 2.37, 580),
    "fires": (1.0, 6324, 2.2, 521),
    "flares": (1.0, 323, 1.79, 1711),
    "quakes": (1e3, 0.794, 1.64, 11697),
    "surnames": (1e3, 111.92, 2.5, 239),
}
#: Work values per block of candidates in :func:`plain_scan`.
BLOCK = 1 << 18
#: jaxww's default threshold: values at or below it are left out (none of these data).
THRESH = 1e-5


def plain_scan(x, candidates="distinct"):
    """The scan in plain NumPy, one run of tied values at a time: ``(xmin, alpha, n_tail)``.

    ``"distinct"``: each distinct value but the largest is a candidate, its tail every
    value ``>=`` it (Clauset's ``plfit.m``); ``"sorted"``: every sorted position but the
    last (weightwatcher's rule; more than 20 values, so no small-sample variant). The KS
    distance counts the empirical CDF by sorted position, the smallest distance wins (the
    first on a tie).
    """
    x = np.sort(x[np.isfinite(x) & (x > THRESH)])
    v, c = np.unique(x, return_counts=True)
    first, n, lv = np.cumsum(c) - c, len(x), np.log(v)
    best = (np.inf, None, None, None)
    for r in range(len(v) - 1):
        d = lv[r:] - lv[r]
        s = float(np.dot(c[r + 1:], d[1:]))
        stop = c[r] if candidates == "sorted" else 1
        for o in range(0, stop, max(1, BLOCK // len(d))):
            i = (first[r] + np.arange(o, min(stop, o + max(1, BLOCK // len(d)))))[:, None]
            n_i = (n - i).astype(float)
            a = 1.0 + n_i / s
            cdf = 1.0 - np.exp((1.0 - a) * d)
            low = np.maximum(first[r:], i) - i
            D = np.maximum(cdf - low / n_i, (first[r:] + c[r:] - 1 - i) / n_i - cdf).max(axis=1)
            j = int(np.argmin(D))
            if D[j] < best[0]:
                best = (D[j], v[r], float(a[j, 0]), int(n_i[j, 0]))
    return best[1:]


def data_dir():
    """The ``powerlaw`` package's reference data, or None (not installed)."""
    spec = importlib.util.find_spec("powerlaw")
    if spec is None or spec.origin is None:
        return None
    path = pathlib.Path(spec.origin).parent / "reference_data"
    return path if path.is_dir() else None


def timed(fn, repeat=1):
    """``fn()`` and its best time over ``repeat`` calls (the first call included)."""
    best = np.inf
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return out, best


def run(name, x, candidates, repeat):
    """One table row: the table's, jaxww's, powerlaw's and the plain scan's fits, timed."""
    import powerlaw

    scale, t_xmin, t_alpha, t_tail = TABLE_6_1[name]
    fit, t_first = timed(lambda: jaxww.fit_power_law(x, candidates=candidates))
    _, t_jaxww = timed(lambda: jaxww.fit_power_law(x, candidates=candidates), repeat)
    t_jaxww = min(t_first, t_jaxww)
    ref, t_plain = timed(lambda: plain_scan(x, candidates), repeat)
    pl, t_pl = timed(lambda: powerlaw.Fit(x, verbose=False))
    same = ref[0] == float(fit.xmin) and ref[2] == int(fit.n_tail) and np.isclose(ref[1], float(fit.alpha))
    cell = lambda xmin, alpha, tail: f"{xmin / scale:.4g} / {alpha:.3f} / {tail}"
    return (f"| {name} | {len(x)} | {len(np.unique(x))} | {t_xmin} / {t_alpha} / {t_tail} "
            f"| {cell(float(fit.xmin), float(fit.alpha), int(fit.n_tail))} "
            f"| {cell(pl.xmin, pl.power_law.alpha, int(pl.n_tail))} "
            f"| {'yes' if same else 'NO'} | {t_first:.3f} | {t_jaxww:.3f} | {t_plain:.3f} | {t_pl:.3f} "
            f"| {t_jaxww / t_plain:.2f} | {t_jaxww / t_pl:.2f} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidates", default="distinct", choices=("distinct", "sorted"))
    ap.add_argument("--sets", default=",".join(TABLE_6_1), help="comma-separated data sets")
    ap.add_argument("--repeat", type=int, default=3, help="calls timed (the best kept)")
    args = ap.parse_args()
    jaxww.fit_power_law   # imported here (jax's import), not inside the first timing
    where = data_dir()
    if where is None:
        print("the powerlaw package is not installed (pip install powerlaw): its data sets "
              "are what this bench fits; nothing to do")
        return
    print(f"data: {where}; jaxww candidates={args.candidates!r}; times in s")
    print(f"best of {args.repeat} calls for jaxww (first call apart) and the plain scan, one for powerlaw")
    print("| data set | n | distinct | Clauset xmin / alpha / n_tail | jaxww | powerlaw | plain = jaxww "
          "| jaxww 1st s | jaxww s | plain NumPy s | powerlaw s | jaxww / plain | jaxww / powerlaw |")
    print("| --- " * 13 + "|")
    for name in args.sets.split(","):
        print(run(name, np.genfromtxt(where / f"{name}.txt"), args.candidates, args.repeat), flush=True)


if __name__ == "__main__":
    main()
