"""``analyze(base=...)`` (fine-tune deltas) and LoRA pairs (``lora=``), checked against the
NumPy eigenvalues of the hand-made difference / product."""

from __future__ import annotations

import copy

import jax
import numpy as np
import pytest

import jaxww

R = 16  # LoRA rank (>= min_evals, so a lone factor would be analysable as a matrix)


def _tree(h, seed):
    return {"dense": {"kernel": h.student_t(seed), "bias": np.zeros(128, np.float32)},
            "layers": {"Dense_0": {"kernel": np.stack([h.student_t(seed + 10 + i, (128, 128)) for i in range(3)]),
                                   "bias": np.zeros((3, 128), np.float32)}}}


def _evals_close(got, want_w):
    """Eigenvalues ``got`` against sigma(W)^2 in float64: float32 error relative to the largest."""
    want = np.sort(np.linalg.svd(np.asarray(want_w, np.float64), compute_uv=False) ** 2)
    np.testing.assert_allclose(np.sort(got), want, rtol=0, atol=1e-5 * want[-1])


def test_base_equals_analysis_of_the_difference(h):
    base, params = _tree(h, 0), _tree(h, 1)
    before = copy.deepcopy(params)
    diff = {"dense": {"kernel": params["dense"]["kernel"] - base["dense"]["kernel"], "bias": np.zeros(128, np.float32)},
            "layers": {"Dense_0": {"kernel": params["layers"]["Dense_0"]["kernel"] - base["layers"]["Dense_0"]["kernel"],
                                   "bias": np.zeros((3, 128), np.float32)}}}
    got, want = jaxww.analyze(params, base=base), jaxww.analyze(diff)
    assert [r["name"] for r in got.rows] == [r["name"] for r in want.rows]
    for a, b in zip(got.rows, want.rows):
        assert a["alpha"] == pytest.approx(b["alpha"], rel=1e-5) and a["num_pl_spikes"] == b["num_pl_spikes"]
        np.testing.assert_allclose(got.esd(a["name"]), want.esd(a["name"]), rtol=1e-6, atol=1e-6 * want.esd(a["name"])[-1])
    _evals_close(got.esd("dense/kernel"), diff["dense"]["kernel"])
    jax.tree.map(np.testing.assert_array_equal, before, params)  # the inputs are untouched


def test_base_mismatch_names_the_first_path(h):
    params = {"a": {"kernel": h.gaussian(0)}, "b": {"kernel": h.gaussian(1)}}
    with pytest.raises(ValueError, match="'b/kernel' in params but 'c/kernel' in base"):
        jaxww.analyze(params, base={"a": {"kernel": h.gaussian(0)}, "c": {"kernel": h.gaussian(1)}})
    with pytest.raises(ValueError, match="'b/kernel' is only in params"):
        jaxww.analyze(params, base={"a": {"kernel": h.gaussian(0)}})
    with pytest.raises(ValueError, match="'a/kernel' has shape \\(128, 256\\), params has \\(256, 128\\)"):
        jaxww.analyze(params, base={"a": {"kernel": h.gaussian(0).T}, "b": {"kernel": h.gaussian(1)}})
    with pytest.raises(ValueError, match="base= or lora="):
        jaxww.analyze(params, base=params, lora="delta")


def _nnx_lora_tree(h):
    """``nnx.LoRALinear(256, 128, lora_rank=16)``'s state: kernel, bias, lora/lora_a, lora/lora_b."""
    rng = np.random.default_rng(3)
    return {"blk": {"kernel": h.student_t(2), "bias": np.zeros(128, np.float32),
                    "lora": {"lora_a": rng.standard_normal((256, R)).astype(np.float32),
                             "lora_b": (0.1 * rng.standard_normal((R, 128))).astype(np.float32)}}}


def test_lora_factors_skipped_by_default(h):
    report = jaxww.analyze(_nnx_lora_tree(h))
    assert [r["name"] for r in report.rows] == ["blk/kernel"]
    lora = {s.name: s for s in report.skipped_rows if s.kind == "lora"}
    assert set(lora) == {"blk/lora/lora_a", "blk/lora/lora_b"}
    assert "lora='delta'" in lora["blk/lora/lora_a"].reason
    assert [r["name"] for r in jaxww.describe(_nnx_lora_tree(h)).rows] == ["blk/kernel"]  # as analyze


@pytest.mark.slow
def test_lora_delta_and_merged_nnx(h):
    params = _nnx_lora_tree(h)
    a, b, w = params["blk"]["lora"]["lora_a"], params["blk"]["lora"]["lora_b"], params["blk"]["kernel"]
    prod = np.asarray(a, np.float64) @ b
    delta = jaxww.analyze(params, lora="delta", lora_scale=None)
    assert [r["name"] for r in delta.rows] == ["blk/kernel", "blk/lora/lora_ab"]
    _evals_close(delta.esd("blk/lora/lora_ab"), prod)
    assert delta.rows[1]["matrix_rank"] == R
    assert {s.name for s in delta.skipped_rows if s.kind == "lora"} == {"blk/lora/lora_b"}
    merged = jaxww.analyze(params, lora="merged")
    assert [r["name"] for r in merged.rows] == ["blk/kernel"]
    _evals_close(merged.esd("blk/kernel"), w + prod)
    scaled = jaxww.analyze(params, lora="merged", lora_scale={"blk": 0.5})
    _evals_close(scaled.esd("blk/kernel"), w + 0.5 * prod)
    assert params["blk"]["kernel"] is w  # nothing replaced in the input


@pytest.mark.slow
def test_lora_nnx_modules(h):
    nnx = pytest.importorskip("flax.nnx", reason="needs flax")
    rngs = nnx.Rngs(0)
    lin = nnx.LoRALinear(256, 128, lora_rank=R, rngs=rngs, b_initializer=nnx.initializers.normal(0.1))
    wrap = nnx.LoRA(256, R, 128, base_module=nnx.Linear(256, 128, rngs=rngs), rngs=rngs,
                    b_initializer=nnx.initializers.normal(0.1))
    for model, base_name, a_name in ((lin, "kernel", "lora/lora_a"), (wrap, "base_module/kernel", "lora_a")):
        a = np.asarray(model.lora.lora_a[...] if a_name.startswith("lora/") else model.lora_a[...], np.float64)
        b = np.asarray(model.lora.lora_b[...] if a_name.startswith("lora/") else model.lora_b[...], np.float64)
        kernel = np.asarray((model if base_name == "kernel" else model.base_module).kernel[...])
        merged = jaxww.analyze(model, lora="merged")
        _evals_close(merged.esd(base_name), kernel + a @ b)
        x = np.ones((1, 256), np.float32)  # the module computes x @ (kernel + a @ b) (+ bias)
        np.testing.assert_allclose(np.asarray(model(x)) - np.asarray(x @ kernel), x @ (a @ b), rtol=1e-4, atol=1e-4)
        delta = jaxww.analyze(model, lora="delta")
        _evals_close(delta.esd(a_name.replace("lora_a", "lora_ab")), a @ b)


def _peft_tree(h):
    """A PEFT checkpoint's names (peft/tuners/lora/layer.py): torch ``(out, in)`` weights."""
    rng = np.random.default_rng(4)
    p = "base_model.model.layers.0.self_attn.q_proj"
    return p, {f"{p}.base_layer.weight": h.student_t(5).T.copy(),
               f"{p}.lora_A.weight": rng.standard_normal((R, 256)).astype(np.float32),
               f"{p}.lora_B.weight": (0.1 * rng.standard_normal((128, R))).astype(np.float32)}


@pytest.mark.slow
def test_lora_peft_needs_its_scale(h):
    p, params = _peft_tree(h)
    with pytest.raises(ValueError, match="needs lora_scale="):
        jaxww.analyze(params, lora="delta")
    A, B, W = (np.asarray(params[f"{p}.{n}.weight"], np.float64) for n in ("lora_A", "lora_B", "base_layer"))
    delta = jaxww.analyze(params, lora="delta", lora_scale=2.0)
    assert [r["name"] for r in delta.rows] == [f"{p}.base_layer.weight", f"{p}.lora_BA.weight"]
    _evals_close(delta.esd(f"{p}.lora_BA.weight"), 2.0 * B @ A)
    merged = jaxww.analyze(params, lora="merged", lora_scale=2.0)
    _evals_close(merged.esd(f"{p}.base_layer.weight"), W + 2.0 * B @ A)


def test_lora_missing_partner_or_base_is_a_skipped_row(h):
    p, params = _peft_tree(h)
    del params[f"{p}.lora_B.weight"]
    report = jaxww.analyze(params, lora="delta", lora_scale=1.0)
    (s,) = [s for s in report.skipped_rows if s.kind == "lora"]
    assert s.name == f"{p}.lora_A.weight" and "without its partner 'lora_B'" in s.reason
    tree = _nnx_lora_tree(h)
    del tree["blk"]["kernel"]
    tree["other"] = {"kernel": h.gaussian(0)}
    report = jaxww.analyze(tree, lora="merged")
    reasons = {s.name: s.reason for s in report.skipped_rows if s.kind == "lora"}
    assert set(reasons) == {"blk/lora/lora_a", "blk/lora/lora_b"}
    assert "no base weight (looked for ['blk/lora/base_module/kernel', 'blk/kernel'])" in reasons["blk/lora/lora_a"]
    with pytest.raises(ValueError, match="lora must be None or one of"):
        jaxww.analyze(tree, lora="sum")
