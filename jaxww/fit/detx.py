"""detX (SETOL's ``det X = 1`` condition): where the tail's product of eigenvalues reaches 1.

With the ``n`` eigenvalues of a layer (zeros included) rescaled to mean 1,
``x = lambda * n / sum(lambda)``, sorted ascending, the reference (weightwatcher 0.7.7,
``RMT_Util.detX_constraint``) scans tails from the top: ``detX_num`` is the smallest
``t`` in ``1 .. n-1`` with ``prod(top t of x) < 1`` (``n`` if there is none), and the
tail starts at index ``i = n - t`` (``1`` if there is none) of the ascending values.

* ``detX_num``: that ``t``;
* ``detX_val``: ``lambda_i``, the eigenvalue there in the layer's own units;
* ``detX_val_unrescaled``: ``x_i``, the same value rescaled to mean 1 (the
  reference's names of these two columns are swapped; jaxww keeps its names so that
  the columns compare).

Spectra of fewer than 2 values, or of equal values, give ``detX_num = 0`` and the
smallest eigenvalue (the reference's early exit). Products are sums of logs here (the
reference multiplies, which over- or underflows but decides the same).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

#: Columns added by ``detX=True``.
COLUMNS = ("detX_num", "detX_val", "detX_val_unrescaled")


@jax.jit
def detx_batch(E, num_evals) -> dict:
    """detX of a ``(B, n)`` batch of zero-padded spectra (``num_evals``: ``(B,)`` real counts).

    Example:
      >>> import jax.numpy as jnp
      >>> out = detx_batch(jnp.array([[3.0, 0.5, 0.4, 0.1]]), jnp.array([4]))
      >>> int(out["detX_num"][0]), round(float(out["detX_val"][0]), 6)
      (3, 0.4)
    """
    n = E.shape[-1]
    real = jnp.arange(n) < num_evals[:, None]
    desc = jnp.sort(jnp.where(real, E, -jnp.inf), -1)[:, ::-1]
    lam = jnp.where(real, desc, 0.0)
    x = lam * (num_evals / lam.sum(-1))[:, None]
    logs = jnp.cumsum(jnp.where(real, jnp.log(jnp.maximum(x, 0)), 0), -1)   # top-t log products
    t = jnp.arange(1, n + 1)
    hit = real & (t < num_evals[:, None]) & (logs < 0)
    first = jnp.where(hit.any(-1), jnp.argmax(hit, -1) + 1, num_evals)
    idx = num_evals - jnp.where(hit.any(-1), first, num_evals - 1)        # ascending index
    degenerate = (num_evals < 2) | (desc[:, 0] <= jnp.take_along_axis(desc, (num_evals - 1)[:, None], -1)[:, 0])
    num = jnp.where(degenerate, 0, first)
    idx = jnp.where(degenerate, 0, idx)
    pos = (num_evals - 1 - idx)[:, None]                                   # descending position
    return {
        "detX_num": num,
        "detX_val": jnp.take_along_axis(lam, pos, -1)[:, 0],
        "detX_val_unrescaled": jnp.take_along_axis(x, pos, -1)[:, 0],
    }


def columns(E, kerns) -> dict:
    """:func:`detx_batch` for the layers ``kerns`` of one padded batch ``E``."""
    return detx_batch(E, jnp.asarray([k.num_evals for k in kerns]))
