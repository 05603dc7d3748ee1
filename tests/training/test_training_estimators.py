"""``estimator=`` of the differentiable alphas, the penalties and the alpha transforms:
the papers' estimators of :mod:`jaxww.fit.estimators`, and TempBalance's and AlphaDecay's
rules (``np.interp`` of ``get_layer_temps``, ``tb_linear_map``) on them."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import eig_err, pl_alpha_rtol, student_t, svd_evals

import jaxww


def _tree():
    """Three kernels with different tails (Student-t of 3, 5 and 8 degrees of freedom)."""
    return {f"l{i}": {"kernel": student_t(i, (80, 48), nu=nu), "bias": np.zeros(48, np.float32)}
            for i, nu in enumerate((3.0, 5.0, 8.0))}


def _interp(alpha: dict, lo: float, hi: float) -> dict:
    """TempBalance / AlphaDecay ``tb_linear_map``: ``np.interp(alpha, [min, max], [lo, hi])``."""
    a = np.array(list(alpha.values()))
    return dict(zip(alpha, np.interp(a, [a.min(), a.max()], [lo, hi])))


@pytest.mark.slow
@pytest.mark.parametrize("estimator", ["hill_median", "alpha_peak"])
def test_alpha_is_the_fit_of_the_spectrum_batched_and_vmapped(x64, estimator):
    W = np.stack([student_t(s, (80, 48)) for s in range(3)]).astype(np.float64)
    got = np.asarray(jaxww.alpha(W, estimator=estimator))
    mapped = np.asarray(jax.jit(jax.vmap(lambda w: jaxww.alpha(w, estimator=estimator)))(W))
    for w, a, m in zip(W, got, mapped):
        ev = svd_evals(w)
        fit = jaxww.fit_power_law(ev, estimator=estimator)
        rtol = pl_alpha_rtol(ev[ev >= float(fit.xmin)], eig_err(ev, 80))
        assert a == pytest.approx(float(fit.alpha), rel=rtol) and m == pytest.approx(a, rel=rtol)
    spec = jaxww.tail_alpha(svd_evals(W[0]), estimator=estimator)
    assert float(spec.alpha) == pytest.approx(got[0], rel=1e-9)


@pytest.mark.slow
def test_gradient_is_the_derivative_with_the_index_held(x64):
    """Central differences along a random direction (the median index cannot move)."""
    w = student_t(4, (80, 48)).astype(np.float64)
    d = np.random.default_rng(0).standard_normal(w.shape)
    f = lambda v: jaxww.alpha(v, estimator="hill_median")  # noqa: E731
    g = jax.jit(jax.grad(f))(w)
    eps = 1e-6
    fd = (float(f(w + eps * d)) - float(f(w - eps * d))) / (2 * eps)
    assert float(jnp.vdot(g, d)) == pytest.approx(fd, rel=1e-5)


def test_tail_and_estimator_together_are_refused():
    w = student_t(0, (80, 48))
    with pytest.raises(ValueError, match="give tail= or estimator=, not both"):
        jaxww.alpha(w, tail="fraction", estimator="alpha_peak")
    with pytest.raises(ValueError, match="give tail= or estimator=, not both"):
        jaxww.scale_by_alpha(tail=0.3, estimator="hill_median")
    with pytest.raises(ValueError, match="estimator must be one of"):
        jaxww.tree_alpha({"w": w}, estimator="peak")


#: The transforms' alphas come from LAPACK's float32 eigenvalues, tree_alpha's from
#: Rayleigh quotients (two float32 paths, as in test_transforms); the estimators differ by
#: over 10% on these layers.
PATHS_RTOL = 1e-4


def test_scale_by_alpha_with_hill_median_is_tempbalance():
    p = _tree()
    alpha = {k: float(v) for k, v in jaxww.tree_alpha(p, estimator="hill_median").items()}
    t = jaxww.scale_by_alpha(every=1, estimator="hill_median")
    g = jax.tree.map(jnp.ones_like, p)
    u, state = jax.jit(t.update)(g, t.init(p), p)
    held = {k: float(v) for k, v in state.alpha.items()}
    assert held == pytest.approx(alpha, rel=PATHS_RTOL)
    for name, s in _interp(held, 0.5, 1.5).items():
        leaf = name.split("/")[0]
        # float32 affine map of float32 alphas: a few roundings of values <= 1.5
        np.testing.assert_allclose(np.asarray(u[leaf]["kernel"]), s, rtol=1e-6)
        np.testing.assert_array_equal(np.asarray(u[leaf]["bias"]), 1.0)


@pytest.mark.slow
def test_decay_penalty_and_regulariser_by_estimator():
    """AlphaDecay's rule with its scripts' ratios; the penalty and the regulariser use the
    alphas of ``tree_alpha(estimator=)``."""
    p = _tree()
    mid = {k: float(v) for k, v in jaxww.tree_alpha(p, estimator="hill_median").items()}
    t = jaxww.add_alpha_decayed_weights(0.1, every=1, estimator="hill_median", min_scale=0.6666, max_scale=5.0)
    u, state = jax.jit(t.update)(jax.tree.map(jnp.zeros_like, p), t.init(p), p)
    held = {k: float(v) for k, v in state.alpha.items()}
    assert held == pytest.approx(mid, rel=PATHS_RTOL)
    for name, s in _interp(held, 0.6666, 5.0).items():
        leaf = name.split("/")[0]
        np.testing.assert_allclose(np.asarray(u[leaf]["kernel"]), 0.1 * s * p[leaf]["kernel"], rtol=1e-6)
    peak = {k: float(v) for k, v in jaxww.tree_alpha(p, estimator="alpha_peak").items()}
    value = float(jax.jit(lambda q: jaxww.alpha_penalty(q, 3.0, estimator="alpha_peak"))(p))
    assert value == pytest.approx(np.mean([(a - 3.0) ** 2 for a in peak.values()]), rel=1e-6)
    reg = jaxww.add_alpha_regularization(1e-3, 3.0, estimator="alpha_peak")
    _, state = jax.jit(reg.update)(jax.tree.map(jnp.zeros_like, p), reg.init(p), p)
    assert {k: float(v) for k, v in state.alpha.items()} == pytest.approx(peak, rel=PATHS_RTOL)
