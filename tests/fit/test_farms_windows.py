"""FARMS windows (:mod:`jaxww.fit.farms`): the geometry and the concatenated eigenvalues
against a NumPy transcription of the authors' ``fixed_sampling``, and the knobs' checks."""

from __future__ import annotations

import numpy as np
import pytest

import jaxww
from jaxww.fit import farms


def _reference(W: np.ndarray, window: int, ratio: float, grid: int) -> np.ndarray:
    """The authors' ``fixed_sampling`` (github.com/HUST-AI-HYZ/FARMS,
    ``LLM_Pruning/lib/sampling.py``) in NumPy and float64, with the long side of the window
    along the long dimension (the same thing for ``ratio = 1``); descending."""
    flip = W.shape[0] > W.shape[1]
    A = W.T if flip else W                       # rows: the short dimension
    rows, cols = A.shape
    m = min(window, rows, int(cols // ratio))
    n = int(m * ratio)
    eigs = []
    row_step = max(1, (rows - m) // (grid - 1)) if grid > 1 else 1
    col_step = max(1, (cols - n) // (grid - 1)) if grid > 1 else 1
    n_row = min(grid, max(1, (rows - m) // row_step + 1))
    n_col = min(grid, max(1, (cols - n) // col_step + 1))
    for i in range(n_row):
        for j in range(n_col):
            r0, c0 = min(i * row_step, rows - m), min(j * col_step, cols - n)
            sub = A[r0:r0 + m, c0:c0 + n].astype(np.float64)
            eigs.append(np.linalg.svd(sub, compute_uv=False) ** 2)
    return np.sort(np.concatenate(eigs))[::-1]


@pytest.mark.parametrize("shape, window, ratio, grid", [
    ((48, 200), 32, 1.0, 4),     # windows along both axes
    ((200, 48), 32, 1.0, 4),     # the other orientation
    ((40, 40), 64, 1.0, 15),     # window larger than the matrix: the matrix itself
    ((30, 90), 16, 2.0, 3),      # 16 x 32 windows
    ((90, 30), 16, 2.0, 3),      # their transpose
    ((20, 30), 16, 2.0, 5),      # the window shrinks to 15 x 30 to fit
    ((24, 100), 24, 1.0, 1),     # one window
    ((24, 30), 8, 1.0, 40),      # fewer positions than the grid
])
def test_geometry_matches_the_authors_rule(shape, window, ratio, grid):
    """The windows' eigenvalues, in float64 NumPy (nothing compiled), are the reference's."""
    W = np.random.default_rng(sum(shape)).standard_normal(shape)
    geo = farms.geometry(shape, farms.Farms(window, ratio, grid))
    got = np.linalg.svd(farms.windows(W[None], geo), compute_uv=False) ** 2
    want = _reference(W, window, ratio, grid)
    np.testing.assert_allclose(np.sort(got.ravel())[::-1], want, rtol=1e-10)
    assert geo.num_evals == want.size


def test_farms_esd_matches_the_reference():
    """:func:`jaxww.farms_esd` (float32, batched spectra) on one matrix and a batch."""
    W = np.random.default_rng(0).standard_normal((3, 48, 200)).astype(np.float32)
    batch = np.asarray(jaxww.farms_esd(W, window=32, grid=4))
    want = _reference(W[1], 32, 1.0, 4)
    # float32 Gram + eigensolver: error a few eps of the largest eigenvalue
    np.testing.assert_allclose(batch[1], want, rtol=0, atol=2e-5 * want[0])
    np.testing.assert_array_equal(np.asarray(jaxww.farms_esd(W[1], window=32, grid=4)), batch[1])


def test_windows_are_the_submatrices():
    W = np.arange(12 * 20, dtype=np.float32).reshape(1, 12, 20)
    geo = farms.geometry(W.shape, farms.Farms(window=5, ratio=2.0, grid=3))
    assert (geo.height, geo.width, geo.row_starts, geo.col_starts) == (5, 10, (0, 3, 6), (0, 5, 10))
    got = farms.windows(W, geo)
    want = [W[0, r:r + 5, c:c + 10] for r in geo.row_starts for c in geo.col_starts]
    np.testing.assert_array_equal(got, np.stack(want))


def test_paper_setting_on_llm_shapes():
    """The default windows on LLaMA-7B's MLP shape: 2000 x 2000 on 15 x 15 positions."""
    g = farms.geometry((4096, 11008))
    assert (g.height, g.width, g.count, g.num_evals) == (2000, 2000, 225, 450000)
    assert g.row_starts[:3] == (0, 149, 298) and g.row_starts[-1] == 2086
    assert g.col_starts[1] == 643 and g.col_starts[-1] == 9002


@pytest.mark.parametrize("arg, match", [
    ({"window": 0}, "window must be an int >= 1"),
    ({"grid": 2.5}, "grid must be an int >= 1"),
    ({"ratio": 0.5}, "ratio must be a number >= 1"),
    ({"ratio": float("nan")}, "ratio must be a number >= 1"),
    ({"rows": 3}, "unknown knob"),
])
def test_bad_knobs_are_named(arg, match):
    with pytest.raises(ValueError, match=match):
        farms.check(arg)


def test_check_accepts_the_forms():
    assert farms.check(False) is None and farms.check(None) is None
    assert farms.check(True) == farms.Farms(2000, 1.0, 15)
    assert farms.check(jaxww.Farms(window=64)) == farms.Farms(64, 1.0, 15)
    with pytest.raises(TypeError, match="farms must be"):
        farms.check("yes")
