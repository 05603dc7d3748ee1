"""optax transforms driven by alpha (``jaxww.training.transforms``).

The references: ``jax.grad`` of :func:`jaxww.alpha_penalty` (the exact gradient the
regulariser must add), TempBalance's formula on :func:`jaxww.tree_alpha`, and short
training runs with and without each transform (same seed) where the transform must
make a measurable difference.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxww
from jaxww.training import transforms as T

A, B = (80, 48), (48, 32)      # the two kernel shapes of every test tree (>= 32 eigenvalues: min_evals)


def params_tree(seed=0, fill=None):
    rng = np.random.default_rng(seed)

    def w(shape, scale):
        if fill is not None:
            return np.full(shape, fill, np.float32)
        return (scale * rng.standard_t(4.0, shape) / np.sqrt(shape[0])).astype(np.float32)

    return {"l0": {"kernel": w(A, 1.0), "bias": np.zeros(A[1], np.float32)},
            "l1": {"kernel": w(B, 1.0), "bias": np.zeros(B[1], np.float32)}}


def zeros_like(p):
    return jax.tree.map(jnp.zeros_like, p)


def finite(tree):
    return all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(tree))


# --------------------------------------------------------------- construction
@pytest.mark.parametrize("kwargs, match", [
    (dict(strength=1.0, target=1.0), "target"),
    (dict(strength=1.0, target=0.3), "target"),
    (dict(strength=-1e-3, target=2.0), "strength"),
    (dict(strength=float("nan"), target=2.0), "strength"),
    (dict(strength=1.0, target=2.0, every=0), "every"),
    (dict(strength=1.0, target=2.0, every=-3), "every"),
    (dict(strength=1.0, target=2.0, every=2.5), "every"),
    (dict(strength=1.0, target=2.0, tail="hill"), "tail"),
    (dict(strength=1.0, target=2.0, distance="l1"), "distance"),
    (dict(strength=1.0, target=2.0, thresh="1e-5"), "thresh must be a finite number"),
    (dict(strength=1.0, target=2.0, thresh=float("nan")), "thresh must be a finite number"),
])
def test_add_alpha_regularization_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        jaxww.add_alpha_regularization(**kwargs)


def test_scaling_transforms_reject_bad_arguments():
    with pytest.raises(ValueError, match="every"):
        jaxww.scale_by_alpha(every=0)
    with pytest.raises(ValueError, match="min_scale"):
        jaxww.scale_by_alpha(min_scale=2.0, max_scale=1.0)
    with pytest.raises(ValueError, match="min_scale"):
        jaxww.scale_by_alpha(min_scale=-0.5)
    with pytest.raises(ValueError, match="weight_decay"):
        jaxww.add_alpha_decayed_weights(-1e-4)
    with pytest.raises(ValueError, match="every"):
        jaxww.add_alpha_decayed_weights(1e-4, every=0)
    with pytest.raises(ValueError, match="thresh must be a finite number"):
        jaxww.scale_by_alpha(thresh=float("inf"))


@pytest.mark.parametrize("make", [
    lambda m: jaxww.add_alpha_regularization(1e-3, 2.0, mask=m),
    lambda m: jaxww.scale_by_alpha(mask=m),
    lambda m: jaxww.add_alpha_decayed_weights(1e-3, mask=m),
])
def test_init_without_eligible_kernels_is_a_clear_error(make):
    only_biases = {"l0": {"bias": np.zeros(8, np.float32)}, "s": np.ones((3, 3), np.int32)}
    with pytest.raises(ValueError, match="no eligible weight matrix"):
        make(None).init(only_biases)
    with pytest.raises(ValueError, match="no eligible weight matrix"):
        make(lambda p: jax.tree.map(lambda x: x.ndim == 1, p)).init(params_tree())


# ------------------------------------------------------- the regulariser's gradient
@functools.partial(jax.jit, static_argnames=("target", "tail"))
def exact_gradient(p, target, tail="ks"):
    return jax.grad(lambda q: jaxww.alpha_penalty(q, target, tail=tail))(p)


def rel_error(got, want):
    """``||got - want|| / ||want||`` over the kernels: what "the same gradient" means.

    Elementwise tolerances are wrong here: entries near zero carry the absolute
    rounding error of the whole computation (seen: 1.3e-5 against 2.0e-6 on one CPU).
    """
    num = sum(np.linalg.norm(np.asarray(got[n]["kernel"], np.float64) - np.asarray(want[n]["kernel"], np.float64)) ** 2
              for n in ("l0", "l1"))
    den = sum(np.linalg.norm(np.asarray(want[n]["kernel"], np.float64)) ** 2 for n in ("l0", "l1"))
    return float(np.sqrt(num / den))


def grad_rtol(dtype):
    """Bound on :func:`rel_error` for two exact computations of the same gradient by
    different eigensolver paths: eigenvector errors are ``eps * lambda_max / gap``, and
    the smallest relative gap of these 16-24 value spectra is about 1e-2, so rounding is
    about ``1e2 * eps``; the bound allows 100x that. Measured: 9.5e-5 (float32), 3.7e-13
    (float64). An algorithmic error (a stale tail, a missing ``held`` term) is >= 1e-2.
    """
    return 1e4 * float(np.finfo(dtype).eps)


@pytest.mark.slow
@pytest.mark.parametrize("tail", ["ks", "fraction", "soft"])
def test_first_update_adds_the_exact_penalty_gradient(tail):
    """The first update is a refresh: the exact penalty gradient, alpha and status."""
    p = params_tree(1)
    s = 0.7
    t = jaxww.add_alpha_regularization(s, 2.5, every=5, tail=tail)
    u, state = jax.jit(t.update)(zeros_like(p), t.init(p), p)
    want = jax.tree.map(lambda x: s * x, exact_gradient(p, 2.5, tail=tail))
    assert rel_error(u, want) < grad_rtol(np.float32)
    for name in ("l0", "l1"):
        np.testing.assert_array_equal(np.asarray(u[name]["bias"]), 0.0)
    alphas = jaxww.tree_alpha(p, tail=tail)
    for k, a in alphas.items():
        assert float(state.alpha[k]) == pytest.approx(float(a), rel=1e-4)
        assert bool(state.ok[k])


@pytest.mark.slow
def test_steps_between_refreshes_hold_the_refresh_gradient():
    """Between refreshes (every=10) each update is the exact gradient at the last refresh
    (to float32 rounding), and it stays aligned with the exact gradient at the current
    weights while they move (1% per step): cosine > 0.99 over 5 steps.

    A fixed tail (6 values): the exact gradient is smooth in the weights (a KS tail
    may jump, and the exact gradient with it).
    """
    p = params_tree(3)
    reg = jaxww.add_alpha_regularization(1.0, 2.5, every=10, tail=6)
    state, upd = reg.init(p), jax.jit(reg.update)
    at_refresh = exact_gradient(p, 2.5, tail=6)
    key = jax.random.key(0)
    for step in range(6):
        g, state = upd(zeros_like(p), state, p)
        assert rel_error(g, at_refresh) < grad_rtol(np.float32), step
        want = exact_gradient(p, 2.5, tail=6)
        for name in ("l0", "l1"):
            a, b = np.asarray(g[name]["kernel"]).ravel(), np.asarray(want[name]["kernel"]).ravel()
            assert a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) > 0.99, (step, name)
        key, k = jax.random.split(key)   # a training-like step: small random moves
        p = jax.tree.map(lambda x: x + 0.01 * jax.random.normal(k, x.shape) / np.sqrt(x.shape[0]), p)
    assert int(state.count) == 6


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("tail", [6, "ks", "fraction", "soft"])
def test_full_steps_after_cheap_steps_are_exact(tail, dtype):
    """Every ``every`` steps the gradient is exact again. Exactness is shown in float64
    (to rounding); float32 must agree to float32 rounding."""
    with jax.enable_x64(dtype == np.float64):
        p = jax.tree.map(lambda x: np.asarray(x, dtype), params_tree(6))
        reg = jaxww.add_alpha_regularization(1.0, 2.5, every=3, tail=tail)
        state, upd = reg.init(p), jax.jit(reg.update)
        key = jax.random.key(1)
        for step in range(7):
            g, state = upd(zeros_like(p), state, p)
            if step % 3 == 0:
                assert rel_error(g, exact_gradient(p, 2.5, tail=tail)) < grad_rtol(dtype), step
                for k, a in jaxww.tree_alpha(p, tail=tail).items():
                    assert float(state.alpha[k]) == pytest.approx(float(a), rel=1e-4)
            key, k = jax.random.split(key)
            p = jax.tree.map(lambda x: x + 0.05 * jax.random.normal(k, x.shape, x.dtype) / np.sqrt(x.shape[0]), p)


@pytest.mark.slow
def test_transforms_compose_under_jit_with_masks():
    """The chained update, computed by hand: only ``l1`` (the mask) is transformed.

    ``u = -lr ((g + grad P) s + wd s W)`` with ``P = alpha_penalty`` over ``l1`` alone
    and ``s = 1``: one regularised layer gets the midpoint of [0.5, 1.5] (TempBalance's
    rule with a single alpha) in both ``scale_by_alpha`` and the decay.
    """
    p = params_tree(4)
    mask = {"l0": {"kernel": False, "bias": False}, "l1": True}
    lr, wd, strength = 1e-2, 0.1, 10.0
    opt = optax.chain(jaxww.add_alpha_regularization(strength, 2.0, every=2, mask=mask),
                      jaxww.scale_by_alpha(every=2, mask=mask),
                      jaxww.add_alpha_decayed_weights(wd, every=2, mask=mask),
                      optax.sgd(lr))
    state = opt.init(p)
    g = jax.tree.map(lambda x: jnp.ones_like(x), p)
    u, state = jax.jit(opt.update)(g, state, p)
    reg = strength * np.asarray(
        jax.grad(lambda q: jaxww.alpha_penalty(q, 2.0, mask=mask))(p)["l1"]["kernel"], np.float64)
    assert np.abs(reg).max() > 0.1                                   # the penalty acts
    s = 1.0
    want = -lr * ((1.0 + reg) * s + wd * s * p["l1"]["kernel"])
    got = np.asarray(u["l1"]["kernel"], np.float64)
    # float32 rounding of the eigenvector gradient, relative to its norm (see grad_rtol)
    assert np.linalg.norm(got - want) <= grad_rtol(np.float32) * lr * np.linalg.norm(reg)
    np.testing.assert_allclose(np.asarray(u["l1"]["bias"]), -lr)      # not a weight matrix
    np.testing.assert_allclose(np.asarray(u["l0"]["kernel"]), -lr)    # masked out: plain sgd
    np.testing.assert_allclose(np.asarray(u["l0"]["bias"]), -lr)
    assert all(float(state[i].inner_state.scale["l1/kernel"]) == 1.0 for i in (1, 2))


# ------------------------------------------------------------------- NaN safety
NAN_OPT = optax.chain(jaxww.add_alpha_regularization(1.0, 2.0, every=2),
                      jaxww.scale_by_alpha(every=2), jaxww.add_alpha_decayed_weights(0.1, every=2))
NAN_UPDATE = jax.jit(NAN_OPT.update)   # one compilation for the four initialisations


@pytest.mark.slow
@pytest.mark.parametrize("init", ["random", "zeros", "constant", "nan_layer"])
def test_no_nan_ever_enters_the_updates(init):
    if init == "random":
        p = params_tree(5)
    elif init == "zeros":
        p = params_tree(fill=0.0)
    elif init == "constant":
        p = params_tree(fill=0.3)
    else:
        p = params_tree(5)
        p["l0"]["kernel"] = p["l0"]["kernel"].copy()
        p["l0"]["kernel"][1, 2] = np.nan
    state = NAN_OPT.init(p)
    upd = NAN_UPDATE
    for _ in range(3):
        u, state = upd(zeros_like(p), state, p)
        assert finite(u)
    reg = state[0]
    if init == "random":
        assert all(bool(v) for v in reg.ok.values())
    elif init == "nan_layer":
        assert not bool(reg.ok["l0/kernel"]) and np.isnan(float(reg.alpha["l0/kernel"]))
        assert bool(reg.ok["l1/kernel"])
        assert np.abs(np.asarray(u["l1"]["kernel"])).max() > 0   # the rest trains
        assert np.isnan(float(state[1].alpha["l0/kernel"])) and float(state[1].scale["l0/kernel"]) == 1.0
    else:
        assert not any(bool(v) for v in reg.ok.values())


# --------------------------------------------------------- alpha moves to target
def regression_run(with_reg, steps=40, every=4):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, A[0])).astype(np.float32)
    Y = np.tanh(X @ rng.standard_normal((A[0], B[1])) / 6).astype(np.float32)
    p = params_tree(6)

    def loss(q):
        h = jnp.tanh(X @ q["l0"]["kernel"] + q["l0"]["bias"])
        return jnp.mean((h @ q["l1"]["kernel"] + q["l1"]["bias"] - Y) ** 2)

    parts = [jaxww.add_alpha_regularization(0.5, 2.0, every=every)] if with_reg else []
    opt = optax.chain(*parts, optax.sgd(0.05))
    state = opt.init(p)

    @jax.jit
    def step(q, st):
        u, st = opt.update(jax.grad(loss)(q), st, q)
        return optax.apply_updates(q, u), st

    for _ in range(steps):
        p, state = step(p, state)
    return p, float(loss(p))


@pytest.mark.slow
def test_alpha_moves_towards_the_target_against_plain_training():
    start = jaxww.tree_alpha(params_tree(6))
    plain, loss_plain = regression_run(False)
    reg, loss_reg = regression_run(True)
    a_plain, a_reg = jaxww.tree_alpha(plain), jaxww.tree_alpha(reg)
    d = {k: (abs(float(a_plain[k]) - 2.0), abs(float(a_reg[k]) - 2.0)) for k in start}
    for k, (dp, dr) in d.items():
        assert dr < 0.5 * dp, (k, float(start[k]), float(a_plain[k]), float(a_reg[k]))
    assert np.isfinite(loss_reg) and loss_reg < 2 * loss_plain + 0.05


# ------------------------------------------------------------- TempBalance, AlphaDecay
@pytest.mark.slow
def test_scale_by_alpha_is_tempbalance():
    p = params_tree(7)
    a = {k: float(v) for k, v in jaxww.tree_alpha(p, tail="fraction").items()}
    lo, hi = min(a.values()), max(a.values())
    want = {k: 0.5 + (v - lo) / (hi - lo) for k, v in a.items()}
    t = jaxww.scale_by_alpha(every=3)
    state = t.init(p)
    g = jax.tree.map(jnp.ones_like, p)
    upd = jax.jit(t.update)
    u, state = upd(g, state, p)
    for name in ("l0", "l1"):
        np.testing.assert_allclose(np.asarray(u[name]["kernel"]), want[f"{name}/kernel"], rtol=1e-4)
        np.testing.assert_array_equal(np.asarray(u[name]["bias"]), 1.0)
        assert float(state.alpha[f"{name}/kernel"]) == pytest.approx(a[f"{name}/kernel"], rel=1e-4)
    # refreshed every 3 steps only: other weights, same scales until the refresh
    q = dict(p, l1={"kernel": p["l1"]["kernel"] ** 3, "bias": p["l1"]["bias"]})
    u1, state = upd(g, state, q)
    u2, state = upd(g, state, q)
    # no refresh: the cached scales times the same ones, the same bits
    np.testing.assert_array_equal(np.asarray(u2["l1"]["kernel"]), np.asarray(u["l1"]["kernel"]))
    u3, state = upd(g, state, q)
    a = {k: float(v) for k, v in jaxww.tree_alpha(q, tail="fraction").items()}
    lo, hi = min(a.values()), max(a.values())
    for name in ("l0", "l1"):
        assert float(state.alpha[f"{name}/kernel"]) == pytest.approx(a[f"{name}/kernel"], rel=1e-4)
        np.testing.assert_allclose(np.asarray(u3[name]["kernel"]),
                                   0.5 + (a[f"{name}/kernel"] - lo) / (hi - lo), rtol=1e-4)


@pytest.mark.slow
def test_alpha_decayed_weights_decay_lighter_tails_more(h):
    p = params_tree(8)
    a = {k: float(v) for k, v in jaxww.tree_alpha(p, tail="fraction").items()}
    t = jaxww.add_alpha_decayed_weights(0.1, every=5, min_scale=0.25, max_scale=2.0)
    u, state = jax.jit(t.update)(zeros_like(p), t.init(p), p)
    heavy, light = sorted(a, key=a.get)
    for name, s in ((heavy, 0.25), (light, 2.0)):
        leaf = name.split("/")[0]
        # the scale is min + (max - min) * frac with frac = 0 or 1 up to the rounding of a
        # float32 division (XLA may divide through a reciprocal: 2 roundings; measured: 2 - 1 ulp
        # with XLA capped at SSE4_2)
        f = float(state.scale[name])
        assert f == pytest.approx(s, rel=h.ulps(2, cond=(2.0 - 0.25) / s, eps=h.EPS32))
        # float32(0.1) (half an ulp off), times the scale, times the weight: two more float32
        # roundings (half an ulp each); the reference is the float64 product
        np.testing.assert_allclose(np.asarray(u[leaf]["kernel"]), 0.1 * f * p[leaf]["kernel"],
                                   rtol=h.ulps(2, eps=h.EPS32), atol=0)
    np.testing.assert_array_equal(np.asarray(u["l0"]["bias"]), 0.0)


def test_scales_of_equal_or_missing_alphas():
    s = np.asarray(T.alpha_scales(jnp.asarray([3.0, 3.0, jnp.nan]), 0.5, 1.5))
    np.testing.assert_allclose(s, [1.0, 1.0, 1.0])
    s = np.asarray(T.alpha_scales(jnp.asarray([2.0, 4.0, 3.0]), 0.5, 1.5))
    np.testing.assert_allclose(s, [0.5, 1.5, 1.0])


def test_per_layer_factors_of_a_stack_scanned_on_axis_1():
    """MaxText stacks layers on axis 1 (``param_scan_axis: 1``): each layer's slice of
    the leaf gets that layer's factor, not a neighbour's."""
    rng = np.random.default_rng(3)
    L, d, F = 3, 24, 40
    p = {"decoder": {"layers": {"mlp": {
        "wi": {"kernel": (rng.standard_t(4.0, (d, L, F)) / np.sqrt(d)).astype(np.float32)},
        "wo": {"kernel": (rng.standard_t(4.0, (F, L, d)) / np.sqrt(F)).astype(np.float32)}}}}}
    tx = jaxww.scale_by_alpha(every=1, min_evals=8)
    state = tx.init(p)
    u, state = jax.jit(tx.update)(jax.tree.map(jnp.ones_like, p), state, p)
    assert len(state.scale) == 2 * L and len(set(np.round([float(v) for v in state.scale.values()], 6))) > 1
    mlp = u["decoder"]["layers"]["mlp"]
    for l in range(L):   # ones times each layer's scale: exactly the scale
        np.testing.assert_array_equal(np.asarray(mlp["wi"]["kernel"])[:, l, :],
                                      float(state.scale[f"decoder/layers/mlp/wi/kernel[{l}]"]))
        np.testing.assert_array_equal(np.asarray(mlp["wo"]["kernel"])[:, l, :],
                                      float(state.scale[f"decoder/layers/mlp/wo/kernel[{l}]"]))


# ------------------------------------------------------ optax.inject_hyperparams
LR = 1e-2


def _reg_in_adam(t):
    """``t`` coupled, before adam; and ``state -> (adam alone, its state)``."""
    return optax.chain(t, optax.adam(LR)), lambda s: (optax.adam(LR), s[1])


def _in_adam(t):
    """``t`` between adam's scaling and the learning rate; and adam alone, as above."""
    adam = optax.chain(optax.scale_by_adam(), optax.scale(-LR))
    return optax.chain(optax.scale_by_adam(), t, optax.scale(-LR)), lambda s: (adam, (s[0], s[2]))


# factory, its hyperparameters, the values that switch it off, where it sits next to adam
INJECTED = {
    "add_alpha_regularization": (jaxww.add_alpha_regularization,
                                 dict(strength=10.0, target=2.0, every=2), dict(strength=0.0), _reg_in_adam),
    "scale_by_alpha": (jaxww.scale_by_alpha, dict(every=2, min_scale=0.5, max_scale=1.5),
                       dict(min_scale=1.0, max_scale=1.0), _in_adam),
    "add_alpha_decayed_weights": (jaxww.add_alpha_decayed_weights, dict(weight_decay=0.5, every=2),
                                  dict(weight_decay=0.0), _in_adam),
}


def assert_trees_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(INJECTED))
def test_injected_hyperparameters_give_the_plain_updates_and_can_be_changed(name):
    """Jitted steps of the transform under ``optax.inject_hyperparams`` (``every`` static;
    the other numbers, defaults included, traced) inside a chain with adam equal the plain
    transform's, to the bit: the same float32 operations on the same float32 values, the
    hyperparameters runtime operands instead of literals (checked on the CPU; the values
    are chosen so that no Python arithmetic between two of them, such as
    ``max_scale - min_scale``, rounds differently from float32). Then a hyperparameter
    set through ``state.hyperparams`` acts from the next update, a step between two
    refreshes: switched off, the update is adam's alone (to float32 rounding: adam
    alone is another XLA program, whose fusions may round its few operations per
    element differently, a few ulps)."""
    factory, hp, off, around = INJECTED[name]
    plain, _ = around(factory(**hp))
    injected, adam_alone = around(optax.inject_hyperparams(factory, static_args="every")(**hp))
    i = 0 if name == "add_alpha_regularization" else 1      # the injected state in the chain
    p = params_tree(5)
    sp, si = plain.init(p), injected.init(p)
    step, inj_step = jax.jit(plain.update), jax.jit(injected.update)
    rng = np.random.default_rng(0)
    grads = lambda: jax.tree.map(lambda x: rng.standard_normal(x.shape).astype(np.float32), p)
    for _ in range(3):                                      # refresh, held, refresh
        g = grads()
        want, sp = step(g, sp, p)
        got, si = inj_step(g, si, p)
        assert_trees_equal(got, want)
        p = optax.apply_updates(p, want)
    injected_names = set(si[i].hyperparams)                 # every number but the static every
    assert "every" not in injected_names and injected_names >= set(hp) - {"every"} | {"temperature", "thresh"}
    g = grads()
    adam, adam_state = adam_alone(si)
    alone, _ = jax.jit(adam.update)(g, adam_state, p)
    before, _ = inj_step(g, si, p)
    assert not np.allclose(before["l1"]["kernel"], alone["l1"]["kernel"], rtol=1e-3, atol=0)
    si[i].hyperparams.update(off)                           # plain Python floats, as a user would
    after, si = inj_step(g, si, p)
    for x, y in zip(jax.tree.leaves(after), jax.tree.leaves(alone), strict=True):
        np.testing.assert_allclose(x, y, rtol=8 * np.finfo(np.float32).eps, atol=0)
    assert {k: float(si[i].hyperparams[k]) for k in off} == off


@pytest.mark.parametrize("make, what", [
    (lambda: optax.inject_hyperparams(jaxww.scale_by_alpha)(), "every"),           # the default 100
    (lambda: optax.inject_hyperparams(jaxww.add_alpha_regularization)(1e-3, 2.0, every=10), "every"),
    (lambda: optax.inject_hyperparams(jaxww.scale_by_alpha, static_args="every")(tail=6), "tail"),
])
def test_a_traced_static_argument_names_static_args(make, what):
    """Numbers optax injects arrive concrete at ``init`` (accepted) and traced in a jitted
    ``update``, where a structural one is refused with the fix."""
    p = params_tree(1)
    t = make()
    state = t.init(p)
    with pytest.raises(TypeError, match=f"{what} is static.*static_args"):
        jax.jit(t.update)(zeros_like(p), state, p)


@pytest.mark.parametrize("make, error, match", [
    (lambda: optax.inject_hyperparams(jaxww.add_alpha_regularization)(1e-3, 0.5), ValueError, "target"),
    (lambda: optax.inject_hyperparams(jaxww.add_alpha_regularization)(-1.0, 2.0), ValueError, "strength"),
    (lambda: optax.inject_hyperparams(jaxww.add_alpha_regularization)(1e-3, 2.0, temperature=0.0),
     ValueError, "temperature"),
    (lambda: optax.inject_hyperparams(jaxww.scale_by_alpha)(min_scale=2.0, max_scale=1.0),
     ValueError, "min_scale"),
    (lambda: optax.inject_hyperparams(jaxww.scale_by_alpha)(every=0), ValueError, "every"),
    (lambda: optax.inject_hyperparams(jaxww.add_alpha_decayed_weights)(float("nan")),
     ValueError, "weight_decay"),
    (lambda: jaxww.add_alpha_regularization(jnp.asarray(1e-3), jnp.asarray(1.0)), ValueError, "target"),
    (lambda: jaxww.scale_by_alpha(every=jnp.asarray(2.5)), ValueError, "every"),
    (lambda: jaxww.add_alpha_regularization(jnp.ones(3), 2.0), TypeError, "strength"),
    (lambda: jaxww.scale_by_alpha(max_scale=jnp.asarray(True)), TypeError, "max_scale"),
])
def test_concrete_array_hyperparameters_are_checked(make, error, match):
    """optax's ``init`` builds the transform with concrete arrays: bad values are caught there."""
    with pytest.raises(error, match=match):
        make().init(params_tree(1))


def test_concrete_array_hyperparameters_are_accepted():
    """The issue's call, and ``every`` / ``tail`` as concrete arrays (read as ints)."""
    p = params_tree(1)
    t = optax.inject_hyperparams(jaxww.add_alpha_regularization)(strength=1e-3, target=2.0, every=10)
    assert set(t.init(p).hyperparams) >= {"strength", "target", "every", "temperature", "thresh"}
    jaxww.scale_by_alpha(every=jnp.asarray(3), tail=np.asarray(6), min_scale=jnp.asarray(0.5)).init(p)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(INJECTED))
def test_docstring_examples_run(name):
    import doctest

    f = getattr(jaxww, name)
    finder = doctest.DocTestFinder(recurse=False)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in finder.find(f, name, globs={}):
        runner.run(test)
    assert runner.failures == 0 and runner.tries > 0

