"""Spectra with leading batch axes: every public fit takes ``(..., n)`` and runs on ``(B, n)``.

:func:`as_spectra` checks the input once; :func:`map_spectra` flattens its leading axes
into one batch, runs a ``(B, n)`` batch function and gives every field of the result
the leading shape back.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def as_spectra(evals, where: str) -> jax.Array:
    """``evals`` as a floating-point array of spectra along its last axis (ints become float32).

    Raises:
      ValueError: no eigenvalue (a 0-D array or an empty last axis), naming ``where``.
    """
    evals = jnp.asarray(evals)
    if not jnp.issubdtype(evals.dtype, jnp.floating):
        evals = evals.astype(jnp.float32)
    if evals.ndim == 0 or evals.shape[-1] == 0:
        raise ValueError(f"{where} needs at least one eigenvalue, got shape {evals.shape}")
    return evals


def map_spectra(batch_fn, evals, *args):
    """``batch_fn(flat, *args)`` with ``flat`` the ``(B, n)`` batch of ``evals`` (``(..., n)``).

    Every leaf of the result has ``B`` leading and gets ``evals.shape[:-1]`` back in its
    place. Traceable.

    Args:
      batch_fn: a function of a ``(B, n)`` batch (and ``args``) to a pytree of arrays of
        leading size ``B``.
      evals: spectra of shape ``(..., n)``.
      *args: passed on as they are.

    Returns:
      ``batch_fn``'s pytree, each leaf of shape ``evals.shape[:-1] + leaf.shape[1:]``.

    Example:
      >>> import jax.numpy as jnp
      >>> map_spectra(lambda x: x.sum(-1), jnp.ones((2, 3, 4))).shape
      (2, 3)
    """
    lead = evals.shape[:-1]
    out = batch_fn(evals.reshape(-1, evals.shape[-1]), *args)
    return jax.tree.map(lambda a: a.reshape(lead + a.shape[1:]), out)
