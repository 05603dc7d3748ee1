"""The regulariser's refresh step on params sharded over a mesh against one device: step
time and per-device memory (XLA's ``memory_analysis`` of the compiled step).

Every step is a refresh: ``optax.chain(add_alpha_regularization(1e-3, 3.0, every=1),
optax.adam(1e-3))`` in one jitted ``update``, on ``--count`` kernels ``N x M`` (float32,
Student-t entries), sharded ``P("fsdp", None)`` (rows), ``P(None, "fsdp")`` (columns) or on
one device. On forced host devices the devices share the machine's cores: the times bound
the cost, they are not a speed-up.

Run::

    XLA_FLAGS=--xla_force_host_platform_device_count=8 PYTHONPATH=. python bench/sharded.py
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "linalg"))
from sharded_cases import make_params, placed  # noqa: E402

import jaxww  # noqa: E402


def measure(where, N, M, count, repeats):
    params = placed(make_params(N, M, count), where)
    opt = optax.chain(jaxww.add_alpha_regularization(1e-3, target=3.0, every=1), optax.adam(1e-3))
    state, grads = opt.init(params), jax.tree.map(jnp.zeros_like, params)
    step = jax.jit(lambda p, s, g: opt.update(g, s, p))
    mem = step.lower(params, state, grads).compile().memory_analysis()
    jax.block_until_ready(step(params, state, grads))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(step(params, state, grads))
        times.append(time.perf_counter() - t)
    return np.median(times), mem


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="1024x512")
    ap.add_argument("--count", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    N, M = map(int, args.shape.split("x"))
    print(f"jax {jax.__version__}, {len(jax.devices())} {jax.devices()[0].platform} devices; "
          f"{args.count} kernels {N} x {M}")
    for where in (None, "rows", "cols"):
        t, mem = measure(where, N, M, args.count, args.repeats)
        print(f"{where or 'one device':>10}: refresh step {t * 1e3:7.1f} ms (median of {args.repeats}); per device "
              f"arguments {mem.argument_size_in_bytes / 2**20:6.1f} MiB, temporaries "
              f"{mem.temp_size_in_bytes / 2**20:6.1f} MiB", flush=True)


if __name__ == "__main__":
    main()
