"""Every bad argument of analyze / describe is a ValueError or TypeError naming it; layers=
takes weightwatcher's layer ids and lists of names."""

import numpy as np
import pytest

import jaxww


def _params(n=12):
    rng = np.random.default_rng(0)
    return {f"Dense_{i}": {"kernel": rng.standard_t(3, (64, 32)).astype(np.float32),
                           "bias": np.zeros(32, np.float32)} for i in range(n)}


def test_layer_ids_and_names_keep_their_ids():
    p = _params()
    rep = jaxww.analyze(p, layers=[0, 2, "Dense_10/kernel"])
    assert [(r["layer_id"], r["name"]) for r in rep.rows] == [(0, "Dense_0/kernel"), (2, "Dense_2/kernel"),
                                                            (10, "Dense_10/kernel")]
    assert [r["layer_id"] for r in jaxww.analyze(p, layers=5).rows] == [5]
    # a regex keeps the ids too: the same layer has the same id whatever is selected
    assert [r["layer_id"] for r in jaxww.analyze(p, layers="Dense_1").rows] == [1, 10, 11]
    assert [r["layer_id"] for r in jaxww.describe(p, layers=[3]).rows] == [3]
    assert sum(s.kind == "filter" for s in rep.skipped_rows) == 9


@pytest.mark.parametrize("kw, err, says", [
    (dict(layers="("), ValueError, "layers='\\(' is not a regular expression"),
    (dict(layers=2.5), TypeError, "layers must be a regex, a callable"),
    (dict(layers={"a": 1}), TypeError, "layers must be"),
    (dict(layers=[0, 99]), ValueError, r"no layer 99; layer ids are 0..11"),
    (dict(layers=["nope"]), ValueError, "no layer 'nope'"),
    (dict(layers=[-1]), ValueError, "layer ids are >= 0"),
    (dict(max_N="10"), TypeError, "max_N must be an int or None, got str"),
    (dict(max_N=-1), ValueError, "max_N must be >= 1"),
    (dict(max_evals=0), ValueError, "max_evals must be >= 1"),
    (dict(min_evals=1.5), TypeError, "min_evals must be an int"),
    (dict(max_N=True), TypeError, "max_N must be an int"),
])
def test_bad_arguments_name_themselves(kw, err, says):
    for fn in (jaxww.analyze, jaxww.describe):
        with pytest.raises(err, match=says):
            fn(_params(), **kw)


def test_analyze_a_checkpoint_path(tmp_path):
    """analyze(path) reads the checkpoint (it was read as one leaf, 'not an array (str)')."""
    path = tmp_path / "w.npz"
    np.savez(path, **{k + "/kernel": v["kernel"] for k, v in _params(3).items()})
    assert [r["name"] for r in jaxww.analyze(str(path)).rows] == [f"Dense_{i}/kernel" for i in range(3)]
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        jaxww.analyze(str(tmp_path / "missing.safetensors"))


def test_no_verdict_below_the_measured_size_nor_at_a_tpl_bound():
    """A 10-eigenvalue head keeps its alpha but gets no verdict, with the reason; a
    truncated power law at its bound alpha = 0 neither (it gave 'over-trained' before)."""
    from jaxww.fit import metrics

    rng = np.random.default_rng(0)
    params = {"body": {"kernel": rng.standard_normal((256, 128)).astype(np.float32)},
              "head": {"kernel": rng.standard_normal((64, 10)).astype(np.float32)}}
    rows = {r["name"]: r for r in jaxww.analyze(params).rows}
    head = rows["head/kernel"]
    assert np.isfinite(head["alpha"]) and head["warning"] == "" and head["status"] == "success"
    assert head["reason"] == f"no verdict: 10 eigenvalues, too few for one (fewer than {metrics.MIN_VERDICT_EVALS})"
    assert rows["body/kernel"]["reason"] == ""
    assert metrics.verdict(1.5, 32) == ("over-trained", "")
    tpl = {r["name"]: r for r in jaxww.analyze(params, fit="TPL").rows}["body/kernel"]
    # the Gaussian layer's tail is exponential: the truncated power law's alpha goes to its bound 0
    assert tpl["alpha"] == 0.0 and tpl["warning"] == ""
    assert tpl["reason"] == "no verdict: the truncated power law's alpha is at its bound (0)"
