"""Where each layer's spectrum is computed: the processes of ``jax.distributed``, then the
devices of each process.

Layers are split by their work, ``rf (N + M) M^2`` (Gram matrix and eigenvalues): first
into one share per process (every process computes the same split from the shapes, so
no communication is needed to agree on it), then each share into one part per local
device. Every process reads and computes only its share; the spectra (a few values per
layer) are then gathered so that every process fits every layer and holds the whole
report. A process of a TPU pod or a GPU node runs the same ``analyze`` call::

    jax.distributed.initialize()            # on every host, before anything else
    report = jaxww.analyze("gs://.../ckpt" or params, devices=mesh)   # same report on every host

With one process this is the per-device split of :func:`split` only.

A CPU device computes its spectra with LAPACK on the host, an accelerator with the jitted
programs of :mod:`jaxww.linalg.spectra` on the device (:func:`on_device`). For developers,
``JAXWW_DEVICE_PATH=1`` in the environment sends CPU devices through the accelerator's code
too (``device_put``, the padded buckets, tridiagonal reduction and bisection, the jitted
fit), so that the suite runs it on a machine without one (docs/scale.md).
"""

from __future__ import annotations

import os
from typing import Sequence

import jax
import numpy as np


def _device_path_flag(value: str | None) -> bool:
    """``JAXWW_DEVICE_PATH``: unset, ``""`` or ``"0"`` (off) or ``"1"`` (on).

    Raises:
      ValueError: any other value (a typo must not silently test the host path).
    """
    if value not in (None, "", "0", "1"):
        raise ValueError(f"JAXWW_DEVICE_PATH must be 0 or 1 (or unset), got {value!r}")
    return value == "1"


#: ``JAXWW_DEVICE_PATH=1``: CPU devices take the accelerator's code (read once, at import).
DEVICE_PATH = _device_path_flag(os.environ.get("JAXWW_DEVICE_PATH"))


def on_device(device) -> bool:
    """Whether ``device`` computes with the accelerator's code: every accelerator, and CPU
    devices when :data:`DEVICE_PATH` is set; otherwise LAPACK on the host."""
    return device.platform != "cpu" or DEVICE_PATH


def check_precision(device, precision: str) -> None:
    """Refuse what ``device`` cannot compute, before anything is read.

    Raises:
      ValueError: ``precision="float64"`` on a TPU: XLA has no float64 eigensolver there.
    """
    if precision == "float64" and device.platform == "tpu":
        raise ValueError(f'precision="float64" cannot be computed on {device}: XLA has no float64 '
                         'eigensolver on TPU. Pass precision="float32", or analyse on the CPU with '
                         'devices=jax.devices("cpu")')


def cost(k) -> int:
    """Work of one layer's spectrum: Gram matrix and eigenvalues, ``rf (N M^2 + M^3)``."""
    return k.rf * (k.N + k.M) * k.M ** 2


def split(kerns, n_parts: int, keep_empty: bool = False) -> list[list[int]]:
    """Kernel indices in ``n_parts`` parts of about equal :func:`cost` (largest first,
    each to the lightest part, ties to the first); each part keeps kernel order; empty
    parts are dropped unless ``keep_empty`` (so that part ``p`` is process ``p``'s)."""
    parts: list[list[int]] = [[] for _ in range(n_parts)]
    load = [0] * n_parts
    for i in sorted(range(len(kerns)), key=lambda i: -cost(kerns[i])):
        j = load.index(min(load))
        parts[j].append(i)
        load[j] += cost(kerns[i])
    return [sorted(p) for p in parts if p or keep_empty]


def local_devices(devices) -> list:
    """The devices of this process that ``analyze(devices=...)`` computes on: None (all
    local devices), a sequence of devices, or a ``jax.sharding.Mesh`` (its devices that
    belong to this process).

    Raises:
      ValueError: no device of this process is left.
    """
    if devices is None:
        out = jax.local_devices()
    elif isinstance(devices, jax.sharding.Mesh):
        out = [d for d in devices.devices.flat if d.process_index == jax.process_index()]
    else:
        out = list(devices)
    if not out:
        raise ValueError("analyze: devices is empty (no device of this process)")
    return out


def host_share(kerns) -> list[int]:
    """Indices of the kernels this process computes: all of them in a single process,
    else its part of :func:`split` over ``jax.process_count()`` processes."""
    if jax.process_count() == 1:
        return list(range(len(kerns)))
    return split(kerns, jax.process_count(), keep_empty=True)[jax.process_index()]


def gather(kerns, share: Sequence[int], evals: list, needs: dict, precision: str) -> tuple[list, dict]:
    """Every kernel's spectrum on every process, from each process's ``share``.

    Args:
      kerns: all kernels (the same on every process).
      share: the indices this process computed (:func:`host_share`).
      evals: per kernel, its ``(rf, M)`` spectrum where computed here, else None.
      needs: ``{index: (bytes needed, budget, its name)}`` of the kernels computed alone here.
      precision: the dtype of the spectra.

    Returns:
      ``(evals, needs)`` for every kernel, as host arrays. One process: unchanged.
    """
    if jax.process_count() == 1:
        return [np.asarray(e) for e in jax.device_get(evals)], needs
    from jax.experimental import multihost_utils

    sizes = [k.rf * k.M for k in kerns]
    starts = np.concatenate([[0], np.cumsum(sizes)])
    flat = np.zeros(int(starts[-1]), precision)
    kib = np.zeros((len(kerns), 2), np.int64)
    for i in share:
        flat[starts[i]:starts[i + 1]] = np.asarray(jax.device_get(evals[i])).reshape(-1)
        if i in needs:
            kib[i] = [-(-v // 1024) for v in needs[i]]
    owner = np.zeros(len(kerns), int)
    for p, part in enumerate(split(kerns, jax.process_count(), keep_empty=True)):
        owner[part] = p
    all_flat = np.asarray(multihost_utils.process_allgather(flat))
    all_kib = np.asarray(multihost_utils.process_allgather(kib))
    out = [all_flat[owner[i], starts[i]:starts[i + 1]].reshape(k.rf, k.M) for i, k in enumerate(kerns)]
    return out, {i: tuple(int(v) * 1024 for v in all_kib[owner[i], i])
                 for i in range(len(kerns)) if all_kib[owner[i], i, 0]}
