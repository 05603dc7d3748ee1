"""Checkpoints planned from their headers and streamed within a memory budget; progress."""

import io
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

import jaxww
from jaxww import cli
from jaxww.linalg import placement
from jaxww.analysis import progress
from jaxww.linalg import spectra
from jaxww.analysis import streaming
from jaxww.reading import checkpoints as jio
from jaxww.reading.tensors import read_errors

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _use_device_path(on: bool) -> None:
    """Send CPU devices through the accelerators' code or not (``JAXWW_DEVICE_PATH``, read at
    import into ``placement.DEVICE_PATH``). The flag is read when a program is traced, so
    the compiled programs are dropped when it changes: none may serve the other path."""
    if placement.DEVICE_PATH != on:
        jax.clear_caches()
        placement.DEVICE_PATH = on


@pytest.fixture(params=["host", "device"])
def path(request):
    """Both branches of ``streaming.compute`` on the CPU: LAPACK on the host, and the code an
    accelerator runs (``device_put``, the jitted spectra, the device's out-of-memory)."""
    before = placement.DEVICE_PATH
    _use_device_path(request.param == "device")
    try:
        yield request.param
    finally:
        _use_device_path(before)


@pytest.fixture
def host_path():
    """The host branch of ``streaming.compute`` whatever ``JAXWW_DEVICE_PATH`` says: for the
    tests of the host's budget arithmetic and of LAPACK calls (the device's is tested apart)."""
    before = placement.DEVICE_PATH
    _use_device_path(False)
    try:
        yield
    finally:
        _use_device_path(before)


def _write_sharded(folder, tensors: dict, shards: int):
    """A Hugging Face sharded directory written by the reference writer (safetensors.numpy)."""
    save_file = pytest.importorskip("safetensors.numpy").save_file
    os.makedirs(folder)
    names = list(tensors)
    per = -(-len(names) // shards)
    weight_map = {}
    for s in range(shards):
        shard = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        members = names[s * per:(s + 1) * per]
        save_file({n: tensors[n] for n in members}, os.path.join(folder, shard))
        weight_map.update({n: shard for n in members})
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as fh:
        json.dump({"weight_map": weight_map}, fh)
    return folder


def _llama(layers=3, d=64, F=96, seed=0, dtype=ml_dtypes.bfloat16):
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(layers):
        for name, shape in (("self_attn.q_proj", (d, d)), ("mlp.up_proj", (F, d)), ("mlp.down_proj", (d, F))):
            out[f"model.layers.{i}.{name}.weight"] = rng.standard_t(3, shape).astype(dtype)
        out[f"model.layers.{i}.input_layernorm.weight"] = np.ones(d, dtype)
    return out


def test_path_streamed_equals_loaded_tree(tmp_path):
    """analyze(path) within a small budget gives the report of the tree read whole: same
    rows, same bits (each matrix's spectrum is computed alone on one BLAS thread, whatever
    group it is in)."""
    folder = _write_sharded(str(tmp_path / "hf"), _llama(d=256, F=384), shards=2)
    whole = jaxww.analyze(jaxww.load_params(folder))
    events = []
    streamed = jaxww.analyze(folder, memory_budget="1MiB", progress=events.append)
    assert [r["name"] for r in streamed.rows] == [r["name"] for r in whole.rows]
    for a, b in zip(streamed.rows, whole.rows):
        for c in ("alpha", "D", "xmin", "log_norm", "stable_rank"):
            assert a[c] == b[c], (a["name"], c)
    groups = [e for e in events if e.stage == "spectra"]
    assert len(groups) > 2  # the budget split the model
    assert [e.layers_done for e in groups] == sorted(e.layers_done for e in groups)
    assert events[-1].stage == "done" and events[-1].layers_done == events[-1].layers_total == len(whole.rows)
    assert events[-1].bytes_done == events[-1].bytes_total == sum(
        v.nbytes for k, v in _llama(d=256, F=384).items() if v.ndim == 2)


def test_orbax_checkpoint_streamed(tmp_path):
    ocp = pytest.importorskip("orbax.checkpoint")
    rng = np.random.default_rng(1)
    tree = {"params": {f"Dense_{i}": {"kernel": rng.standard_t(3, (96, 64)).astype(np.float32),
                                      "bias": np.zeros(64, np.float32)} for i in range(3)}}
    ckpt = ocp.StandardCheckpointer()
    ckpt.save(str(tmp_path / "ckpt"), tree)
    ckpt.wait_until_finished()
    lazy = jaxww.open_checkpoint(tmp_path / "ckpt")
    assert isinstance(lazy["params"]["Dense_2"]["kernel"], jaxww.LazyTensor)
    streamed, whole = jaxww.analyze(tmp_path / "ckpt", memory_budget="1MiB"), jaxww.analyze(tree)
    assert [(r["name"], r["alpha"]) for r in streamed.rows] == [(r["name"], r["alpha"]) for r in whole.rows]


def test_describe_reads_headers_only(tmp_path, monkeypatch):
    folder = _write_sharded(str(tmp_path / "hf"), _llama(), shards=2)

    def no_data(self):
        raise AssertionError(f"{self.name} read")

    monkeypatch.setattr(jio.LazyTensor, "read", no_data)
    d = jaxww.describe(folder)
    assert len(d.rows) == 9 and d.rows[0]["name"] == "model.layers.0.self_attn.q_proj.weight"  # index order
    t = jaxww.open_checkpoint(folder)["model.layers.2.mlp.up_proj.weight"]
    assert (t.shape, t.dtype, t.nbytes) == ((96, 64), np.dtype(ml_dtypes.bfloat16), 96 * 64 * 2)


def test_layer_over_budget_is_computed_alone_with_a_note(tmp_path, host_path):
    folder = _write_sharded(str(tmp_path / "hf"), _llama(d=512, F=1024, layers=1), shards=1)
    rep = jaxww.analyze(folder, memory_budget="3MiB")
    notes = {r["name"]: r["reason"] for r in rep.rows}
    # up_proj (1024, 512) bf16: read 1 MiB + float32 copy 2 MiB + Gram 512^2 x 4 B 1 MiB
    assert notes["model.layers.0.mlp.up_proj.weight"] == \
        "computed alone: needs 4.0 MiB, over the memory budget 3.0 MiB"
    # q_proj (512, 512): 0.5 + 1 + 1 MiB fits
    assert notes["model.layers.0.self_attn.q_proj.weight"] == ""
    assert all(r["status"] == "success" for r in rep.rows)


def test_budget_note_names_the_need(host_path):
    w = {"big": {"kernel": np.random.default_rng(0).standard_normal((1024, 512)).astype(np.float32)}}
    row = jaxww.analyze(w, memory_budget="1MiB").rows[0]
    # a float32 leaf in memory needs no copy: only its Gram matrix, 512^2 x 4 B = 1 MiB
    assert row["reason"] == "" and row["status"] == "success"
    row = jaxww.analyze({"big": {"kernel": w["big"]["kernel"].astype(ml_dtypes.bfloat16)}},
                        memory_budget="1MiB").rows[0]
    # bf16 in memory: the float32 copy (2 MiB) + the Gram matrix (1 MiB)
    assert row["reason"] == "computed alone: needs 3.0 MiB, over the memory budget 1.0 MiB"


def test_budget_note_names_the_device_budget_on_an_accelerator(monkeypatch):
    """On an accelerator the groups are planned in the device's own budget, and the note says
    so (a device with 4 MiB free gets a 1 MiB budget, whatever ``memory_budget`` says)."""
    before = placement.DEVICE_PATH
    _use_device_path(True)
    monkeypatch.setattr(streaming, "device_budget", lambda device, budget: 1 << 20)
    try:
        w = {"big": {"kernel": np.random.default_rng(0).standard_normal((1024, 512)).astype(np.float32)}}
        row = jaxww.analyze(w, memory_budget="1GiB").rows[0]
    finally:
        _use_device_path(before)
    assert row["reason"].startswith("computed alone: needs ") and row["reason"].endswith(
        ", over the device budget 1.0 MiB"), row["reason"]


@pytest.mark.parametrize("bad, err", [("lots", ValueError), ("12 parsecs", ValueError), (-5, ValueError),
                                      (100, ValueError), (1.5, TypeError), (True, TypeError)])
def test_bad_memory_budget(bad, err):
    with pytest.raises(err, match="memory_budget"):
        jaxww.analyze({"w": np.eye(16, dtype=np.float32)}, memory_budget=bad)


def test_parse_budget_units():
    from jaxww.analysis.budget import parse_budget

    assert parse_budget("512MiB") == 512 << 20
    assert parse_budget("2 GB") == 2 * 10 ** 9
    assert parse_budget(" 1.5g ") == 3 << 29
    assert 256 << 20 <= parse_budget(None) <= 1 << 30


def test_truncated_shard_refused_before_any_analysis(tmp_path):
    folder = _write_sharded(str(tmp_path / "hf"), _llama(), shards=2)
    shard = os.path.join(folder, "model-00002-of-00002.safetensors")
    with open(shard, "rb") as fh:
        data = fh.read()
    with open(shard, "wb") as fh:
        fh.write(data[:-500])
    events = []
    with pytest.raises(jaxww.CheckpointError, match=r"model-00002-of-00002.safetensors: tensor 'model\..*truncated"):
        jaxww.analyze(folder, progress=events.append)
    assert events == []  # refused while planning: nothing computed, no partial report


def test_unreadable_tensor_mid_stream_names_file_and_tensor(tmp_path, monkeypatch):
    folder = _write_sharded(str(tmp_path / "hf"), _llama(), shards=2)
    real = jio.LazyTensor.read

    def flaky(self):
        if self.name == "model.layers.2.mlp.up_proj.weight":
            with read_errors(f"{self.file}: tensor {self.name!r} cannot be read"):
                raise OSError("Input/output error")
        return real(self)

    monkeypatch.setattr(jio.LazyTensor, "read", flaky)
    with pytest.raises(jaxww.CheckpointError, match=r"00002.safetensors: tensor 'model.layers.2.mlp.up_proj.weight' "
                                                    r"cannot be read \(OSError: Input/output error\)"):
        jaxww.analyze(folder, memory_budget="1MiB")


def test_out_of_memory_names_layer_bytes_and_budget(tmp_path, monkeypatch, capsys, path):
    """Out of memory on either path (the host's MemoryError; the device's RESOURCE_EXHAUSTED,
    synchronous) is the MemoryError naming the layers, the bytes and the budget, and the
    command line's exit 2; any other runtime error of the device is left as it is."""
    folder = _write_sharded(str(tmp_path / "hf"), _llama(), shards=1)
    error = [MemoryError()]

    def fail(*a, **k):
        raise error[0]

    if path == "host":
        monkeypatch.setattr(jaxww.linalg.spectra, "host_spectra", fail)
        where = "host"
    else:
        monkeypatch.setattr(streaming, "_device_spectra", fail)
        error[0] = jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 2.0MiB.")
        where = f"device {jax.devices('cpu')[0]}"
    with pytest.raises(MemoryError, match=rf"out of {where} memory computing the spectra of model.layers.0.self_attn.q_proj"
                                          r".*memory budget 1.0 MiB\); pass a smaller memory_budget="):
        jaxww.analyze(folder, memory_budget="1MiB")
    assert cli.main(["analyze", folder, "--quiet", "--memory-budget", "1MiB"]) == 2
    err = capsys.readouterr().err
    assert f"out of {where} memory" in err and "--memory-budget" in err and "reads a .npz" not in err
    if path == "device":
        error[0] = jax.errors.JaxRuntimeError("INTERNAL: an XLA bug")
        with pytest.raises(jax.errors.JaxRuntimeError, match="INTERNAL: an XLA bug"):
            jaxww.analyze(folder, memory_budget="1MiB")


def test_device_path_streams_like_the_host_path(tmp_path, monkeypatch, h):
    """``JAXWW_DEVICE_PATH=1``: a bf16 checkpoint streamed a group at a time through the
    accelerators' code on the CPU (``device_put``, one jitted program for the groups of the
    same structure, padded buckets, tridiagonal reduction and bisection, the jitted fit)
    gives the host's report to float32 error (conftest ``assert_float32_paths_agree``); a
    NaN layer fails alike. Shapes are chosen for one program: 4 leaves of 208 KiB per group."""
    rng = np.random.default_rng(5)
    tensors = {}
    for i in range(4):   # (out, in) = (192, 128) and (128, 192): one bucket, (192, 128)
        for name, shape in (("mlp.up_proj", (192, 128)), ("mlp.down_proj", (128, 192))):
            tensors[f"model.layers.{i}.{name}.weight"] = rng.standard_t(3, shape).astype(ml_dtypes.bfloat16)
    tensors["model.layers.2.mlp.up_proj.weight"][3, 7] = np.nan
    folder = _write_sharded(str(tmp_path / "hf"), tensors, shards=2)
    before = placement.DEVICE_PATH
    try:
        _use_device_path(False)
        host = jaxww.analyze(folder, memory_budget="1MiB")
        _use_device_path(True)
        structures, buckets, real = [], [0], streaming._device_spectra
        bucketed = spectra._eigvals_buckets

        def dispatch(values, specs, precision):
            structures.append(specs)
            return real(values, specs, precision)

        def traced(*stacks):
            buckets[0] += 1
            return bucketed(*stacks)

        monkeypatch.setattr(streaming, "_device_spectra", dispatch)
        monkeypatch.setattr(spectra, "_eigvals_buckets", traced)
        monkeypatch.setattr(spectra, "host_spectra", None)   # the host's LAPACK is not called
        events = []
        device = jaxww.analyze(folder, memory_budget="1MiB", progress=events.append)
    finally:
        _use_device_path(before)
    assert len(structures) == 2 and len(set(structures)) == 1 and buckets[0] == 1   # one program, traced once
    assert events[-1].layers_done == events[-1].layers_total == 8
    assert [r["status"] for r in device.rows].count("failed") == 1
    h.assert_float32_paths_agree(device.rows, device.evals, host.rows, host.evals)


def test_device_path_flag_and_device_budget(monkeypatch):
    """``JAXWW_DEVICE_PATH`` is 0 or 1, anything else refused by name; an accelerator's budget
    is capped at a quarter of its free memory where it reports it; a CPU device on the
    device path (no memory statistics) keeps the budget."""
    assert [placement._device_path_flag(v) for v in (None, "", "0", "1")] == [False, False, False, True]
    with pytest.raises(ValueError, match="JAXWW_DEVICE_PATH must be 0 or 1"):
        placement._device_path_flag("yes")

    class Accelerator:
        platform = "gpu"

        def __init__(self, stats):
            self.stats = stats

        def memory_stats(self):
            return self.stats

    assert streaming.device_budget(Accelerator({"bytes_limit": 16 << 30, "bytes_in_use": 8 << 30}), 4 << 30) == 2 << 30
    # the device's own memory, not capped by the host budget: an 80 GB GPU gets 20 GB groups
    assert streaming.device_budget(Accelerator({"bytes_limit": 80 << 30}), 1 << 30) == 80 << 30 >> 2
    assert streaming.device_budget(Accelerator(None), 4 << 30) == 4 << 30
    cpu = jax.devices("cpu")[0]
    monkeypatch.setattr(placement, "DEVICE_PATH", False)
    assert not placement.on_device(cpu)
    monkeypatch.setattr(placement, "DEVICE_PATH", True)
    assert placement.on_device(cpu) and streaming.device_budget(cpu, 4 << 30) == 4 << 30


def test_progress_argument_and_text_bar():
    w = {"a": {"kernel": np.eye(32, dtype=np.float32)}}
    with pytest.raises(TypeError, match="progress must be True, False, None or a callable"):
        jaxww.analyze(w, progress="yes")
    buf = io.StringIO()   # not a terminal: plain lines, the first and the last
    try:                  # ipykernel imported (as by the notebook tests) is not a kernel
        import ipykernel  # noqa: F401
    except ImportError:
        pass
    jaxww.analyze(w, progress=progress.TextBar(buf))
    lines = buf.getvalue().splitlines()
    assert lines[0].startswith("jaxww spectra:") and "0/1 layers" in lines[0]
    assert "1/1 layers" in lines[-1] and lines[-1].startswith("jaxww done:") and "\r" not in buf.getvalue()


def test_cli_progress_on_stderr_and_quiet(tmp_path, capfd):
    folder = _write_sharded(str(tmp_path / "hf"), _llama(), shards=2)
    assert cli.main(["analyze", folder]) == 0
    out, err = capfd.readouterr()
    assert "model.layers.2.mlp.up_proj.weight" in out and "9/9 layers" in err and "layers, " not in out
    assert cli.main(["analyze", folder, "--quiet"]) == 0
    assert "layers, " not in capfd.readouterr().err


def test_cli_bad_budget_and_interrupt(tmp_path, capsys, monkeypatch):
    np.savez(tmp_path / "w.npz", w=np.eye(16, dtype=np.float32))
    with pytest.raises(SystemExit) as exit_:
        cli.main(["analyze", str(tmp_path), "--memory-budget", "lots"])
    assert exit_.value.code == 2 and "memory_budget must be bytes" in capsys.readouterr().err

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(jaxww.analysis.analyze, "analyze", interrupted)
    assert cli.main(["analyze", str(tmp_path / "w.npz"), "--quiet"]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "jaxww: interrupted"


_PEAK = """
import resource, sys
import jaxww
rep = jaxww.analyze(sys.argv[1], memory_budget=int(sys.argv[2]), max_N=None, max_evals=None)
assert len(rep.rows) == int(sys.argv[3]) and all(r["status"] == "success" for r in rep.rows), rep.rows
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


@pytest.mark.slow
def test_peak_memory_bounded_by_budget_not_by_checkpoint(tmp_path):
    """A float32 checkpoint of 12 shards x 16 MiB analysed within an 8 MiB budget: the peak
    RSS of the process stays below (baseline + a quarter of the checkpoint), where reading
    it whole would cost the whole checkpoint. The baseline is the same analysis of one
    shard-sized model in another process (imports, compilation, the pool)."""
    rng = np.random.default_rng(0)
    big = {f"model.layers.{i}.mlp.up_proj.weight": rng.standard_normal((4096, 1024), np.float32)
           for i in range(12)}                           # 16 MiB each, 192 MiB in all
    folder = _write_sharded(str(tmp_path / "big"), big, shards=12)
    small = _write_sharded(str(tmp_path / "small"), dict(list(big.items())[:1]), shards=1)
    del big
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))

    def peak(path, n):
        out = subprocess.run([sys.executable, "-c", _PEAK, path, str(8 << 20), str(n)], env=env,
                             capture_output=True, text=True, check=True).stdout
        return int(out.split()[-1])

    base, streamed = peak(small, 1), peak(folder, 12)
    assert streamed - base < 48 << 20, (base, streamed)   # 48 MiB = a quarter of the checkpoint


def _sparse_llama_70b(folder):
    """A Llama-2-70B-shaped sharded checkpoint (transformers ``LlamaForCausalLM`` names;
    ``meta-llama/Llama-2-70b-hf`` config: hidden 8192, intermediate 28672, 80 layers,
    64 heads, 8 kv heads, vocabulary 32000) of bf16 tensors whose data is a hole: each shard
    is a valid header followed by a sparse extent of the right size (no disk used)."""
    d, F, kv, shapes = 8192, 28672, 8 * 128, {"model.embed_tokens.weight": (32000, 8192)}
    for i in range(80):
        p = f"model.layers.{i}."
        shapes.update({p + "self_attn.q_proj.weight": (d, d), p + "self_attn.k_proj.weight": (kv, d),
                       p + "self_attn.v_proj.weight": (kv, d), p + "self_attn.o_proj.weight": (d, d),
                       p + "mlp.gate_proj.weight": (F, d), p + "mlp.up_proj.weight": (F, d),
                       p + "mlp.down_proj.weight": (d, F), p + "input_layernorm.weight": (d,),
                       p + "post_attention_layernorm.weight": (d,)})
    shapes.update({"model.norm.weight": (d,), "lm_head.weight": (32000, d)})
    os.makedirs(folder)
    names, weight_map = list(shapes), {}
    for s, members in enumerate((names[: len(names) // 2], names[len(names) // 2:])):
        shard = f"model-{s + 1:05d}-of-00002.safetensors"
        header, offset = {}, 0
        for n in members:
            size = int(np.prod(shapes[n])) * 2
            header[n] = {"dtype": "BF16", "shape": list(shapes[n]), "data_offsets": [offset, offset + size]}
            offset += size
        raw = json.dumps(header).encode()
        with open(os.path.join(folder, shard), "wb") as fh:
            fh.write(len(raw).to_bytes(8, "little") + raw)
            fh.truncate(8 + len(raw) + offset)
        weight_map.update({n: shard for n in members})
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as fh:
        json.dump({"weight_map": weight_map}, fh)
    return folder


def test_describe_a_70b_checkpoint_from_its_headers(tmp_path, capsys):
    folder = _sparse_llama_70b(str(tmp_path / "llama70b"))
    assert sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder)) > 130e9
    d = jaxww.describe(folder)
    assert len(d.rows) == 80 * 7 + 2 and len(d.skipped_rows) == 80 * 2 + 1
    assert cli.main(["describe", folder]) == 0
    out = capsys.readouterr().out
    assert "562 layers to analyse, 161 leaves skipped" in out and " 28672 " in out


def _structures(kerns, leaves, plan):
    """The distinct group structures of a plan: what an accelerator compiles one program for."""
    sig = {k.leaf: streaming._signature(leaves[k.leaf], [j for j in kerns if j.leaf == k.leaf]) for k in kerns}
    return {tuple(dict.fromkeys(sig[kerns[i].leaf] for i in members)) for members, _ in plan}


def test_groups_by_shape_across_the_model():
    """A Llama-shaped layer set (sorted names: down, gate, up, k, o, q, v of each layer) whose
    groups hold less than a layer: grouped by shape, one structure (one compiled program on
    an accelerator) per distinct leaf signature, where checkpoint order gives more; every
    kernel in exactly one group, each group within the budget."""
    from jaxww.reading.layers import read_layers

    d, F = 64, 176
    tree = {f"model.layers.{i}": {"mlp": {n: np.zeros(s, np.float32) for n, s in
                                          (("down_proj", (d, F)), ("gate_proj", (F, d)), ("up_proj", (F, d)))},
                                  "self_attn": {n: np.zeros((d, d), np.float32) for n in "qkvo"}}
            for i in range(12)}
    kerns, _, leaves, *_ = read_layers(tree, max_evals=None, max_N=None, min_evals=8)
    budget = 5 * d * d * 4      # five attention Grams (in-memory float32: the Gram only)
    plan = streaming.groups(kerns, leaves, budget, "float32")
    in_order = streaming._pack([(list(dict.fromkeys(k.leaf for k in kerns)), 0)],
                               {k.leaf: streaming.need(leaves[k.leaf], [k], "float32") for k in kerns}, budget)
    assert sorted(i for m, _ in plan for i in m) == list(range(len(kerns)))
    assert all(n <= budget for _, n in plan)
    assert len(_structures(kerns, leaves, plan)) == 3    # (d, F), (F, d), (d, d)
    assert len({tuple(streaming._signature(leaves[j], [k for k in kerns if k.leaf == j]) for j in g)
                for g in in_order}) > 3
    assert [streaming._run_size(c, f) for c, f in ((64, 3), (128, 6), (160, 19), (7, 3), (5, 0))] == [2, 4, 16, 3, 1]


class _Exhausted:
    """A device result whose computation ran out of memory: the error surfaces when it is
    waited for or fetched, as an asynchronous ``RESOURCE_EXHAUSTED`` of PJRT does."""

    def _raise(self, *a, **k):
        raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 3.0MiB.")

    block_until_ready = __array__ = _raise


def test_device_out_of_memory_while_running_is_the_memory_error(tmp_path, monkeypatch, capsys):
    """A device's out of memory that surfaces when the results are fetched, not when the group
    is dispatched, is the same MemoryError naming the layers, the bytes and the budget (and
    the command line's exit 2), not a raw JaxRuntimeError."""
    folder = _write_sharded(str(tmp_path / "hf"), _llama(), shards=1)
    monkeypatch.setattr(placement, "DEVICE_PATH", True)   # nothing is compiled: no cache to clear
    monkeypatch.setattr(streaming, "_device_spectra", lambda values, specs, precision: [_Exhausted()] * len(specs))
    where = f"device {jax.devices('cpu')[0]}"
    with pytest.raises(MemoryError, match=rf"out of {where} memory computing the spectra of model.layers.0"
                                          r".*: they need about .*memory budget 1.0 MiB\); pass a smaller memory_budget="):
        jaxww.analyze(folder, memory_budget="1MiB")
    assert cli.main(["analyze", folder, "--quiet", "--memory-budget", "1MiB"]) == 2
    assert f"out of {where} memory" in capsys.readouterr().err


def test_back_pressure_and_progress_count_completed_groups(tmp_path, monkeypatch, h):
    """On the device path at most ``IN_FLIGHT`` groups are dispatched and not yet waited for,
    the progress counts the layers of the groups whose spectra are ready (not those merely
    dispatched), and the report equals the host's to float32 error."""
    rng = np.random.default_rng(3)
    tensors = {f"model.layers.{i}.mlp.up_proj.weight": rng.standard_t(3, (512, 384)).astype(np.float32)
               for i in range(8)}   # on the device 768 KiB + 3 Grams of 576 KiB: one layer a group within 3 MiB
    folder = _write_sharded(str(tmp_path / "hf"), tensors, shards=1)
    before = placement.DEVICE_PATH
    state = {"dispatched": 0, "ready": 0, "max": 0, "done_layers": 0}
    real, ready = streaming._device_spectra, streaming._ready
    checks = []

    def dispatch(values, specs, precision):
        state["dispatched"] += 1
        state["max"] = max(state["max"], state["dispatched"] - state["ready"])
        state.setdefault("layers", []).append(len(specs))
        return real(values, specs, precision)

    def waited(out):
        state["ready"] += 1
        state["done_layers"] += state["layers"][state["ready"] - 1]
        return ready(out)

    def progress(e):
        if e.stage == "spectra":
            checks.append((e.layers_done, state["done_layers"]))

    try:
        _use_device_path(False)
        host = jaxww.analyze(folder, memory_budget="3MiB")
        _use_device_path(True)
        monkeypatch.setattr(streaming, "_device_spectra", dispatch)
        monkeypatch.setattr(streaming, "_ready", waited)
        device = jaxww.analyze(folder, memory_budget="3MiB", progress=progress)
    finally:
        _use_device_path(before)
    assert state["dispatched"] == state["ready"] == 8
    assert state["max"] == streaming.IN_FLIGHT == 2
    assert len(checks) == 9 and all(done == ready for done, ready in checks), checks   # the first: 0 done
    h.assert_float32_paths_agree(device.rows, device.evals, host.rows, host.evals)


def _reader_threads():
    import threading

    return [t for t in threading.enumerate() if t.name == "jaxww-reader"]


def test_reader_prefetches_one_group_ahead_and_stops(tmp_path, monkeypatch, host_path):
    """The next group's tensors are read on a thread while the current group is computed (the
    compute of group g waits until group g + 1 is being read), never two groups ahead; the
    report is the same bits; the thread is gone after the analysis, after an error and after
    a KeyboardInterrupt."""
    import threading

    rng = np.random.default_rng(4)
    # float32 (320, 256) from disk: read 320 KiB + Gram 256 KiB; one a group within 1 MiB,
    # and the next group's read (320 KiB) fits beside it
    np.savez(tmp_path / "w.npz", **{f"layer{i}": rng.standard_normal((320, 256), np.float32) for i in range(5)})
    path = str(tmp_path / "w.npz")
    reads, lock, started = [], threading.Lock(), threading.Condition()
    real_read, real_spectra = jio.LazyTensor.read, spectra.host_spectra
    calls = []

    def read(self):
        with started:
            reads.append(self.name)
            started.notify_all()
        return real_read(self)

    def compute(stacks, precision):
        g = len(calls)
        calls.append(len(reads))
        if g < 4:   # the next group is read while this one computes
            with started:
                assert started.wait_for(lambda: len(reads) >= g + 2, timeout=30), (g, reads)
        assert len(reads) <= g + 2, (g, reads)   # never two groups ahead
        return real_spectra(stacks, precision=precision)

    monkeypatch.setattr(jio.LazyTensor, "read", read)
    monkeypatch.setattr(spectra, "host_spectra", compute)
    streamed = jaxww.analyze(path, memory_budget="1MiB")
    assert len(calls) == 5 and _reader_threads() == []
    whole = jaxww.analyze(dict(np.load(path)))
    assert [(r["name"], r["alpha"], r["D"]) for r in streamed.rows] == [(r["name"], r["alpha"], r["D"]) for r in whole.rows]

    for error in (RuntimeError("boom"), KeyboardInterrupt()):
        def fail(stacks, precision, error=error):
            if len(calls) == 6:
                raise error
            calls.append(None)
            return real_spectra(stacks, precision=precision)

        calls[:] = [None] * 5
        monkeypatch.setattr(spectra, "host_spectra", fail)
        with pytest.raises(type(error)):
            jaxww.analyze(path, memory_budget="1MiB")
        assert _reader_threads() == []


def test_float64_refused_on_tpu():
    """``precision="float64"`` on a TPU is refused before anything is read, saying why and what
    to do; float32 on a TPU and float64 on a CPU are not."""

    class TPU:
        platform, id, process_index = "tpu", 0, 0

        def __str__(self):
            return "TPU_0"

    params = {"w": np.eye(16, dtype=np.float32)}
    with pytest.raises(ValueError, match=r'precision="float64" cannot be computed on TPU_0: XLA has no float64 '
                                         r'eigensolver on TPU. Pass precision="float32", or analyse on the CPU '
                                         r'with devices=jax.devices\("cpu"\)'):
        jaxww.analyze(params, devices=[TPU()], precision="float64")
    placement.check_precision(TPU(), "float32")
    placement.check_precision(jax.devices("cpu")[0], "float64")


def test_device_gram_has_no_padded_rows():
    """The accelerators' Gram matrices are formed at each matrix's own number of rows (44
    here, whose bucket is 48: padded rows would add flops and no eigenvalue); only the
    ``M x M`` Gram matrices are padded, to their bucket, to share one eigensolver call."""
    stacks = [jnp.ones((1, 44, 30), jnp.float32), jnp.ones((2, 30, 50), jnp.float32)]
    jaxpr = jax.make_jaxpr(spectra._eigvals_buckets)(*stacks).jaxpr
    dots = [e for e in jaxpr.eqns if e.primitive.name == "dot_general"]
    assert sorted(tuple(e.invars[0].aval.shape) for e in dots) == [(1, 44, 30), (2, 50, 30)]
    assert spectra.bucket(44) == 48 and spectra.bucket(30) == 32


def test_device_groups_sized_by_the_device_memory(tmp_path, monkeypatch, h):
    """On the device path the groups are planned with the device's need (its copy as stored,
    three bucket-sized Grams per kernel) against a share of the device's free memory
    (``memory_stats``), not the host budget: 1 MiB of host budget and a device with 64 MiB
    free compute the 9 layers in one group, each tensor put on the device as it is read;
    the report equals the host path's."""
    folder = _write_sharded(str(tmp_path / "hf"), _llama(), shards=2)
    cpu = jax.devices("cpu")[0]
    calls, puts, real, real_put = [], [], streaming._device_spectra, jax.device_put

    def dispatch(values, specs, precision):
        calls.append(len(specs))
        return real(values, specs, precision)

    def put(x, *a, **k):
        puts.append(type(x).__name__)
        return real_put(x, *a, **k)

    before = placement.DEVICE_PATH
    try:
        _use_device_path(False)
        host = jaxww.analyze(folder, memory_budget="1MiB")
        _use_device_path(True)
        monkeypatch.setattr(streaming, "_device_spectra", dispatch)
        monkeypatch.setattr(type(cpu), "memory_stats", lambda self: {"bytes_limit": 80 << 20, "bytes_in_use": 16 << 20})
        monkeypatch.setattr(jax, "device_put", put)
        device = jaxww.analyze(folder, memory_budget="1MiB")
    finally:
        _use_device_path(before)
    assert calls == [9]   # one group: 16 MiB (a quarter of 64 MiB free) holds them all
    assert puts.count("ndarray") == 9   # each tensor put on its own as it is read
    h.assert_float32_paths_agree(device.rows, device.evals, host.rows, host.evals)
    kerns = jaxww.find_kernels(*jaxww.flatten_params({"w": np.zeros((96, 64), ml_dtypes.bfloat16)})[:2])[0]
    leaf = np.zeros((96, 64), ml_dtypes.bfloat16)
    # kept as stored (bf16 into float32 spectra): 12 KiB + 3 Grams of 64^2 float32
    assert streaming.device_need(leaf, kerns, "float32") == 96 * 64 * 2 + 3 * 64 * 64 * 4
    assert streaming.need(leaf, kerns, "float32") == 96 * 64 * 4 + 64 * 64 * 4


def test_device_out_of_memory_in_the_fit_is_the_memory_error(tmp_path, monkeypatch, capsys):
    """A device's out of memory in the fit stage, when a group is dispatched or when its
    results are waited for, is the MemoryError naming the layers, the bytes of their
    spectra and the budget (and the command line's exit 2), not a raw JaxRuntimeError; any
    other runtime error is left as it is."""
    from jaxww.analysis import optional as options

    folder = _write_sharded(str(tmp_path / "hf"), _llama(), shards=1)
    real = options.compute
    error = [jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 1.0MiB.")]

    def fail(*a, **k):
        raise error[0]

    def later(*a, **k):   # dispatched fine, out of memory when waited for
        fit, extra = real(*a, **k)
        return fit._replace(D=_Exhausted()), extra

    where = f"device {jax.devices('cpu')[0]}"
    message = (rf"out of {where} memory fitting the spectra of model.layers.0.self_attn.q_proj.weight, "
               r".* and 6 more \(their spectra: .*; memory budget 1.0 MiB\); analyse fewer layers")
    before = placement.DEVICE_PATH
    try:
        _use_device_path(True)
        for fn in (fail, later):
            monkeypatch.setattr(options, "compute", fn)
            with pytest.raises(MemoryError, match=message):
                jaxww.analyze(folder, memory_budget="1MiB")
        assert cli.main(["analyze", folder, "--quiet", "--memory-budget", "1MiB"]) == 2
        assert f"out of {where} memory fitting" in capsys.readouterr().err
        error[0] = jax.errors.JaxRuntimeError("INTERNAL: an XLA bug")
        monkeypatch.setattr(options, "compute", fail)
        with pytest.raises(jax.errors.JaxRuntimeError, match="INTERNAL: an XLA bug"):
            jaxww.analyze(folder, memory_budget="1MiB")
    finally:
        _use_device_path(before)
