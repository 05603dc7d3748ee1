"""``bench/device.py``, the device check prepared for a short window on an accelerator, cannot
rot: its dry run (every section at a tiny size, the CPU standing in for the accelerator
through ``JAXWW_DEVICE_PATH=1``) runs here as documented and writes every section's rows."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SECTIONS = ("env", "write", "stream", "phases", "reference", "accuracy", "weightwatcher", "host")


@pytest.mark.slow
def test_dry_run_writes_every_section_as_it_runs(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "JAXWW_DEVICE_PATH")}
    env["OUT"] = str(tmp_path)   # run as typed from the project root, but without PYTHONPATH=.
    proc = subprocess.run([sys.executable, "bench/device.py", "--dry-run"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(tmp_path / "device.jsonl") as fh:
        rows = [json.loads(line) for line in fh]
    printed = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(printed) == len(rows)   # one readable line per row
    assert [r["section"] for r in rows[:2]] == ["setup", "setup"] and rows[-1]["row"] == "done"
    by_section = {}
    for r in rows:
        by_section.setdefault(r["section"], []).append(r)
    assert set(by_section) == {"setup", *SECTIONS}
    ww = importlib.util.find_spec("weightwatcher") is not None
    for name in SECTIONS:
        expected = "ok" if ww or name != "weightwatcher" else "skipped"
        assert {r["status"] for r in by_section[name]} == {expected}, by_section[name]
    env_rows = {r["row"]: r for r in by_section["env"]}
    assert env_rows["jaxww"]["path"] == os.path.join(ROOT, "jaxww")   # this checkout, not an installed copy
    assert "JAXWW_DEVICE_PATH=1" in env_rows["accelerator"]["why"]
    assert [r["row"] for r in by_section["stream"]] == ["1st call", "2nd call"]
    assert {r["row"] for r in by_section["phases"]} == {"128x64", "64x64", "64x128"}
    assert all(r["device"] == "cpu:0" for s in ("stream", "phases", "accuracy") for r in by_section[s])
    (acc,) = by_section["accuracy"]
    assert acc["compared"] == acc["same_xmin"] == 4
