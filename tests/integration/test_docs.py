"""Every Python block of README.md and docs/*.md runs as written (each in a fresh process,
in an empty directory, with nothing but what the block imports)."""

import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BLOCKS = [(path, text[:m.start()].count("\n") + 1, m.group(1))
          for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
          for text in [path.read_text()]
          for m in re.finditer(r"```python\n(.*?)```", text, re.S)]


def test_every_doc_has_its_blocks_collected():
    assert {p.name for p, _, _ in BLOCKS} >= {"README.md", "training.md", "scale.md", "families.md"}


@pytest.mark.slow
@pytest.mark.parametrize("path, line, code", BLOCKS, ids=[f"{p.name}:{n}" for p, n, _ in BLOCKS])
def test_doc_block_runs(path, line, code, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), KERAS_BACKEND="jax", MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, f"{path.name}:{line}\n{proc.stderr[-3000:]}"
