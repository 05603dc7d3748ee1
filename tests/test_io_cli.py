"""Loaders, command line and demo model."""

import os

import jax.numpy as jnp
import numpy as np
import pytest

import jaxww
from jaxww import cli
from jaxww.demo import demo_params


def _weights(seed=0):
    rng = np.random.default_rng(seed)
    return {"enc/dense/kernel": rng.standard_t(3, size=(96, 48)).astype(np.float32),
            "enc/dense/bias": np.zeros(48, np.float32)}


def test_npz_roundtrip_gives_same_report(tmp_path):
    w = _weights()
    path = tmp_path / "w.npz"
    np.savez(path, **w)
    loaded = jaxww.load_params(path)
    assert set(loaded) == set(w)
    direct, from_file = jaxww.analyze(w), jaxww.analyze(loaded)
    assert direct.rows[0]["alpha"] == from_file.rows[0]["alpha"]
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
    bad = tmp_path / "w.pt"
    bad.write_bytes(b"")
    with pytest.raises(ValueError, match="unsupported checkpoint"):
        jaxww.load_params(bad)


def test_demo_model_has_every_layer_kind():
    report = jaxww.analyze(demo_params())
    kinds = {r["layer_type"] for r in report.rows}
    assert kinds == {"embedding", "attention", "dense", "conv2d"}
    assert all(r["status"] == "success" for r in report.rows)
    # Attention output (H, D, out) is read as one (H*D, out) matrix.
    out = next(r for r in report.rows if r["name"].endswith("out/kernel"))
    assert (out["N"], out["M"]) == (128, 128)


def test_cli_demo_prints_table_and_summary(capsys, tmp_path):
    csv = tmp_path / "d.csv"
    assert cli.main(["demo", "--csv", str(csv)]) == 0
    out = capsys.readouterr().out
    assert "params/Conv_0/kernel" in out and "summary" in out and "alpha_weighted" in out
    import pandas as pd

    table = pd.read_csv(csv)
    assert len(table) == len(jaxww.analyze(demo_params()).rows)
    assert np.isfinite(table["alpha"]).all()


def test_cli_analyze_file_with_layer_filter(capsys, tmp_path):
    path = tmp_path / "w.npz"
    w = _weights()
    w["head/kernel"] = np.random.default_rng(1).standard_normal((64, 32)).astype(np.float32)
    np.savez(path, **w)
    assert cli.main(["analyze", str(path), "--layers", "^head"]) == 0
    out = capsys.readouterr().out
    assert "head/kernel" in out
    assert "excluded by the layers filter" in out
