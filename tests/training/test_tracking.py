"""jaxww.Tracker / History / from_checkpoints: alpha through training (issue #17, item 2)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import jaxww
from jaxww.training import history, worker

EVERY, STEPS = 10, 31


def _weights(seed, shapes=((64, 32), (32, 16))):
    rng = np.random.default_rng(seed)
    return {f"Dense_{i}": {"kernel": rng.standard_normal(s).astype(np.float32) / np.sqrt(s[0])}
            for i, s in enumerate(shapes)}


def _until_raises(tracker, params, timeout=30.0):
    """Call ``update`` on steps that are not analysed until it raises (the background
    work of an earlier step has then finished and been collected)."""
    end = time.monotonic() + timeout
    step = 1
    while time.monotonic() < end:
        tracker.update(step * tracker.every + 1, params)   # never a multiple of every
        step += 1
        time.sleep(0.01)
    pytest.fail("no error surfaced")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny MLP trained on sklearn's digits with adam, tracked every 10 steps; the
    host params of the tracked steps, the written scalars and an Orbax run directory."""
    optax = pytest.importorskip("optax")
    ocp = pytest.importorskip("orbax.checkpoint")
    from sklearn.datasets import load_digits
    digits = load_digits()
    x, y = jnp.asarray(digits.data / 16.0, jnp.float32), jnp.asarray(digits.target)
    params = {k: {"kernel": jnp.asarray(v["kernel"]), "bias": jnp.zeros(v["kernel"].shape[1])}
              for k, v in _weights(0, ((64, 64), (64, 10))).items()}

    def loss(p):
        h = jax.nn.relu(x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])
        logits = h @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    opt = optax.adam(1e-2)

    @jax.jit
    def step(p, s):
        u, s = opt.update(jax.grad(loss)(p), s, p)
        return optax.apply_updates(p, u), s

    directory = str(tmp_path_factory.mktemp("tracking") / "run")
    saved, written, state = {}, [], opt.init(params)
    with ocp.CheckpointManager(directory) as manager, \
            jaxww.Tracker(every=EVERY, writer=lambda s, m: written.append((s, dict(m)))) as tracker:
        for i in range(STEPS):
            params, state = step(params, state)
            if tracker.update(i, params):
                saved[i] = jax.device_get(params)
                manager.save(i, args=ocp.args.StandardSave(params))
        manager.wait_until_finished()
    return tracker, saved, written, directory


@pytest.mark.slow
def test_history_equals_analyze(run):
    tracker, saved, _, _ = run
    history = tracker.history
    assert history.steps == sorted(saved) == [0, 10, 20, 30]
    # The tracker runs the same function (jaxww.analyze) on the same host arrays
    # (jax.device_get of the params of that step), so the values are bit-identical.
    expected = pd.DataFrame([{"step": s, **r} for s in sorted(saved) for r in jaxww.analyze(saved[s]).rows],
                            columns=history.columns)
    pd.testing.assert_frame_equal(history.details, expected)
    assert history.details["alpha"].notna().all()
    for s in saved:
        assert history.summaries[s] == jaxww.analyze(saved[s]).summary
    assert list(history.summary.index) == [0, 10, 20, 30]


@pytest.mark.slow
def test_writer_gets_flat_scalars_in_step_order(run):
    tracker, saved, written, _ = run
    assert [s for s, _ in written] == [0, 10, 20, 30]
    for s, scalars in written:
        report = jaxww.analyze(saved[s])
        assert all(isinstance(v, float) for v in scalars.values())
        assert scalars == {**{f"alpha/{r['name']}": r["alpha"] for r in report.rows},
                           **{f"alpha_weighted/{r['name']}": r["alpha_weighted"] for r in report.rows},
                           **{f"summary/{k}": v for k, v in report.summary.items()}}
        assert scalars == tracker.history.scalars(s)


@pytest.mark.slow
def test_from_checkpoints_equals_live_history(run):
    tracker, _, _, directory = run
    replayed = []
    history = jaxww.from_checkpoints(directory, writer=lambda s, m: replayed.append((s, m)))
    assert history.steps == [0, 10, 20, 30]
    pd.testing.assert_frame_equal(history.details, tracker.history.details)
    pd.testing.assert_frame_equal(history.summary, tracker.history.summary)
    assert [s for s, _ in replayed] == history.steps
    fig = jaxww.plot_history(history)
    assert len(fig.axes[0].lines) >= 2 and fig.axes[0].get_xlabel() == "step"


def test_from_checkpoints_logs_no_orbax_step_metadata_warning(run, caplog):
    """Orbax warns "Metadata file does not exist" when a plain checkpointer reads the item
    directory of a CheckpointManager step (its metadata is one level up): once per step,
    in every notebook or script that reads a run; jaxww reads no such file and drops it."""
    import logging
    *_, directory = run
    with caplog.at_level(logging.WARNING):
        jaxww.from_checkpoints(directory)
        jaxww.analyze(os.path.join(directory, "0"))
    assert not [r for r in caplog.records if "Metadata file does not exist" in r.getMessage()]


def test_writer_error_at_next_update_history_kept():
    calls = []

    def writer(step, scalars):
        calls.append(step)
        if step == 0:
            raise OSError("disk full")

    params = _weights(1)
    tracker = jaxww.Tracker(every=5, writer=writer)
    assert tracker.update(0, params) is True
    with pytest.raises(jaxww.TrackingError, match="writer failed at step 0: OSError: disk full") as err:
        _until_raises(tracker, params)
    assert isinstance(err.value.__cause__, OSError)
    assert tracker.history.steps == [0] and len(tracker.history.rows) == 2   # computed, kept
    assert tracker.update(5, params) is True                                  # tracking goes on
    history = tracker.close()
    assert history.steps == [0, 5] and calls == [0, 5]
    pd.testing.assert_frame_equal(history.details[history.details.step == 5].reset_index(drop=True),
                                  history.details[history.details.step == 0].assign(step=5))


def test_background_failure_surfaces_never_silent(tmp_path):
    params = _weights(2)
    tracker = jaxww.Tracker(every=2)
    tracker.update(0, params)
    tracker.update(2, str(tmp_path / "missing"))   # its analysis raises in the background
    tracker.update(4, params)
    with pytest.raises(jaxww.TrackingError, match="analysis of step 2 failed") as err:
        _until_raises(tracker, params)
    assert err.value.__cause__ is not None
    assert tracker.close().steps == [0, 4]      # the steps before and after are kept
    # at close, too: a failure never waits for a next update that does not come
    tracker = jaxww.Tracker(every=1)
    tracker.update(0, str(tmp_path / "missing"))
    with pytest.raises(jaxww.TrackingError, match="analysis of step 0 failed"):
        tracker.close()
    with pytest.raises(jaxww.TrackingError, match="analysis of step 0 failed"):
        with jaxww.Tracker(every=1) as tracker:
            tracker.update(0, str(tmp_path / "missing"))


def test_tracker_options_and_misuse():
    params = _weights(3)
    with jaxww.Tracker(every=3, layers="Dense_1", metrics=("alpha",)) as tracker:
        assert [tracker.update(s, params) for s in range(4)] == [True, False, False, True]
    assert set(tracker.history.details.name) == {"Dense_1/kernel"}
    assert set(tracker.history.scalars(3, ("alpha",))) == {"alpha/Dense_1/kernel", *(f"summary/{m}" for m in jaxww.SUMMARY_METRICS)}
    with pytest.raises(RuntimeError, match="closed"):
        tracker.update(6, params)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="every must be a positive int"):
            jaxww.Tracker(every=bad)
    with pytest.raises(TypeError, match="writer must be a callable"):
        jaxww.Tracker(writer="tb")
    with pytest.raises(TypeError, match="nice must be an int or None, got str 'low'"):
        jaxww.Tracker(nice="low")          # refused here, not in the worker at the first analysis
    with pytest.raises(ValueError, match="max_pending must be a positive int"):
        jaxww.Tracker(max_pending=True)
    empty = jaxww.Tracker().close()
    assert empty.steps == [] and empty.details.empty and list(empty.details.columns)[:2] == ["step", "layer_id"]


def test_checkpoint_directory_without_steps(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes").mkdir()
    with pytest.raises(jaxww.CheckpointError, match=r"run: no checkpoint steps in it"):
        jaxww.from_checkpoints(tmp_path / "run")
    with pytest.raises(jaxww.CheckpointError, match="not a directory"):
        jaxww.from_checkpoints(tmp_path / "nowhere")


def test_live_and_checkpoint_histories_analyse_on_the_cpu(tmp_path, monkeypatch):
    """Both default to one CPU device (on a GPU the same numbers, not float32 rounding
    apart); ``devices=`` given is kept."""
    seen, analyze = [], jaxww.analyze

    def spy(params, devices=None, **options):
        seen.append(devices)
        return analyze({"w": np.eye(40, dtype=np.float32)})

    for module in (history, worker):   # from_checkpoints; the tracker's worker
        monkeypatch.setattr(module, "_report", types.SimpleNamespace(analyze=spy))
    for step in (0, 1):
        (tmp_path / "run" / str(step)).mkdir(parents=True)
    jaxww.from_checkpoints(tmp_path / "run")
    jaxww.from_checkpoints(tmp_path / "run", devices=["mine"])
    with jaxww.Tracker(every=1) as tracker:
        tracker.update(0, {"w": np.eye(40, dtype=np.float32)})
    assert seen == [jax.devices("cpu")[:1]] * 2 + [["mine"]] * 2 + [jax.devices("cpu")[:1]]

def test_from_checkpoints_item(tmp_path):
    ocp = pytest.importorskip("orbax.checkpoint")
    params = _weights(4)
    with ocp.CheckpointManager(os.fspath(tmp_path / "run")) as manager:
        for s in (0, 7):
            manager.save(s, args=ocp.args.Composite(params=ocp.args.StandardSave(params),
                                                    opt=ocp.args.StandardSave(_weights(5))))
    history = jaxww.from_checkpoints(tmp_path / "run", item="params")
    assert history.steps == [0, 7]
    expected = jaxww.analyze(params).rows
    assert [r["alpha"] for r in history.rows] == [r["alpha"] for r in expected] * 2


def test_steps_must_increase():
    params = _weights(6)
    with jaxww.Tracker(every=2) as tracker:
        tracker.update(4, params)
        tracker.update(3, params)        # not tracked: no check
        with pytest.raises(ValueError, match="tracked steps must increase: step 2 after step 4"):
            tracker.update(2, params)
    assert tracker.history.steps == [4]


@pytest.mark.slow
def test_process_background_equals_thread(tmp_path):
    params = _weights(7)
    with jaxww.Tracker(every=1, background="process") as proc, jaxww.Tracker(every=1) as thread:
        for s in range(2):
            proc.update(s, params)
            thread.update(s, params)
    pd.testing.assert_frame_equal(proc.history.details, thread.history.details)
    tracker = jaxww.Tracker(every=1, background="process")
    tracker.update(0, str(tmp_path / "missing"))
    with pytest.raises(jaxww.TrackingError, match="analysis of step 0 failed: FileNotFoundError"):
        tracker.close()
    tracker.close()
    with pytest.raises(ValueError, match="background must be"):
        jaxww.Tracker(background="gpu")


def test_max_pending_bounds_the_queue(monkeypatch):
    import threading
    gate = threading.Event()
    real = worker.analyze_copy

    def held(*args):
        gate.wait(30)
        return real(*args)

    monkeypatch.setattr(worker, "analyze_copy", held)
    params = _weights(8)
    tracker = jaxww.Tracker(every=1, max_pending=2)
    tracker.update(0, params)
    tracker.update(1, params)
    assert len(tracker._pending) == 2 and tracker.history.steps == []
    threading.Timer(0.2, gate.set).start()
    tracker.update(2, params)                 # waits for step 0, then queues step 2
    assert tracker.history.steps[0] == 0 and len(tracker._pending) <= 2
    assert tracker.close().steps == [0, 1, 2]
    with pytest.raises(ValueError, match="max_pending must be a positive int"):
        jaxww.Tracker(max_pending=0)


def test_option_columns_kept():
    params = _weights(9)
    with jaxww.Tracker(every=1, mp_fit=True) as tracker:
        tracker.update(0, params)
    report = jaxww.analyze(params, mp_fit=True)
    assert len(report.columns) > len(jaxww.COLUMNS)
    assert tracker.history.columns == ("step",) + tuple(report.columns)
    assert list(tracker.history.details.columns) == ["step", *report.columns]


def test_snapshot_one_copy_program_survives_donation(monkeypatch):
    """The tracked step's copy: one jitted program for every JAX array (the training
    loop's thread pays one dispatch), valid after the next step donates the original."""
    calls = []
    real = worker.copy_arrays
    monkeypatch.setattr(worker, "copy_arrays", lambda xs: calls.append(len(xs)) or real(xs))
    w = jnp.asarray(_weights(10)["Dense_0"]["kernel"])
    host = np.ones(3, np.float32)
    params = {"w": w, "b": jnp.zeros(32), "key": jax.random.key(0), "host": host, "n": 3}
    snap = worker.snapshot(params)
    assert calls == [3]
    assert snap["n"] == 3 and snap["host"] is not host and np.array_equal(snap["host"], host)
    assert jax.random.key_data(snap["key"]).tolist() == jax.random.key_data(params["key"]).tolist()
    expected = np.asarray(w).copy()
    jax.jit(lambda x: x * 2, donate_argnums=0)(w)   # the next step donates the original
    np.testing.assert_array_equal(jax.device_get(snap["w"]), expected)


@pytest.mark.slow
def test_tracking_bench_runs():
    """``bench/tracking.py`` at a tiny size: its three loops run and it prints both ratios
    (``--spare-core`` pins the threads where there are two cores or more)."""
    pytest.importorskip("sklearn")
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, str(root / "bench" / "tracking.py"), "--rounds", "2", "--round", "100",
                           "--spare-core"], cwd=root, env=dict(os.environ, PYTHONPATH=str(root)),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    for line in ("tracked / plain:", "eigvals only / plain:", "6 steps tracked"):
        assert line in proc.stdout, proc.stdout
