"""Marchenko-Pastur fit of a layer's spectrum, with Tracy-Widom spike bounds.

Null model: ``W`` (``N x M``, ``N >= M``) has i.i.d. entries of variance ``s^2``. The
eigenvalues ``lambda = sigma(W)^2`` of ``W^T W`` (jaxww's unnormalised convention) then
fill the Marchenko-Pastur bulk

.. math:: \\lambda_\\pm = s^2 (\\sqrt N \\pm \\sqrt M)^2,

i.e. ``x = lambda / (N s^2)`` follows the standard MP law of ratio ``y = M / N``,
``p(x) = sqrt((b - x)(x - a)) / (2 pi y x)`` on ``[a, b] = [(1 -+ sqrt y)^2]``.

* Spikes and ``sigma_mp`` (``s``) by a sequential test (as Kritchman and Nadler
  2008): the ``j``-th largest eigenvalue (``j = 1, 2, ...``) is a spike if the ``j - 1``
  above it are and it exceeds the bound below computed with the ``s`` of the
  spectrum without those ``j - 1``, the eigenvalue tested included. The noise carries
  ``N n s^2`` in all (``n = M rf`` eigenvalues), of which ``k`` spikes take the part of
  ``k`` rows and columns, so ``s^2 = sum(all but the top k) / (N n - k (N + M - k))``
  (for one matrix: the MP law of an ``(N - k) x (M - k)`` noise matrix; dividing by
  ``N (n - k)`` instead comes out low by about ``k / N``). At most ``n / 2`` spikes.
  Without spikes ``s^2 = ||W||_F^2 / (N n)``, the entries' variance, relative error
  ``sqrt(2 / (N M))`` for Gaussian entries. (Removing a candidate before testing it
  lowers ``s`` by ``2 / sqrt(N M)`` and made pure-noise layers show spikes 2-3 times
  as often as the stated level; the bulk's median scatters 2-4 times more.)
* A spike is an eigenvalue above the Tracy-Widom bound at level ``TW_LEVEL``
  (Johnstone 2001, real Gaussian ``W``): ``lambda_max`` of the null obeys
  ``(lambda_max - mu) / sigma ~ TW1`` with ``mu = s^2 (sqrt(N-1) + sqrt M)^2`` and
  ``sigma = s^2 (sqrt(N-1) + sqrt M) (1/sqrt(N-1) + 1/sqrt M)^(1/3)``, so an eigenvalue
  ``> mu + sigma q`` with ``q`` the TW1 quantile at ``1 - level / rf`` is significant
  at ``level`` (Bonferroni over the ``rf`` pooled matrices of a convolution).
* ``mp_softrank = bulk_max / max(lambda)``.

For a pooled convolution spectrum ``N``, ``M`` are those of one tap and the 2-D
convolution factor 0.5 is absorbed in ``s`` (``sigma_mp`` is in eigenvalue units).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from scipy import special

#: Significance level of a spike (probability that a pure-noise layer shows one).
TW_LEVEL = 0.01
#: Fewest eigenvalues for a Marchenko-Pastur fit.
MIN_EVALS = 8
#: Columns added by ``mp_fit=True``.
COLUMNS = ("num_spikes", "sigma_mp", "mp_softrank", "bulk_min", "bulk_max", "bulk_max_tw")


def tw_quantile(p) -> np.ndarray:
    """Quantile of the Tracy-Widom distribution TW1 (real matrices).

    Chiani's (2014) shifted-gamma approximation, ``TW1 ~ Gamma(46.446, 0.186054) -
    9.84801``: its 0.95 and 0.99 quantiles (0.979, 2.014) match the exact ones
    (0.979, 2.023; Johnstone 2001, Table 1) to within 0.01.

    Example:
      >>> round(float(tw_quantile(0.95)), 2)
      0.98
    """
    return special.gammaincinv(46.446, np.asarray(p, np.float64)) * 0.186054 - 9.84801


def mp_density(lam, sigma_mp, N, M):
    """MP density of the eigenvalues ``lambda`` of ``W^T W`` (entries of variance ``sigma_mp^2``)."""
    lam = np.asarray(lam, np.float64)
    scale = N * sigma_mp ** 2
    y = M / N
    x = lam / scale
    a, b = (1 - np.sqrt(y)) ** 2, (1 + np.sqrt(y)) ** 2
    inside = (x > a) & (x < b)
    xs = np.where(inside, x, 1.0)
    return np.where(inside, np.sqrt((b - xs) * (xs - a)) / (2 * np.pi * y * xs), 0.0) / scale


def tw_threshold(s2, N, M, q):
    """Tracy-Widom significance bound ``mu + sigma q`` for noise of entry variance ``s2``."""
    rn, rm = jnp.sqrt(N - 1), jnp.sqrt(M)
    return s2 * ((rn + rm) ** 2 + (rn + rm) * (1 / rn + 1 / rm) ** (1 / 3) * q)


@jax.jit
def mp_fit_batch(E, num_evals, N, M, q) -> dict:
    """Marchenko-Pastur fit of a ``(B, n)`` batch of zero-padded spectra.

    Args:
      E: eigenvalues; entries at positions ``>= num_evals`` are padding.
      num_evals, N, M: ``(B,)`` counts and matrix dimensions (of one tap).
      q: ``(B,)`` Tracy-Widom quantile of the spike bound (:func:`tw_quantile`).

    Returns:
      dict of ``(B,)`` arrays: :data:`COLUMNS`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> W = jax.random.normal(jax.random.key(0), (512, 128))
      >>> E = jnp.linalg.svd(W, compute_uv=False)[None] ** 2
      >>> one = lambda v: jnp.array([v], jnp.float32)
      >>> fit = mp_fit_batch(E, jnp.array([128]), one(512), one(128), one(2.0))
      >>> int(fit["num_spikes"][0]), round(float(fit["sigma_mp"][0]), 1)
      (0, 1.0)
    """
    dt = E.dtype
    N, M, q = (jnp.asarray(v, dt) for v in (N, M, q))
    n = E.shape[-1]
    real = jnp.arange(n) < num_evals[:, None]
    desc = jnp.where(real, jnp.sort(jnp.where(real, E, -jnp.inf), -1)[:, ::-1], 0)
    j = jnp.arange(n, dtype=dt)                               # spikes removed before test j
    # the bulk left after the top j: a suffix sum (not total - top j, which cancels: a
    # bulk of exact zeros would come out as rounding noise of either sign)
    rest = jnp.flip(jnp.cumsum(jnp.flip(desc, -1), -1), -1)
    s2_j = rest / (
        N[:, None] * num_evals[:, None] - j * (N[:, None] + M[:, None] - j))
    passed = real & (j < (num_evals // 2)[:, None]) & (desc > tw_threshold(s2_j, N[:, None], M[:, None], q[:, None]))
    k = jnp.cumprod(passed, -1).sum(-1)                        # the first failed test ends the spikes
    s2 = jnp.take_along_axis(s2_j, k[:, None], -1)[:, 0]
    top = desc[:, 0]
    thr = tw_threshold(s2, N, M, q)
    bulk_max = s2 * (jnp.sqrt(N) + jnp.sqrt(M)) ** 2
    ok = s2 > 0
    nan = jnp.asarray(jnp.nan, dt)
    return {
        "num_spikes": jnp.where(ok, k, -1),
        "sigma_mp": jnp.where(ok, jnp.sqrt(s2), nan),
        "mp_softrank": jnp.where(ok, bulk_max / top, nan),
        "bulk_min": jnp.where(ok, s2 * (jnp.sqrt(N) - jnp.sqrt(M)) ** 2, nan),
        "bulk_max": jnp.where(ok, bulk_max, nan),
        "bulk_max_tw": jnp.where(ok, thr, nan),
    }


def columns(E, kerns, level: float = TW_LEVEL) -> dict:
    """:func:`mp_fit_batch` for the layers ``kerns`` of one padded batch ``E`` (rows in order)."""
    num = np.asarray([k.num_evals for k in kerns])
    q = tw_quantile(1 - level / np.asarray([k.rf for k in kerns], np.float64))
    dims = [np.asarray(v, np.dtype(E.dtype)) for v in ([k.N for k in kerns], [k.M for k in kerns], q)]
    return mp_fit_batch(E, num, *dims)


def reason(num_evals: int, sigma_mp: float) -> str:
    """Why a layer's MP columns are missing ("" when they are not)."""
    if num_evals < MIN_EVALS:
        return f"mp_fit: fewer than {MIN_EVALS} eigenvalues"
    if sigma_mp != sigma_mp:
        return "mp_fit: the bulk is all zeros (rank below half of M: not Marchenko-Pastur)"
    return ""
