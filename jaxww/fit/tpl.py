"""Truncated power law ``p(x) ~ x**-alpha * exp(-Lambda x)`` on a tail ``x >= xmin``.

The maximum-likelihood ``(alpha, Lambda)`` of the tail, batched over spectra and
jit-compiled (weightwatcher's ``fit="TPL"`` / ``"E_TPL"``). With ``t = x / xmin``,
``L = Lambda * xmin`` and ``n`` tail values, the log-likelihood is

.. math::

    \\ell(\\alpha, \\Lambda) = -\\alpha \\sum \\ln t - L \\sum t - n \\ln I(\\alpha, L) - n \\ln x_{min},
    \\qquad I(\\alpha, L) = \\int_1^\\infty t^{-\\alpha} e^{-L t}\\, dt
      = \\int_0^\\infty e^{-(\\alpha - 1) u - L e^u}\\, du .

``I`` is computed by Gauss-Legendre quadrature in ``u`` (``_PANELS`` panels of
``_NODES`` nodes on ``[0, U]``, ``U`` where the log-concave integrand has fallen by
``e^-60`` from its peak), in log space: exact to float rounding (1e-12 in float64,
tested against mpmath) for any ``alpha >= 0``, ``L >= 0`` (``alpha > 1`` when
``L = 0``). The same nodes give the gradient and Hessian of the log-likelihood
(moments of ``ln t`` and ``t`` under the truncated law). The maximum is found by
projected Newton steps on ``(alpha, L)`` with a backtracking line search (a fixed
number of iterations, so it vectorises), from the power law's MLE ``(alpha_PL, 0)``:
the truncated law nests the power law (``L = 0``), so its log-likelihood is never
below the power law's on the same tail.

``xmin`` is not re-chosen by the truncated law: ``"TPL"`` uses the exact power-law
scan's ``xmin``, ``"E_TPL"`` the ``xmin_peak`` window's (:mod:`jaxww.fit.fingers`).

Example:
  >>> import numpy as np, jaxww
  >>> x = 1.0 + np.random.default_rng(0).exponential(1.0, 2000)   # alpha = 0, Lambda = 1
  >>> fit = jaxww.fit_truncated_power_law(x, xmin=1.0)
  >>> abs(float(fit.Lambda) - 1.0) < 0.1
  True
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxww.fit.batching import as_spectra
from jaxww.fit.scan import map_tails
from jaxww.fit.tail import EVALS_THRESH

_PANELS, _NODES = 32, 8
_GL_X, _GL_W = np.polynomial.legendre.leggauss(_NODES)
#: Newton iterations of the fit.
ITERATIONS = 60
#: Line-search step sizes tried at every iteration (the best one is taken; 0 keeps).
_STEPS = 2.0 ** -np.arange(0, 12)
#: Largest alpha the truncated power-law fit reports: the wall of its search box (not a prior).
TPL_ALPHA_MAX = 50.0

TPL_OK = 0
TPL_TOO_FEW = 1
TPL_REASONS = {TPL_OK: "", TPL_TOO_FEW: "truncated power law: fewer than 2 tail values (or no xmin)"}


class TPLFit(NamedTuple):
    """Result of :func:`fit_truncated_power_law`; batch-shaped fields.

    Attributes:
      alpha, Lambda: the maximum-likelihood truncated power law (``Lambda`` in the
        units of the eigenvalues).
      xmin: start of the tail.
      num_tail: number of values ``>= xmin``.
      loglik: its log-likelihood (natural log, density in ``x``).
      pl_alpha, pl_loglik: the power law's MLE exponent and log-likelihood on the same tail.
      status: ``TPL_OK`` or ``TPL_TOO_FEW`` (then NaN floats).
    """

    alpha: jax.Array
    Lambda: jax.Array
    xmin: jax.Array
    num_tail: jax.Array
    loglik: jax.Array
    pl_alpha: jax.Array
    pl_loglik: jax.Array
    status: jax.Array


def _quadrature(alpha, L):
    """Nodes ``u`` and log-weights of ``I(alpha, L)`` (each node's share of the integral).

    Returns ``(u, logw, diverges)``: ``I = sum exp(logw)`` over the last axis.
    """
    a = alpha - 1.0
    tiny = jnp.finfo(jnp.result_type(alpha, L, float)).tiny
    c = jnp.maximum(-a, 0.0)
    u_peak = jnp.maximum(jnp.log(jnp.maximum(c, tiny) / jnp.maximum(L, tiny)), 0.0)
    # d past the peak where the integrand has fallen by e^-60. It falls by at least
    # k (e^d - 1) with k = L where a >= 0 (and by a d), k = L - c where a = -c < 0 and
    # L >= 2c; else by at least k (e^d - 1 - d) with k = max(c, L) (inner peak:
    # L e^u_peak = c; else the peak is at 0). Solve for d:
    linear = (a >= 0) | (L >= 2 * c)
    k = jnp.where(a >= 0, L, jnp.where(linear, L - c, jnp.maximum(c, L)))
    q = 60.0 / jnp.maximum(k, tiny)
    rate_exp = jnp.where(L > 0, jnp.where(linear, jnp.log1p(q), jnp.log1p(q + jnp.log1p(q) + 1.0)), jnp.inf)
    rate_lin = jnp.where(a > 0, 60.0 / jnp.maximum(a, tiny), jnp.inf)
    U = u_peak + jnp.minimum(rate_lin, rate_exp)
    edges = np.linspace(0.0, 1.0, _PANELS + 1)
    mid, half = (edges[1:] + edges[:-1]) / 2, (edges[1:] - edges[:-1]) / 2
    s = (mid[:, None] + half[:, None] * _GL_X[None, :]).reshape(-1)
    w = (half[:, None] * _GL_W[None, :]).reshape(-1)
    u = U[..., None] * s
    decay = jnp.where(L[..., None] > 0, L[..., None] * jnp.exp(u), 0.0)   # 0 * inf is not 0
    logw = jnp.log(U)[..., None] + np.log(w) - a[..., None] * u - decay
    return u, logw, (L <= 0) & (a <= 0)


def log_integral(alpha, L):
    """``ln I(alpha, L)``, ``I = int_1^inf t**-alpha exp(-L t) dt`` (see the module docstring).

    Args:
      alpha: exponent (``>= 0``; ``> 1`` where ``L == 0``).
      L: ``Lambda * xmin >= 0``.

    Returns:
      ``ln I`` (``inf`` where the integral diverges).

    Example:
      >>> round(float(log_integral(3.0, 0.0)), 6)   # int t**-3 = 1/2
      -0.693147
    """
    dt = jnp.result_type(alpha, L, float)
    alpha, L = jnp.broadcast_arrays(jnp.asarray(alpha, dt), jnp.asarray(L, dt))
    u, logw, diverges = _quadrature(alpha, L)
    return jnp.where(diverges, jnp.inf, jax.nn.logsumexp(logw, axis=-1))


def _loglik_t(theta, s1, s2, n):
    """Log-likelihood in ``t = x / xmin`` of ``theta = (alpha, L)`` from ``sum ln t``, ``sum t``,
    with its gradient and Hessian: ``d ln I / d(alpha, L) = -E[(ln t, t)]`` and
    ``d^2 ln I = Cov[(ln t, t)]`` under the truncated law, from the same quadrature."""
    u, logw, diverges = _quadrature(theta[0], theta[1])
    lnI = jax.nn.logsumexp(logw)
    p = jnp.exp(logw - lnI)
    v = jnp.stack([u, jnp.where(p > 0, jnp.exp(u), 0.0)])
    m = v @ p
    cov = (v * p) @ v.T - jnp.outer(m, m)
    ll = -theta[0] * s1 - theta[1] * s2 - n * lnI
    grad = jnp.stack([-s1, -s2]) + n * m
    ok = ~diverges & jnp.isfinite(ll)
    return jnp.where(ok, ll, -jnp.inf), grad, -n * cov


def _project(theta):
    return jnp.stack([jnp.clip(theta[0], 0.0, TPL_ALPHA_MAX), jnp.maximum(theta[1], 0.0)])


def _maximise(s1, s2, n, alpha0):
    """Projected Newton ascent of :func:`_loglik_t` from ``(alpha0, 0)``."""
    steps = jnp.asarray(_STEPS, s1.dtype)

    def step(_, th):
        f0, g, H = _loglik_t(th, s1, s2, n)
        det = H[0, 0] * H[1, 1] - H[0, 1] ** 2
        newton_ok = (H[0, 0] < 0) & (det > 0)
        newton = -jnp.stack([H[1, 1] * g[0] - H[0, 1] * g[1], H[0, 0] * g[1] - H[1, 0] * g[0]]) / \
            jnp.where(newton_ok, det, 1.0)
        scale = jnp.maximum(jnp.abs(jnp.diagonal(H)), 1e-12)
        d = jnp.where(newton_ok, newton, g / scale)
        trials = jax.vmap(lambda t: _project(th + t * d))(steps)
        vals = jax.vmap(lambda t: _loglik_t(t, s1, s2, n)[0])(trials)
        vals = jnp.where(jnp.isnan(vals), -jnp.inf, vals)
        best = jnp.argmax(vals)
        return jnp.where(vals[best] > f0, trials[best], th)

    th0 = _project(jnp.stack([alpha0, jnp.zeros_like(alpha0)]))
    return jax.lax.fori_loop(0, ITERATIONS, step, th0)


def fit_one(x, xmin, thresh):
    """Truncated power law on the values ``>= xmin`` of one zero-padded spectrum."""
    tail = jnp.isfinite(x) & (x > thresh) & (x >= xmin)
    n = tail.sum().astype(x.dtype)
    safe = jnp.where(jnp.isfinite(xmin) & (xmin > 0), xmin, 1.0)
    t = jnp.where(tail, x / safe, 1.0)
    s1 = jnp.sum(jnp.log(t))
    s2 = jnp.sum(jnp.where(tail, t, 0.0))
    ok = (n >= 2) & (s1 > 0)
    pl_alpha = 1.0 + n / jnp.where(ok, s1, 1.0)
    th = _maximise(jnp.where(ok, s1, 1.0), jnp.where(ok, s2, 2.0), jnp.maximum(n, 1.0),
                   jnp.where(ok, pl_alpha, 2.0))
    shift = n * jnp.log(safe)
    loglik = _loglik_t(th, s1, s2, n)[0] - shift
    pl_loglik = n * jnp.log(pl_alpha - 1.0) - pl_alpha * s1 - shift
    nan = jnp.nan
    return TPLFit(alpha=jnp.where(ok, th[0], nan), Lambda=jnp.where(ok, th[1] / safe, nan),
                  xmin=jnp.where(ok, xmin, nan), num_tail=tail.sum(),
                  loglik=jnp.where(ok, loglik, nan), pl_alpha=jnp.where(ok, pl_alpha, nan),
                  pl_loglik=jnp.where(ok, pl_loglik, nan),
                  status=jnp.where(ok, TPL_OK, TPL_TOO_FEW))


def fit_batch(evals, xmin, thresh=EVALS_THRESH) -> TPLFit:
    """Truncated power law of a ``(B, n)`` batch on the tails ``x >= xmin`` (``(B,)``); traceable."""
    return jax.vmap(fit_one, in_axes=(0, 0, None))(evals, xmin, thresh)


@functools.partial(jax.jit, static_argnames=("thresh",))
def _fit(evals, xmin, thresh):
    return map_tails(fit_batch, evals, xmin, thresh)


def fit_truncated_power_law(evals, xmin=None, *, thresh=EVALS_THRESH) -> TPLFit:
    """Maximum-likelihood truncated power law of the tail of each spectrum.

    Args:
      evals: eigenvalues, shape ``(..., n)``, any order; leading axes are a batch.
      xmin: start of the tail: a scalar or ``evals.shape[:-1]`` array, or None for the
        exact power-law scan's ``xmin`` (:func:`jaxww.fit_power_law`).
      thresh: values ``<= thresh`` are left out.

    Returns:
      A :class:`TPLFit` whose fields have shape ``evals.shape[:-1]``.

    Raises:
      ValueError: no eigenvalue.
    """
    evals = as_spectra(evals, "fit_truncated_power_law")
    xmin = None if xmin is None else jnp.asarray(xmin, evals.dtype)
    return _fit(evals, xmin, float(thresh))
