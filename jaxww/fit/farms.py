"""FARMS: the spectrum of fixed-aspect-ratio windows of a matrix (Hu, Goel, Killiakov, Yang,
"Eigenspectrum Analysis of Neural Networks without Aspect Ratio Bias", ICML 2025,
arXiv:2506.06280; the authors' code: github.com/HUST-AI-HYZ/FARMS,
``LLM_Pruning/lib/sampling.py::fixed_sampling``).

The plain ESD of an ``N x M`` matrix depends on its aspect ratio ``Q = N / M`` (the
Marchenko-Pastur bulk of a random matrix narrows as ``Q`` grows, so a power law fitted to
it steepens). FARMS fits instead the eigenvalues of windows (submatrices) of one fixed
shape ``m x n``, ``n = int(m * ratio)``, taken on an evenly spaced grid and concatenated:
every matrix is seen through windows of the same aspect ratio, whatever its own.

The windows of a matrix of shape ``(a, b)`` (:func:`geometry`), with ``s = min(a, b)``,
``l = max(a, b)`` and ``window``, ``ratio >= 1``, ``grid`` the knobs:

* the short side ``m = min(window, s, floor(l / ratio))`` lies along the short dimension,
  the long side ``n = int(m * ratio)`` along the long one;
* along a dimension of length ``L`` with windows of length ``w``: step
  ``max(1, (L - w) // (grid - 1))``, ``min(grid, (L - w) // step + 1)`` windows, the
  ``i``-th starting at ``min(i * step, L - w)`` (:func:`window_starts`);
* the spectrum is the ``m`` eigenvalues ``sigma^2`` of every window (all pairs of a row
  start and a column start), concatenated (:func:`farms_esd`).

That is the authors' ``fixed_sampling`` (``num_row_samples=window``, ``Q_ratio=ratio``,
``sampling_ops_per_dim=grid``) for ``ratio = 1`` (the paper's LLM setting: ``window=2000,
ratio=1, grid=15``, the defaults here). For ``ratio > 1`` the authors lay the long side
along PyTorch's ``in_features`` whatever the shape, and a window longer than that
dimension silently becomes the whole dimension; here the long side follows the long
dimension (so ``W`` and ``W.T`` give the same spectrum, as for the plain ESD) and ``m``
shrinks until the window fits. The authors' convolution rule (a different split of each
tap, alphas averaged) is not reproduced: each matrix of a stack (a convolution tap) gets
the windows above and all their eigenvalues are concatenated.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxww.linalg import spectra as _spectra


class Farms(NamedTuple):
    """The windows of FARMS (module docstring); the defaults are the paper's LLM setting.

    Attributes:
      window: the short side of a window (rows), at most the matrix's short side.
      ratio: the window's aspect ratio ``n / m`` (``>= 1``).
      grid: window positions per dimension (at most; fewer where the dimension is short).
    """

    window: int = 2000
    ratio: float = 1.0
    grid: int = 15


class Geometry(NamedTuple):
    """Where the windows of one matrix are.

    Attributes:
      height, width: the window's shape (rows, columns of the matrix as given).
      row_starts, col_starts: first row / column of each window position.
    """

    height: int
    width: int
    row_starts: tuple
    col_starts: tuple

    @property
    def count(self) -> int:
        """Windows per matrix."""
        return len(self.row_starts) * len(self.col_starts)

    @property
    def num_evals(self) -> int:
        """Eigenvalues per matrix: ``count * min(height, width)``."""
        return self.count * min(self.height, self.width)


def check(farms) -> Farms | None:
    """``farms`` (``analyze``'s argument) as a :class:`Farms`: ``False``/``None`` -> None,
    ``True`` -> ``Farms()``, a :class:`Farms` or a dict of its fields checked.

    Raises:
      ValueError, TypeError: a knob out of range or of the wrong type, named.

    Example:
      >>> check(True), check({"window": 64})
      (Farms(window=2000, ratio=1.0, grid=15), Farms(window=64, ratio=1.0, grid=15))
    """
    if farms is None or farms is False:
        return None
    if farms is True:
        return Farms()
    if isinstance(farms, dict):
        unknown = set(farms) - set(Farms._fields)
        if unknown:
            raise ValueError(f"farms: unknown knob(s) {sorted(unknown)}; the knobs are {Farms._fields}")
        farms = Farms(**farms)
    if not isinstance(farms, Farms):
        raise TypeError(f"farms must be a bool, a dict of {Farms._fields} or jaxww.Farms, "
                        f"got {type(farms).__name__}")
    return Farms(_positive_int(farms.window, "window"), _ratio(farms.ratio), _positive_int(farms.grid, "grid"))


def _positive_int(v, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"farms: {name} must be an int >= 1, got {v!r}")
    return int(v)


def _ratio(v) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) \
            or not math.isfinite(v) or v < 1:
        raise ValueError(f"farms: ratio must be a number >= 1 (the window's long side over its "
                         f"short side; either orientation is the same windows), got {v!r}")
    return float(v)


def window_starts(length: int, size: int, grid: int) -> tuple:
    """First index of each window of ``size`` along a dimension of ``length`` (module docstring).

    Example:
      >>> window_starts(100, 40, 4)
      (0, 20, 40, 60)
    """
    if grid == 1:
        return (0,)
    step = max(1, (length - size) // (grid - 1))
    count = min(grid, (length - size) // step + 1)
    return tuple(min(i * step, length - size) for i in range(count))


def geometry(shape, farms: Farms = Farms()) -> Geometry:
    """The :class:`Geometry` of the windows of a matrix of ``shape`` (its last two axes).

    Example:
      >>> g = geometry((64, 256), Farms(window=64, grid=4))
      >>> g.height, g.width, g.row_starts, g.col_starts
      (64, 64, (0,), (0, 64, 128, 192))
    """
    a, b = int(shape[-2]), int(shape[-1])
    short, long = min(a, b), max(a, b)
    m = max(1, min(farms.window, short, int(long // farms.ratio)))
    n = int(m * farms.ratio)
    h, w = (m, n) if a <= b else (n, m)
    return Geometry(h, w, window_starts(a, h, farms.grid), window_starts(b, w, farms.grid))


def windows(stack, geo: Geometry):
    """The windows of every matrix of a ``(T, a, b)`` stack (NumPy or JAX), ``(T * count,
    height, width)``: matrix-major, then row start, then column start."""
    rows = np.asarray(geo.row_starts)[:, None] + np.arange(geo.height)
    cols = np.asarray(geo.col_starts)[:, None] + np.arange(geo.width)
    out = stack[:, rows[:, None, :, None], cols[None, :, None, :]]
    return out.reshape((-1, geo.height, geo.width))


def farms_esd(W, *, window: int = 2000, ratio: float = 1.0, grid: int = 15,
              precision: str = "float32") -> jax.Array:
    """The FARMS spectrum of one matrix or a batch: the eigenvalues ``sigma^2`` of its
    fixed-aspect-ratio windows, concatenated (:mod:`jaxww.fit.farms`), descending.

    ``jaxww.fit_power_law(jaxww.farms_esd(W)).alpha`` is the ``alpha_farms`` of
    ``jaxww.analyze(..., farms=True)`` for a dense layer.

    Args:
      W: array of shape ``(..., a, b)``.
      window, ratio, grid: the knobs of :class:`Farms` (defaults: the paper's LLM setting,
        2000-row square windows on a 15 x 15 grid).
      precision: ``"float32"`` or ``"float64"``.

    Returns:
      Array ``(..., count * m)``, each batch entry's eigenvalues descending.

    Example:
      >>> import jax, jaxww
      >>> W = jax.random.normal(jax.random.key(0), (64, 512))
      >>> jaxww.farms_esd(W, window=32, grid=4).shape   # 4 x 4 windows of 32 x 32
      (256,)
    """
    farms = check(Farms(window, ratio, grid))
    W = jnp.asarray(W)
    if W.ndim < 2:
        raise ValueError(f"farms_esd needs a matrix, got shape {W.shape}")
    geo = geometry(W.shape, farms)
    batch = W.shape[:-2]
    stack = windows(W.reshape((-1,) + W.shape[-2:]), geo)
    (ev,) = _spectra.batched_spectra([stack], precision=precision)
    ev = ev.reshape(batch + (-1,))
    return -jnp.sort(-ev, axis=-1)


def need(leaf_size: int, kerns, farms: Farms, itemsize: int) -> int:
    """Bytes of the windows of ``kerns`` and their Gram matrices, at ``itemsize`` bytes a
    value, beside the leaf (``leaf_size`` values) cast once."""
    total = leaf_size * itemsize
    for k in kerns:
        g = geometry((k.N, k.M), farms)
        m = min(g.height, g.width)
        total += k.rf * g.count * (g.height * g.width + m * m) * itemsize
    return total
