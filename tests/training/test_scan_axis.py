"""``scan_axis=`` in training (issue #23, point 3): the stacks ``analyze(scan_axis=)`` reads,
which only ``scan_axis=`` can place, are read the same by ``tree_alpha``, the penalties and
the optax transforms (static under ``optax.inject_hyperparams``, as ``min_evals``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxww

E, L, F, V = 64, 3, 96, 160     # MaxText: embed, layers (axis 1: param_scan_axis), mlp, vocab


def stack(seed=0):
    """A MaxText-like tree whose one stacked leaf has its layer axis at 1: ``(E, L, F)``
    (the subtree has no other member to tell the axis by: only ``scan_axis=`` places it)."""
    rng = np.random.default_rng(seed)

    def t(*shape):
        return (rng.standard_t(3.0, shape) / np.sqrt(shape[0])).astype(np.float32)

    return {"params": {"decoder": {"layers": {"mlp": {"wi_0": {"kernel": t(E, L, F)}}},
                                   "logits_dense": {"kernel": t(E, V)}}}}


AXES = [1, {r"layers/": 1}]


@pytest.mark.parametrize("scan_axis", AXES, ids=["int", "regex"])
def test_tree_alpha_with_scan_axis_is_analyze(h, scan_axis):
    """Same layers, same alphas: in float64 they agree to the rounding of two eigensolvers
    (XLA eigh, LAPACK syevd) and of the MLE (as test_regularizers.test_tree_alpha_matches_analyze)."""
    with jax.enable_x64(True):
        params = jax.tree.map(lambda x: np.asarray(x, np.float64), stack())
        got = jaxww.tree_alpha(params, scan_axis=scan_axis)
        rep = jaxww.analyze(params, precision="float64", scan_axis=scan_axis)
    rows = {r["name"]: r for r in rep.rows}
    assert list(got) == list(rows) and len(rows) == L + 1, (list(got), list(rows))
    h.assert_tree_alpha_is_analyzes(got, rep)


@pytest.mark.slow
def test_penalties_take_scan_axis():
    """Each penalty reads the ``L`` layers of the stack (its aux is keyed by analyze's rows)."""
    p = stack(1)
    rows = [r["name"] for r in jaxww.analyze(p, scan_axis=1).rows]
    for fn in (lambda q: jaxww.alpha_penalty(q, 3.0, min_evals=8, has_aux=True, scan_axis=1),
               lambda q: jaxww.weighted_alpha_penalty(q, min_evals=8, has_aux=True, scan_axis=1),
               lambda q: jaxww.spectral_norm_penalty(q, has_aux=True, scan_axis=1)):
        value, aux = jax.jit(fn)(p)
        assert sorted(aux.ok) == sorted(rows) and bool(jnp.isfinite(value))
    g = jax.jit(jax.grad(lambda q: jaxww.alpha_penalty(q, 3.0, scan_axis=1)))(p)
    assert float(jnp.abs(g["params"]["decoder"]["layers"]["mlp"]["wi_0"]["kernel"]).max()) > 0


@pytest.mark.parametrize("make", [
    lambda: jaxww.scale_by_alpha(every=1, scan_axis=1),
    lambda: optax.inject_hyperparams(jaxww.scale_by_alpha, static_args=("every", "scan_axis"))(every=1, scan_axis=1),
], ids=["plain", "inject_hyperparams"])
@pytest.mark.slow
def test_scale_by_alpha_with_scan_axis_in_a_jitted_step(make):
    """Each layer of the stack is scaled by its own factor (along axis 1), its alpha that of
    ``tree_alpha(scan_axis=1)``; the state is keyed by analyze's rows."""
    p = stack(2)
    opt = optax.chain(make(), optax.sgd(1.0))
    state = opt.init(p)
    g = jax.tree.map(jnp.ones_like, p)
    u, state = jax.jit(opt.update)(g, state, p)
    inner = getattr(state[0], "inner_state", state[0])
    want = jaxww.tree_alpha(p, tail="fraction", scan_axis=1)
    assert list(inner.alpha) == [r["name"] for r in jaxww.analyze(p, scan_axis=1).rows] == list(want)
    np.testing.assert_allclose([float(inner.alpha[n]) for n in want], [float(a) for a in want.values()],
                               rtol=1e-5)                      # two eigensolvers, float32
    s = np.array([float(inner.scale[n]) for n in want][:L])
    assert np.ptp(s) > 0.1                                     # the layers' factors differ
    np.testing.assert_allclose(np.asarray(u["params"]["decoder"]["layers"]["mlp"]["wi_0"]["kernel"]),
                               np.broadcast_to(-s[None, :, None], (E, L, F)), rtol=1e-6)


@pytest.mark.slow
def test_regularizer_and_decay_with_scan_axis_in_a_jitted_step():
    """The two other transforms take ``scan_axis`` too: every layer of the stack is measured
    and the stacked leaf's update changes."""
    p = stack(3)
    for tx in (jaxww.add_alpha_regularization(1.0, 2.0, every=1, scan_axis=1),
               jaxww.add_alpha_decayed_weights(0.5, every=1, scan_axis=1)):
        state = tx.init(p)
        u, state = jax.jit(tx.update)(jax.tree.map(jnp.zeros_like, p), state, p)
        assert len(state.alpha) == L + 1 and all(bool(jnp.isfinite(a)) for a in state.alpha.values())
        assert float(jnp.abs(u["params"]["decoder"]["layers"]["mlp"]["wi_0"]["kernel"]).max()) > 0


def test_an_injected_int_scan_axis_must_be_static():
    """optax injects every number: a traced ``scan_axis`` is refused, naming ``static_args``."""
    p = stack(4)
    opt = optax.inject_hyperparams(jaxww.scale_by_alpha, static_args="every")(every=1, scan_axis=1)
    state = opt.init(p)
    with pytest.raises(TypeError, match="scan_axis is static.*static_args"):
        jax.jit(opt.update)(p, state, p)


def test_without_scan_axis_the_stack_is_refused_with_the_hint():
    """The refusal names ``scan_axis=`` (which ``tree_alpha`` now takes)."""
    with pytest.warns(UserWarning, match=r"left out.*scan_axis="):
        got = jaxww.tree_alpha(stack())
    assert list(got) == ["params/decoder/logits_dense/kernel"]
