"""A small alpha-by-layer figure as inline SVG, written by hand so that a notebook shows it
without matplotlib (the HTML of :class:`jaxww.Report` and :class:`jaxww.ModelDiff`).

Points are coloured by group (the layer type, or the model of a diff) and never joined
by lines; each has a tooltip (its ``<title>``: the layer's name and value). Layers without
an alpha (failed fits) are marked ``×`` on the x-axis with their reason. The bands
``alpha < 2`` (over-trained) and ``alpha > 6`` (under-trained) are shaded, as in
:func:`jaxww.report.plots.plot_alphas`.
"""

from __future__ import annotations

import html
import math

from jaxww.fit.metrics import OVER_TRAINED, UNDER_TRAINED

#: Colours of the groups, in first-seen order (then repeated).
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f")
_LEFT, _RIGHT, _TOP, _BOTTOM, _PLOT_H = 42, 12, 22, 34, 120
_FONT = 'font-family="sans-serif" font-size="10" fill="currentColor"'


def alpha_figure(points, missing=(), *, xlabel: str = "layer_id") -> str:
    """An ``<svg>`` of alpha by layer.

    Args:
      points: ``(x, alpha, group, tooltip)`` of each layer with an alpha.
      missing: ``(x, tooltip)`` of each layer without one (marked ``×`` on the x-axis).
      xlabel: the x-axis label.

    Returns:
      The ``<svg>`` element as a str ("" when there is no layer at all).

    Example:
      >>> alpha_figure([(0, 3.0, "dense", "a: 3.000")])[:40]
      '<svg xmlns="http://www.w3.org/2000/svg" '
    """
    xs = [p[0] for p in points] + [m[0] for m in missing]
    if not xs:
        return ""
    alphas = [p[1] for p in points]
    lo = min([1.0] + [math.floor(a) for a in alphas])
    hi = max([UNDER_TRAINED + 1] + [math.ceil(a) for a in alphas])
    x0, x1 = min(xs) - 0.5, max(xs) + 0.5
    width = min(760, max(280, 8 * (x1 - x0)))
    sx = lambda x: _LEFT + (x - x0) / (x1 - x0) * width                      # noqa: E731
    sy = lambda y: _TOP + (hi - y) / (hi - lo) * _PLOT_H                     # noqa: E731
    parts = _frame(lo, hi, x0, x1, sx, sy, width, xlabel)
    groups: dict = {}
    r = 3.5 if len(points) <= 200 else 2.2
    for x, a, g, tip in points:
        colour = groups.setdefault(g, PALETTE[len(groups) % len(PALETTE)])
        parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(a):.1f}" r="{r}" fill="{colour}" fill-opacity="0.85">'
                     f"<title>{html.escape(tip)}</title></circle>")
    for x, tip in missing:
        parts.append(f'<text x="{sx(x):.1f}" y="{sy(lo) + 4:.1f}" text-anchor="middle" font-size="12" '
                     f'fill="#d62728">\u00d7<title>{html.escape(tip)}</title></text>')
    parts += _legend(groups, bool(missing))
    total_w, total_h = _LEFT + width + _RIGHT, _TOP + _PLOT_H + _BOTTOM
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{total_w:.0f}" height="{total_h}" '
            f'viewBox="0 0 {total_w:.0f} {total_h}" role="img" aria-label="alpha by layer">'
            + "".join(parts) + "</svg>")


def _ticks(lo: float, hi: float, most: int) -> list:
    """Integer ticks in ``[lo, hi]``, a step of 1, 2 or 5 times a power of ten, at most ``most``."""
    step = 1
    while (hi - lo) / step > most:
        step = next(s * 10 ** k for k in range(12) for s in (1, 2, 5) if s * 10 ** k > step)
    first = math.ceil(lo / step) * step
    return list(range(int(first), int(math.floor(hi)) + 1, step))


def _frame(lo, hi, x0, x1, sx, sy, width, xlabel) -> list:
    """The shaded bands, the axes, their ticks and labels."""
    left, right, bottom = _LEFT, _LEFT + width, sy(lo)
    band = 'fill="#e6a000" fill-opacity="0.13"'
    parts = [f'<rect x="{left}" y="{sy(OVER_TRAINED):.1f}" width="{width:.1f}" '
             f'height="{bottom - sy(OVER_TRAINED):.1f}" {band}><title>alpha &lt; 2: over-trained</title></rect>',
             f'<rect x="{left}" y="{sy(hi):.1f}" width="{width:.1f}" height="{sy(UNDER_TRAINED) - sy(hi):.1f}" '
             f'{band}><title>alpha &gt; 6: under-trained</title></rect>',
             f'<path d="M{left},{sy(hi):.1f}V{bottom:.1f}H{right:.1f}" fill="none" stroke="currentColor" '
             'stroke-opacity="0.6"/>']
    for t in _ticks(lo, hi, 6):
        parts.append(f'<text x="{left - 4}" y="{sy(t) + 3.5:.1f}" text-anchor="end" {_FONT}>{t}</text>'
                     f'<path d="M{left - 2},{sy(t):.1f}H{left}" stroke="currentColor"/>')
    for t in _ticks(math.ceil(x0), math.floor(x1), 10):
        parts.append(f'<text x="{sx(t):.1f}" y="{bottom + 13:.1f}" text-anchor="middle" {_FONT}>{t}</text>')
    mid = _TOP + _PLOT_H / 2
    parts.append(f'<text x="{left + width / 2:.1f}" y="{bottom + 27:.1f}" text-anchor="middle" {_FONT}>'
                 f"{html.escape(xlabel)}</text>"
                 f'<text x="11" y="{mid:.1f}" text-anchor="middle" transform="rotate(-90 11 {mid:.1f})" '
                 f"{_FONT}>alpha</text>")
    return parts


def _legend(groups: dict, failed: bool) -> list:
    """One coloured dot and name per group along the top (and the failed mark)."""
    parts, x = [], _LEFT
    for g, colour in groups.items():
        parts.append(f'<circle cx="{x + 4}" cy="9" r="3.5" fill="{colour}"/>'
                     f'<text x="{x + 11}" y="12.5" {_FONT}>{html.escape(str(g))}</text>')
        x += 22 + 6 * len(str(g))
    if failed:
        parts.append(f'<text x="{x}" y="12.5" {_FONT}><tspan fill="#d62728">\u00d7</tspan> failed</text>')
    return parts
