"""Layers split over devices (a Mesh of forced host devices) and over jax.distributed
processes give the report of one device."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_MAKE = """
import numpy as np
from safetensors.numpy import save_file
rng = np.random.default_rng(0)
def t(*s):
    return (rng.standard_t(3.0, s) / np.sqrt(s[0])).astype(np.float32)
tensors = {f"model.layers.{i}.mlp.up_proj.weight": t(256, w) for i, w in enumerate(WIDTHS)}
tensors["model.conv.weight"] = t(32, 16, 3, 3)
bad = t(*BAD); bad[0, 0] = np.nan
tensors["model.bad.weight"] = bad
save_file(tensors, OUT)
"""

#: Prints the rows of analyze(checkpoint) as JSON (NaN as null): one device, or as configured.
_ANALYZE = """
import json, sys, jax, numpy as np
from jaxww.linalg import placement
if len(sys.argv) > 3:   # process i of n, coordinator port
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{sys.argv[4]}",
                               num_processes=int(sys.argv[3]), process_id=int(sys.argv[2]))
import jaxww
devices = {"one": jax.local_devices()[:1], "mesh": jax.sharding.Mesh(np.array(jax.devices()), ("x",)),
           "all": None}[sys.argv[5] if len(sys.argv) > 5 else sys.argv[2]]
events = []
rep = jaxww.analyze(sys.argv[1], devices=devices, memory_budget="1MiB", progress=events.append,
                    layouts={"conv": "conv_torch"})
cols = ("name", "status", "reason", "N", "num_pl_spikes", "alpha", "D", "xmin", "xmax", "sigma", "log_norm",
        "log_spectral_norm", "spectral_norm", "norm", "alpha_weighted", "log_alpha_norm", "stable_rank",
        "matrix_rank", "entropy")
rows = [{c: (None if isinstance(r[c], float) and np.isnan(r[c]) else r[c]) for c in cols} for r in rep.rows]
esd = {n: rep.esd(n).tolist() for n in rep.evals}
print(json.dumps({"rows": rows, "esd": esd, "computed": events[-1].layers_total,
                  "devices": len(jax.devices()), "processes": jax.process_count(),
                  "device_path": placement.DEVICE_PATH}))
"""


def _checkpoint(tmp_path, widths=tuple(64 + 16 * i for i in range(7)), bad=(64, 32)):
    """Seven ``(256, width)`` layers, a 3x3 convolution and a ``bad`` layer holding a NaN."""
    path = str(tmp_path / "model.safetensors")
    code = _MAKE.replace("OUT", repr(path)).replace("WIDTHS", repr(tuple(widths))).replace("BAD", repr(bad))
    subprocess.run([sys.executable, "-c", code], check=True)
    return path


def _run(args, devices=1, device_path=False):
    """The rows of ``_ANALYZE`` in a new process; ``device_path``: ``JAXWW_DEVICE_PATH=1``."""
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", JAXWW_DEVICE_PATH=str(int(device_path)),
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    return subprocess.Popen([sys.executable, "-c", _ANALYZE, *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _result(proc, timeout=300):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def _same_report(a, b):
    """Spectra and fits bit-identical: each matrix's spectrum is computed alone (one BLAS
    thread, the same path) wherever it runs, and the fit of a layer reads its spectrum
    only. The sums of the metrics (``log_norm``, ``stable_rank``) run over spectra padded
    to the length of their fit group, which the split changes, so their summation order
    differs: bound of a sum of ``n`` positive terms, ``n eps`` relative (float32)."""
    assert a["esd"] == b["esd"]
    exact = ("name", "status", "alpha", "D", "xmin", "matrix_rank", "reason")
    for ra, rb in zip(a["rows"], b["rows"], strict=True):
        assert {c: ra[c] for c in exact} == {c: rb[c] for c in exact}
        n = len(a["esd"][ra["name"]]) if ra["name"] in a["esd"] else 0
        for c in ("log_norm", "stable_rank"):
            if ra[c] is None or rb[c] is None:
                assert ra[c] == rb[c]
            else:
                assert ra[c] == pytest.approx(rb[c], rel=n * float(np.finfo(np.float32).eps)), (ra["name"], c)


@pytest.mark.slow
def test_mesh_of_four_devices_and_two_processes_give_the_one_device_report(tmp_path):
    path = _checkpoint(tmp_path)
    one = _result(_run([path, "one"]))
    assert len(one["rows"]) == 9 and [r["status"] for r in one["rows"]].count("failed") == 1
    mesh = _result(_run([path, "mesh"], devices=4))
    assert mesh["devices"] == 4
    _same_report(mesh, one)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [_run([path, i, 2, port, "all"], devices=2) for i in range(2)]
    hosts = [_result(p) for p in procs]
    for h in hosts:
        assert h["processes"] == 2 and h["devices"] == 4
        _same_report(h, one)
    # each process read and computed its share only, together every layer once
    assert all(0 < h["computed"] < 9 for h in hosts) and sum(h["computed"] for h in hosts) == 9


@pytest.mark.slow
def test_device_path_on_a_mesh_and_two_processes_gives_the_host_report(tmp_path, h):
    """``JAXWW_DEVICE_PATH=1``: the accelerators' code (``device_put``, the jitted spectra of
    padded buckets, tridiagonal reduction and bisection, the jitted fit and metrics) on a mesh
    of four forced host devices and in two ``jax.distributed`` processes of two devices
    gives the one-device host report to float32 error (conftest
    ``assert_float32_paths_agree``), the NaN layer failed alike. Two distinct matrix shapes
    only: each costs a compilation of the bisection in every program that holds it, on
    every device."""
    path = _checkpoint(tmp_path, widths=(64,) * 7, bad=(256, 64))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [_run([path, "one"]), _run([path, "mesh"], devices=4, device_path=True)]
    procs += [_run([path, i, 2, port, "all"], devices=2, device_path=True) for i in range(2)]
    one, mesh, *hosts = [_result(p) for p in procs]
    assert not one["device_path"] and mesh["device_path"] and mesh["devices"] == 4
    assert [r["status"] for r in one["rows"]].count("failed") == 1
    for rep in (mesh, *hosts):
        h.assert_float32_paths_agree(rep["rows"], rep["esd"], one["rows"], one["esd"])
    assert all(h_["device_path"] and h_["processes"] == 2 and 0 < h_["computed"] < 9 for h_ in hosts)
    assert sum(h_["computed"] for h_ in hosts) == 9
