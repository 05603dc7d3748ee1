"""The device path's eigenvalue step, measured on this machine: which solver for a shape group.

    PYTHONPATH=. python bench/tridiagonal.py            # M = 16 .. 1024, a group of B matrices each
    PYTHONPATH=. python bench/tridiagonal.py --quick    # smaller sizes, fewer repeats

For each size ``M`` a batch of ``B`` symmetric ``M x M`` matrices (Gram matrices of random
``2M x M`` weights, float32) goes through, jitted, warm, the least CPU time of the process over a few runs (wall time
on a shared machine measures the neighbours):

* ``tridiagonal``: ``lax.linalg.tridiagonal`` alone (the Householder reduction, shared
  by the two solvers after it);
* ``bisection``: tridiagonal then ``vmap(eigh_tridiagonal(eigvals_only=True))`` on the
  device (jaxww's device path, :func:`jaxww.linalg.spectra.tridiagonal_eigvals`);
* ``sterf``: tridiagonal then LAPACK ``?sterf`` of ``d``/``e`` on the host, one host call
  for the whole group;
* ``eigvalsh``: ``jnp.linalg.eigvalsh`` of the batch (XLA's own ``?syevd``, with vectors
  on the CPU; ``syevj`` for small matrices on a GPU).

It prints the times and the ratios ``bisection / sterf`` and ``eigvalsh / bisection`` (whole
solvers, the reduction included) side by side,
one row per size: the second crosses 1 where batched ``eigvalsh`` is the faster solver for
small matrices.
"""

from __future__ import annotations

import argparse
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxww.linalg import callbacks, lapack, pool, spectra


def best_ms(fn, *args, repeats=5):
    """The least CPU time of the process over ``repeats`` warm calls, in ms: on a shared
    machine wall time measures the neighbours; CPU time what the call itself costs."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t = time.process_time()
        jax.block_until_ready(fn(*args))
        times.append(time.process_time() - t)
    return 1e3 * min(times)


@jax.jit
def tridiagonal(X):
    return jax.lax.linalg.tridiagonal(X, lower=True)[1:3]


bisection = jax.jit(spectra.tridiagonal_eigvals)


def _sterf_host(d, e):
    """Every eigenvalue of each tridiagonal ``(d, e)`` by LAPACK ``?sterf``, one job per core."""
    out = np.full(d.shape, np.nan, d.dtype)
    step = -(-d.shape[0] // pool.workers())
    pool.run([functools.partial(_sterf_rows, d[a:a + step], e[a:a + step], out[a:a + step])
              for a in range(0, d.shape[0], step)])
    return (out,)


def _sterf_rows(d, e, out):
    for b in range(out.shape[0]):
        lapack.sterf(d[b], e[b], out[b])


@jax.jit
def sterf(X):
    """Tridiagonal on the device, then ``?sterf`` on the host from ``d``/``e``: one host call
    for the group (:func:`jaxww.linalg.callbacks.host_call`)."""
    d, e = tridiagonal(X)
    return callbacks.host_call(_sterf_host, (jax.ShapeDtypeStruct(d.shape, d.dtype),), d, e)[0]
eigvalsh = jax.jit(jnp.linalg.eigvalsh)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    args = parser.parse_args(argv)
    sizes = [(16, 64), (32, 32), (64, 16), (128, 8)] if args.quick else \
        [(16, 256), (32, 128), (48, 64), (64, 64), (96, 32), (128, 32), (256, 8), (512, 4), (1024, 2)]
    repeats = 3 if args.quick else 9
    rng = np.random.default_rng(0)
    print(f"{jax.devices()[0].platform}, float32, CPU ms of the process (best of {repeats}); "
          "T = bisection/sterf, E = eigvalsh/bisection (with the reduction)")
    print(f"{'M':>5} {'B':>4} {'tridiag':>9} {'bisect':>9} {'sterf':>9} {'eigvalsh':>9} {'T':>7} {'E':>7}")
    for M, B in sizes:
        W = rng.standard_normal((B, 2 * M, M)).astype(np.float32)
        X = jnp.asarray(np.einsum("bnm,bnk->bmk", W, W))
        t_tri, t_bis, t_ste, t_evh = (best_ms(f, X, repeats=repeats) for f in (tridiagonal, bisection, sterf, eigvalsh))
        ref = np.linalg.eigvalsh(np.asarray(X, np.float64))
        err = np.abs(np.asarray(sterf(X)) - ref).max() / ref.max()
        print(f"{M:>5} {B:>4} {t_tri:9.2f} {t_bis:9.2f} {t_ste:9.2f} {t_evh:9.2f} {t_bis / t_ste:7.2f} "
              f"{t_evh / t_bis:7.2f}   (sterf rel. err {err:.1e})", flush=True)


if __name__ == "__main__":
    main()
