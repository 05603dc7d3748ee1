"""``jaxww.analyze`` and ``Report``: rows, details, summary, esd, tree, conv factor, invariances.

Every distinct tree structure given to ``analyze`` is one XLA compilation (~2 s on
the CPU), so the tests share a few trees (``mixed`` below above all).
"""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxww
from conftest import eig_err, metric_tols, pl_fit_tols, svd_evals, ulps


@pytest.fixture(scope="module")
def mixed(h):
    """A tree with a conv, a dense layer, a stack of 3 layers, a norm scale and a NaN layer."""
    rng = np.random.default_rng(0)
    bad = h.gaussian(9)
    bad[1, 2] = np.nan
    params = {
        "conv": {"kernel": rng.standard_normal(h.CONV).astype(np.float32), "bias": np.zeros(32, np.float32)},
        "dense": {"kernel": h.student_t(1), "bias": np.zeros(128, np.float32)},
        # A stack of 3 layers (nn.scan): the bias tells the layer axis (0) apart from axis 1.
        "layers": {"Dense_0": {"kernel": np.stack([h.student_t(10 + i, (128, 128)) for i in range(3)]),
                               "bias": np.zeros((3, 128), np.float32)}},
        "norm": {"scale": np.ones(128, np.float32)},
        "broken": {"kernel": bad},
    }
    return params, jaxww.analyze(params)


STACK = [f"layers/Dense_0/kernel[{i}]" for i in range(3)]
NAMES = {"broken/kernel", "conv/kernel", "dense/kernel", *STACK}


def assert_esd_close(ev, ref, n):
    """float32 spectra: relative 1e-4, and values below the floor max * N * eps are 0."""
    np.testing.assert_allclose(ev, ref, rtol=1e-4, atol=ref.max() * n * np.finfo(np.float32).eps)


def rows_by_name(report):
    return {r["name"]: r for r in report.rows}


@pytest.mark.slow
def test_details_columns_and_rows(mixed):
    _, report = mixed
    df = report.details
    assert list(df.columns) == list(jaxww.COLUMNS)
    assert set(df["name"]) == NAMES and len(df) == len(NAMES)
    assert sorted(df["layer_id"]) == list(range(len(NAMES)))
    for r in report.rows:
        assert tuple(r) == jaxww.COLUMNS
    rows = rows_by_name(report)
    c, d, s = rows["conv/kernel"], rows["dense/kernel"], rows[STACK[1]]
    assert (c["layer_type"], c["shape"], c["N"], c["M"], c["Q"], c["rf"], c["num_evals"]) == \
        ("conv2d", (3, 3, 16, 32), 32, 16, 2.0, 9, 144)
    assert (d["layer_type"], d["shape"], d["N"], d["M"], d["Q"], d["rf"], d["num_evals"]) == \
        ("dense", (256, 128), 256, 128, 2.0, 1, 128)
    assert (s["layer_type"], s["shape"], s["N"], s["M"]) == ("dense", (128, 128), 128, 128)


def test_skipped_lists_the_other_leaves(mixed):
    _, report = mixed
    sk = report.skipped
    assert list(sk.columns) == ["name", "shape", "dtype", "reason", "kind"]
    assert set(sk["name"]) == {"conv/bias", "dense/bias", "layers/Dense_0/bias", "norm/scale"}
    assert all(isinstance(x, str) and x for x in sk["reason"])


def test_failed_row_and_status(mixed):
    _, report = mixed
    rows = rows_by_name(report)
    bad = rows["broken/kernel"]
    assert bad["status"] == "failed" and "NaN" in bad["reason"]
    assert math.isnan(bad["alpha"]) and bad["warning"] == ""
    for n in NAMES - {"broken/kernel"}:
        assert rows[n]["status"] == "success" and rows[n]["reason"] == ""
        assert np.isfinite(rows[n]["alpha"])


def test_esd_is_the_ascending_spectrum(mixed, h):
    params, report = mixed
    assert_esd_close(report.esd("dense/kernel"), h.svd_evals(params["dense"]["kernel"]), 256)
    for i, n in enumerate(STACK):
        assert_esd_close(report.esd(n), h.svd_evals(params["layers"]["Dense_0"]["kernel"][i]), 128)
    for n in NAMES - {"broken/kernel"}:
        ev = report.esd(n)
        assert isinstance(ev, np.ndarray) and (np.diff(ev) >= 0).all()
        assert len(ev) == rows_by_name(report)[n]["num_evals"]
    with pytest.raises(KeyError, match="no analysed layer"):
        report.esd("norm/scale")


def test_conv2d_esd_has_the_half_factor(mixed, h):
    params, report = mixed
    ref = h.conv_taps_evals(params["conv"]["kernel"])
    ev = report.esd("conv/kernel")
    assert ev.shape == (144,)
    assert_esd_close(ev, 0.5 * ref, 32)


def test_conv1d_and_conv3d_have_no_half_factor(h):
    """A 3-D kernel is a convolution where its name says so (else ambiguous: test_one_reading)."""
    rng = np.random.default_rng(1)
    c1 = rng.standard_normal((3, 16, 32)).astype(np.float32)
    c3 = rng.standard_normal((2, 2, 2, 16, 32)).astype(np.float32)
    report = jaxww.analyze({"conv1": {"kernel": c1}, "c3": {"kernel": c3}})
    rows = rows_by_name(report)
    assert rows["conv1/kernel"]["layer_type"] == "conv1d" and rows["c3/kernel"]["layer_type"] == "conv3d"
    assert_esd_close(report.esd("conv1/kernel"), h.conv_taps_evals(c1), 32)
    assert_esd_close(report.esd("c3/kernel"), h.conv_taps_evals(c3), 32)


def test_rows_are_consistent_with_the_esd(mixed, h):
    _, report = mixed
    for r in report.rows:
        if r["status"] != "success":
            continue
        ev = report.esd(r["name"]).astype(np.float64)
        fit = jaxww.fit_power_law(report.esd(r["name"]))
        # The same float32 eigenvalues: the fit (another batch shape) and the metrics (here in
        # float64) differ by float32 rounding only (pl_fit_tols, metric_tols with eps32; the
        # metrics take the row's own alpha, so dalpha = 0). xmin and xmax are chosen values.
        tols = {**h.pl_fit_tols(ev[ev > 1e-5], r["xmin"], eps=h.EPS32),
                **h.metric_tols(ev, r["alpha"], 0.0, eps=h.EPS32)}
        assert float(fit.xmin) == r["xmin"] and r["xmax"] == ev.max()
        assert float(fit.alpha) == pytest.approx(r["alpha"], abs=tols["alpha"])
        assert float(fit.D) == pytest.approx(r["D"], abs=tols["D"])
        assert r["num_pl_spikes"] == int((ev >= r["xmin"]).sum())
        a = r["alpha"]   # sigma from its own alpha: alpha - 1 (condition alpha / (alpha - 1)), sqrt, quotient
        assert r["sigma"] == pytest.approx((a - 1) / math.sqrt(r["num_pl_spikes"]),
                                           rel=h.ulps(4, cond=a / (a - 1), eps=h.EPS32))
        assert r["norm"] == pytest.approx(ev.sum(), abs=tols["norm"])
        assert r["log_norm"] == pytest.approx(math.log10(ev.sum()), abs=tols["log_norm"])
        assert r["spectral_norm"] == pytest.approx(ev.max(), abs=tols["spectral_norm"])
        assert r["log_spectral_norm"] == pytest.approx(math.log10(ev.max()), abs=tols["log_spectral_norm"])
        assert r["alpha_weighted"] == pytest.approx(r["alpha"] * math.log10(ev.max()), abs=tols["alpha_weighted"])
        assert r["log_alpha_norm"] == pytest.approx(math.log10(np.sum(ev ** r["alpha"])), abs=tols["log_alpha_norm"])
        assert r["stable_rank"] == pytest.approx(ev.sum() / ev.max(), abs=tols["stable_rank"])
        assert r["matrix_rank"] == int((ev > 0).sum())
        assert r["warning"] == jaxww.warning(r["alpha"])


def test_summary_means_over_successful_fits(mixed):
    _, report = mixed
    ok = [r for r in report.rows if r["status"] == "success"]
    assert len(ok) == len(NAMES) - 1
    summary = report.summary
    assert set(summary) == set(jaxww.SUMMARY_METRICS)
    for m in jaxww.SUMMARY_METRICS:
        # Report.summary is np.mean of these very floats: the same bits
        assert summary[m] == np.mean([r[m] for r in ok]), m
        assert np.isfinite(summary[m]), m


def test_tree_aligned_with_params(mixed):
    params, report = mixed
    tree = report.tree("alpha")
    assert jax.tree_util.tree_structure(tree) == jax.tree_util.tree_structure(params)
    rows = rows_by_name(report)
    # the rows' own values (float32 numbers) placed in a tree: copies, exact
    assert float(tree["dense"]["kernel"]) == rows["dense/kernel"]["alpha"]
    assert float(tree["conv"]["kernel"]) == rows["conv/kernel"]["alpha"]
    stack = np.asarray(tree["layers"]["Dense_0"]["kernel"])
    assert stack.shape == (3,)
    np.testing.assert_array_equal(stack, [rows[n]["alpha"] for n in STACK])
    for leaf in (tree["dense"]["bias"], tree["conv"]["bias"], tree["norm"]["scale"], tree["broken"]["kernel"]):
        assert np.isnan(float(leaf))
    # usable next to the params
    both = jax.tree.map(lambda p, a: (np.shape(p), np.shape(a)), params, tree)
    assert both["layers"]["Dense_0"]["kernel"] == ((3, 128, 128), (3,))
    log_norms = report.tree("log_norm")
    assert float(log_norms["dense"]["kernel"]) == rows["dense/kernel"]["log_norm"]


@pytest.mark.parametrize("column", ["name", "status", "nonsense"])
def test_tree_rejects_non_numeric_columns(mixed, column):
    with pytest.raises(ValueError, match="column"):
        mixed[1].tree(column)


def test_summary_of_all_failed_is_nan(h):
    w = h.gaussian(0)
    w[0, 0] = np.inf
    report = jaxww.analyze({"dense": {"bias": np.zeros(128, np.float32), "kernel": w}})
    assert report.rows[0]["status"] == "failed"
    assert all(math.isnan(v) for v in report.summary.values())


@pytest.mark.slow
def test_precision_float64_close_to_float32(h):
    params = {"dense": {"bias": np.zeros(128, np.float32), "kernel": h.student_t(3)}}
    r32 = jaxww.analyze(params).rows[0]
    r64 = jaxww.analyze(params, precision="float64").rows[0]
    assert not jax.config.jax_enable_x64  # analyze(float64) leaves the global flag alone
    assert r64["alpha"] == pytest.approx(r32["alpha"], rel=1e-4)
    assert r64["log_norm"] == pytest.approx(r32["log_norm"], rel=1e-5)
    with pytest.raises(ValueError, match="precision"):
        jaxww.analyze(params, precision="bfloat16")


# --- invariances (hypothesis, float64) -------------------------------------------

def _alpha64(w):
    r = jaxww.analyze({"dense": {"bias": np.zeros(1, np.float32), "kernel": w}}, precision="float64").rows[0]
    assert r["status"] == "success"
    return r


@settings(max_examples=15, deadline=None, derandomize=True)
@given(seed=st.integers(0, 10_000), nu=st.sampled_from([2.5, 4.0, 100.0]),
       log10_scale=st.floats(-1.5, 1.5), transform=st.sampled_from(["scale", "transpose", "rows", "cols"]))
@pytest.mark.slow
def test_alpha_invariances(seed, nu, log10_scale, transform):
    rng = np.random.default_rng(seed)
    w = (rng.standard_t(nu, size=(256, 128)) / 16).astype(np.float64)
    base = _alpha64(w)
    # Each transform changes the order of the Gram matrix's sums (or scales W, an ulp per
    # entry): both spectra are within eig_err of the exact one (scale-free: the same
    # relative bound for c W), then the fit and the metrics propagate it.
    ev = svd_evals(w)
    x_err = eig_err(ev, 256)
    tols = {**pl_fit_tols(ev[ev > 1e-5], base["xmin"], x_err),
            **metric_tols(ev, base["alpha"], 0.0, x_err)}
    rel_xmin = tols["xmin"] / base["xmin"]
    if transform == "scale":
        c = 10.0 ** log10_scale
        out = _alpha64(c * w)
        assert out["xmin"] == pytest.approx(c * c * base["xmin"], rel=rel_xmin + ulps(3))
    elif transform == "transpose":
        out = _alpha64(w.T)
        assert out["xmin"] == pytest.approx(base["xmin"], rel=rel_xmin)
    elif transform == "rows":
        out = _alpha64(w[rng.permutation(256)])
    else:
        out = _alpha64(w[:, rng.permutation(128)])
    assert out["num_pl_spikes"] == base["num_pl_spikes"]   # the same candidate
    assert out["alpha"] == pytest.approx(base["alpha"], abs=tols["alpha"])
    assert out["D"] == pytest.approx(base["D"], abs=tols["D"])
    assert out["stable_rank"] == pytest.approx(base["stable_rank"], abs=tols["stable_rank"])


def test_power_of_two_scaling_float32(h):
    w = h.student_t(5)
    a = jaxww.analyze({"dense": {"bias": np.zeros(128, np.float32), "kernel": w}}).rows[0]
    b = jaxww.analyze({"dense": {"bias": np.zeros(128, np.float32), "kernel": w * 8}}).rows[0]
    assert b["alpha"] == pytest.approx(a["alpha"], rel=1e-6)
    assert b["xmin"] == pytest.approx(64 * a["xmin"], rel=1e-6)


def test_xmin_max_option(h):
    params = {"dense": {"bias": np.zeros(128, np.float32), "kernel": h.student_t(1)}}
    free = jaxww.analyze(params).rows[0]
    bound = free["xmin"] * 0.5
    r = jaxww.analyze(params, xmin_max=bound)
    row = r.rows[0]
    assert row["xmin"] <= bound
    fit = jaxww.fit_power_law(r.esd("dense/kernel"), xmin_max=bound)
    assert row["alpha"] == pytest.approx(float(fit.alpha), rel=1e-6)
    assert row["alpha"] != pytest.approx(free["alpha"], rel=1e-3)
    assert int(fit.status) == jaxww.FIT_OK


# ------------------------------------------------------------------ several devices
def test_split_balances_work_and_keeps_every_layer():
    from jaxww.reading import kernels as K
    from jaxww.linalg import placement
    shapes = [(1024, 1024), (256, 128), (256, 128), (512, 512), (64, 32), (2048, 256)]
    kerns, _ = K.find_kernels([f"l{i}/kernel" for i in range(len(shapes))],
                              [np.zeros(s, np.float32) for s in shapes])
    parts = placement.split(kerns, 2)
    assert sorted(i for p in parts for i in p) == list(range(len(kerns)))
    assert all(p == sorted(p) for p in parts)
    loads = [sum(placement.cost(kerns[i]) for i in p) for p in parts]
    assert max(loads) <= placement.cost(kerns[0]) + min(loads)       # largest-first greedy bound
    assert placement.split(kerns[:1], 4) == [[0]]                   # no empty parts ...
    assert placement.split(kerns[:1], 3, keep_empty=True) == [[0], [], []]   # ... unless asked
    with pytest.raises(ValueError, match="devices"):
        jaxww.analyze({"w": {"kernel": np.ones((64, 32), np.float32)}}, devices=[])


_TWO_DEVICES = """
import json, numpy as np, jax, jaxww
assert len(jax.devices()) == 2, jax.devices()
rng = np.random.default_rng(0)
def t(*s):
    return (rng.standard_t(3.0, s) / np.sqrt(s[0])).astype(np.float32)
params = {"a": {"kernel": t(256, 128)}, "b": {"kernel": t(256, 128)}, "c": {"kernel": t(384, 96)},
          "conv": {"kernel": t(3, 3, 16, 32)}, "d": {"kernel": t(128, 64)}, "bad": {"kernel": t(64, 32)}}
params["bad"]["kernel"][0, 0] = np.nan
one = jaxww.analyze(params, devices=jax.devices()[:1])
two = jaxww.analyze(params)
assert [r["name"] for r in one.rows] == [r["name"] for r in two.rows]
for r in one.rows:
    # the spectra: one host LAPACK call per matrix, one BLAS thread, whatever the part: the same bits
    np.testing.assert_array_equal(one.esd(r["name"]), two.esd(r["name"]))
cols = ("name", "status", "alpha", "D", "xmin", "log_norm", "stable_rank", "matrix_rank")
print(json.dumps({"one": [{c: r[c] for c in cols} for r in one.rows],
                  "two": [{c: r[c] for c in cols} for r in two.rows],
                  "esd": {r["name"]: one.esd(r["name"]).tolist() for r in one.rows if r["status"] == "success"}}))
"""


@pytest.mark.slow
def test_two_devices_give_the_same_report(h):
    """Layers split over two (forced host) devices: the same rows as on one device.

    The spectra are the same bits (asserted in the subprocess). The fit and the metrics
    run on each part's batch, zero-padded to that part's longest spectrum: another padded
    length can change XLA's summation order, so they agree to their float32 rounding
    (conftest ``pl_fit_tols``, ``metric_tols``) and to the same xmin candidate.
    """
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[2]
    flags = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"  # keep an ISA cap
    env = dict(os.environ, XLA_FLAGS=flags.strip(), PYTHONPATH=str(root), JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", _TWO_DEVICES], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(out["two"]) == 6
    for r1, r2 in zip(out["one"], out["two"]):
        assert r1["status"] == r2["status"], (r1, r2)
        if r1["status"] != "success":
            assert all(np.isnan(r1[c]) == np.isnan(r2[c]) for c in ("alpha", "D", "xmin")), (r1, r2)
            continue
        assert r1["xmin"] == r2["xmin"] and r1["matrix_rank"] == r2["matrix_rank"]  # chosen input value; a count
        ev = np.asarray(out["esd"][r1["name"]], np.float64)
        tols = h.pl_fit_tols(ev[ev > 1e-5], r1["xmin"], eps=h.EPS32)
        tols.update(h.metric_tols(ev, r1["alpha"], tols["alpha"], eps=h.EPS32))
        for c in ("alpha", "D", "log_norm", "stable_rank"):
            assert abs(r1[c] - r2[c]) <= tols[c], (r1["name"], c, r1[c], r2[c], tols[c])


@pytest.mark.slow
def test_all_optional_analyses_at_once_equal_each_alone(h):
    """The two option families (tail fits: fix_fingers/fit/bootstrap; spectral: mp_fit,
    randomize, detX) in one call give the union of their columns, each with the values
    it has alone (one key serves both: randomize folds in the layer name, bootstrap the
    layer index)."""
    params = {"a": {"kernel": h.student_t(4)}, "b": {"kernel": h.gaussian(5)}}
    key = jax.random.key(3)
    tail = dict(fix_fingers="clip_xmax", bootstrap=10, key=key)
    spectral = dict(mp_fit=True, randomize=True, detX=True, key=key)
    both = jaxww.analyze(params, **tail, **{k: v for k, v in spectral.items() if k != "key"})
    alone = [jaxww.analyze(params, **tail), jaxww.analyze(params, **spectral)]
    extra = [tuple(c for c in r.columns if c not in jaxww.COLUMNS) for r in alone]
    assert both.columns == jaxww.COLUMNS + extra[0] + extra[1]
    fit = ("alpha", "xmin", "D", "alpha_weighted")  # fix_fingers moves the fit
    for r, cols in zip(alone, (extra[0] + fit, extra[1])):
        for mine, theirs in zip(both.rows, r.rows):
            for c in cols:
                a, b = mine[c], theirs[c]
                assert (a == b) or (isinstance(a, float) and np.isnan(a) and np.isnan(b)), (c, a, b)


@pytest.mark.parametrize("options", [{}, {"mp_fit": True}], ids=["host fit", "jitted fit"])
def test_fit_stage_hands_named_groups_covering_every_layer_once(h, monkeypatch, options):
    """The fit stage returns :class:`FitGroup` values (named fields, host arrays), whose
    members cover every kernel once, with the batch's arrays one row per member."""
    from jaxww.analysis import fitting

    seen = []
    real = fitting.fit_parts
    monkeypatch.setattr(fitting, "fit_parts", lambda *a, **k: seen.append(real(*a, **k)) or seen[-1])
    params = {"a": {"kernel": h.student_t(1)}, "b": {"kernel": h.student_t(2, (96, 64))},
              "c": {"kernel": h.student_t(3, (256, 64))}}
    report = jaxww.analyze(params, **options)
    (groups,) = seen
    assert all(isinstance(g, fitting.FitGroup) for g in groups)
    assert sorted(i for g in groups for i in g.members) == list(range(len(report.rows)))
    for g in groups:
        assert g.fit.alpha.shape == (len(g.members),) and len(g.evals) == len(g.members)
        assert isinstance(g.evals, np.ndarray) and (g.rand is None) and ("sigma_mp" in g.extra) == bool(options)
        for r, i in enumerate(g.members):
            assert report.rows[i]["alpha"] == pytest.approx(float(g.fit.alpha[r]), nan_ok=True)
