"""How many eigenvalues a fit needs before its over-/under-trained verdict means something.

    python bench/verdicts.py                 # 400 matrices per cell, a few minutes on 2 cores
    python bench/verdicts.py --seeds 100     # quicker, noisier

weightwatcher labels a layer "over-trained" when alpha < 2 and "under-trained" when
alpha > 6. For matrices whose law fixes the verdict, this counts how often the fit of
one matrix of ``M`` eigenvalues gets the other verdict, by ``M``:

* Gaussian (i.i.d. N(0, 1), a random, untrained layer): its ESD is Marchenko-Pastur,
  with no power-law tail (a large fitted alpha); "over-trained" is a false verdict.
* Student-t with nu = 1.5 entries (a very heavy tail, alpha of about 1 + nu/2 < 2 in
  the large-matrix limit): "under-trained" is a false verdict, and so is "" (no verdict)
  for most of them.

Matrices are ``Q M x M`` with ``Q`` = 1 and 4 (weightwatcher's ``Q = N / M``), fitted
exactly as ``jaxww.analyze`` does (``jaxww.fit_power_law`` of the eigenvalues of
``W^T W``). The table prints, per ``M``, the share of false verdicts and the 5-95%
range of alpha. ``jaxww.fit.metrics.MIN_VERDICT_EVALS`` is the smallest ``M`` whose false
verdicts stay at or below 5% for both laws and both ``Q`` (docs/conventions.md, section 8).
"""

from __future__ import annotations

import argparse

import numpy as np

SIZES = (4, 6, 8, 9, 10, 12, 16, 20, 24, 32, 48, 64)


def alphas(law: str, M: int, Q: int, seeds: int) -> np.ndarray:
    import jaxww

    rng = np.random.default_rng([M, Q, seeds, law == "gauss"])
    draw = (lambda s: rng.standard_normal(s)) if law == "gauss" else (lambda s: rng.standard_t(1.5, s))
    W = draw((seeds, Q * M, M)).astype(np.float64)
    ev = np.linalg.eigvalsh(np.einsum("bnm,bnk->bmk", W, W))
    return np.asarray(jaxww.fit_power_law(ev).alpha, np.float64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=400)
    args = ap.parse_args()
    print(f"{'M':>4} {'Q':>2}  {'gauss: over-trained':>20} {'alpha 5-95%':>14}   "
          f"{'t(1.5): under/none':>19} {'alpha 5-95%':>14}")
    ok_from = None
    for M in SIZES:
        worst = 0.0
        for Q in (1, 4):
            g, t = alphas("gauss", M, Q, args.seeds), alphas("t", M, Q, args.seeds)
            false_g = np.mean(np.nan_to_num(g, nan=np.inf) < 2)
            false_t = np.mean(np.nan_to_num(t, nan=-np.inf) > 6)
            worst = max(worst, false_g, false_t)
            print(f"{M:>4} {Q:>2}  {false_g:>20.1%} {np.nanpercentile(g, 5):>6.2f}-{np.nanpercentile(g, 95):<7.2f}"
                  f"   {false_t:>8.1%} / {np.mean((t >= 2) & (t <= 6)):>6.1%} "
                  f"{np.nanpercentile(t, 5):>6.2f}-{np.nanpercentile(t, 95):<7.2f}")
        if worst <= 0.05 and ok_from is None:
            ok_from = M
        elif worst > 0.05:
            ok_from = None
    print(f"\nsmallest M from which every false-verdict share is <= 5%: {ok_from}")


if __name__ == "__main__":
    main()
