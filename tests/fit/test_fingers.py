"""``fix_fingers``: clip_xmax equals weightwatcher 0.7.7; xmin_peak follows its definition."""

from __future__ import annotations

import contextlib
import io
import logging

import numpy as np
import pytest

import jaxww
from jaxww.fit import fingers


def _matrices(h):
    """Layers with and without fingers (t4, t6, lr3 have one in weightwatcher's fit)."""
    return {
        "t3": h.student_t(3, nu=3), "t4": h.student_t(4, nu=4), "t6": h.student_t(7, nu=6),
        "lr3": h.low_rank_plus_noise(8, rank=2, signal=1.5), "g": h.gaussian(6),
    }


def _ww_clipped(x):
    from weightwatcher.RMT_Util import fit_clipped_powerlaw

    logging.getLogger("RMT_Util").setLevel(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()):
        return fit_clipped_powerlaw(np.sort(x[x > 1e-5]))


@pytest.mark.slow
def test_clip_xmax_equals_weightwatcher_fit_clipped_powerlaw(h, x64):
    pytest.importorskip("weightwatcher", reason="weightwatcher 0.7.7 is the oracle")
    mats = _matrices(h)
    ev = np.stack([h.svd_evals(w) for w in mats.values()])
    ours = jaxww.fit_fingers(ev, "clip_xmax")
    fingers_seen = 0
    for r, x in enumerate(ev):
        best, num, raw = _ww_clipped(x)
        assert int(ours.num_fingers[r]) == num
        # the same float64 eigenvalues on both sides: the fit's own rounding (h.pl_fit_tols)
        kept = np.sort(x[x > 1e-5])
        clipped = kept[:kept.size - num]
        tols, raw_tols = h.pl_fit_tols(clipped, best.xmin), h.pl_fit_tols(kept, raw.xmin)
        assert abs(float(ours.fit.alpha[r]) - best.alpha) <= tols["alpha"]
        assert abs(float(ours.raw_alpha[r]) - raw.alpha) <= raw_tols["alpha"]
        assert abs(float(ours.fit.D[r]) - best.D) <= tols["D"]
        # xmin and xmax are input values, chosen, not computed: the same bits
        assert float(ours.fit.xmin[r]) == best.xmin and float(ours.fit.xmax[r]) == best.xmax
        assert int(ours.fit.num_pl_spikes[r]) == int(np.sum(x >= best.xmin))
        fingers_seen += num > 0
    assert fingers_seen >= 2  # the comparison covers both branches


@pytest.mark.slow
def test_planted_fingers_are_clipped(h):
    x = (1.0 - np.random.default_rng(0).random(500)) ** (-1.0 / 2.0)  # alpha = 3
    x = np.sort(x)
    x[-4:] = x[-5] * np.array([30.0, 40.0, 50.0, 60.0])  # a far, flat finger
    out = jaxww.fit_fingers(x, "clip_xmax")
    raw = jaxww.fit_power_law(x)
    # the same float32 scan in two calls: the MLE's float32 rounding on its tail
    x32 = x.astype(np.float32)
    assert float(out.raw_alpha) == pytest.approx(
        float(raw.alpha), rel=h.pl_alpha_rtol(x32[x32 >= float(raw.xmin)], eps=h.EPS32))
    # Whatever it does, it never reports a larger alpha than the raw fit.
    assert float(out.fit.alpha) <= float(out.raw_alpha)
    if int(out.num_fingers):
        assert float(out.fit.alpha) + fingers.FINGER_THRESH < float(out.raw_alpha)


@pytest.mark.slow
def test_esd_peak_is_numpy_histogram_peak(h, x64):
    ev = np.stack([h.svd_evals(w) for w in _matrices(h).values()])
    peaks = np.asarray(fingers.esd_peak(ev))
    for x, p in zip(ev, peaks):
        logs = np.log10(x[x > 1e-5])
        counts, edges = np.histogram(logs, bins=fingers.PEAK_BINS)
        # an edge lo + k (hi - lo) / bins errs by a few ulp of max(|lo|, |hi|) (absolute); 10**e
        # turns that into ln(10) times it, relative
        cond = np.log(10) * max(1.0, np.abs(logs).max())
        np.testing.assert_allclose(p, 10 ** edges[np.argmax(counts)], rtol=h.ulps(8, cond=cond))


@pytest.mark.slow
def test_xmin_peak_is_the_scan_in_the_peak_window(h, x64):
    ev = np.stack([h.svd_evals(w) for w in _matrices(h).values()])
    out = jaxww.fit_fingers(ev, "xmin_peak")
    for r, x in enumerate(ev):
        p = float(fingers.esd_peak(x))
        window = np.where(x >= 0.95 * p, x, 0.0)  # zeros are left out: one shape, one compilation
        ref = jaxww.fit_power_law(window, xmin_max=1.5 * p)
        assert 0.95 * p <= float(out.fit.xmin[r]) <= 1.5 * p
        # the same scan over the same tail, in another batch shape (XLA may sum in another
        # order): the MLE's rounding, h.pl_alpha_rtol; xmin is an input value: the same bits
        assert float(out.fit.xmin[r]) == float(ref.xmin)
        tail = x[x >= float(ref.xmin)]
        np.testing.assert_allclose(float(out.fit.alpha[r]), float(ref.alpha), rtol=h.pl_alpha_rtol(tail))
        raw = jaxww.fit_power_law(x)
        np.testing.assert_allclose(float(out.raw_alpha[r]), float(raw.alpha),
                                   rtol=h.pl_alpha_rtol(x[x >= float(raw.xmin)]))


@pytest.mark.slow
def test_tiny_and_empty_spectra_are_nan_not_a_crash():
    out = jaxww.fit_fingers(np.array([[1.0, 2.0, 0.0], [0.0, 0.0, 0.0]]), "clip_xmax")
    assert np.isnan(np.asarray(out.fit.alpha)[1])
    assert (np.asarray(out.fit.status)[1] == jaxww.FIT_TOO_FEW)
    out = jaxww.fit_fingers(np.zeros((2, 3)), "xmin_peak")
    assert np.isnan(np.asarray(out.fit.alpha)).all()


def test_unknown_method_lists_the_choices():
    with pytest.raises(ValueError, match="clip_xmax.*xmin_peak"):
        jaxww.fit_fingers(np.arange(1.0, 30.0), "peak")
    with pytest.raises(ValueError, match="fix_fingers must be one of"):
        jaxww.analyze({"w": np.ones((16, 8), np.float32)}, fix_fingers="clip")


@pytest.mark.slow
def test_analyze_clip_xmax_equals_weightwatcher_analyze(h):
    torch = pytest.importorskip("torch", reason="weightwatcher reads torch models")
    pytest.importorskip("weightwatcher", reason="weightwatcher 0.7.7 is the oracle")
    mats = _matrices(h)
    model = torch.nn.Sequential(*[h.torch_linear(w) for w in mats.values()])
    ww = list(h.ww_analyze(model, fix_fingers="clip_xmax").values())
    rows = jaxww.analyze({k: {"kernel": w} for k, w in mats.items()}, precision="float64",
                         fix_fingers="clip_xmax").rows
    ours = {r["name"]: r for r in rows}
    assert len(ww) == len(ours)
    for name, b in zip(mats, ww):  # weightwatcher: in Sequential order
        a = ours[f"{name}/kernel"]
        assert a["num_fingers"] == b["num_fingers"]
        assert a["num_pl_spikes"] == b["num_pl_spikes"]
        # two eigensolver paths (h.eig_err), then the fits at the same xmin and the metrics
        ev = h.svd_evals(mats[name])
        x_err = h.eig_err(ev, max(mats[name].shape))
        kept = ev[ev > 1e-5]
        fit = h.pl_fit_tols(kept[:kept.size - int(b["num_fingers"])], b["xmin"], x_err)
        raw = h.pl_fit_tols(kept, h.ww_fit(ev).xmin, x_err)
        tols = {**fit, "raw_alpha": raw["alpha"], **h.metric_tols(ev, b["alpha"], fit["alpha"], x_err)}
        for col in ("alpha", "raw_alpha", "xmin", "xmax", "D", "alpha_weighted", "log_alpha_norm"):
            assert abs(a[col] - b[col]) <= tols[col], (a["name"], col, a[col], b[col], tols[col])
