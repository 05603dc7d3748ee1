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

from typing import NamedTuple

import jax
import jax.numpy as jnp

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
    evals = jnp.asarray(evals)
    dt = evals.dtype
    real = jnp.arange(evals.shape[-1]) < jnp.asarray(num_evals)[..., None]
    lam = jnp.where(real, jnp.maximum(evals, 0), 0)
    alpha = jnp.asarray(alpha, dt)
    norm = lam.sum(-1)
    top = lam.max(-1)
    log_top = jnp.log10(top)
    # log10(sum(lambda**alpha)) in log space: lambda**alpha overflows float32 for
    # alpha * log10(max lambda) > 38.
    log_power = jnp.where(lam > 0, alpha[..., None] * jnp.log(jnp.where(lam > 0, lam, 1)), -jnp.inf)
    rank = (lam > (top * jnp.asarray(N, dt) * jnp.finfo(dt).eps)[..., None]).sum(-1)
    p = jnp.where(real, lam / norm[..., None] + ENTROPY_EPS, 1.0)
    entropy = -(p * jnp.log(p)).sum(-1) / jnp.log(rank + ENTROPY_EPS)
    return SpectralMetrics(
        norm=norm,
        log_norm=jnp.log10(norm),
        spectral_norm=top,
        log_spectral_norm=log_top,
        alpha_weighted=alpha * log_top,
        log_alpha_norm=jax.nn.logsumexp(log_power, axis=-1) / jnp.log(10.0),
        stable_rank=norm / top,
        matrix_rank=rank,
        entropy=entropy,
    )


def warning(alpha: float) -> str:
    """``"over-trained"`` when alpha < 2, ``"under-trained"`` when alpha > 6, else ``""``."""
    if alpha < OVER_TRAINED:
        return "over-trained"
    if alpha > UNDER_TRAINED:
        return "under-trained"
    return ""
