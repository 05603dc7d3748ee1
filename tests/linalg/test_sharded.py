"""Params sharded over a mesh of forced host devices (issue 24): the transforms, tree_alpha
and the penalties run in a jitted step with the numbers of the same params on one device.

Each case runs in a subprocess (``tests/linalg/sharded_cases.py``) with
``--xla_force_host_platform_device_count`` and a timeout: before the fix ``jax.jit(tree_alpha)``
hung and the regulariser's step aborted after 40 s ("Expected 8 threads to join the
rendezvous, but only 7 of them arrived").

Tolerances: the sharded Gram matrix is a sum of per-device Gram matrices (another order
of float32 additions) and, for the regulariser, its eigenvectors come from ``?syevd`` where
the one-device refresh uses ``?sterf`` and ``?stein``. A backward-stable eigensolver moves
an eigenvalue by ``c M eps lambda_max`` (``M = 256``: ``3e-5 lambda_max``), which moves
alpha and the penalties by about as much relatively: ``1e-4``; eigenvectors move by
``eps lambda_max / gap`` (relative gaps of these spectra ~1e-2) and so do the gradients
built on them: ``1e-3`` of the largest entry.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.slow   # subprocesses on forced host devices: 3-17 s each

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CASES = os.path.join(ROOT, "tests", "linalg", "sharded_cases.py")
VALUES, GRADS = 1e-4, 1e-3


def _start(args, devices):
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    return subprocess.Popen([sys.executable, CASES, *map(str, args)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _result(proc, timeout):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"no result in {timeout} s (the hang of issue 24?); stderr ends:\n{err[-2000:]}")
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def _run(*args, devices=8, timeout=120):
    return _result(_start(args, devices), timeout)


def _close(one, sharded, rtol, where=""):
    """Every leaf of ``sharded`` within ``rtol`` of the largest entry of ``one``'s leaf, NaN at
    the same places."""
    if isinstance(one, dict):
        assert one.keys() == sharded.keys(), where
        for k in one:
            _close(one[k], sharded[k], rtol, f"{where}/{k}")
        return
    if one and isinstance(one, list) and isinstance(one[0], dict):   # one per step
        assert len(one) == len(sharded), where
        for i, (a, b) in enumerate(zip(one, sharded)):
            _close(a, b, rtol, f"{where}[{i}]")
        return
    a, b = (np.asarray(x, float) for x in (one, sharded))   # None (NaN) -> nan
    assert a.shape == b.shape and np.array_equal(np.isnan(a), np.isnan(b)), where
    scale = np.nanmax(np.abs(a)) if np.isfinite(a).any() else 0.0
    np.testing.assert_allclose(np.nan_to_num(b), np.nan_to_num(a), rtol=0, atol=rtol * scale, err_msg=where)


def _grads_and_values(result):
    one, sharded = result["one"], result["sharded"]
    for name in one:
        _close(one[name], sharded[name], GRADS if name.endswith("/grad") else VALUES, name)


@pytest.mark.parametrize("devices, spec, count", [(8, "rows", 3), (8, "cols", 3), (4, "rows", 10)])
def test_tree_alpha_and_penalties_on_sharded_params(devices, spec, count):
    """jit(tree_alpha), the three penalties and their gradients: the one-device numbers; no
    weight matrix is gathered onto a device, and the gradients stay sharded. Ten kernels
    on four devices: two chunks of four and the two left (``jaxww.linalg.sharded.by_chunks``)."""
    out = _run("regularizers", spec, 512, 256, count, devices=devices)
    _grads_and_values(out)
    assert out["gathers"] == []
    assert all("fsdp" in s for s in out["grad_spec"]), out["grad_spec"]


@pytest.mark.parametrize("spec", ["rows", "cols"])
def test_transforms_in_a_jitted_step_on_sharded_params(spec):
    """add_alpha_regularization, scale_by_alpha, add_alpha_decayed_weights (every=2, four
    steps: two refreshes, two held): every step's alphas and the final params are those
    of the same training on one device."""
    out = _run("transforms", spec, 256, 128, 3)
    for name, res in out.items():
        _close(res["one"]["alpha"], res["sharded"]["alpha"], VALUES, name)
        # the regulariser's gradient differs by GRADS of itself, times lr x strength (1e-3)
        # in the params: far below the float32 rounding of the alphas' effect, VALUES
        _close(res["one"]["params"], res["sharded"]["params"], VALUES, name)


@pytest.mark.parametrize("spec", ["rows", "cols"])
def test_analyze_and_tracker_compute_sharded_params_where_they_are(spec):
    """analyze and a Tracker of sharded params: the rows of the same params on one device,
    computed on the mesh (the path that reads a whole leaf into one place refuses them)."""
    out = _run("analyze", spec, 512, 256, 3)
    for rows in (out["sharded"], out["tracker"]):
        for a, b in zip(out["one"], rows, strict=True):
            exact = ("name", "status", "matrix_rank", "reason")
            assert {c: a[c] for c in exact} == {c: b[c] for c in exact}
            _close({c: a[c] for c in a if c not in exact}, {c: b[c] for c in b if c not in exact}, VALUES, a["name"])


@pytest.mark.parametrize("spec", ["rows", "cols"])
def test_analyze_holds_one_gram_per_device_not_one_per_device_of_the_mesh(spec):
    """analyze's program for one sharded kernel holds, besides the shard, a few Gram matrices
    per device (the summed Gram and the solver's copy), not a stack padded to one Gram per
    device of the mesh (``D + 1`` = 9 of them on 8 devices before)."""
    out = _run("memory", spec, 2048, 256, 1)
    assert out["devices"] == 8 and out["grams"] <= 3, out


def test_device_solvers_on_gpu_and_tpu_host_lapack_on_cpu():
    """Lowered from this host for each platform, sharded params: on CPU devices the host
    LAPACK callback that reads XLA's buffers (no XLA LAPACK, whose batched calls hang a
    multi-device CPU program); on CUDA and TPU the devices' own solvers and no callback."""
    out = _run("lowering", "rows", 256, 128, 2)
    for name, calls in out.items():
        platform = name.rsplit("/", 1)[1]
        if platform == "cpu":
            assert calls == ["xla_buffer_python_cpu_callback"], name
        else:
            assert calls and not any("callback" in c for c in calls), (name, calls)
            assert all(c.startswith("cusolver") for c in calls) if platform == "cuda" else calls == ["Eigh"], (name, calls)


@pytest.mark.slow
def test_the_reported_case():
    """Issue 24 as reported: four 1024 x 512 kernels FSDP-sharded over 8 devices,
    jit(tree_alpha) and add_alpha_regularization(every=2) before adam, three steps."""
    out = _run("reported", "rows", 1024, 512, 4)
    _close(out["one"]["tree_alpha"], out["sharded"]["tree_alpha"], VALUES)
    _close(out["one"]["alpha"], out["sharded"]["alpha"], VALUES)


@pytest.mark.slow
def test_regulariser_under_jax_distributed():
    """Two jax.distributed processes of two CPU devices each: params FSDP-sharded over the
    four devices train with add_alpha_regularization, with the alphas of one device; then
    tree_alpha and analyze of the trained params agree too."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [_start(["distributed", "rows", i, port], devices=2) for i in range(2)]
    outs = [_result(p, 180) for p in procs]
    for out in outs:
        assert out["processes"] == 2 and out["devices"] == 4
        _close(out["one"]["alpha"], out["sharded"]["alpha"], VALUES)
        _close(out["one"]["tree_alpha"], out["sharded"]["tree_alpha"], VALUES)
        _close(out["one"]["analyze"], out["sharded"]["analyze"], VALUES)
