"""The keyword arguments of :func:`jaxww.analyze` as data: those a report records (the
ones given other than their defaults) and those that choose which matrices are read.

The reading options are the keywords of :func:`jaxww.reading.layers.read_layers`, read
from its signature once: ``analyze`` passes them on, and so does ``diff_models`` to read
the matrices its rows describe, so a reading option added there reaches both.
"""

from __future__ import annotations

import inspect
from typing import Callable, Mapping

from jaxww.reading.layers import read_layers
from jaxww.report import export

#: The keyword arguments of ``read_layers`` that are not options of the caller.
_CALLER = ("where", "concrete")
#: The options that choose which matrices are read (``min_evals``, ``layers``, ``base``...).
READING = tuple(n for n, p in inspect.signature(read_layers).parameters.items()
                if p.kind is p.KEYWORD_ONLY and n not in _CALLER)
#: Options a report does not record: not data (a key, devices, a callback).
NOT_RECORDED = ("progress", "devices", "key")


def reading(options: Mapping) -> dict:
    """The entries of ``options`` (keyword arguments of ``analyze``) in :data:`READING`.

    Example:
      >>> reading({"layers": "dense", "mp_fit": True, "max_N": None})
      {'max_N': None, 'layers': 'dense'}
    """
    return {n: options[n] for n in READING if n in options}


def defaults(fn: Callable) -> dict:
    """The defaults of ``fn``'s keyword-only arguments."""
    return {n: p.default for n, p in inspect.signature(fn).parameters.items() if p.kind is p.KEYWORD_ONLY}


def given(fn: Callable, args: Mapping) -> dict:
    """The keyword arguments of ``fn`` in ``args`` (its ``locals()`` at entry) that differ
    from their defaults and that JSON can hold (:func:`jaxww.report.export.jsonable`),
    less :data:`NOT_RECORDED`; ``base`` (a whole tree) is recorded as ``True``.

    Example:
      >>> def f(x, *, a=1, base=None, key=None): return given(f, locals())
      >>> f(0, a=2, base={"w": 1}, key=3)
      {'a': 2, 'base': True}
    """
    out = {n: args[n] for n, d in defaults(fn).items()
           if n not in NOT_RECORDED and args[n] is not d and not _equal(args[n], d)}
    if "base" in out:
        out["base"] = True
    return export.jsonable(out)


def _equal(a, b) -> bool:
    try:
        return bool(a == b)
    except Exception:   # arrays, trees
        return False
