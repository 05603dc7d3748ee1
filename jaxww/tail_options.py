"""The optional tail analyses of :func:`jaxww.analyze`: ``fix_fingers=``, ``fit=``, ``bootstrap=``.

One traceable function, :func:`tail_fit`, turns the padded spectra batch that
``analyze`` already holds into the fit it reports plus the extra columns; the
defaults (``fix_fingers=None, fit="PL", bootstrap=0``) give exactly the plain exact
power-law fit and no extra column.

=================  ==========================================================
option             columns added (the fit columns change as said)
=================  ==========================================================
``fix_fingers``    ``"clip_xmax"``: ``num_fingers``, ``raw_alpha``; ``alpha``,
                   ``xmin``, ``xmax``, ``D``, ``sigma`` of the clipped fit
                   (:mod:`jaxww.fingers`). ``"xmin_peak"``: fit in the peak window.
``fit``            ``"TPL"``/``"E_TPL"``: ``Lambda``, ``tpl_loglik``, ``pl_loglik``;
                   ``alpha`` is the truncated law's (:mod:`jaxww.tpl`), on the tail
                   above the power-law ``xmin`` (``"E_TPL"``: the ``xmin_peak`` one).
``bootstrap=B``    ``pl_p_value``, ``alpha_ci_low``, ``alpha_ci_high`` of the plain
                   power-law fit (:mod:`jaxww.bootstrap`), B replicas per layer.
=================  ==========================================================
"""

from __future__ import annotations

import math
from typing import NamedTuple


from jaxww import bootstrap as _bootstrap
from jaxww import fingers as _fingers
from jaxww import powerlaw as _pl
from jaxww import tpl as _tpl

#: The ``fit=`` choices.
FITS = ("PL", "TPL", "E_TPL")


class TailOptions(NamedTuple):
    """Validated, hashable options (static under jit)."""

    fix_fingers: str | None = None
    fit: str = "PL"
    bootstrap: int = 0


def check(fix_fingers, fit, bootstrap, key) -> TailOptions:
    """Validate analyze's options; a ValueError lists the choices.

    Example:
      >>> check(None, "TPL", 0, None)
      TailOptions(fix_fingers=None, fit='TPL', bootstrap=0)
    """
    if fix_fingers is not None:
        _fingers.check_method(fix_fingers)
    if fit not in FITS:
        raise ValueError(f"fit must be one of {FITS}, got {fit!r}")
    if fit != "PL" and fix_fingers == "clip_xmax":
        raise ValueError(f"fit={fit!r} cannot be combined with fix_fingers='clip_xmax' "
                         "(the truncated law starts at the power-law or xmin_peak xmin)")
    num = _bootstrap.check_bootstrap(bootstrap, key)
    if fit == "E_TPL":
        fix_fingers = "xmin_peak"
    return TailOptions(fix_fingers, fit, num)


def columns(opts: TailOptions) -> tuple:
    """The extra columns ``opts`` adds to the report, in order."""
    cols = ()
    if opts.fix_fingers == "clip_xmax":
        cols += ("num_fingers", "raw_alpha")
    if opts.fit != "PL":
        cols += ("Lambda", "tpl_loglik", "pl_loglik")
    if opts.bootstrap:
        cols += ("pl_p_value", "alpha_ci_low", "alpha_ci_high")
    return cols


def tail_fit(E, xmin_max, keys, opts: TailOptions):
    """The reported fit and the extra columns of a ``(L, n)`` padded batch (traceable).

    Args:
      E: ``(L, n)`` spectra, zero-padded.
      xmin_max: scalar bound on ``xmin``.
      keys: ``(L,)`` random keys (used only with ``opts.bootstrap``).
      opts: :class:`TailOptions` (static).

    Returns:
      ``(fit, extra)``: a :class:`jaxww.PowerLawFit` (its ``alpha`` is the one the
      metrics use) and a dict of ``(L,)`` arrays, one per :func:`columns` entry.
    """
    extra = {}
    if opts.fix_fingers == "clip_xmax":
        ff = _fingers.clip_xmax(E, xmin_max)
        fit = ff.fit
        extra.update(num_fingers=ff.num_fingers, raw_alpha=ff.raw_alpha)
    elif opts.fix_fingers == "xmin_peak":
        fit = _fingers.xmin_peak(E, xmin_max).fit
    else:
        fit = _pl.fit_batch(E, xmin_max)
    if opts.fit != "PL":
        t = _tpl.fit_batch(E, fit.xmin)
        extra.update(Lambda=t.Lambda, tpl_loglik=t.loglik, pl_loglik=t.pl_loglik)
        fit = fit._replace(alpha=t.alpha)
    if opts.bootstrap:
        b = _bootstrap.bootstrap_batch(keys, E, opts.bootstrap, xmin_max)
        extra.update(pl_p_value=b.p_value, alpha_ci_low=b.alpha_ci_low, alpha_ci_high=b.alpha_ci_high)
    return fit, extra


def row_values(extra: dict, opts: TailOptions, ok: bool) -> tuple[dict, str]:
    """One layer's extra columns as Python numbers, and why any is missing ("" if none).

    ``ok``: whether the layer's fit succeeded (else every extra column is NaN).
    """
    out, why = {}, []
    for col in columns(opts):
        v = extra[col]
        out[col] = int(v) if col == "num_fingers" else (float(v) if ok else math.nan)
    if ok and opts.fit != "PL" and math.isnan(out["Lambda"]):
        why.append("truncated power law: fewer than 2 tail values")
    if ok and opts.bootstrap and math.isnan(out["pl_p_value"]):
        why.append("bootstrap: no replica could be fitted")
    return out, "; ".join(why)
