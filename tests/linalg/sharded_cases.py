"""The programs of tests/linalg/test_sharded.py, each run in a subprocess on forced host devices.

``python tests/linalg/sharded_cases.py CASE SPEC [N M COUNT]`` prints one JSON line: the same
computation on params sharded over a mesh of every device (``SPEC``: ``rows``, FSDP's
``P("fsdp", None)``, or ``cols``, ``P(None, "fsdp")``) and on the same params on one
device, for the test to compare. ``CASE``: ``regularizers``, ``transforms``,
``reported`` (the issue's case), ``distributed`` (one of two ``jax.distributed``
processes: ``SPEC PROCESS PORT``).
"""

from __future__ import annotations

import json
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

SPECS = {"rows": P("fsdp", None), "cols": P(None, "fsdp")}


def make_params(N, M, count, seed=0):
    """``count`` dense kernels ``(N, M)`` with heavy tails (Student t, 3 degrees of freedom)."""
    rng = np.random.default_rng(seed)
    return {f"layer{i}": {"kernel": (rng.standard_t(3.0, (N, M)) / np.sqrt(N)).astype(np.float32),
                          "bias": np.zeros(M, np.float32)} for i in range(count)}


def placed(params, spec):
    """The params on a mesh of every device (kernels by ``spec``, biases replicated), or on
    one device (``spec`` None)."""
    if spec is None:
        return jax.tree.map(jnp.asarray, params)
    mesh = Mesh(np.array(jax.devices()), ("fsdp",))
    return jax.tree.map(lambda x: jax.device_put(x, NamedSharding(mesh, SPECS[spec] if x.ndim == 2 else P())),
                        params)


def host(tree):
    """Nested lists of floats (NaN as None), from every process's view of replicated arrays."""
    def one(x):
        x = np.asarray(x.addressable_data(0) if isinstance(x, jax.Array) and not x.is_fully_addressable else x)
        return np.where(np.isnan(x), None, x.astype(object)).tolist() if x.ndim else (
            None if np.isnan(x) else float(x))
    return jax.tree.map(one, tree)


def gathers(compiled_text, rows):
    """The result shapes of the all-gathers of a compiled program with an axis of ``rows``
    (a weight matrix gathered along its rows; the Gram matrices and eigenvectors gathered
    between the devices are ``M x M``)."""
    shapes = [tuple(int(d) for d in dims.split(",") if d)
              for dims in re.findall(r"= \w+\[([\d,]*)\][^=]*? all-gather(?:-start)?\(", compiled_text)]
    return [s for s in shapes if rows in s]


def regularizers(spec, N, M, count):
    """tree_alpha, the three penalties and their gradients, jitted."""
    fns = {
        "tree_alpha": jaxww.tree_alpha,
        "alpha_penalty": lambda p: jaxww.alpha_penalty(p, 3.0, tail="fraction"),
        "weighted_alpha_penalty": jaxww.weighted_alpha_penalty,
        "spectral_norm_penalty": jaxww.spectral_norm_penalty,
    }
    out = {}
    for where in (None, spec):
        params = placed(make_params(N, M, count), where)
        res = {name: jax.jit(f)(params) for name, f in fns.items()}
        for name in ("alpha_penalty", "weighted_alpha_penalty", "spectral_norm_penalty"):
            step = jax.jit(jax.grad(fns[name]))
            res[name + "/grad"] = step(params)
            if where is not None:
                out.setdefault("gathers", []).extend(gathers(step.lower(params).compile().as_text(), N))
                out.setdefault("grad_spec", []).append(str(res[name + "/grad"]["layer0"]["kernel"].sharding.spec))
        out["sharded" if where else "one"] = host(res)
    return out


TRANSFORMS = {
    "add_alpha_regularization": lambda: optax.chain(   # sgd: updates linear in the gradient
        jaxww.add_alpha_regularization(1e-2, target=2.0, every=2), optax.sgd(1e-1)),
    "scale_by_alpha": lambda: optax.chain(
        optax.scale_by_adam(), jaxww.scale_by_alpha(every=2), optax.scale(-1e-3)),
    "add_alpha_decayed_weights": lambda: optax.chain(
        optax.scale_by_adam(), jaxww.add_alpha_decayed_weights(1e-1, every=2), optax.scale(-1e-3)),
}


def train(opt, params, steps):
    """``steps`` jitted steps of ``opt`` with a fixed pseudo-gradient; the alphas of every
    step's state and the final params."""
    grads = jax.tree.map(lambda x: 1e-2 * jnp.sin(7.0 * x), params)
    state = opt.init(params)

    @jax.jit
    def step(params, state, grads):
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    alphas = []
    for _ in range(steps):
        params, state = step(params, state, grads)
        alphas.append(next(s for s in state if hasattr(s, "alpha")).alpha)
    return alphas, params


def transforms(spec, N, M, count, steps=4):
    """Each transform in a jitted step, ``every=2``, on sharded and on one-device params."""
    out = {}
    for name, make in TRANSFORMS.items():
        for where in (None, spec):
            alphas, params = train(make(), placed(make_params(N, M, count), where), steps)
            out.setdefault(name, {})["sharded" if where else "one"] = host({"alpha": alphas, "params": params})
    return out


def reported(spec, N, M, count):
    """The issue's case: jit(tree_alpha), and add_alpha_regularization(every=2) before adam
    in a jitted step (three steps)."""
    out = {}
    for where in (None, spec):
        params = placed(make_params(N, M, count), where)
        opt = optax.chain(jaxww.add_alpha_regularization(strength=1e-3, target=3.0, every=2), optax.adam(1e-3))
        alphas, _ = train(opt, params, 3)
        out["sharded" if where else "one"] = host({"tree_alpha": jax.jit(jaxww.tree_alpha)(params),
                                                    "alpha": alphas})
    return out


def analyze(spec, N, M, count):
    """analyze and a Tracker (one tracked step) of sharded params (plus a replicated 2-D
    convolution and a bfloat16 kernel), and analyze of the same params on one device. The streaming path,
    which reads a whole leaf into one place, must not see a sharded leaf: it raises."""
    from jaxww.analysis import streaming

    def refuse(kerns, leaves, *args, **kwargs):
        raise AssertionError(f"streamed (gathered) instead of computed on the mesh: {[k.name for k in kerns]}")

    params = make_params(N, M, count)
    params["conv"] = {"kernel": (np.random.default_rng(1).standard_t(3.0, (3, 3, 16, 32)) / 12).astype(np.float32)}
    # bfloat16 as stored: its Gram matrix with float32 accumulation on the mesh, against the
    # host's float32 copy (exact products: float32 summation error apart)
    params["half"] = {"kernel": make_params(N, M, 1, seed=2)["layer0"]["kernel"].astype(jnp.bfloat16)}
    cols = ("name", "status", "alpha", "D", "xmin", "log_norm", "stable_rank", "matrix_rank", "reason")
    out = {"one": [{c: r[c] for c in cols} for r in jaxww.analyze(placed(params, None)).rows]}
    compute, streaming.compute = streaming.compute, refuse
    try:
        out["sharded"] = [{c: r[c] for c in cols} for r in jaxww.analyze(placed(params, spec)).rows]
        with jaxww.Tracker(every=1) as tracker:
            tracker.update(0, placed(params, spec))
        out["tracker"] = [{c: r[c] for c in cols} for r in tracker.history.rows]
    finally:
        streaming.compute = compute
    return out


def memory(spec, N, M, count):
    """The temporaries per device of ``analyze``'s program for one kernel ``N x M`` sharded by
    ``spec`` (XLA's ``memory_analysis``), in Gram matrices (``M^2`` float32)."""
    import dataclasses

    from jaxww.linalg import sharded

    W = placed(make_params(N, M, 1), spec)["layer0"]["kernel"]
    kern = jaxww.find_kernels(["w"], [W])[0][0]
    compiled = sharded._kernel_spectrum.lower(W, dataclasses.replace(kern, name="", leaf=0), "float32").compile()
    return {"grams": compiled.memory_analysis().temp_size_in_bytes / (M * M * 4), "devices": jax.device_count()}


def lowering(spec, N, M, count):
    """The custom calls of tree_alpha, a penalty's gradient and the two kinds of refresh on
    sharded params, lowered for CPU, CUDA and TPU (from this CPU-only host)."""
    params = placed(make_params(N, M, count), spec)
    reg = optax.chain(jaxww.add_alpha_regularization(1e-3, 3.0, every=1), optax.adam(1e-3))
    tb = optax.chain(optax.scale_by_adam(), jaxww.scale_by_alpha(every=1), optax.scale(-1e-3))
    reg_state, tb_state = reg.init(params), tb.init(params)
    fns = {"tree_alpha": jaxww.tree_alpha,
           "alpha_penalty/grad": jax.grad(lambda p: jaxww.alpha_penalty(p, 3.0)),
           "add_alpha_regularization": lambda p: reg.update(p, reg_state, p),
           "scale_by_alpha": lambda p: tb.update(p, tb_state, p)}
    out = {}
    for name, f in fns.items():
        for platform in ("cpu", "cuda", "tpu"):
            text = jax.jit(f).trace(params).lower(lowering_platforms=(platform,)).as_text()
            calls = set(re.findall(r"custom_call @(\w+)", text)) | set(re.findall(r'call_target_name = "(\w+)"', text))
            out[f"{name}/{platform}"] = sorted(c for c in calls if c not in ("Sharding", "SPMDFullToShardShape",
                                                                             "SPMDShardToFullShape"))
    return out


def distributed(spec, N=256, M=128, count=2):
    """One of two processes of ``jax.distributed`` (two CPU devices each): the regulariser,
    then tree_alpha and analyze, on params sharded over the four devices, and on this
    process's first device."""
    out = {"processes": jax.process_count(), "devices": len(jax.devices())}
    for where in (None, spec):
        params = make_params(N, M, count)
        params = (jax.tree.map(lambda x: jax.device_put(x, jax.local_devices()[0]), params) if where is None
                  else placed(params, where))
        opt = optax.chain(jaxww.add_alpha_regularization(1e-2, target=2.0, every=2), optax.adam(1e-3))
        alphas, params = train(opt, params, 3)
        out["sharded" if where else "one"] = host({
            "alpha": alphas, "tree_alpha": jax.jit(jaxww.tree_alpha)(params),
            "analyze": {r["name"]: r["alpha"] for r in jaxww.analyze(params).rows}})
    return out


if __name__ == "__main__":
    case, spec, *rest = sys.argv[1:]
    if case == "distributed":   # before any computation
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=f"127.0.0.1:{rest[1]}", num_processes=2,
                                   process_id=int(rest[0]))
        rest = []
    import jaxww

    cases = {"regularizers": regularizers, "transforms": transforms, "reported": reported,
             "analyze": analyze, "lowering": lowering, "distributed": distributed, "memory": memory}
    print(json.dumps(cases[case](spec, *[int(a) for a in rest])))
