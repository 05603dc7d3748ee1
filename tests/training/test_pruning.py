"""layerwise_sparsity (AlphaPruning's allocation rule) and prune_by_magnitude."""

import re

import jax
import numpy as np
import pytest

import jaxww


def alphapruning_reference(metric, sparsity, sizes, epsilon, block):
    """AlphaPruning's ``lib/prune.py::ww_sparsity`` (block_wise mapping), in NumPy."""
    m = np.asarray(metric, float)
    m = np.repeat([m[i:i + block].mean() for i in range(0, m.size, block)], block)
    r = (m - m.min()) / (m.max() - m.min()) * (2 * epsilon) + (1 - epsilon)
    return r * np.sum(sizes) * sparsity / np.sum(sizes * r)


def test_matches_alphapruning_where_no_layer_is_capped():
    rng = np.random.default_rng(0)
    metric = rng.uniform(2, 6, 28)                 # 4 Llama-like blocks of 7 matrices
    sizes = np.tile([16, 16, 16, 16, 43, 43, 43], 4) * 1e6
    got = jaxww.layerwise_sparsity(metric, 0.5, sizes=sizes, blocks=7)
    np.testing.assert_allclose(got, alphapruning_reference(metric, 0.5, sizes, 0.3, 7), rtol=1e-12)
    assert np.sum(got * sizes) / sizes.sum() == pytest.approx(0.5, rel=1e-12)


def test_higher_metric_prunes_more_and_an_allocation_past_one_is_refused():
    metric = np.linspace(2, 8, 10)
    sizes = np.arange(1, 11) * 100.0
    got = jaxww.layerwise_sparsity(metric, 0.7, sizes=sizes, epsilon=0.3)
    assert np.all(np.diff(got) > 0) and got.max() <= 1
    with pytest.raises(ValueError, match=r"layer 9 a sparsity of 1\.06\d, more than all its weights; the largest epsilon that fits is 0\.\d+"):
        jaxww.layerwise_sparsity(metric, 0.9, sizes=sizes, epsilon=0.3)
    fits = float(re.search(r"fits is ([0-9.]+)", _message(metric, 0.85, sizes)).group(1))
    assert jaxww.layerwise_sparsity(metric, 0.85, sizes=sizes, epsilon=fits).max() <= 1
    with pytest.raises(ValueError):
        jaxww.layerwise_sparsity(metric, 0.85, sizes=sizes, epsilon=fits + 0.002)


def _message(metric, sparsity, sizes):
    with pytest.raises(ValueError) as err:
        jaxww.layerwise_sparsity(metric, sparsity, sizes=sizes)
    return str(err.value)


def test_block_ids_share_their_mean_and_equal_metrics_prune_uniformly():
    got = jaxww.layerwise_sparsity([2.0, 4.0, 9.0, 3.0], 0.5, blocks=["a", "a", "b", "a"])
    assert got[0] == got[1] == got[3] < got[2]
    np.testing.assert_allclose(jaxww.layerwise_sparsity([3.0] * 4, 0.7), 0.7)


@pytest.mark.parametrize("kwargs, match", [
    ({"metric": [2.0, np.nan], "sparsity": 0.5}, "layer 1"),
    ({"metric": [2.0, 3.0], "sparsity": 1.5}, "sparsity"),
    ({"metric": [2.0, 3.0], "sparsity": 0.5, "blocks": 3.5}, "blocks"),
    ({"metric": [2.0, 3.0], "sparsity": 0.5, "sizes": [1.0]}, "sizes"),
])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        jaxww.layerwise_sparsity(**kwargs)


def _params():
    rng = np.random.default_rng(1)
    return {"dense": {"kernel": rng.standard_normal((64, 48)).astype(np.float32)},
            "stack": {"kernel": rng.standard_normal((3, 40, 32)).astype(np.float32)},
            "norm": {"scale": np.ones(48, np.float32)}}


def test_prune_by_magnitude_removes_each_matrix_smallest_weights_to_its_own_ratio():
    params = _params()
    before = jax.tree.map(np.copy, params)
    report = jaxww.analyze(params, min_evals=1, scan_axis=0, layers=None)
    names = [r["name"] for r in report.rows]
    ratios = np.linspace(0.2, 0.8, len(names))
    pruned = jaxww.prune_by_magnitude(params, report, ratios)
    jax.tree.map(np.testing.assert_array_equal, params, before)     # nothing modified
    np.testing.assert_array_equal(pruned["norm"]["scale"], params["norm"]["scale"])
    for name, ratio in zip(names, ratios):
        w, p = ((params["stack"]["kernel"][int(name[-2])], pruned["stack"]["kernel"][int(name[-2])])
                if name.startswith("stack") else (params["dense"]["kernel"], pruned["dense"]["kernel"]))
        zero = p == 0
        assert zero.sum() == round(ratio * w.size), name
        assert np.abs(w[zero]).max() <= np.abs(w[~zero]).min(), name
        np.testing.assert_array_equal(p[~zero], w[~zero])


def test_prune_by_magnitude_refuses_other_params_and_bad_ratios():
    params = _params()
    report = jaxww.analyze(params, min_evals=1, scan_axis=0)
    with pytest.raises(ValueError, match="structure"):
        jaxww.prune_by_magnitude({"w": params["dense"]["kernel"]}, report, 0.5)
    with pytest.raises(ValueError, match="sparsity"):
        jaxww.prune_by_magnitude(params, report, 1.2)


def test_report_metric_uses_rows_and_matrix_sizes():
    params = _params()
    report = jaxww.analyze(params, min_evals=1, scan_axis=0)
    alphas = [r["alpha"] for r in report.rows]
    sizes = [k.N * k.M * k.rf for k in report.kernels]
    np.testing.assert_allclose(jaxww.layerwise_sparsity(report, 0.6),
                               jaxww.layerwise_sparsity(alphas, 0.6, sizes=sizes))
