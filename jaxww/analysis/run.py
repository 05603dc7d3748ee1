""":class:`Run`: what every stage of one :func:`jaxww.analyze` call shares."""

from __future__ import annotations

from typing import Any, NamedTuple

from jaxww.analysis.optional import Options
from jaxww.analysis.progress import Progress


class Run(NamedTuple):
    """What the spectra and fit stages of one analysis share.

    Attributes:
      precision: ``"float32"`` or ``"float64"``.
      opts: the optional analyses (:class:`jaxww.analysis.optional.Options`).
      key: the ``jax.random`` key of ``bootstrap`` and ``randomize`` (or None).
      budget: bytes the weights may take at once (:func:`jaxww.analysis.budget.parse_budget`).
      tracker: the :class:`jaxww.analysis.progress.Progress` of the call.
    """

    precision: str
    opts: Options
    key: Any
    budget: int
    tracker: Progress
