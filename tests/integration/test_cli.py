"""The command line's options, outputs and errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from jaxww import cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _torch_like(tmp_path):
    """A PyTorch-style flat dict in an .npz: a 4-D 'weight' convolution and two dense layers."""
    rng = np.random.default_rng(0)
    path = tmp_path / "m.npz"
    np.savez(path, **{"features.0.weight": rng.standard_t(3, (32, 16, 3, 3)).astype(np.float32),
                      "fc1.weight": rng.standard_t(3, (64, 96)).astype(np.float32),
                      "fc2.weight": rng.standard_t(3, (10, 64)).astype(np.float32)})
    return str(path)


def test_help_and_version_do_not_import_jax():
    out = subprocess.run([sys.executable, "-c", "import sys, jaxww.cli, jaxww; print('jax' in sys.modules)"],
                         env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0


def test_json_output_with_ids_layouts_and_options(tmp_path, capsys):
    path = _torch_like(tmp_path)
    out = tmp_path / "r.json"
    assert cli.main(["analyze", path, "--quiet", "--format", "json", "--out", str(out), "--layers", "0,2",
                     "--layouts", "features=conv_torch", "--mp-fit", "--min-evals", "4"]) == 0
    doc = json.loads(out.read_text())
    assert [(r["layer_id"], r["name"], r["layer_type"]) for r in doc["rows"]] == [
        (0, "features.0.weight", "conv2d"), (2, "fc2.weight", "dense")]
    assert "num_spikes" in doc["rows"][0] and doc["options"]["mp_fit"] is True
    assert set(doc["summary"]) >= {"alpha", "alpha_weighted"} and doc["jaxww_version"]
    assert any(s["name"] == "fc1.weight" and s["kind"] == "filter" for s in doc["skipped"])
    assert "2 rows written to" in capsys.readouterr().err


def test_table_and_csv(tmp_path, capsys):
    path = _torch_like(tmp_path)
    assert cli.main(["analyze", path, "--quiet", "--layouts", "features=conv_torch"]) == 0
    text = capsys.readouterr().out
    assert "features.0.weight" in text and "summary (means over successful fits)" in text
    csv = tmp_path / "r.csv"
    assert cli.main(["analyze", path, "--quiet", "--format", "csv", "--out", str(csv)]) == 0
    assert csv.read_text().splitlines()[0].startswith("layer_id,name,")


@pytest.mark.parametrize("args, says", [
    (["--out", "/no/such/dir/r.json"], "--out /no/such/dir/r.json: no writable directory /no/such/dir"),
    (["--plots", "/no/such/dir/img"], "--plots /no/such/dir/img: no writable directory /no/such/dir"),
    (["--layers", "99"], "no layer 99; layer ids are 0..2"),
    (["--scan-axis", "1", "--scan-axis", "x=2"], "a bare AXIS cannot be combined"),
])
def test_mistakes_exit_2_with_one_paragraph(tmp_path, capsys, monkeypatch, args, says):
    path = _torch_like(tmp_path)
    calls = []
    if args[0] in ("--out", "--plots"):   # refused before any work
        import jaxww.analysis.analyze
        monkeypatch.setattr(jaxww.analysis.analyze, "analyze", lambda *a, **k: calls.append(1))
    assert cli.main(["analyze", path, "--quiet", *args]) == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err and err.rstrip().endswith("(--debug shows the traceback)")
    assert calls == []


def test_bad_option_values_are_usage_errors(tmp_path, capsys):
    for args in (["--layouts", "x=nonsense"], ["--layers", "("], ["--max-N", "-1"], ["--min-evals", "x"]):
        with pytest.raises(SystemExit) as exit_:
            cli.main(["analyze", "x.npz", *args])
        assert exit_.value.code == 2, args
        assert "Traceback" not in capsys.readouterr().err


def test_plots_written(tmp_path):
    pytest.importorskip("matplotlib")
    path = _torch_like(tmp_path)
    assert cli.main(["analyze", path, "--quiet", "--plots", str(tmp_path / "img")]) == 0
    pngs = [f for f in os.listdir(tmp_path / "img") if f.endswith(".png")]
    assert len(pngs) == 4 and "summary.png" in pngs   # one per layer and the model's page


def test_ambiguous_directory_names_both(tmp_path, capsys):
    ocp = pytest.importorskip("orbax.checkpoint")
    save_file = pytest.importorskip("safetensors.numpy").save_file
    w = np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)
    ckpt = ocp.StandardCheckpointer()
    ckpt.save(str(tmp_path / "both"), {"dense": {"kernel": w}})
    ckpt.wait_until_finished()
    save_file({"dense.weight": w}, str(tmp_path / "both" / "model.safetensors"))
    assert cli.main(["analyze", str(tmp_path / "both"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "holds both an Orbax checkpoint and safetensors (model.safetensors)" in err


def test_orbax_step_without_log_noise(tmp_path, capfd):
    ocp = pytest.importorskip("orbax.checkpoint")
    w = np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)
    with ocp.CheckpointManager(str(tmp_path / "run")) as mngr:
        mngr.save(3, args=ocp.args.StandardSave({"dense": {"kernel": w}}))
        mngr.wait_until_finished()
    capfd.readouterr()
    assert cli.main(["analyze", str(tmp_path / "run" / "3"), "--quiet"]) == 0
    out, err = capfd.readouterr()
    assert "dense/kernel" in out and "WARNING" not in err
