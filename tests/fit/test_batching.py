"""Leading batch axes: ``map_spectra`` and every public fit that runs through it."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxww
from jaxww.fit.batching import as_spectra, map_spectra


def test_map_spectra_gives_every_leaf_the_leading_shape_back():
    x = jnp.arange(2 * 3 * 5, dtype=jnp.float32).reshape(2, 3, 5)
    out = map_spectra(lambda flat, c: {"sum": flat.sum(-1) + c, "top2": flat[:, -2:]}, x, 1.0)
    assert out["sum"].shape == (2, 3) and out["top2"].shape == (2, 3, 2)
    np.testing.assert_array_equal(out["sum"], x.sum(-1) + 1.0)
    np.testing.assert_array_equal(out["top2"], x[..., -2:])
    assert map_spectra(lambda flat: flat.sum(-1), x[0, 0]).shape == ()   # one spectrum: a scalar


def test_as_spectra_refuses_no_eigenvalue_and_makes_ints_float():
    with pytest.raises(ValueError, match="my_fit needs at least one eigenvalue"):
        as_spectra(np.zeros((3, 0)), "my_fit")
    with pytest.raises(ValueError, match="my_fit"):
        as_spectra(1.0, "my_fit")
    assert as_spectra(np.arange(1, 4), "my_fit").dtype == jnp.float32


@pytest.fixture(scope="module")
def spectra():
    """Six Pareto spectra (alpha 2.5 to 5) of 64 values, as a (2, 3, 64) batch."""
    rng = np.random.default_rng(7)
    a = np.linspace(1.5, 4.0, 6)[:, None]
    return ((1.0 - rng.random((6, 64))) ** (-1.0 / a)).reshape(2, 3, 64).astype(np.float32)


@pytest.mark.slow   # compiles each fit for four shapes
@pytest.mark.parametrize("fit", [
    jaxww.fit_power_law,
    lambda x: jaxww.bootstrap_power_law(x, bootstrap=8, key=jax.random.key(0)),
    lambda x: jaxww.fit_fingers(x, "clip_xmax"),
    lambda x: jaxww.fit_fingers(x, "xmin_peak"),
    lambda x: jaxww.fit_truncated_power_law(x, xmin=np.full(x.shape[:-1], 1.5, np.float32)),
    jaxww.compare_distributions,
], ids=["power_law", "bootstrap", "clip_xmax", "xmin_peak", "tpl_xmin", "compare"])
def test_leading_axes_are_the_flat_batch_reshaped(spectra, fit):
    """A (2, 3) batch is the flat (6,) batch, spectrum by spectrum in C order, and one
    spectrum is the (1,) batch: the same program on the same rows, so the same bits."""
    batch, flat = fit(spectra), fit(spectra.reshape(6, -1))
    one, first = fit(spectra[0, 0]), fit(spectra[:1, 0])
    for b, f, o, f1 in zip(*(jax.tree.leaves(t) for t in (batch, flat, one, first))):
        assert b.shape == (2, 3) and f.shape == (6,) and o.shape == () and f1.shape == (1,)
        np.testing.assert_array_equal(np.asarray(b).reshape(6), f)
        np.testing.assert_array_equal(o, f1[0])
