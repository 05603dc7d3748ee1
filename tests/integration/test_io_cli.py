"""Loaders, command line and demo model."""

import functools
import hashlib
import json
import os
import subprocess
import sys
import zipfile

import jax.numpy as jnp
import numpy as np
import pytest

import jaxww
from jaxww.reading.checkpoints import SUPPORTED
from jaxww import cli
from jaxww.demo import demo_params

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _weights(seed=0):
    rng = np.random.default_rng(seed)
    return {"enc/dense/kernel": rng.standard_t(3, size=(96, 48)).astype(np.float32),
            "enc/dense/bias": np.zeros(48, np.float32)}


@pytest.mark.slow
def test_npz_roundtrip_gives_same_report(tmp_path):
    w = _weights()
    path = tmp_path / "w.npz"
    np.savez(path, **w)
    loaded = jaxww.load_params(path)
    assert set(loaded) == set(w)
    direct, from_file = jaxww.analyze(w), jaxww.analyze(loaded)
    assert direct.rows[0]["alpha"] == from_file.rows[0]["alpha"]   # the same weights, the same computation
    assert [s.name for s in from_file.skipped_rows] == ["enc/dense/bias"]


def test_safetensors_bf16_is_upcast(tmp_path):
    save_file = pytest.importorskip("safetensors.flax").save_file
    w = jnp.asarray(_weights()["enc/dense/kernel"])
    path = tmp_path / "m.safetensors"
    save_file({"model.layers.0.mlp.weight": w.astype(jnp.bfloat16)}, str(path))
    loaded = jaxww.load_params(path)
    assert loaded["model.layers.0.mlp.weight"].dtype == jnp.bfloat16
    row = jaxww.analyze(loaded).rows[0]
    ref = jaxww.analyze({"w": w.astype(jnp.bfloat16).astype(jnp.float32)}).rows[0]
    assert row["status"] == "success" and row["alpha"] == pytest.approx(ref["alpha"], rel=1e-6)


def test_orbax_directory(tmp_path):
    ocp = pytest.importorskip("orbax.checkpoint")
    tree = {"block": {"kernel": _weights()["enc/dense/kernel"]}}
    ocp.PyTreeCheckpointer().save(os.fspath(tmp_path / "ckpt"), tree)
    loaded = jaxww.load_params(tmp_path / "ckpt")
    np.testing.assert_array_equal(np.asarray(loaded["block"]["kernel"]), tree["block"]["kernel"])


def test_missing_and_unknown_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        jaxww.load_params(tmp_path / "nope.npz")
    bad = tmp_path / "w.ckpt"   # (.pt is a PyTorch state dict now)
    bad.write_bytes(b"")
    with pytest.raises(ValueError, match="unsupported checkpoint"):
        jaxww.load_params(bad)


@pytest.mark.slow
def test_demo_model_has_every_layer_kind():
    report = jaxww.analyze(demo_params())
    kinds = {r["layer_type"] for r in report.rows}
    assert kinds == {"embedding", "attention", "dense", "conv2d"}
    assert all(r["status"] == "success" for r in report.rows)
    # Attention output (H, D, out) is read as one (H*D, out) matrix.
    out = next(r for r in report.rows if r["name"].endswith("out/kernel"))
    assert (out["N"], out["M"]) == (128, 128)


@pytest.mark.slow
def test_cli_analyze_file_with_layer_filter(capsys, tmp_path):
    path = tmp_path / "w.npz"
    w = _weights()
    w["head/kernel"] = np.random.default_rng(1).standard_normal((64, 32)).astype(np.float32)
    np.savez(path, **w)
    assert cli.main(["analyze", str(path), "--layers", "^head"]) == 0
    out = capsys.readouterr().out
    assert "head/kernel" in out
    assert "excluded by the layers filter" in out


# --- checkpoints as they ship ------------------------------------------------------------

def _tensors(seed=0):
    """Three LLM-style tensors (Hugging Face names) for sharded checkpoints."""
    rng = np.random.default_rng(seed)
    return {"model.layers.0.mlp.up_proj.weight": rng.standard_normal((64, 32)).astype(np.float32),
            "model.layers.0.mlp.down_proj.weight": rng.standard_normal((32, 64)).astype(np.float32),
            "model.norm.weight": np.ones(32, np.float32)}


def _sharded(folder, tensors):
    """A Hugging Face sharded directory: ``model-0000k-of-00002.safetensors`` + index."""
    save_file = pytest.importorskip("safetensors.numpy").save_file
    folder.mkdir()
    names = list(tensors)
    shards = {"model-00001-of-00002.safetensors": names[:1], "model-00002-of-00002.safetensors": names[1:]}
    for shard, members in shards.items():
        save_file({n: tensors[n] for n in members}, str(folder / shard))
    weight_map = {n: s for s, members in shards.items() for n in members}
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    (folder / "config.json").write_text("{}")
    return folder


def _digests(folder):
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_sharded_safetensors_directory_and_index(tmp_path):
    w = _tensors()
    folder = _sharded(tmp_path / "hf", w)
    before = _digests(folder)
    for path in (folder, folder / "model.safetensors.index.json"):
        loaded = jaxww.load_params(path)
        assert list(loaded) == list(w)  # the index's order and names
        for k in w:
            np.testing.assert_array_equal(np.asarray(loaded[k]), w[k])
    assert _digests(folder) == before  # nothing written


def test_single_file_safetensors_directory(tmp_path):
    save_file = pytest.importorskip("safetensors.numpy").save_file
    (tmp_path / "hf").mkdir()
    save_file(_tensors(), str(tmp_path / "hf" / "model.safetensors"))
    assert set(jaxww.load_params(tmp_path / "hf")) == set(_tensors())


def test_truncated_shard_names_file_and_tensor(tmp_path):
    folder = _sharded(tmp_path / "hf", _tensors())
    shard = folder / "model-00002-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:-100])  # the last tensor loses its tail
    with pytest.raises(jaxww.CheckpointError, match=r"model-00002-of-00002.safetensors.*truncated") as err:
        jaxww.load_params(folder)
    assert "tensor 'model." in str(err.value)


def test_index_naming_a_missing_shard_or_tensor(tmp_path):
    folder = _sharded(tmp_path / "hf", _tensors())
    (folder / "model-00001-of-00002.safetensors").unlink()
    with pytest.raises(jaxww.CheckpointError,
                       match=r"shard 'model-00001-of-00002.safetensors' is missing.*up_proj"):
        jaxww.load_params(folder)
    index = folder / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"lm_head.weight": "model-00002-of-00002.safetensors"}}))
    with pytest.raises(jaxww.CheckpointError, match=r"model-00002-of-00002.safetensors: has no tensor 'lm_head.weight'"):
        jaxww.load_params(folder)
    index.write_text("{not json")
    with pytest.raises(jaxww.CheckpointError, match="not a safetensors index"):
        jaxww.load_params(folder)


def test_flax_msgpack_keeps_names_and_bf16(tmp_path):
    from flax import serialization

    state = {"params": {"Dense_0": {"kernel": jnp.asarray(_weights()["enc/dense/kernel"], jnp.bfloat16)}}}
    path = tmp_path / "flax_model.msgpack"
    path.write_bytes(serialization.to_bytes(state))
    loaded = jaxww.load_params(path)
    kernel = loaded["params"]["Dense_0"]["kernel"]
    assert kernel.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(kernel, np.float32), np.asarray(state["params"]["Dense_0"]["kernel"], np.float32))
    assert [r["name"] for r in jaxww.analyze(loaded).rows] == ["params/Dense_0/kernel"]


def test_corrupt_msgpack_and_npz(tmp_path):
    from flax import serialization

    data = serialization.to_bytes({"w": np.ones((8, 8), np.float32)})
    bad = tmp_path / "cut.msgpack"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(jaxww.CheckpointError, match="cut.msgpack: not a Flax msgpack file"):
        jaxww.load_params(bad)
    npz = tmp_path / "w.npz"
    np.savez(npz, **{"enc/kernel": np.arange(64, dtype=np.float32).reshape(8, 8)})
    raw = bytearray(npz.read_bytes())
    raw[raw.index(b"\x93NUMPY") + 200] ^= 0xFF  # one byte of the array's data: CRC mismatch
    npz.write_bytes(bytes(raw))
    with pytest.raises(jaxww.CheckpointError, match=r"w.npz: array 'enc/kernel' cannot be read"):
        jaxww.load_params(npz)
    cut = tmp_path / "cut.npz"
    cut.write_bytes(bytes(raw[:40]))
    with pytest.raises(jaxww.CheckpointError, match="cut.npz: not a readable .npz file"):
        jaxww.load_params(cut)


def test_empty_checkpoints_and_unknown_directories(tmp_path):
    np.savez(tmp_path / "empty.npz")
    with pytest.raises(jaxww.CheckpointError, match="empty.npz: the checkpoint holds no tensors"):
        jaxww.load_params(tmp_path / "empty.npz")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "notes.txt").write_text("hi")
    with pytest.raises(jaxww.CheckpointError, match="no checkpoint in it"):
        jaxww.load_params(tmp_path / "d")
    save_file = pytest.importorskip("safetensors.numpy").save_file
    for name in ("a.safetensors", "b.safetensors"):
        save_file({"w": np.ones((4, 4), np.float32)}, str(tmp_path / "d" / name))
    with pytest.raises(jaxww.CheckpointError, match=r"several .safetensors files and no index \(a.safetensors, b.safetensors\)"):
        jaxww.load_params(tmp_path / "d")


def _keras_h5(target):
    """A Keras 3 ``save_weights`` file: ``layers/<layer>/vars/<i>`` datasets, the layer's
    name as an attribute, and an ``optimizer`` group holding Adam moments of the same
    shapes (layout of ``keras/src/saving/saving_lib.py``, ``H5IOStore``)."""
    h5py = pytest.importorskip("h5py", reason="Keras HDF5 files need h5py")
    rng = np.random.default_rng(3)
    with h5py.File(target, "w") as f:
        f.create_group("vars").attrs["name"] = "functional"
        f.create_dataset("layers/embedding/vars/0", data=rng.standard_normal((100, 16)).astype(np.float32))
        f.create_dataset("layers/dense/vars/0", data=rng.standard_normal((16, 48)).astype(np.float32))
        f.create_dataset("layers/dense/vars/1", data=np.zeros(48, np.float32))
        f["layers/dense/vars"].attrs["name"] = "fc"
        f.create_dataset("optimizer/vars/0", data=np.int64(3))
        f.create_dataset("optimizer/vars/1", data=np.zeros((16, 48), np.float32))


@pytest.mark.slow
def test_keras_weights_h5_and_keras_archive(tmp_path):
    h5 = tmp_path / "model.weights.h5"
    _keras_h5(h5)
    loaded = jaxww.load_params(h5)
    assert list(loaded) == ["layers/dense/vars/0", "layers/dense/vars/1", "layers/embedding/vars/0"]
    rows = {r["name"]: r["layer_type"] for r in jaxww.analyze(loaded).rows}
    assert rows == {"layers/dense/vars/0": "dense", "layers/embedding/vars/0": "embedding"}
    archive = tmp_path / "model.keras"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("config.json", "{}")
        z.write(h5, "model.weights.h5")
    from_archive = jaxww.load_params(archive)
    for k in loaded:
        np.testing.assert_array_equal(from_archive[k], loaded[k])
    h5.write_bytes(h5.read_bytes()[:300])
    with pytest.raises(jaxww.CheckpointError, match="model.weights.h5: not a readable HDF5 file"):
        jaxww.load_params(h5)


@pytest.mark.slow
def test_orbax_layouts_keep_names(tmp_path):
    ocp = pytest.importorskip("orbax.checkpoint")
    tree = {"params": {"Dense_0": {"kernel": _weights()["enc/dense/kernel"]}}}
    ckpt = ocp.StandardCheckpointer()
    ckpt.save(os.fspath(tmp_path / "std"), tree)
    ckpt.wait_until_finished()
    with ocp.CheckpointManager(os.fspath(tmp_path / "run")) as manager:
        for step in (1, 2):
            manager.save(step, args=ocp.args.StandardSave(tree))
    with ocp.CheckpointManager(os.fspath(tmp_path / "items")) as manager:  # a Composite of two items
        manager.save(0, args=ocp.args.Composite(state=ocp.args.StandardSave(tree),
                                                ema=ocp.args.StandardSave(tree),
                                                meta=ocp.args.JsonSave({"lr": 0.1})))
    items = jaxww.load_params(tmp_path / "items" / "0")
    assert set(items) == {"ema", "state"}  # the JSON item holds no arrays
    assert [r["name"] for r in jaxww.analyze(items).rows] == ["ema/params/Dense_0/kernel",
                                                              "state/params/Dense_0/kernel"]
    for path in (tmp_path / "std", tmp_path / "run" / "2", tmp_path / "run" / "2" / "default"):
        loaded = jaxww.load_params(path)
        np.testing.assert_array_equal(np.asarray(loaded["params"]["Dense_0"]["kernel"]),
                                      tree["params"]["Dense_0"]["kernel"])
    with pytest.raises(jaxww.CheckpointError, match=r"CheckpointManager directory with steps 1, 2; pass one step"):
        jaxww.load_params(tmp_path / "run")


# --- size limits ---------------------------------------------------------------------------

def _llm_like():
    """A vocabulary above max_N (50000), a dense layer and a head too small to fit (M = 2)."""
    rng = np.random.default_rng(5)
    return {"embed/embedding": rng.standard_normal((50001, 8)).astype(np.float32),
            "dense/kernel": rng.standard_normal((96, 48)).astype(np.float32),
            "head/kernel": rng.standard_normal((48, 2)).astype(np.float32)}


@pytest.mark.slow
def test_size_limits_are_reported_and_none_lifts_them():
    w = _llm_like()
    report = jaxww.analyze(w)
    assert report.limited == ("embed/embedding",)  # the 2-column head is below min_evals: not counted
    assert {s.name: s.kind for s in report.skipped_rows} == {"embed/embedding": "size_limit",
                                                             "head/kernel": "size_limit"}
    note = ("1 layer left out by size limits (max_N=50000, max_evals=15000); "
            "pass max_N=None, max_evals=None to include it")
    assert report.limits_note() == note and note in str(report)   # print(report) then lists warnings
    assert set(report.summary) == set(jaxww.SUMMARY_METRICS)
    full = jaxww.analyze(w, max_N=None, max_evals=None)
    assert [r["name"] for r in full.rows] == ["embed/embedding", "dense/kernel"]  # the model's order
    assert full.limited == () and full.limits_note() == ""
    # The embedding's spectrum is the one NumPy reads from the same tensor.
    ref = np.linalg.eigvalsh(w["embed/embedding"].astype(np.float64).T @ w["embed/embedding"])
    np.testing.assert_allclose(full.esd("embed/embedding"), ref, rtol=1e-4)


@pytest.mark.slow
def test_cli_says_how_to_include_limited_layers(capsys, tmp_path):
    path = tmp_path / "llm.npz"
    np.savez(path, **_llm_like())
    assert cli.main(["analyze", str(path)]) == 0
    out = capsys.readouterr().out
    assert "1 layer left out by size limits (max_N=50000, max_evals=15000); " \
           "pass --max-N none --max-evals none to include it" in out
    assert cli.main(["analyze", str(path), "--max-N", "none"]) == 0
    out = capsys.readouterr().out
    assert "left out by size limits" not in out and "2 layers analysed" in out


# --- the command line never shows a traceback for a user's mistake ------------------------

def _bad_inputs(tmp_path):
    (tmp_path / "w.ckpt").write_bytes(b"\x80\x02")
    np.savez(tmp_path / "empty.npz")
    np.savez(tmp_path / "bias.npz", **{"dense/bias": np.zeros(8, np.float32)})
    (tmp_path / "cut.msgpack").write_bytes(b"\x81\xa1w")
    folder = _sharded(tmp_path / "hf", _tensors())
    shard = folder / "model-00002-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:-8])
    return {"missing": ("nope.npz", "no checkpoint at"), "unknown": ("w.ckpt", "unsupported checkpoint"),
            "empty": ("empty.npz", "holds no tensors"), "nothing": ("bias.npz", "no eligible weight matrix"),
            "corrupt": ("cut.msgpack", "not a Flax msgpack file"), "truncated": ("hf", "truncated")}


def test_cli_user_mistakes_exit_2_without_traceback(capsys, tmp_path):
    for name, (file, says) in _bad_inputs(tmp_path).items():
        path = str(tmp_path / file)
        assert cli.main(["analyze", path]) == 2, name
        err = capsys.readouterr().err
        assert says in err and path in err and "Traceback" not in err, (name, err)
        # what is read is said (once) only where the kind of checkpoint was not recognised
        assert err.count(SUPPORTED) == (name == "unknown"), (name, err)
    with pytest.raises(jaxww.CheckpointError):
        cli.main(["analyze", str(tmp_path / "w.ckpt"), "--debug"])


@pytest.mark.slow  # two Python processes importing JAX
def test_cli_process_on_sharded_directory_and_missing_file(tmp_path):
    folder = _sharded(tmp_path / "hf", _tensors())
    run = functools.partial(subprocess.run, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))})
    ok = run([sys.executable, "-m", "jaxww", "analyze", str(folder)])
    assert ok.returncode == 0, ok.stderr
    assert "model.layers.0.mlp.up_proj.weight" in ok.stdout and "skipped: 1 not a matrix" in ok.stdout
    bad = run([sys.executable, "-m", "jaxww", "analyze", str(tmp_path / "nope")])
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "no checkpoint at" in bad.stderr


@pytest.mark.slow  # a second process with four forced host devices
def test_orbax_checkpoint_saved_on_several_devices_loads_on_one(tmp_path):
    pytest.importorskip("orbax.checkpoint")
    save = (
        "import sys, numpy as np, jax, orbax.checkpoint as ocp\n"
        "from jax.sharding import Mesh, NamedSharding, PartitionSpec as P\n"
        "mesh = Mesh(np.array(jax.devices()), ('x',))\n"
        "w = np.arange(32, dtype=np.float32).reshape(8, 4)\n"
        "c = ocp.StandardCheckpointer()\n"
        "c.save(sys.argv[1], {'w': jax.device_put(w, NamedSharding(mesh, P('x')))})\n"
        "c.wait_until_finished()\n")
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", save, str(tmp_path / "pod")], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    loaded = jaxww.load_params(tmp_path / "pod")
    np.testing.assert_array_equal(loaded["w"], np.arange(32, dtype=np.float32).reshape(8, 4))
