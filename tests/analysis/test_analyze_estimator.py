"""``analyze(estimator=)``: every row is ``fit_power_law(estimator=)`` of the report's ESD,
the report records and prints the estimator, and ``tree_alpha(estimator=)`` is its alpha."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest
from conftest import assert_tree_alpha_is_analyzes, low_rank_plus_noise, student_t

import jaxww


def _params():
    """float64 layers: heavy-tailed, spiked bulk, and a second shape."""
    return {"a": {"kernel": student_t(1, (96, 64), nu=3.0).astype(np.float64)},
            "b": {"kernel": low_rank_plus_noise(2, (96, 64), rank=4).astype(np.float64)},
            "c": {"kernel": student_t(3, (80, 40), nu=4.0).astype(np.float64)}}


@pytest.mark.slow
@pytest.mark.parametrize("estimator", ["hill_median", "alpha_peak"])
def test_rows_are_the_fit_of_the_reported_esd_and_tree_alpha_is_analyze(x64, estimator):
    params = _params()
    report = jaxww.analyze(params, precision="float64", estimator=estimator)
    assert report.options == {"precision": "float64", "estimator": estimator}
    for row in report.rows:
        ev = report.esd(row["name"])
        fit = jaxww.fit_power_law(ev, estimator=estimator)
        assert row["xmin"] == float(fit.xmin), row["name"]
        # the same float64 formulas on the same values, batched with zero padding or not
        for col in ("alpha", "D", "sigma"):
            assert row[col] == pytest.approx(float(getattr(fit, col)), rel=1e-12), (row["name"], col)
        assert row["num_pl_spikes"] == int(fit.num_pl_spikes)
        assert row["alpha_weighted"] == pytest.approx(row["alpha"] * math.log10(ev.max()), rel=1e-12)
    assert_tree_alpha_is_analyzes(jaxww.tree_alpha(params, estimator=estimator), report)


def test_report_names_a_non_default_estimator():
    params = {"w": student_t(1, (96, 64))}
    default, mid = jaxww.analyze(params), jaxww.analyze(params, estimator="alpha_mid")
    assert default.estimator_note() == "" and "estimator" not in repr(default)
    note = mid.estimator_note()
    assert "alpha_mid" in note and "AlphaPruning" in note and "not weightwatcher's" in note
    assert note in str(mid) and "(estimator alpha_mid)" in repr(mid)
    assert mid.to_dict()["options"]["estimator"] == "alpha_mid"
    assert mid.rows[0]["alpha"] != default.rows[0]["alpha"]


@pytest.mark.parametrize("kwargs, match", [
    (dict(estimator="median"), "estimator must be one of"),
    (dict(estimator="alpha_peak", fix_fingers="clip_xmax"), "cannot be combined with fix_fingers='clip_xmax'"),
    (dict(estimator="hill_median", fit="TPL"), "cannot be combined with fit='TPL'"),
    (dict(estimator="alpha_peak", bootstrap=5, key=jax.random.key(0)), "cannot be combined with bootstrap=5"),
    (dict(estimator="alpha_mid", xmin_max=1.0), "xmin_max does not apply"),
])
def test_estimator_refuses_what_refines_the_csn_fit(kwargs, match):
    with pytest.raises(ValueError, match=match):
        jaxww.analyze({"w": np.eye(40, dtype=np.float32)}, **kwargs)
