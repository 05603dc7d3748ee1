"""Per-layer spectral metrics (conventions section 4), vectorised over layers.

With ``lambda`` all eigenvalues of a layer (zero eigenvalues included):

====================== ==================================================
``norm``               ``sum(lambda)`` (squared Frobenius norm)
``log_norm``           ``log10(norm)``
``spectral_norm``      ``max(lambda)``
``log_spectral_norm``  ``log10(max(lambda))``
``alpha_weighted``     ``alpha * log10(max(lambda))``
``log_alpha_norm``     ``log10(sum(lambda**alpha))``
``stable_rank``        ``sum(lambda) / max(lambda)``
``matrix_rank``        ``#{lambda > max(lambda) * N * eps}``
``entropy``            ``-sum(p ln p) / ln(matrix_rank)``, ``p = lambda / sum(lambda)``
====================== ==================================================
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxww.defaults import MIN_VERDICT_EVALS

#: Added to ``p`` and to the rank in the entropy, as the reference does.
ENTROPY_EPS = 1e-10
OVER_TRAINED = 2.0
UNDER_TRAINED = 6.0


class SpectralMetrics(NamedTuple):
    """Norm and rank metrics of a layer's spectrum (fields have the batch shape)."""

    norm: jax.Array
    log_norm: jax.Array
    spectral_norm: jax.Array
    log_spectral_norm: jax.Array
    alpha_weighted: jax.Array
    log_alpha_norm: jax.Array
    stable_rank: jax.Array
    matrix_rank: jax.Array
    entropy: jax.Array


@jax.jit
def spectral_metrics(evals, num_evals, N, alpha) -> SpectralMetrics:
    """Metrics of zero-padded spectra.

    Args:
      evals: ``(..., n)`` eigenvalues; entries at positions ``>= num_evals`` are padding.
      num_evals: ``(...)`` number of real eigenvalues of each spectrum.
      N: ``(...)`` larger dimension of the layer's matrices (for the rank tolerance).
      alpha: ``(...)`` power-law exponent (NaN where the fit failed).

    Returns:
      :class:`SpectralMetrics`.

    Example:
      >>> import jax.numpy as jnp, jaxww
      >>> m = jaxww.spectral_metrics(jnp.array([4.0, 1.0, 0.0]), 3, 3, 2.0)
      >>> float(m.stable_rank), int(m.matrix_rank)
      (1.25, 2)
    """
    return _metrics(jnp, evals, num_evals, N, alpha)


def host_metrics(evals, num_evals, N, alpha) -> SpectralMetrics:
    """:func:`spectral_metrics` in NumPy on the host (nothing compiled; same formulas)."""
    with np.errstate(divide="ignore", invalid="ignore"):  # log10(0) of an all-zero spectrum: -inf
        return _metrics(np, np.asarray(evals), num_evals, N, alpha)


def _logsumexp_np(a, axis):
    """``jax.nn.logsumexp`` in NumPy (an all ``-inf`` row gives ``-inf``)."""
    top = np.max(a, axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0)
    return np.log(np.sum(np.exp(a - top), axis=axis)) + np.squeeze(top, axis)


def _metrics(xp, evals, num_evals, N, alpha) -> SpectralMetrics:
    """The formulas of :func:`spectral_metrics`, once, for ``xp`` = ``jax.numpy`` or ``numpy``."""
    evals = xp.asarray(evals)
    dt = evals.dtype
    real = xp.arange(evals.shape[-1]) < xp.asarray(num_evals)[..., None]
    lam = xp.where(real, xp.maximum(evals, 0), 0)
    alpha = xp.asarray(alpha, dt)
    norm = lam.sum(-1)
    top = lam.max(-1)
    log_top = xp.log10(top)
    # log10(sum(lambda**alpha)) in log space: lambda**alpha overflows float32 for
    # alpha * log10(max lambda) > 38.
    log_power = xp.where(lam > 0, alpha[..., None] * xp.log(xp.where(lam > 0, lam, 1)), -xp.inf)
    rank = (lam > (top * xp.asarray(N, dt) * xp.finfo(dt).eps)[..., None]).sum(-1)
    p = xp.where(real, lam / norm[..., None] + ENTROPY_EPS, 1.0)
    entropy = -(p * xp.log(p)).sum(-1) / xp.log(rank + ENTROPY_EPS)
    logsumexp, ln10 = (jax.nn.logsumexp, jnp.log(10.0)) if xp is jnp else (_logsumexp_np, math.log(10.0))
    return SpectralMetrics(
        norm=norm,
        log_norm=xp.log10(norm),
        spectral_norm=top,
        log_spectral_norm=log_top,
        alpha_weighted=alpha * log_top,
        log_alpha_norm=logsumexp(log_power, axis=-1) / ln10,
        stable_rank=norm / top,
        matrix_rank=rank,
        entropy=entropy,
    )


def verdict(alpha: float, num_evals: int) -> tuple[str, str]:
    """``(warning, why none)``: :func:`warning` of a fit of ``num_evals`` eigenvalues, or
    ``("", reason)`` when they are fewer than :data:`MIN_VERDICT_EVALS`.

    Example:
      >>> verdict(1.5, 10)
      ('', 'no verdict: 10 eigenvalues, too few for one (fewer than 32)')
      >>> verdict(1.5, 64)
      ('over-trained', '')
    """
    if num_evals < MIN_VERDICT_EVALS:
        return "", f"no verdict: {num_evals} eigenvalues, too few for one (fewer than {MIN_VERDICT_EVALS})"
    return warning(alpha), ""


def warning(alpha: float) -> str:
    """``"over-trained"`` when alpha < 2, ``"under-trained"`` when alpha > 6, else ``""``."""
    if alpha < OVER_TRAINED:
        return "over-trained"
    if alpha > UNDER_TRAINED:
        return "under-trained"
    return ""
