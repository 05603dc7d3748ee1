"""Log-likelihood-ratio comparison of the power-law tail with other laws (CSN, section 5).

On the tail ``x >= xmin`` of the power-law fit (``n`` values), each alternative is
fitted by maximum likelihood on the same tail, and with ``l_i`` the pointwise
log-densities,

.. math::

    R = \\sum_i (\\ell^{PL}_i - \\ell^{alt}_i), \\qquad
    p = \\operatorname{erfc}\\Big(\\frac{|R|}{\\sigma \\sqrt{2 n}}\\Big)

with ``sigma`` the standard deviation of the differences (Vuong's test for non-nested
laws: exponential, lognormal). The truncated power law nests the power law, so there
``p = erfc(sqrt(|R|))`` (``2 |R|`` is chi-squared with one degree of freedom).
``R > 0`` favours the power law, ``R < 0`` the alternative; a small ``p`` says the
sign is significant, a large one that the data cannot tell the two apart.

Alternatives, all on ``[xmin, inf)``:

* exponential ``lam exp(-lam (x - xmin))``, ``lam = 1 / mean(x - xmin)``;
* lognormal truncated at ``xmin``, ``(mu, sigma)`` by Newton ascent from the moments of
  ``ln x`` (``sigma`` bounded to ``[1e-3, 1e3]``);
* truncated power law (:mod:`jaxww.fit.tpl`).

Example:
  >>> import numpy as np, jaxww
  >>> x = np.random.default_rng(0).exponential(1.0, 2000) + 1.0
  >>> c = jaxww.compare_distributions(x, xmin=1.0)
  >>> bool(c.R_exponential < 0), bool(c.p_exponential < 0.01)
  (True, True)
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import erfc, log_ndtr

from jaxww.fit.batching import as_spectra
from jaxww.fit.scan import map_tails
from jaxww.fit.tail import EVALS_THRESH
from jaxww.fit import tpl as _tpl

_ITERATIONS = 40
_STEPS = 2.0 ** -np.arange(0, 12)
_LOG_SIGMA = (np.log(1e-3), np.log(1e3))


class Comparison(NamedTuple):
    """``R`` and ``p`` of the power law against each alternative; batch-shaped fields.

    NaN where the tail has fewer than 2 distinct values.
    """

    R_exponential: jax.Array
    p_exponential: jax.Array
    R_lognormal: jax.Array
    p_lognormal: jax.Array
    R_truncated_power_law: jax.Array
    p_truncated_power_law: jax.Array


def _lognormal_pointwise(theta, lx, lxmin):
    """Pointwise log-density of the lognormal truncated at ``xmin`` (``theta = (mu, ln sigma)``)."""
    mu, ls = theta[0], theta[1]
    z = (lx - mu) / jnp.exp(ls)
    return -lx - ls - 0.5 * np.log(2 * np.pi) - 0.5 * z ** 2 - log_ndtr((mu - lxmin) / jnp.exp(ls))


def _fit_lognormal(lx, w, lxmin):
    """Truncated-lognormal MLE on the tail (weights ``w`` mask it): Newton with backtracking."""
    n = w.sum()
    mean = jnp.sum(w * lx) / n
    sd = jnp.sqrt(jnp.sum(w * (lx - mean) ** 2) / n)
    f = lambda th: jnp.sum(w * _lognormal_pointwise(th, lx, lxmin))
    grad, hess = jax.grad(f), jax.hessian(f)
    steps = jnp.asarray(_STEPS, lx.dtype)
    clip = lambda th: jnp.stack([th[0], jnp.clip(th[1], *_LOG_SIGMA)])

    def step(_, th):
        g, H = grad(th), hess(th)
        det = H[0, 0] * H[1, 1] - H[0, 1] ** 2
        ok = (H[0, 0] < 0) & (det > 0)
        newton = -jnp.stack([H[1, 1] * g[0] - H[0, 1] * g[1], H[0, 0] * g[1] - H[1, 0] * g[0]]) / \
            jnp.where(ok, det, 1.0)
        d = jnp.where(ok, newton, g / jnp.maximum(jnp.abs(jnp.diagonal(H)), 1e-12))
        trials = jax.vmap(lambda t: clip(th + t * d))(steps)
        vals = jax.vmap(f)(trials)
        vals = jnp.where(jnp.isnan(vals), -jnp.inf, vals)
        best = jnp.argmax(vals)
        return jnp.where(vals[best] > f(th), trials[best], th)

    th0 = clip(jnp.stack([mean, jnp.log(jnp.maximum(sd, 1e-3))]))
    return jax.lax.fori_loop(0, _ITERATIONS, step, th0)


def _vuong(diff, w, n):
    R = jnp.sum(w * diff)
    sd = jnp.sqrt(jnp.sum(w * (diff - R / n) ** 2) / n)
    return R, erfc(jnp.abs(R) / (jnp.maximum(sd, 1e-300) * jnp.sqrt(2.0 * n)))


def _compare_one(x, xmin, thresh):
    tail = jnp.isfinite(x) & (x > thresh) & (x >= xmin)
    w = tail.astype(x.dtype)
    n = jnp.maximum(w.sum(), 1.0)
    safe = jnp.where(jnp.isfinite(xmin) & (xmin > 0), xmin, 1.0)
    xt = jnp.where(tail, x, safe)
    lx, lxmin = jnp.log(xt), jnp.log(safe)
    s1 = jnp.sum(lx - lxmin)
    ok = (w.sum() >= 2) & (s1 > 0)
    alpha = 1.0 + n / jnp.where(ok, s1, 1.0)
    pl = jnp.log(alpha - 1.0) - lxmin - alpha * (lx - lxmin)
    lam = n / jnp.where(ok, jnp.sum(xt - safe), 1.0)
    ex = jnp.log(lam) - lam * (xt - safe)
    theta = _fit_lognormal(lx, w, lxmin)
    ln = _lognormal_pointwise(theta, lx, lxmin)
    t = _tpl.fit_one(x, xmin, thresh)
    L = jnp.where(ok, t.Lambda * safe, 0.0)
    a = jnp.where(ok, t.alpha, 2.0)
    tp = -a * lx - L * xt / safe + a * lxmin - lxmin - _tpl.log_integral(a, L)
    R_e, p_e = _vuong(pl - ex, w, n)
    R_l, p_l = _vuong(pl - ln, w, n)
    R_t = jnp.sum(w * (pl - tp))
    p_t = erfc(jnp.sqrt(jnp.abs(R_t)))
    nan = jnp.nan
    return Comparison(*(jnp.where(ok, v, nan) for v in (R_e, p_e, R_l, p_l, R_t, p_t)))


def compare_batch(evals, xmin, thresh=EVALS_THRESH) -> Comparison:
    """:class:`Comparison` of a ``(B, n)`` batch on the tails ``x >= xmin`` (``(B,)``); traceable."""
    return jax.vmap(_compare_one, in_axes=(0, 0, None))(evals, xmin, thresh)


@functools.partial(jax.jit, static_argnames=("thresh",))
def _compare(evals, xmin, thresh):
    return map_tails(compare_batch, evals, xmin, thresh)


def compare_distributions(evals, xmin=None, *, thresh=EVALS_THRESH) -> Comparison:
    """Likelihood-ratio tests of the power-law tail against exponential, lognormal and TPL.

    Args:
      evals: eigenvalues, shape ``(..., n)``, any order; leading axes are a batch.
      xmin: start of the tail (scalar or ``evals.shape[:-1]``); None: the exact
        power-law scan's ``xmin``.
      thresh: values ``<= thresh`` are left out.

    Returns:
      A :class:`Comparison` whose fields have shape ``evals.shape[:-1]``.

    Raises:
      ValueError: no eigenvalue.
    """
    evals = as_spectra(evals, "compare_distributions")
    xmin = None if xmin is None else jnp.asarray(xmin, evals.dtype)
    return _compare(evals, xmin, float(thresh))
