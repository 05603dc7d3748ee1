"""Optional analyses of ``jaxww.analyze``: ``mp_fit``, ``randomize``, ``detX``.

Each runs on the padded spectra batches that ``analyze`` has already computed (no
second eigenvalue computation of a matrix), jitted and vectorised over the layers of a
batch, and adds its columns to the rows (weightwatcher's names):

========== ================================================================ ============
option     columns                                                          module
========== ================================================================ ============
mp_fit     num_spikes, sigma_mp, mp_softrank, bulk_min, bulk_max,            jaxww.mp
           bulk_max_tw
randomize  max_rand_eval, rand_distance, ww_softrank, num_traps,             jaxww.randomize
           trap_indices, rand_sigma_mp, rand_bulk_max
detX       detX_num, detX_val, detX_val_unrescaled                          jaxww.detx
========== ================================================================ ============

A column that cannot be computed is NaN (counts: -1; ``trap_indices``: ``()``) and the
row's ``reason`` says why.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import numpy as np

from jaxww import detx as _detx
from jaxww import mp as _mp
from jaxww import randomize as _randomize

_RAND_COLUMNS = _randomize.COLUMNS + ("rand_sigma_mp", "rand_bulk_max")
_COUNTS = {"num_spikes", "num_traps", "detX_num"}


@dataclasses.dataclass(frozen=True)
class Options:
    """Which optional analyses ``analyze`` runs (see :func:`options`)."""

    mp_fit: bool = False
    randomize: bool = False
    key: Any = None
    detX: bool = False

    @property
    def columns(self) -> tuple:
        """The columns these analyses add, in order."""
        return ((_mp.COLUMNS if self.mp_fit else ()) + (_RAND_COLUMNS if self.randomize else ())
                + (_detx.COLUMNS if self.detX else ()))


def options(mp_fit=False, randomize=False, key=None, detX=False) -> Options:
    """Validated :class:`Options`.

    Raises:
      ValueError: ``randomize=True`` without a PRNG ``key``, or a ``key`` that is not one.
    """
    if randomize:
        if key is None:
            raise ValueError("analyze(randomize=True) needs key=jax.random.key(seed): the entries "
                             "are permuted with it (same key, same numbers)")
        key = jax.numpy.asarray(key)
        if not (jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) or
                (key.dtype == np.uint32 and key.shape == (2,))):
            raise ValueError(f"key must be a PRNG key (jax.random.key(seed)), got {key.dtype} {key.shape}")
    return Options(bool(mp_fit), bool(randomize), key if randomize else None, bool(detX))


def random_spectra(opts: Options, leaves, kerns, specs, groups, precision):
    """Randomised padded spectra per group (for ``opts.randomize``)."""
    keys = _randomize.layer_keys(opts.key, [k.name for k in kerns])
    return _randomize.random_spectra(leaves, specs, keys, groups, precision)


def compute(opts: Options, E, R, kerns) -> dict:
    """The columns of ``opts`` for one padded batch ``E`` (and its randomised ``R``); device arrays."""
    out = {}
    if opts.mp_fit:
        out.update(_mp.columns(E, kerns))
    if opts.randomize:
        out.update(_randomize.columns(E, R, kerns))
    if opts.detX:
        out.update(_detx.columns(E, kerns))
    return out


def row(opts: Options, values: dict, r: int, num_evals: int, finite: bool) -> tuple[dict, str]:
    """Row ``r`` of the host ``values`` of :func:`compute`: ``({column: value}, reason)``.

    Non-finite weights blank every column (the row's reason already says why); a
    failed MP fit (of the spectrum, or of the randomised one for the traps) blanks its
    columns and adds its reason.
    """
    blank = set(opts.columns) if not finite else set()
    reasons = []
    if finite and opts.mp_fit:
        reasons.append(_mp.reason(num_evals, float(values["sigma_mp"][r])))
        blank |= set(_mp.COLUMNS) if reasons[-1] else set()
    if finite and opts.randomize:
        reasons.append(_mp.reason(num_evals, float(values["rand_sigma_mp"][r])).replace("mp_fit", "randomize"))
        blank |= {"num_traps", "trap_indices", "rand_sigma_mp", "rand_bulk_max"} if reasons[-1] else set()
    cols = {}
    for c in opts.columns:
        if c == "trap_indices":
            ranks = values["trap_rank"][r]
            cols[c] = () if c in blank else tuple(int(i) for i in ranks[ranks >= 0])
        elif c in _COUNTS:
            cols[c] = -1 if c in blank else int(values[c][r])
        else:
            cols[c] = math.nan if c in blank else float(values[c][r])
    return cols, "; ".join(x for x in reasons if x)
