"""Which exact eigenvalue-only path is fastest on this backend, and how close jaxww is.

    python bench/spectra.py            # 1024, 2048 and a 4096x1024 matrix
    python bench/spectra.py --quick    # smaller sizes

For each size it times (warm, best of a few runs, compilation excluded) every exact
way of getting the eigenvalues of ``W^T W`` from JAX or NumPy/SciPy:

* ``jnp.linalg.svd(compute_uv=False)`` and ``jnp.linalg.eigvalsh(W^T W)`` (computes
  eigenvectors too on CPU);
* ``W^T W -> lax.linalg.tridiagonal -> eigh_tridiagonal(eigvals_only=True)`` (pure
  JAX; jaxww's GPU path);
* SciPy ``?syrk`` + LAPACK ``?syevd(jobz='N')`` called directly (what jaxww's CPU
  path runs inside its host callback);
* NumPy ``svd(compute_uv=False)`` (what weightwatcher runs, in float64), SciPy
  ``eigvalsh(W^T W)``;

then ``jaxww.batched_spectra`` on the same matrix, jitted as ``analyze`` runs it (its
whole path: callback, padding, numerical floor), and prints its time over the fastest path's. It also
prints the compile time of the pure-JAX tridiagonal path, one reason jaxww calls
LAPACK directly on the CPU.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg as sla
from scipy.linalg import blas, lapack

import jaxww


def best_ms(fn, *args, repeats=5):
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return 1e3 * min(times)


def gram(w):
    return w.T @ w


@jax.jit
def tri_bisection(w):
    _, d, e, _ = jax.lax.linalg.tridiagonal(gram(w), lower=True)
    return jax.scipy.linalg.eigh_tridiagonal(d, e, eigvals_only=True)


def syrk_syevd(w):
    """SciPy's wrappers: BLAS ``?syrk``, LAPACK ``?syevd`` without vectors."""
    w = np.asarray(w)
    return lapack.ssyevd(blas.ssyrk(1.0, w.T, trans=0, lower=1), compute_v=0, lower=1)[0]


PATHS = {
    "jnp svd": jax.jit(lambda w: jnp.linalg.svd(w, compute_uv=False)),
    "jnp eigvalsh": jax.jit(lambda w: jnp.linalg.eigvalsh(gram(w))),
    "tridiag+bisect": tri_bisection,
    "syrk+syevd(N)": syrk_syevd,
    "numpy svd f64": lambda w: np.linalg.svd(np.asarray(w, np.float64), compute_uv=False),
    "scipy eigvalsh": lambda w: sla.eigvalsh(gram(np.asarray(w))),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    sizes = [(256, 256), (512, 256)] if args.quick else [(1024, 1024), (2048, 2048), (4096, 1024)]
    rng = np.random.default_rng(0)
    print(f"backend: {jax.default_backend()}")
    header = "".join(f"{p:>16}" for p in PATHS)
    print(f"{'shape':>12}{header}{'jaxww':>10}{'jaxww/best':>12}   (ms, float32 unless noted)")
    for shape in sizes:
        w = jnp.asarray(rng.standard_t(3, size=shape).astype(np.float32))
        times = {name: best_ms(fn, w) for name, fn in PATHS.items()}
        ours = best_ms(jax.jit(lambda x: jaxww.batched_spectra([x[None]])), w)
        ref = jaxww.eigenvalues(w)
        assert np.allclose(np.asarray(tri_bisection(w))[::-1], ref, rtol=1e-3, atol=1e-3 * ref[0])
        best = min(times.values())
        cells = "".join(f"{t:>16.1f}" for t in times.values())
        print(f"{str(shape):>12}{cells}{ours:>10.1f}{ours / best:>11.2f}x", flush=True)
    w = jnp.ones((3, 384, 384), jnp.float32)
    t = time.perf_counter()
    jax.jit(jax.vmap(tri_bisection)).lower(w).compile()
    t_bisect = time.perf_counter() - t
    t = time.perf_counter()
    jax.jit(lambda x: jaxww.batched_spectra([x])).lower(w).compile()
    print(f"compile (3 x 384 x 384): tridiag+bisect {t_bisect:.2f} s, jaxww CPU path {time.perf_counter() - t:.2f} s")


if __name__ == "__main__":
    main()
