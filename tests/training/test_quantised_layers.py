"""Quantised (integer) weights in training: measured as ``analyze`` reads them (dequantised
with their scale), never updated by the transforms, constants of the penalties."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxww
from reading.families_cases import keras_int8_tree

EPS32 = float(np.finfo(np.float32).eps)
TRANSFORMS = {
    "add_alpha_decayed_weights": lambda: jaxww.add_alpha_decayed_weights(0.5, every=1, min_evals=8,
                                                                         min_scale=0.3, max_scale=0.7),
    "scale_by_alpha": lambda: jaxww.scale_by_alpha(every=1, min_evals=8, min_scale=0.3, max_scale=0.7),
    "add_alpha_regularization": lambda: jaxww.add_alpha_regularization(10.0, 2.0, every=1, min_evals=8),
}


def tree():
    """A Keras ``Dense.quantize("int8")`` layer (int8 ``kernel``, ``kernel_scale``) beside a float one."""
    return jax.tree.map(jnp.asarray, keras_int8_tree()[0])


def _init(opt, p):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        state = opt.init(p)
    return state, [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_transforms_leave_integer_codes_alone(name):
    """Chained with ``optax.sgd``, applied: the int8 codes are unchanged (the old code decayed
    and cast them back), the float layer is transformed, and ``init`` says why, once."""
    p = tree()
    opt = optax.chain(TRANSFORMS[name](), optax.sgd(0.1))
    state, said = _init(opt, p)
    sgd = optax.sgd(0.1)
    for fill in (0, 3):     # the zero gradient of a frozen leaf; any update is passed through
        g = jax.tree.map(lambda x: jnp.ones_like(x) if jnp.issubdtype(x.dtype, jnp.inexact) else jnp.full_like(x, fill), p)
        u, _ = jax.jit(opt.update)(g, state, p)
        alone = sgd.update(g, sgd.init(p))[0]["dense"]["kernel"]
        assert u["dense"]["kernel"].dtype == alone.dtype
        np.testing.assert_array_equal(np.asarray(u["dense"]["kernel"]), np.asarray(alone))
    u, state = jax.jit(opt.update)(jax.tree.map(lambda x: jnp.ones_like(x) if jnp.issubdtype(x.dtype, jnp.inexact)
                                                else jnp.zeros_like(x), p), state, p)
    new = optax.apply_updates(p, u)
    np.testing.assert_array_equal(np.asarray(new["dense"]["kernel"]), np.asarray(p["dense"]["kernel"]))
    assert not np.allclose(np.asarray(u["head"]["kernel"]), -0.1)            # the float layer is transformed
    assert len(said) == 1 and "dense/kernel" in said[0] and "quantised codes, not trained by gradient" in said[0]
    inner = state[0]
    assert set(inner.alpha) == {"dense/kernel", "head/kernel"}               # both measured
    want = jaxww.tree_alpha(p, min_evals=8, tail="ks" if name == "add_alpha_regularization" else "fraction")
    np.testing.assert_allclose(float(inner.alpha["dense/kernel"]), float(want["dense/kernel"]), rtol=1e-5)


@pytest.mark.parametrize("name", ["scale_by_alpha", "add_alpha_decayed_weights"])
def test_integer_layers_stay_out_of_the_scale_map(name):
    """With one float layer left, it gets the midpoint of [0.3, 0.7] (TempBalance's rule for
    a single alpha: the integer layer's alpha is not in the map) and the integer layer's
    factor is 1: none applied."""
    p = tree()
    tx = TRANSFORMS[name]()
    state, _ = _init(tx, p)
    _, state = jax.jit(tx.update)(jax.tree.map(jnp.zeros_like, p), state, p)
    assert float(state.scale["head/kernel"]) == pytest.approx(0.5, rel=EPS32)
    assert float(state.scale["dense/kernel"]) == 1.0
    assert bool(jnp.isfinite(state.alpha["dense/kernel"]))


@pytest.mark.slow
def test_regularizer_adds_the_penalty_gradient_of_the_float_leaves():
    """The regulariser's first update on the float layer is ``s grad P`` with the integer
    layer a constant of ``P`` (``jax.grad(..., allow_int=True)``), to the float32 rounding
    of two eigenvector paths (test_transforms.grad_rtol)."""
    p, s = tree(), 10.0
    tx = TRANSFORMS["add_alpha_regularization"]()
    state, _ = _init(tx, p)
    u, state = jax.jit(tx.update)(jax.tree.map(jnp.zeros_like, p), state, p)
    want = s * np.asarray(jax.grad(lambda q: jaxww.alpha_penalty(q, 2.0, min_evals=8), allow_int=True)(p)
                          ["head"]["kernel"], np.float64)
    got = np.asarray(u["head"]["kernel"], np.float64)
    assert np.linalg.norm(want) > 0 and np.linalg.norm(got - want) <= 1e4 * EPS32 * np.linalg.norm(want)
    np.testing.assert_array_equal(np.asarray(u["dense"]["kernel"]), 0)


@pytest.mark.parametrize("penalty", [
    lambda q: jaxww.alpha_penalty(q, 3.0, min_evals=8),
    lambda q: jaxww.weighted_alpha_penalty(q, min_evals=8),
    lambda q: jaxww.spectral_norm_penalty(q),
], ids=["alpha", "weighted_alpha", "spectral_norm"])
@pytest.mark.slow
def test_penalties_treat_integer_leaves_as_constants(penalty):
    """``jax.grad(allow_int=True)``: the int8 kernel gets a ``float0`` gradient, the float
    kernel the gradient of the penalty with the int8 leaf closed over (the same program)."""
    p = tree()
    g = jax.jit(jax.grad(penalty, allow_int=True))(p)
    assert g["dense"]["kernel"].dtype == jax.dtypes.float0
    floats = {"head": p["head"]}
    closed = jax.jit(jax.grad(lambda f: penalty({**f, "dense": p["dense"]})))(floats)
    np.testing.assert_allclose(np.asarray(g["head"]["kernel"]), np.asarray(closed["head"]["kernel"]),
                               rtol=0, atol=4 * EPS32 * float(jnp.abs(closed["head"]["kernel"]).max()))
    assert float(jnp.abs(closed["head"]["kernel"]).max()) > 0
