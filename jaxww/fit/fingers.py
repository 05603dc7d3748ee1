"""Fingers: fits that discount the few largest eigenvalues (weightwatcher's ``fix_fingers``).

A "finger" is a handful of eigenvalues far above the rest of the tail, a finite-size
effect that makes the exact scan of :mod:`jaxww.fit.scan` report a spuriously large
alpha. Two remedies, both batched over layers and jit-compiled:

* ``"clip_xmax"`` (:func:`clip_xmax`), weightwatcher 0.7.7's ``fit_clipped_powerlaw``:
  fit the spectrum with its top ``c`` values removed, for ``c = 2, ..., 9``; the first
  ``c`` whose exponent drops by more than ``FINGER_THRESH`` below the raw fit's,
  ``alpha_c + 1 < alpha_raw``, wins, unless a fit with ``alpha_c <= MIN_ALPHA`` came
  first (then the raw fit stands). ``num_fingers = c - 1`` (the reference counts
  this way: two values clipped read as one finger) and ``raw_alpha = alpha_raw``.
* ``"xmin_peak"`` (:func:`xmin_peak`), weightwatcher's documented definition: the
  peak of the ESD is the left edge ``p`` of the most populated of 100 equal bins of
  ``log10(lambda)``; only candidates ``0.95 p <= xmin <= xmin_max`` (default
  ``1.5 p``) are scanned.

Example:
  >>> import numpy as np, jaxww
  >>> w = np.random.default_rng(3).standard_t(4, size=(256, 128))   # heavy-tailed layer
  >>> fit = jaxww.fit_fingers(np.linalg.svd(w, compute_uv=False) ** 2, "clip_xmax")
  >>> int(fit.num_fingers), round(float(fit.raw_alpha), 1), round(float(fit.fit.alpha), 1)
  (1, 6.2, 4.1)
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxww.defaults import FIX_FINGERS
from jaxww.fit.batching import as_spectra, map_spectra
from jaxww.fit.scan import PowerLawFit, fit_batch, fit_rows
from jaxww.fit.tail import EVALS_THRESH, FIT_OK

#: The ``fix_fingers=`` choices.
METHODS = FIX_FINGERS
#: clip_xmax clips ``c = 2, ..., MAX_FINGERS - 1`` values (reference: DEFAULT_MAX_FINGERS).
MAX_FINGERS = 10
#: clip_xmax stops at the first clipped exponent this much below the raw one.
FINGER_THRESH = 1.0
#: clip_xmax gives up once a clipped exponent is at or below this.
MIN_ALPHA = 2.0
#: xmin_peak histogram: bins of log10(lambda); the window is [0.95 p, 1.5 p].
PEAK_BINS = 100
PEAK_LOW, PEAK_HIGH = 0.95, 1.5


class FingerFit(NamedTuple):
    """A finger-corrected fit; every field has the batch shape of the input.

    Attributes:
      fit: the :class:`jaxww.PowerLawFit` reported (``num_pl_spikes`` counts every
        eigenvalue ``>= xmin``, clipped ones included, as the reference does).
      num_fingers: clip_xmax's finger count (0: the raw fit stands; 0 for xmin_peak).
      raw_alpha: alpha of the unclipped exact fit.
    """

    fit: PowerLawFit
    num_fingers: jax.Array
    raw_alpha: jax.Array


def clip_xmax(evals, xmin_max, thresh=EVALS_THRESH) -> FingerFit:
    """weightwatcher 0.7.7's ``fix_fingers="clip_xmax"`` for a ``(B, n)`` batch (traceable).

    Args:
      evals: ``(B, n)`` spectra, any order, zero-padded.
      xmin_max: bound on the candidate ``xmin`` (scalar; ``inf``: none).
      thresh: values ``<= thresh`` are left out.

    Returns:
      A :class:`FingerFit` of ``(B,)`` fields.
    """
    batch, n = evals.shape
    x = jnp.where(jnp.isfinite(evals) & (evals > thresh), evals, 0.0)
    xs = jnp.sort(x, axis=1)                       # kept values last, ascending
    clips = jnp.asarray([0] + list(range(2, MAX_FINGERS)))
    clipped = jnp.where(jnp.arange(n)[None, None, :] >= n - clips[:, None, None], 0.0, xs[None])
    flat = clipped.reshape(-1, n)
    ones = jnp.ones(flat.shape[0], evals.dtype)
    fits = fit_rows(flat, ones * xmin_max, ones * thresh)
    fits = jax.tree.map(lambda a: a.reshape(len(clips), batch), fits)
    raw = fits.alpha[0]
    finger = fits.alpha[1:] + FINGER_THRESH < raw[None]
    stop = finger | (fits.alpha[1:] <= MIN_ALPHA)
    first = jnp.argmax(stop, axis=0)
    chosen = jnp.where(stop.any(axis=0) & finger[first, jnp.arange(batch)], first + 1, 0)
    pick = jax.tree.map(lambda a: a[chosen, jnp.arange(batch)], fits)
    spikes = (x >= pick.xmin[:, None]).sum(axis=1)
    pick = pick._replace(num_pl_spikes=jnp.where(pick.status == FIT_OK, spikes, 0))
    return FingerFit(pick, jnp.where(chosen > 0, clips[chosen] - 1, 0), raw)


def esd_peak(evals, thresh=EVALS_THRESH):
    """Peak of the ESD: left edge of the fullest of ``PEAK_BINS`` bins of ``log10(lambda)``.

    The bins span ``[min, max]`` of ``log10`` of the values ``> thresh`` (as
    ``numpy.histogram``); the first fullest bin wins a tie.

    Args:
      evals: ``(..., n)`` spectra, zero-padded.
      thresh: values at or below are left out.

    Returns:
      ``(...)`` peaks (NaN where fewer than 2 values are kept).
    """
    keep = jnp.isfinite(evals) & (evals > thresh)
    lx = jnp.log10(jnp.where(keep, evals, 1.0))
    lo = jnp.min(jnp.where(keep, lx, jnp.inf), axis=-1, keepdims=True)
    hi = jnp.max(jnp.where(keep, lx, -jnp.inf), axis=-1, keepdims=True)
    width = jnp.where(hi > lo, (hi - lo) / PEAK_BINS, 1.0)
    idx = jnp.clip(jnp.floor((lx - lo) / width), 0, PEAK_BINS - 1).astype(jnp.int32)
    counts = jnp.sum((idx[..., None] == jnp.arange(PEAK_BINS)) & keep[..., None], axis=-2)
    peak = 10.0 ** (lo[..., 0] + jnp.argmax(counts, axis=-1) * width[..., 0])
    return jnp.where(keep.sum(axis=-1) >= 2, peak, jnp.nan)


def xmin_peak(evals, xmin_max=jnp.inf, thresh=EVALS_THRESH) -> FingerFit:
    """``fix_fingers="xmin_peak"`` for a ``(B, n)`` batch (traceable).

    The exact scan on the values ``>= 0.95 p`` (``p`` from :func:`esd_peak`), with
    candidates ``xmin <= xmin_max`` (``inf``: ``1.5 p`` per spectrum). Values below
    the window take no part, so spectra with fewer than ``SMALL_N`` values in it use
    the small-sample estimator.

    Args:
      evals: ``(B, n)`` spectra, any order, zero-padded.
      xmin_max: scalar upper bound on ``xmin`` (``inf``: ``1.5 p``).
      thresh: values ``<= thresh`` are left out.

    Returns:
      A :class:`FingerFit` (``num_fingers`` 0; ``raw_alpha`` the unrestricted fit's).
    """
    peak = esd_peak(evals, thresh)
    low = jnp.maximum(jnp.nextafter(PEAK_LOW * peak, 0.0), thresh)
    high = jnp.where(jnp.isinf(xmin_max), PEAK_HIGH * peak, xmin_max)
    fit = fit_rows(evals, jnp.where(jnp.isnan(peak), jnp.inf, high),
                       jnp.where(jnp.isnan(peak), thresh, low))
    raw = fit_batch(evals, jnp.inf, thresh).alpha
    return FingerFit(fit, jnp.zeros(peak.shape, jnp.int32), raw)


@functools.partial(jax.jit, static_argnames=("method",))
def _fit_fingers(evals, method, xmin_max):
    return map_spectra(clip_xmax if method == "clip_xmax" else xmin_peak, evals, xmin_max)


def check_method(method: str) -> str:
    """``method`` if it is one of :data:`METHODS`, else a ValueError listing them."""
    if method not in METHODS:
        raise ValueError(f"fix_fingers must be one of {METHODS} (or None), got {method!r}")
    return method


def fit_fingers(evals, method: str = "clip_xmax", *, xmin_max=None) -> FingerFit:
    """Finger-corrected power-law fit of each spectrum in ``evals``.

    Args:
      evals: eigenvalues, shape ``(..., n)``, any order; leading axes are a batch.
      method: ``"clip_xmax"`` or ``"xmin_peak"`` (see the module docstring).
      xmin_max: upper bound on the candidate ``xmin`` (xmin_peak default: ``1.5 p``).

    Returns:
      A :class:`FingerFit` whose fields have shape ``evals.shape[:-1]``.

    Raises:
      ValueError: unknown ``method`` or no eigenvalue.
    """
    check_method(method)
    evals = as_spectra(evals, "fit_fingers")
    bound = jnp.asarray(np.inf if xmin_max is None else float(xmin_max), evals.dtype)
    return _fit_fingers(evals, method, bound)
