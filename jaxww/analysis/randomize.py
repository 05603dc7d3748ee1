"""Randomised spectra: the ESD of each layer after permuting its entries, and traps.

Permuting the entries of ``W`` keeps their distribution (and ``||W||_F``) but destroys
every correlation between them, so the randomised ESD is what the layer's entries
would give without learned structure: a Marchenko-Pastur bulk, unless some entries
are so large that each alone makes a spike (a *correlation trap*).

* ``max_rand_eval = max(rand_lambda)``, ``ww_softrank = max(rand_lambda) / max(lambda)``.
* ``rand_distance``: the Jensen-Shannon distance (natural log) between the two
  spectra as distributions of mass over rank, ``p_i = lambda_(i) / sum(lambda)`` and
  ``q_i = rand_lambda_(i) / sum(rand_lambda)`` (both sorted ascending; the reference's
  definition). It is defined for every layer size (both spectra have ``M rf`` values),
  lies in ``[0, sqrt(ln 2)]`` and does not depend on the scale of ``W``.
* ``num_traps``: randomised eigenvalues above the Tracy-Widom bound of the MP fit of
  the randomised spectrum (:mod:`jaxww.fit.mp`, level ``mp.TW_LEVEL``).
* ``trap_indices``: for each trap, the rank (0 = largest) of the layer's own
  eigenvalue nearest to it in log scale: a spike made by a few large entries does not
  move when the entries are permuted, so this is the singular direction of ``W`` that
  the trap is.

Permutations are seeded: the key of a layer is ``fold_in(key, crc32(name))`` and each
matrix of a layer (a convolution tap, in order) gets ``split`` of it, so the numbers
depend only on the key and the layer, not on batching, devices or the other layers.

On the CPU the randomised spectra are computed on the host a group of layers at a time,
within the memory budget, as :mod:`jaxww.analysis.streaming` computes the spectra
(:func:`host_spectra`: an interrupt stops them between two matrices, the progress bar
counts them); on an accelerator in one program (:func:`random_spectra`). Both give the
same permutations.
"""

from __future__ import annotations

import functools
import zlib

import jax
import jax.numpy as jnp
import numpy as np

from jaxww.linalg import pool as _pool
from jaxww.fit import mp as _mp
from jaxww.linalg import placement as _placement
from jaxww.analysis import progress as _progress
from jaxww.linalg import spectra as _spectra
from jaxww.analysis import streaming as _streaming
from jaxww.analysis.specs import used_leaves

#: Columns added by ``randomize=True``.
COLUMNS = ("max_rand_eval", "rand_distance", "ww_softrank", "num_traps", "trap_indices")


def layer_keys(key, names) -> jax.Array:
    """One PRNG key per layer name: ``fold_in(key, crc32(name))`` (stable across runs)."""
    hashes = jnp.asarray([zlib.crc32(n.encode()) & 0x7FFFFFFF for n in names], jnp.uint32)
    return jax.vmap(jax.random.fold_in, (None, 0))(key, hashes)


def permuted(key, stack):
    """Each matrix of a ``(T, a, b)`` stack with its entries permuted (key split ``T`` ways).

    One sort of the entries by 32-bit random keys: half the cost of
    ``jax.random.permutation`` (two such sorts, so that tied keys are negligible even
    for huge arrays). Here about ``n^2 / 2^33`` pairs of the ``n`` entries tie and keep
    their order (30 of 512K entries), which no spectrum can tell.
    """
    flat = stack.reshape(stack.shape[0], -1)
    keys = jax.random.split(key, stack.shape[0])
    shuffle = lambda k, v: jax.lax.sort_key_val(jax.random.bits(k, v.shape, jnp.uint32), v)[1]
    return jax.vmap(shuffle)(keys, flat).reshape(stack.shape)


def random_spectra(leaves, kerns, keys, groups, precision):
    """Padded randomised spectra per fit group, in the layout of ``report._pooled``."""
    stacks = [permuted(keys[i], k.matrices(leaves[k.leaf])) for i, k in enumerate(kerns)]
    evals = _spectra.batched_spectra(stacks, precision=precision)
    pooled = [ev.reshape(-1) * k.esd_scale for k, ev in zip(kerns, evals)]
    return [jnp.stack([jnp.pad(pooled[i], (0, nb - pooled[i].shape[0])) for i in members])
            for nb, members in groups]


random_spectra = jax.jit(random_spectra, static_argnames=("kerns", "groups", "precision"))


@functools.partial(jax.jit, static_argnums=1)
def _bits(keys, size):
    return jax.vmap(lambda k: jax.random.bits(k, (size,), jnp.uint32))(keys)


def permuted_host(key, stack: np.ndarray) -> np.ndarray:
    """:func:`permuted` on the host, the same numbers: the same 32-bit keys (drawn by
    JAX), then NumPy's stable sort of them (a radix sort, about 3x faster than XLA's CPU
    sort, which is stable too), one matrix at a time.

    Args:
      key: the layer's key.
      stack: a ``(T, a, b)`` NumPy array (any dtype).

    Returns:
      A new ``(T, a, b)`` array: each matrix's entries permuted.
    """
    flat = stack.reshape(stack.shape[0], -1)
    out = np.empty_like(flat)
    keys = jax.random.split(key, stack.shape[0])
    for t in range(stack.shape[0]):
        out[t] = flat[t, np.argsort(np.asarray(_bits(keys[t:t + 1], flat.shape[1]))[0], kind="stable")]
    return out.reshape(stack.shape)


def work(k) -> float:
    """The work of a layer's randomised spectrum in the units of the progress bar: its
    spectrum's (:func:`jaxww.linalg.placement.cost`) and the permutation of its entries (on one
    core while the spectra use them all)."""
    return _placement.cost(k) + _progress.PERMUTE_WORK * _pool.workers() * k.rf * k.N * k.M


def host_spectra(key, kerns, leaves, precision: str, budget: int, tracker) -> list:
    """Descending randomised spectra ``(rf, M)`` of every kernel, on the host (NumPy
    arrays, kernel order): a group of leaves at a time (:func:`jaxww.analysis.streaming.groups`;
    each group holds its permuted copies besides), the entries of each kernel permuted
    (:func:`permuted_host`, the key of :func:`layer_keys`), the spectra of the permuted
    matrices by :func:`jaxww.linalg.spectra.host_spectra`.

    Args:
      key: the ``jax.random`` key of ``randomize``.
      kerns, leaves: from :func:`jaxww.reading.read_layers`.
      precision: ``"float32"`` or ``"float64"``.
      budget: bytes (:func:`jaxww.analysis.budget.parse_budget`).
      tracker: a :class:`jaxww.analysis.progress.Progress` in its ``"randomize"`` phase.
    """
    keys = layer_keys(key, [k.name for k in kerns])
    out: list = [None] * len(kerns)
    for members, _ in _streaming.groups(kerns, leaves, budget, precision):
        used = used_leaves([kerns[i] for i in members])
        tracker.reading()
        values = {j: np.asarray(_streaming.read(leaves[j])) for j in used}
        tracker.begin("randomize")
        stacks = []
        for i in members:
            stacks.append(permuted_host(keys[i], kerns[i].matrices(values[kerns[i].leaf])))
            tracker.add_work(work(kerns[i]) - _placement.cost(kerns[i]))   # the permutation's share
        del values
        for i, ev in zip(members, _spectra.host_spectra(stacks, precision=precision)):
            out[i] = ev
        tracker.advance(len(members), sum(_streaming.stored_bytes(leaves[j]) for j in used),
                        sum(work(kerns[i]) for i in members))
    return out


def _js_distance(p, q):
    """Jensen-Shannon distance of the rows of ``p`` and ``q`` (normalised here).

    With ``m = (p + q) / 2`` and ``d = (p - q) / (p + q)``, ``KL(p||m) + KL(q||m) =
    sum m g(d)``, ``g(d) = (1 + d) ln(1 + d) + (1 - d) ln(1 - d) = 2 d atanh(d) +
    ln(1 - d^2)``: the last form does not cancel catastrophically for close spectra
    (``g ~ d^2``), where the plain sum of the two KL terms loses float32's digits.
    """
    p = p / p.sum(-1, keepdims=True)
    q = q / q.sum(-1, keepdims=True)
    m = (p + q) / 2
    d = jnp.where(m > 0, (p - q) / jnp.where(m > 0, 2 * m, 1), 0)
    edge = jnp.abs(d) >= 1
    dc = jnp.where(edge, 0, d)
    g = jnp.where(edge, 2 * jnp.log(2.0), 2 * dc * jnp.arctanh(dc) + jnp.log1p(-dc * dc))
    return jnp.sqrt(jnp.maximum((m * g).sum(-1) / 2, 0))


@jax.jit
def compare_batch(E, R, num_evals, tw_bound):
    """Randomisation columns of a ``(B, n)`` batch of padded spectra ``E`` and randomised ``R``.

    Args:
      E, R: eigenvalues (positions ``>= num_evals`` are padding).
      num_evals: ``(B,)``.
      tw_bound: ``(B,)`` Tracy-Widom bound of the MP fit of ``R`` (``bulk_max_tw``).

    Returns:
      dict of ``(B,)`` arrays (``max_rand_eval``, ``rand_distance``, ``ww_softrank``,
      ``num_traps``) and ``trap_rank``, ``(B, n)``: for every randomised eigenvalue
      (descending), the rank of the nearest real one, or -1 where it is not a trap.

    Example:
      >>> import jax.numpy as jnp
      >>> E = jnp.array([[4.0, 2.0, 1.0]]); R = jnp.array([[2.0, 2.0, 1.0]])
      >>> out = compare_batch(E, R, jnp.array([3]), jnp.array([10.0]))
      >>> float(out["ww_softrank"][0]), int(out["num_traps"][0])
      (0.5, 0)
    """
    n = E.shape[-1]
    real = jnp.arange(n) < num_evals[:, None]
    e = jnp.sort(jnp.where(real, E, -jnp.inf), -1)[:, ::-1]       # descending, padding last
    r = jnp.sort(jnp.where(real, R, -jnp.inf), -1)[:, ::-1]
    top_e, top_r = e[:, 0], r[:, 0]
    dist = _js_distance(jnp.where(real, jnp.maximum(e, 0), 0), jnp.where(real, jnp.maximum(r, 0), 0))
    trap = real & (r > tw_bound[:, None])
    # nearest real eigenvalue in log scale: search the ascending log spectrum
    log_e = jnp.log(jnp.sort(jnp.where(real, jnp.maximum(E, 0), jnp.inf), -1))   # ascending, +inf padding last
    log_r = jnp.log(jnp.where(trap, r, 1.0))
    pos = jax.vmap(jnp.searchsorted)(log_e, log_r)
    lo = jnp.clip(pos - 1, 0, n - 1)
    hi = jnp.minimum(jnp.clip(pos, 0, n - 1), num_evals[:, None] - 1)
    take = lambda i: jnp.take_along_axis(log_e, i, -1)
    nearest = jnp.where(jnp.abs(take(lo) - log_r) <= jnp.abs(take(hi) - log_r), lo, hi)
    rank = num_evals[:, None] - 1 - nearest
    return {
        "max_rand_eval": top_r,
        "rand_distance": dist,
        "ww_softrank": top_r / top_e,
        "num_traps": trap.sum(-1),
        "trap_rank": jnp.where(trap, rank, -1),
    }


def columns(E, R, kerns, level: float = _mp.TW_LEVEL) -> dict:
    """:func:`compare_batch` for the layers ``kerns`` of one batch, the MP fit of ``R`` included."""
    fit = _mp.columns(R, kerns, level)
    out = compare_batch(E, R, jnp.asarray([k.num_evals for k in kerns]), fit["bulk_max_tw"])
    out["rand_sigma_mp"], out["rand_bulk_max"] = fit["sigma_mp"], fit["bulk_max"]
    return out
