"""The test-sized digits experiment (``bench/digits_alpha.py --quick``) on real data.

It trains the MLP on scikit-learn's bundled digits with plain ``adam`` and with
``jaxww.add_alpha_regularization`` (same seed, split and initialisation) and checks
that both learn (far above the 10% of chance) and that the regulariser brings the
per-layer alpha closer to its target than plain training does. It runs in a fresh
process so that ``OPENBLAS_NUM_THREADS=1`` (set by the script) takes effect.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quick_digits_run(tmp_path):
    pytest.importorskip("sklearn")
    out = tmp_path / "digits.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OPENBLAS_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "digits_alpha.py"), "--quick",
                           "--json", str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "mean +- std" in proc.stdout  # the table was printed
    res = json.loads(out.read_text())
    runs = {r["config"]: r for r in res["runs"]}
    assert set(runs) == {"plain", "alpha_reg"}
    target = res["settings"]["target"]
    for r in runs.values():
        assert r["test_acc"] > 0.85 and r["train_acc"] > 0.85, r   # chance is 0.10
    dist = {c: np.mean([abs(a - target) for a in r["alpha"].values()]) for c, r in runs.items()}
    assert dist["alpha_reg"] < 0.6 * dist["plain"], dist
    # every layer moved towards the target, none away from it
    for layer, a in runs["alpha_reg"]["alpha"].items():
        assert abs(a - target) < abs(runs["plain"]["alpha"][layer] - target), layer
