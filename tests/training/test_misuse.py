"""Misuse named (issue 22, point 5): the functions that read concrete weights called under a
JAX transformation, ``Tracker.update`` given an optimizer or traced params, and the optax
transforms given another tree or their arguments swapped, each raise an error that says
what happened and what to do, never a crash deep in JAX nor a silent NaN."""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jaxww


def params_tree(seed=0):
    rng = np.random.default_rng(seed)
    return {"l0": {"kernel": (rng.standard_normal((64, 48)) / 8).astype(np.float32), "bias": np.zeros(48, np.float32)},
            "l1": {"kernel": (rng.standard_normal((48, 10)) / 7).astype(np.float32), "bias": np.zeros(10, np.float32)}}


def assert_names_the_way_out(err, where):
    msg = str(err.value)
    assert msg.startswith(f"{where}: got a traced array"), msg
    assert "call it outside the transformed function" in msg, msg
    for name in ("jaxww.tree_alpha", "jaxww.alpha,", "jaxww.alpha_penalty", "jaxww.weighted_alpha_penalty",
                 "jaxww.spectral_norm_penalty", "jaxww.add_alpha_regularization", "jaxww.scale_by_alpha",
                 "jaxww.add_alpha_decayed_weights"):
        assert name in msg, (name, msg)


# ------------------------------------------------------- analysis under a transformation
ENTRIES = {
    "analyze": jaxww.analyze,
    "describe": jaxww.describe,
    "get_esd": lambda p: jaxww.get_esd(p, "l0/kernel"),
    "diff_models": lambda p: jaxww.diff_models(p, params_tree(1)),
    "smooth": jaxww.smooth,
}
TRANSFORMATIONS = {
    "jit": lambda f, p: jax.jit(f)(p),
    "vmap": lambda f, p: jax.vmap(f)(jax.tree.map(lambda x: np.stack([x, x]), p)),
    "grad": lambda f, p: jax.grad(lambda q: (f(q), 0.0)[1])(p),
}


@pytest.mark.parametrize("how", list(TRANSFORMATIONS))
@pytest.mark.parametrize("where", list(ENTRIES))
def test_entries_under_a_transformation_name_the_jit_safe_functions(where, how):
    with pytest.raises(TypeError) as err:
        TRANSFORMATIONS[how](ENTRIES[where], params_tree())
    assert_names_the_way_out(err, where)


def test_one_traced_leaf_or_a_traced_base_is_enough():
    p = params_tree()
    with pytest.raises(TypeError) as err:
        jax.jit(lambda w: jaxww.analyze({**p, "l1": {"kernel": w}}))(p["l1"]["kernel"])
    assert_names_the_way_out(err, "analyze")
    with pytest.raises(TypeError) as err:
        jax.jit(lambda b: jaxww.analyze(p, base=b))(params_tree(1))
    assert_names_the_way_out(err, "analyze")


class Net(nnx.Module):
    def __init__(self, rngs):
        self.l0 = nnx.Linear(64, 48, rngs=rngs)
        self.l1 = nnx.Linear(48, 10, rngs=rngs)


def test_analyze_and_describe_inside_nnx_jit():
    model = Net(nnx.Rngs(0))
    for where, f in (("analyze", jaxww.analyze), ("describe", jaxww.describe)):
        with pytest.raises(TypeError) as err:
            nnx.jit(f)(model)
        assert_names_the_way_out(err, where)
    assert [r["name"] for r in jaxww.describe(model).rows] == ["l0/kernel", "l1/kernel"]   # outside: as before


# ------------------------------------------------------------------ Tracker.update
def closed_after(tracker, call):
    """``call(tracker)``'s exception, the tracker closed afterwards."""
    try:
        with pytest.raises(TypeError) as err:
            call(tracker)
    finally:
        tracker.close()
    return err


def test_tracker_update_inside_nnx_jit():
    model = Net(nnx.Rngs(0))
    err = closed_after(jaxww.Tracker(every=1), lambda t: nnx.jit(lambda m: t.update(0, m))(model))
    assert_names_the_way_out(err, "Tracker.update")


def test_tracker_update_inside_jit_traced_step_or_untracked_first_step():
    p = params_tree()
    err = closed_after(jaxww.Tracker(every=1), lambda t: jax.jit(t.update)(0, p))
    assert_names_the_way_out(err, "Tracker.update")
    # a first call on a step that is not tracked: under jit it may be the only call ever made
    err = closed_after(jaxww.Tracker(every=50), lambda t: jax.jit(lambda q: t.update(1, q))(p))
    assert_names_the_way_out(err, "Tracker.update")


def test_tracker_update_traced_after_a_concrete_first_call():
    p = params_tree()

    def call(tracker):
        assert tracker.update(0, p)
        jax.jit(lambda q: tracker.update(2, q))(p)

    assert_names_the_way_out(closed_after(jaxww.Tracker(every=2), call), "Tracker.update")


def test_tracker_refuses_an_optimizer_at_once_and_still_tracks():
    model = Net(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
    tracker = jaxww.Tracker(every=1)
    try:
        with pytest.raises(TypeError, match=r"got an nnx.Optimizer.*pass the model, tracker.update\(step, model\)"):
            tracker.update(0, optimizer)
        p = params_tree()
        for state in (optax.adam(1e-3).init(p), optax.chain(optax.clip(1.0), optax.sgd(0.1)).init(p)):
            with pytest.raises(TypeError, match=r"got optax optimizer state \(\w+\).*tracker.update\(step, params\)"):
                tracker.update(0, state)
        assert tracker.update(0, model)
    finally:
        history = tracker.close()
    assert history.steps == [0] and set(history.details.name) == {"l0/kernel", "l1/kernel"}


# ------------------------------------------------------------------- optax transforms
# min_evals=8: the 10-class head (10 eigenvalues) is one of the layers checked here.
MAKERS = {
    "add_alpha_regularization": lambda every: jaxww.add_alpha_regularization(1e-3, 3.0, every=every, min_evals=8),
    "scale_by_alpha": lambda every: jaxww.scale_by_alpha(every=every, min_evals=8),
    "add_alpha_decayed_weights": lambda every: jaxww.add_alpha_decayed_weights(1e-3, every=every, min_evals=8),
}


def grads_of(p, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((32, 64)).astype(np.float32)
    y = rng.integers(0, 10, 32)

    def loss(q):
        h = jax.nn.relu(x @ q["l0"]["kernel"] + q["l0"]["bias"])
        return optax.softmax_cross_entropy_with_integer_labels(h @ q["l1"]["kernel"] + q["l1"]["bias"], y).mean()

    return jax.grad(loss)(p)


@pytest.fixture(autouse=True)
def quiet_jax_callback_log(caplog):
    """jax logs the traceback of a failed host callback before raising it; the tests read the error."""
    caplog.set_level(logging.CRITICAL, logger="jax")


SWAPPED = "the first update got the params as `updates`"


@pytest.mark.slow
@pytest.mark.parametrize("every", [1, 5])
@pytest.mark.parametrize("name", list(MAKERS))
def test_swapped_params_and_updates_raise(name, every):
    """Raised from the host, under jit or not: a JaxRuntimeError ending with the ValueError."""
    p = params_tree()
    g = grads_of(p)
    tx = MAKERS[name](every)
    state = tx.init(p)
    for update in (jax.jit(tx.update), tx.update):
        with pytest.raises(jax.errors.JaxRuntimeError, match=f"ValueError: {name}.update: {SWAPPED}"):
            jax.block_until_ready(update(p, state, g))   # raised by the call, or by its results' first use
    updates, after = jax.jit(tx.update)(g, state, p)     # the right order: nothing raised
    assert all(np.isfinite(np.asarray(a)) for a in after.alpha.values())
    jax.block_until_ready(jax.jit(tx.update)(p, state, p))   # the docs' update(params, state, params)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MAKERS))
def test_swap_check_raises_nothing_where_it_cannot_tell(name):
    """Params replaced after ``init`` (loaded weights) and zero weights match neither
    side: no error, in either order; a later step (count > 0) is not checked."""
    p0, p1 = params_tree(0), params_tree(1)
    tx = MAKERS[name](1)
    state = tx.init(p0)
    for args in ((grads_of(p1), state, p1), (p1, state, grads_of(p1))):
        jax.block_until_ready(jax.jit(tx.update)(*args))
    zeros = jax.tree.map(np.zeros_like, p0)
    jax.block_until_ready(jax.jit(tx.update)(grads_of(zeros), tx.init(zeros), zeros))
    _, later = tx.update(grads_of(p0), tx.init(p0), p0)
    jax.block_until_ready(jax.jit(tx.update)(p0, later, grads_of(p0)))


@pytest.mark.parametrize("name", list(MAKERS))
def test_update_with_another_model_names_the_first_differing_layer(name):
    p = params_tree()
    tx = MAKERS[name](5)
    state = tx.init(p)
    other = {"a": p["l0"], "b": p["l1"], "c": p["l1"]}
    with pytest.raises(ValueError, match=rf"^{name}.update: the params are not those init saw: layer 0 is "
                                         r"'a/kernel', init saw 'l0/kernel' \(2 layers at init, 3 now\)"):
        jax.jit(tx.update)(other, state, other)
    fewer = {"l0": p["l0"]}
    with pytest.raises(ValueError, match=r"layer 1 is None, init saw 'l1/kernel'"):
        tx.update(fewer, state, fewer)


def test_regularizer_with_another_shape_names_the_layer():
    p = params_tree()
    tx = MAKERS["add_alpha_regularization"](5)
    wider = {"l0": p["l0"], "l1": {"kernel": np.ones((48, 20), np.float32), "bias": np.zeros(20, np.float32)}}
    with pytest.raises(ValueError, match=r"'l1/kernel' has shape \(48, 20\), init saw \(48, 10\)"):
        jax.jit(tx.update)(wider, tx.init(p), wider)


@pytest.mark.parametrize("name", list(MAKERS))
def test_updates_of_another_structure_name_the_first_differing_leaf(name):
    p = params_tree()
    tx = MAKERS[name](5)
    state = tx.init(p)
    missing = {"l0": p["l0"], "l1": {"kernel": p["l1"]["kernel"]}}
    with pytest.raises(ValueError, match=r"updates and params differ at leaf 2: 'l1/kernel' in updates, 'l1/bias' "
                                         r"in params \(3 and 4 leaves\)"):
        jax.jit(tx.update)(missing, state, p)
    reshaped = {"l0": p["l0"], "l1": {**p["l1"], "bias": np.zeros(3, np.float32)}}
    with pytest.raises(ValueError, match=r"updates and params differ at 'l1/bias': shape \(3,\) in updates, "
                                         r"\(10,\) in params"):
        jax.jit(tx.update)(reshaped, state, p)


def test_nnx_optimizer_with_a_transform_passes_the_checks():
    """nnx.Optimizer hands ``nnx.State`` grads and params to ``update``: the same paths."""
    model = Net(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.chain(jaxww.scale_by_alpha(every=1, min_evals=8), optax.sgd(0.1)), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, x):
        grads = nnx.grad(lambda m: jnp.mean(m.l1(jax.nn.relu(m.l0(x))) ** 2))(model)
        optimizer.update(model, grads)

    step(model, optimizer, jnp.ones((8, 64)))
    alphas = optimizer.opt_state[0].alpha
    assert set(alphas) == {"l0/kernel", "l1/kernel"}
    assert all(np.isfinite(np.asarray(a)) for a in jax.tree.leaves(alphas))


@pytest.mark.parametrize("name", list(MAKERS))
def test_update_without_params_says_how_to_call_it(name):
    p = params_tree()
    tx = MAKERS[name](5)
    with pytest.raises(ValueError, match=rf"^{name}: update needs the params: call update\(updates, state, params\)$"):
        tx.update(p, tx.init(p))
