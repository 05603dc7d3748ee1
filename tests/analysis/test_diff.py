"""jaxww.diff_models: metric deltas and top singular-subspace overlaps of two checkpoints.

Overlaps are checked against NumPy (float64 SVDs of the same float32 matrices) with a
tolerance from perturbation theory: a float32 SVD is exact for ``W + E`` with
``||E||_2 <~ sqrt(n) eps ||W||_2``, which moves the top-k subspace by at most
``sin(theta) <= ||E||_2 / gap`` (Davis-Kahan / Wedin, ``gap = sigma_k - sigma_{k+1}``),
and the overlap by at most twice that.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import jaxww
from conftest import CONV, DENSE, gaussian, low_rank_plus_noise, rank_deficient

EPS32 = float(np.finfo(np.float32).eps)
#: Gemma q_einsum/w (H, d, D), read as one d x H*D matrix (rows: axis 1).
QEIN = (4, 64, 32)


def _matrix(leaf, kind):
    """The matrices of a leaf as jaxww reads them, in NumPy float64: ``(rf, a, b)``."""
    w = np.asarray(leaf, np.float64)
    if kind == "dense":
        return w[None]
    if kind == "conv":  # Flax (kh, kw, in, out): one (in, out) per tap
        return w.reshape((-1,) + w.shape[-2:])
    if kind == "q_einsum":  # (H, d, D) -> d x H*D
        return w.transpose(1, 0, 2).reshape(1, w.shape[1], -1)
    raise ValueError(kind)


def _np_overlaps(A, B, k):
    """``(left, right, tol)``: NumPy overlaps of two ``(rf, a, b)`` stacks and the tolerance."""
    lefts, rights, tol = [], [], 0.0
    for a, b in zip(A, B):
        Ua, sa, Vha = np.linalg.svd(a)
        Ub, sb, Vhb = np.linalg.svd(b)
        lefts.append(np.sum((Ua[:, :k].T @ Ub[:, :k]) ** 2) / k)
        rights.append(np.sum((Vha[:k] @ Vhb[:k].T) ** 2) / k)
        for s in (sa, sb):
            gap = s[k - 1] - (s[k] if k < len(s) else 0.0)
            tol = max(tol, 2 * 10 * math.sqrt(max(a.shape)) * EPS32 * s[0] / gap)
    return float(np.mean(lefts)), float(np.mean(rights)), tol


def _rows(d):
    return {r["name"]: r for r in d.rows}


@pytest.fixture(scope="module")
def tree():
    rng = np.random.default_rng(5)
    return {"dense": {"kernel": low_rank_plus_noise(0, DENSE)},
            "conv": {"kernel": gaussian(1, CONV)},
            "attn": {"q_einsum": {"w": (rng.standard_normal(QEIN) / 8).astype(np.float32)}}}


@pytest.mark.slow
def test_identical_trees_zero_deltas_unit_overlaps(tree):
    d = jaxww.diff_models(tree, tree)
    assert [r["name"] for r in d.rows] == ["dense/kernel", "conv/kernel", "attn/q_einsum/w"]  # the model's order
    assert {"alpha", "alpha_weighted", "log_norm", "log_spectral_norm", "stable_rank"} <= set(d.metrics)
    for r in d.rows:
        assert r["status"] == "success", r["reason"]
        assert r["k"] == 10
        for side in ("overlap_left", "overlap_right"):
            # Same matrices, same SVD: U^T U = I up to the orthogonality error O(n eps).
            assert abs(r[side] - 1) <= 10 * max(r["N"], r["M"]) * EPS32
        for m in d.metrics:
            assert abs(r[f"{m}_delta"]) <= 1e-6 * abs(r[f"{m}_a"]), m
            assert r[f"{m}_a"] == r[f"{m}_b"]


@pytest.mark.slow
def test_overlaps_equal_numpy_on_every_reading(tree):
    other = {"dense": {"kernel": low_rank_plus_noise(7, DENSE)},
             "conv": {"kernel": tree["conv"]["kernel"] + 0.3 * gaussian(8, CONV)},
             "attn": {"q_einsum": {"w": tree["attn"]["q_einsum"]["w"] + 0.01 * gaussian(9, QEIN)}}}
    rows = _rows(jaxww.diff_models(tree, other, k=6))
    for name, kind, get in (("dense/kernel", "dense", lambda t: t["dense"]["kernel"]),
                            ("conv/kernel", "conv", lambda t: t["conv"]["kernel"]),
                            ("attn/q_einsum/w", "q_einsum", lambda t: t["attn"]["q_einsum"]["w"])):
        left, right, tol = _np_overlaps(_matrix(get(tree), kind), _matrix(get(other), kind), 6)
        r = rows[name]
        assert r["k"] == 6 and r["status"] == "success"
        assert abs(r["overlap_left"] - left) <= tol, (name, r["overlap_left"], left, tol)
        assert abs(r["overlap_right"] - right) <= tol, (name, r["overlap_right"], right, tol)


def test_rotation_on_the_left_keeps_the_right_subspace():
    """W -> Q W (Q orthogonal, random): V unchanged (overlap 1), U -> Q U, whose top-k
    subspace is a random one: overlap k / N in expectation (std ~ sqrt(2) / N here)."""
    k = 8
    W = low_rank_plus_noise(3, DENSE, rank=k)
    Q, _ = np.linalg.qr(np.random.default_rng(4).standard_normal((DENSE[0], DENSE[0])))
    QW = (Q @ W.astype(np.float64)).astype(np.float32)
    r = jaxww.diff_models({"dense": {"kernel": W}}, {"dense": {"kernel": QW}}, k=k).rows[0]
    left, right, tol = _np_overlaps(_matrix(W, "dense"), _matrix(QW, "dense"), k)
    assert abs(r["overlap_right"] - 1) <= tol
    assert abs(r["overlap_left"] - left) <= tol
    assert r["overlap_left"] < 5 * k / DENSE[0]
    # Q W has the singular values of W: every spectral metric is unchanged.
    for m in ("log_norm", "log_spectral_norm", "stable_rank"):
        assert abs(r[f"{m}_delta"]) <= 1e-4 * max(1.0, abs(r[f"{m}_a"]))


def test_planted_rank_k_perturbation():
    """A strong planted rank-k term P S R^T added to noise becomes the top-k subspace of
    b: a's and b's top-k subspaces are then unrelated (overlap near k / n), the spectral
    norm grows to the planted one, and the overlaps equal NumPy's."""
    k = 4
    rng = np.random.default_rng(11)
    A = gaussian(12, DENSE)
    P, _ = np.linalg.qr(rng.standard_normal((DENSE[0], k)))
    R, _ = np.linalg.qr(rng.standard_normal((DENSE[1], k)))
    B = (A + P @ np.diag([8.0, 7.0, 6.0, 5.0]) @ R.T).astype(np.float32)
    r = jaxww.diff_models({"dense": {"kernel": A}}, {"dense": {"kernel": B}}, k=k).rows[0]
    left, right, tol = _np_overlaps(_matrix(A, "dense"), _matrix(B, "dense"), k)
    assert abs(r["overlap_left"] - left) <= tol and abs(r["overlap_right"] - right) <= tol
    assert r["overlap_left"] < 5 * k / DENSE[0] and r["overlap_right"] < 5 * k / DENSE[1]
    s_a, s_b = (np.linalg.svd(np.asarray(x, np.float64), compute_uv=False)[0] for x in (A, B))
    expected = 2 * math.log10(s_b / s_a)  # eigenvalues are sigma^2
    assert abs(r["log_spectral_norm_delta"] - expected) <= 1e-5 * abs(expected) + 1e-6


def test_small_perturbation_within_wedin_bound():
    """b = a + E: overlap >= 1 - 2 (||E||_2 / delta)^2 on both sides (Wedin's sin-theta
    theorem, delta = sigma_k(b) - sigma_{k+1}(a) > 0)."""
    k = 8
    A = low_rank_plus_noise(20, DENSE, rank=k, signal=4.0)
    E = 0.05 * gaussian(21, DENSE)
    B = A + E
    r = jaxww.diff_models({"dense": {"kernel": A}}, {"dense": {"kernel": B}}, k=k).rows[0]
    sa = np.linalg.svd(np.asarray(A, np.float64), compute_uv=False)
    sb = np.linalg.svd(np.asarray(B, np.float64), compute_uv=False)
    delta = sb[k - 1] - sa[k]
    norm_e = np.linalg.norm(np.asarray(B, np.float64) - A, 2)
    bound = 1 - 2 * (norm_e / delta) ** 2
    assert 0.5 < bound < 1
    assert r["overlap_left"] >= bound - 1e-5 and r["overlap_right"] >= bound - 1e-5


def test_k_clipped_to_numerical_rank():
    W = rank_deficient(30, DENSE, rank=5)
    r = jaxww.diff_models({"w": W}, {"w": 2 * W}, k=10).rows[0]
    assert r["k"] == 5
    assert abs(r["overlap_left"] - 1) <= 1e-4 and abs(r["overlap_right"] - 1) <= 1e-4


def test_mismatched_trees_give_rows_with_reasons():
    W = gaussian(40, DENSE)
    a = {"shared": {"kernel": W}, "only_in_a": {"kernel": W}, "wide": {"kernel": W},
         "quant": {"kernel": W}}
    b = {"shared": {"kernel": W}, "only_in_b": {"kernel": W}, "wide": {"kernel": np.ascontiguousarray(W.T)},
         "quant": {"kernel": np.zeros(DENSE, np.int8)}}
    d = jaxww.diff_models(a, b)
    rows = _rows(d)
    assert set(rows) == {"shared/kernel", "only_in_a/kernel", "wide/kernel", "quant/kernel",
                         "only_in_b/kernel"}
    assert rows["shared/kernel"]["status"] == "success"
    assert rows["only_in_a/kernel"]["status"] == "only_a"
    assert rows["only_in_a/kernel"]["reason"] == "not analysed in b: no layer of that name"
    assert rows["only_in_b/kernel"]["status"] == "only_b"
    assert rows["wide/kernel"]["status"] == "shape_mismatch"
    assert "(256, 128) in a, (128, 256) in b" in rows["wide/kernel"]["reason"]
    assert rows["quant/kernel"]["status"] == "only_a"
    assert "not analysed in b: int8 leaf" in rows["quant/kernel"]["reason"]
    for name in ("only_in_a/kernel", "wide/kernel", "quant/kernel", "only_in_b/kernel"):
        r = rows[name]
        assert math.isnan(r["overlap_left"]) and math.isnan(r["alpha_delta"])
    assert not math.isnan(rows["only_in_a/kernel"]["alpha_a"])
    assert math.isnan(rows["only_in_b/kernel"]["alpha_a"])
    assert not math.isnan(rows["only_in_b/kernel"]["alpha_b"])
    assert list(d.details.columns) == list(d.columns)


def test_non_finite_weights_fail_with_reason():
    W = gaussian(50, DENSE)
    bad = W.copy()
    bad[0, 0] = np.nan
    r = jaxww.diff_models({"w": W}, {"w": bad}).rows[0]
    assert r["status"] == "failed"
    assert "overlaps: weights contain NaN or Inf" in r["reason"]
    assert math.isnan(r["overlap_left"]) and math.isnan(r["overlap_right"])


@pytest.mark.parametrize("k", [0, -1, 2.5, True])
def test_bad_k(k):
    with pytest.raises(ValueError, match="k must be a positive int"):
        jaxww.diff_models({"w": gaussian(0)}, {"w": gaussian(0)}, k=k)


def test_inputs_not_modified(tree):
    before = {n: np.array(x) for n, x in zip(*jaxww.flatten_params(tree)[:2])}
    jaxww.diff_models(tree, tree)
    after = dict(zip(*jaxww.flatten_params(tree)[:2]))
    assert all(np.array_equal(before[n], np.asarray(after[n])) for n in before)


def test_base_and_lora_overlaps_are_of_the_deltas():
    """With ``base=`` the rows and the overlaps are those of ``W - W_base``; with
    ``lora="delta"`` those of the adapter product: NumPy SVDs of the same deltas."""
    rng = np.random.default_rng(11)
    base = {"dense": {"kernel": gaussian(2, DENSE)}}
    deltas = [(rng.standard_normal((DENSE[0], 4)) @ rng.standard_normal((4, DENSE[1]))).astype(np.float32)
              for _ in range(2)]
    a, b = ({"dense": {"kernel": base["dense"]["kernel"] + d}} for d in deltas)
    k = 3
    d = jaxww.diff_models(a, b, k=k, base=base)
    want = _np_overlaps(*(np.asarray(x, np.float64)[None] - np.asarray(base["dense"]["kernel"], np.float64)[None]
                          for x in (a["dense"]["kernel"], b["dense"]["kernel"])), k)
    row = _rows(d)["dense/kernel"]
    assert abs(row["overlap_left"] - want[0]) <= want[2] and abs(row["overlap_right"] - want[1]) <= want[2]

    def lora(seed):   # nnx LoRA factors next to a base kernel: read as lora_a @ lora_b
        r = np.random.default_rng(seed)
        return {"blk": {"kernel": base["dense"]["kernel"],
                        "lora_a": r.standard_normal((DENSE[0], 4)).astype(np.float32),
                        "lora_b": r.standard_normal((4, DENSE[1])).astype(np.float32)}}
    la, lb = lora(1), lora(2)
    d = jaxww.diff_models(la, lb, k=k, lora="delta")
    row = _rows(d)["blk/lora_ab"]
    want = _np_overlaps(*(x[None] for x in (np.asarray(la["blk"]["lora_a"], np.float64) @ la["blk"]["lora_b"],
                                            np.asarray(lb["blk"]["lora_a"], np.float64) @ lb["blk"]["lora_b"])), k)
    assert abs(row["overlap_left"] - want[0]) <= want[2] and abs(row["overlap_right"] - want[1]) <= want[2]


def test_reading_options_are_read_layers_keywords_taken_by_analyze():
    """The reading options come from ``read_layers``' signature (no hand-kept copy), and
    ``analyze`` takes each of them with the same default."""
    import inspect

    from jaxww.analysis import arguments
    from jaxww.reading.layers import read_layers

    reader = inspect.signature(read_layers).parameters
    assert set(arguments.READING) == {n for n, p in reader.items() if p.kind is p.KEYWORD_ONLY} - {"where", "concrete"}
    analyze = inspect.signature(jaxww.analyze).parameters
    assert {n: analyze[n].default for n in arguments.READING} == {n: reader[n].default for n in arguments.READING}


def test_diff_models_reads_with_every_reading_option_it_is_given(monkeypatch):
    """Every reading option given to ``diff_models`` reaches ``read_layers``; the others do not."""
    from jaxww.analysis import arguments, diff

    seen = []
    real = diff.read_layers
    monkeypatch.setattr(diff, "read_layers", lambda p, **kw: seen.append(kw) or real(p, **kw))
    tree = {"dense": {"kernel": gaussian(0, DENSE)}, "conv": {"kernel": gaussian(1, CONV)}}
    given = dict(min_evals=4, max_evals=10 ** 6, max_N=10 ** 6, layers="dense", layouts={"nothing": "dense"},
                 scan_axis=0, base={n: {"kernel": np.zeros_like(v["kernel"])} for n, v in tree.items()},
                 lora_scale=2.0, pool=True)
    assert set(given) | {"lora"} == set(arguments.READING)
    d = jaxww.diff_models(tree, tree, mp_fit=True, **given)
    assert [r["name"] for r in d.rows] == ["dense/kernel"]
    assert len(seen) == 2 and all(kw == {**given, "where": "diff_models"} for kw in seen)
