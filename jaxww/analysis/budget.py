"""``memory_budget=`` as bytes: the user's size with a unit, or a default from the memory
available now. :mod:`jaxww.analysis.streaming` plans its groups within it."""

from __future__ import annotations

import os
import re

import numpy as np

#: Bounds of the default budget (a quarter of the available memory): below the lower
#: one groups get too small to keep the cores busy, above the upper one nothing is faster.
_MIN_DEFAULT, _MAX_DEFAULT = 256 << 20, 1 << 30
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1000, "kib": 1 << 10, "m": 1 << 20, "mb": 10 ** 6,
          "mib": 1 << 20, "g": 1 << 30, "gb": 10 ** 9, "gib": 1 << 30, "t": 1 << 40, "tb": 10 ** 12,
          "tib": 1 << 40}


def available_memory() -> int | None:
    """Bytes of host memory available now (``MemAvailable`` of ``/proc/meminfo``, or
    ``sysconf`` pages), None where neither is readable."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def default_budget() -> int:
    """A quarter of :func:`available_memory`, within 256 MiB .. 1 GiB."""
    free = available_memory()
    return _MAX_DEFAULT if free is None else int(min(max(free // 4, _MIN_DEFAULT), _MAX_DEFAULT))


def parse_budget(budget) -> int:
    """``memory_budget`` as bytes: None (:func:`default_budget`), an int of bytes, or a
    string with a unit (``"512MiB"``, ``"2 GB"``, ``"1.5g"``).

    Raises:
      ValueError, TypeError: anything else, or a budget under 1 MiB.

    Example:
      >>> parse_budget("1.5GiB"), parse_budget(2**30)
      (1610612736, 1073741824)
    """
    if budget is None:
        return default_budget()
    if isinstance(budget, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", budget)
        if not m or m[2].lower() not in _UNITS:
            raise ValueError(f"memory_budget must be bytes or a size like '512MiB' or '2GB', got {budget!r}")
        budget = int(float(m[1]) * _UNITS[m[2].lower()])
    elif isinstance(budget, bool) or not isinstance(budget, (int, np.integer)):
        raise TypeError(f"memory_budget must be None, an int of bytes or a size like '2GiB', "
                        f"got {type(budget).__name__}")
    if budget < 1 << 20:
        raise ValueError(f"memory_budget must be at least 1 MiB, got {budget} bytes")
    return int(budget)
