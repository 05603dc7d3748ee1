"""The optional analyses of :func:`jaxww.analyze`: which columns they add, and how.

Every option runs on the padded spectra batches that ``analyze`` has already computed
(no second eigenvalue computation of a matrix), jitted and vectorised over the layers
of a batch, and adds its columns (weightwatcher's names) after :data:`jaxww.COLUMNS`.
The defaults (``fix_fingers=None, fit="PL", bootstrap=0``, the rest off) give exactly
the plain exact power-law fit and no extra column.

=================  ==========================================================  ==================
option             columns added (the fit columns change as said)              module
=================  ==========================================================  ==================
``fix_fingers``    ``"clip_xmax"``: ``num_fingers``, ``raw_alpha``; ``alpha``,  jaxww.fit.fingers
                   ``xmin``, ``xmax``, ``D``, ``sigma`` of the clipped fit.
                   ``"xmin_peak"``: fit in the peak window.
``fit``            ``"TPL"``/``"E_TPL"``: ``Lambda``, ``tpl_loglik``,            jaxww.fit.tpl
                   ``pl_loglik``; ``alpha`` is the truncated law's, on the tail
                   above the power-law ``xmin`` (``"E_TPL"``: the
                   ``xmin_peak`` one).
``bootstrap=B``    ``pl_p_value``, ``alpha_ci_low``, ``alpha_ci_high`` of the    jaxww.fit.bootstrap
                   plain power-law fit, B replicas per layer.
``mp_fit``         ``num_spikes``, ``sigma_mp``, ``mp_softrank``, ``bulk_min``,  jaxww.fit.mp
                   ``bulk_max``, ``bulk_max_tw``
``randomize``      ``max_rand_eval``, ``rand_distance``, ``ww_softrank``,        jaxww.analysis.randomize
                   ``num_traps``, ``trap_indices``, ``rand_sigma_mp``,
                   ``rand_bulk_max``
``detX``           ``detX_num``, ``detX_val``, ``detX_val_unrescaled``            jaxww.fit.detx
``ERG``            implies ``detX``; ``num_ERG_spikes`` (= ``detX_num``),          jaxww.fit.detx
                   ``ERG_gap`` (= ``detX_num - num_pl_spikes``; NaN when the
                   power-law fit failed)
``pool=False``     ``slice_id``: the tap of a convolution's row (0 for the other  jaxww.reading.kernels
                   layers); one row per tap, named ``name[tap=slice_id]``
``vectors``        ``{bulk,tail}_{mean,var}_{vec_entropy,loc_ratio,part_ratio}``  jaxww.analysis.vectors
                   (eigenvectors: the one option that decomposes the matrices
                   again; added by ``analyze`` after the others)
``farms``          ``alpha_farms``, ``xmin_farms``, ``D_farms``,                 jaxww.analysis.farms
                   ``num_pl_spikes_farms``, ``num_evals_farms`` (the fit of
                   the fixed-aspect-ratio windows' eigenvalues)
=================  ==========================================================  ==================

A column that cannot be computed is NaN (counts: -1; ``trap_indices``: ``()``) and the
row's ``reason`` says why.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import numpy as np

from jaxww.defaults import FITS as FITS   # the ``fit=`` choices
from jaxww.fit import bootstrap as _bootstrap
from jaxww.fit import detx as _detx
from jaxww.fit import estimators as _estimators
from jaxww.fit import fingers as _fingers
from jaxww.fit import mp as _mp
from jaxww.fit import scan as _scan
from jaxww.analysis import farms as _farms
from jaxww.analysis import randomize as _randomize
from jaxww.fit.farms import Farms, check as _check_farms
from jaxww.fit import tpl as _tpl

_FINGER_COLUMNS = ("num_fingers", "raw_alpha")
_TPL_COLUMNS = ("Lambda", "tpl_loglik", "pl_loglik")
_BOOTSTRAP_COLUMNS = ("pl_p_value", "alpha_ci_low", "alpha_ci_high")
_RAND_COLUMNS = _randomize.COLUMNS + ("rand_sigma_mp", "rand_bulk_max")
_ERG_COLUMNS = ("num_ERG_spikes", "ERG_gap")
_COUNTS = {"num_fingers", "num_spikes", "num_traps", "detX_num", "num_ERG_spikes", "slice_id", *_farms.COUNTS}


class Options(NamedTuple):
    """Validated, hashable options of ``analyze`` (static under jit); see :func:`check`."""

    fix_fingers: str | None = None
    fit: str = "PL"
    bootstrap: int = 0
    mp_fit: bool = False
    randomize: bool = False
    detX: bool = False
    ERG: bool = False
    pool: bool = True
    farms: Farms | None = None
    estimator: str = "csn"

    @property
    def columns(self) -> tuple:
        """The columns these options add to the report, in order."""
        return (_FINGER_COLUMNS * (self.fix_fingers == "clip_xmax") + _TPL_COLUMNS * (self.fit != "PL")
                + _BOOTSTRAP_COLUMNS * bool(self.bootstrap) + _mp.COLUMNS * self.mp_fit + _RAND_COLUMNS * self.randomize
                + _detx.COLUMNS * self.detX + _ERG_COLUMNS * self.ERG + ("slice_id",) * (not self.pool)
                + _farms.COLUMNS * (self.farms is not None))


def check(*, fix_fingers=None, fit="PL", bootstrap=0, key=None, mp_fit=False, randomize=False,
          detX=False, ERG=False, pool=True, farms=False, estimator="csn", xmin_max=None) -> Options:
    """Validate analyze's options; a ValueError lists the choices or names what is missing.

    ``fit="E_TPL"`` implies ``fix_fingers="xmin_peak"``; ``ERG=True`` implies ``detX=True``
    (weightwatcher 0.7.7's alias); ``farms``: a bool, a dict of the knobs of
    :class:`jaxww.Farms` or one (:func:`jaxww.fit.farms.check`). An ``estimator`` other than
    ``"csn"`` is the whole tail fit: it refuses ``fix_fingers``, ``fit`` and ``bootstrap``
    (and ``xmin_max`` for a fixed position). ``key`` (needed by
    ``bootstrap`` and ``randomize``) is checked, not kept: it is not static.

    Example:
      >>> check(fit="TPL", mp_fit=True).columns
      ('Lambda', 'tpl_loglik', 'pl_loglik', 'num_spikes', 'sigma_mp', 'mp_softrank', 'bulk_min', 'bulk_max', 'bulk_max_tw')
    """
    if fix_fingers is not None:
        _fingers.check_method(fix_fingers)
    if fit not in FITS:
        raise ValueError(f"fit must be one of {FITS}, got {fit!r}")
    if fit != "PL" and fix_fingers == "clip_xmax":
        raise ValueError(f"fit={fit!r} cannot be combined with fix_fingers='clip_xmax' "
                         "(the truncated law starts at the power-law or xmin_peak xmin)")
    num = _bootstrap.check_bootstrap(bootstrap, key)
    _check_estimator(estimator, xmin_max, fix_fingers=fix_fingers, fit=fit, bootstrap=num)
    if randomize:
        if key is None:
            raise ValueError("analyze(randomize=True) needs key=jax.random.key(seed): the entries "
                             "are permuted with it (same key, same numbers)")
        key = jax.numpy.asarray(key)
        if not (jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) or
                (key.dtype == np.uint32 and key.shape == (2,))):
            raise ValueError(f"key must be a PRNG key (jax.random.key(seed)), got {key.dtype} {key.shape}")
    return Options("xmin_peak" if fit == "E_TPL" else fix_fingers, fit, num,
                   bool(mp_fit), bool(randomize), bool(detX or ERG), bool(ERG), bool(pool),
                   _check_farms(farms), estimator)


def _check_estimator(estimator, xmin_max, **tail_options) -> None:
    """A ValueError for an unknown ``estimator``, or one other than ``"csn"`` with a tail option."""
    _estimators.check_estimator(estimator, xmin_max)
    clash = [f"{k}={v!r}" for k, v in tail_options.items() if v != Options._field_defaults[k]]
    if estimator != "csn" and clash:
        raise ValueError(f"estimator={estimator!r} is the whole tail fit; it cannot be combined with "
                         f"{', '.join(clash)} (those refine the 'csn' fit)")


def random_spectra(key, leaves, kerns, specs, groups, precision):
    """Randomised padded spectra per fit group (for ``randomize``): the entries of a
    layer permuted with ``fold_in(key, crc32(name))``."""
    keys = _randomize.layer_keys(key, [k.name for k in kerns])
    return _randomize.random_spectra(leaves, specs, keys, groups, precision)


def compute(opts: Options, E, R, xmin_max, key, ids, kerns):
    """The reported fit and the options' columns of one padded batch (device arrays).

    Args:
      opts: :class:`Options`.
      E: ``(L, n)`` spectra, zero-padded.
      R: their randomised spectra (:func:`random_spectra`; None without ``randomize``).
      xmin_max: scalar bound on ``xmin``.
      key: the ``jax.random`` key of ``bootstrap`` (layer ``i`` uses ``fold_in(key, i)``).
      ids: ``(L,)`` global index of each layer.
      kerns: the ``L`` :class:`jaxww.Kernel` of the rows.

    Returns:
      ``(fit, values)``: a :class:`jaxww.PowerLawFit` (its ``alpha`` is the one the
      metrics use) and a dict of ``(L,)`` arrays, what :func:`row` reads.
    """
    keys = None if not opts.bootstrap else jax.vmap(jax.random.fold_in, (None, 0))(key, np.asarray(ids))
    fit, out = _tail_fit(E, xmin_max, keys, opts.fix_fingers, opts.fit, opts.bootstrap, opts.estimator)
    if opts.mp_fit:
        out.update(_mp.columns(E, kerns))
    if opts.randomize:
        out.update(_randomize.columns(E, R, kerns))
    if opts.detX:
        out.update(_detx.columns(E, kerns))
    if opts.ERG:
        out.update(num_ERG_spikes=out["detX_num"], ERG_gap=out["detX_num"] - fit.num_pl_spikes)
    if not opts.pool:
        out["slice_id"] = np.asarray([k.tap or 0 for k in kerns])
    return fit, out


@functools.partial(jax.jit, static_argnames=("fix_fingers", "fit", "bootstrap", "estimator"))
def _tail_fit(E, xmin_max, keys, fix_fingers, fit, bootstrap, estimator):
    """The fit of ``estimator``, ``fix_fingers`` and ``fit``, and the tail options' columns
    (one program)."""
    out = {}
    if estimator != "csn":
        pl = _estimators.fit_rows(E, estimator, xmin_max)
    elif fix_fingers == "clip_xmax":
        ff = _fingers.clip_xmax(E, xmin_max)
        pl = ff.fit
        out.update(num_fingers=ff.num_fingers, raw_alpha=ff.raw_alpha)
    elif fix_fingers == "xmin_peak":
        pl = _fingers.xmin_peak(E, xmin_max).fit
    else:
        pl = _scan.fit_batch(E, xmin_max)
    if fit != "PL":
        t = _tpl.fit_batch(E, pl.xmin)
        out.update(Lambda=t.Lambda, tpl_loglik=t.loglik, pl_loglik=t.pl_loglik)
        pl = pl._replace(alpha=t.alpha)
    if bootstrap:
        b = _bootstrap.bootstrap_batch(keys, E, bootstrap, xmin_max)
        out.update(pl_p_value=b.p_value, alpha_ci_low=b.alpha_ci_low, alpha_ci_high=b.alpha_ci_high)
    return pl, out


def at_bound(opts: Options, alpha: float) -> str:
    """Why a truncated power-law fit carries no verdict (its alpha at a bound of its range,
    0 or :data:`jaxww.fit.tpl.TPL_ALPHA_MAX`: the optimum was not found inside), else ``""``."""
    if opts.fit == "PL" or 0.0 < alpha < _tpl.TPL_ALPHA_MAX:
        return ""
    return f"no verdict: the truncated power law's alpha is at its bound ({alpha:g})"


def row(opts: Options, values: dict, r: int, num_evals: int, fit_ok: bool, finite: bool
        ) -> tuple[dict, str]:
    """Row ``r`` of the host ``values`` of :func:`compute`: ``({column: value}, reason)``.

    A failed fit (``fit_ok`` false) blanks the tail columns but ``num_fingers``;
    non-finite weights blank the others too (the row's reason already says why); a
    failed MP fit (of the spectrum, or of the randomised one for the traps) blanks its
    columns. The reason says why a column is missing ("" if none).
    """
    reasons = []
    if not finite:
        blank = set(opts.columns) - {"num_fingers", "slice_id"}
    elif not fit_ok:
        blank = set(_FINGER_COLUMNS[1:] + _TPL_COLUMNS + _BOOTSTRAP_COLUMNS + _ERG_COLUMNS[1:])
    else:
        blank = set()
        if opts.fit != "PL" and math.isnan(values["Lambda"][r]):
            reasons.append("truncated power law: fewer than 2 tail values")
        if opts.bootstrap and math.isnan(values["pl_p_value"][r]):
            reasons.append("bootstrap: no replica could be fitted")
    if finite and opts.mp_fit:
        reasons.append(_mp.reason(num_evals, float(values["sigma_mp"][r])))
        blank |= set(_mp.COLUMNS) if reasons[-1] else set()
    if finite and opts.farms is not None:
        reasons.append(_farms.reason(values, r))
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
