"""Differentiable alpha of spectra, matrices and params trees (the loss terms built on it:
:mod:`jaxww.training.penalties`).

:func:`jaxww.analyze` reports the power-law exponent ``alpha`` of every layer from
the outside, without gradients. This module makes the same number a differentiable
function of the weights, so that it can enter a loss under ``jax.grad``:

.. math::

    \\lambda_i = \\sigma_i(W)^2, \\qquad
    \\alpha = 1 + \\frac{n_t}{\\sum_{j \\in \\text{tail}} \\ln(\\lambda_j / \\lambda_{\\min})}

where the tail is the ``n_t`` largest eigenvalues above ``1e-5`` and
``lambda_min`` (``xmin``) the smallest of them. How the tail is chosen (``tail=``):

============== ============================================================= ==========
``tail``       tail                                                          gradient
============== ============================================================= ==========
``"ks"``       the exact Clauset-Shalizi-Newman choice (smallest KS distance  index held
               ``D``), as :func:`jaxww.fit_power_law`                         fixed
``"fraction"`` or a float ``f``: the top ``ceil(f * n)`` values (``"fraction"`` index held
               is ``f = 0.5``, the top half, as TempBalance, AlphaPruning and  fixed
               Xiao et al. use)
an ``int k``   the top ``k`` values                                          index held
                                                                              fixed
``"soft"``     every candidate ``xmin`` weighted by ``softmax(-D_i / T)``:    through
               ``alpha = sum_i w_i alpha_i``                                 the choice
============== ============================================================= ==========

``"ks"`` and ``"soft"`` use the small-sample estimator of the fit for fewer than 20
eigenvalues (``1 + (n_t - 1) / sum ln``); ``"fraction"`` and counts use the plain
maximum-likelihood estimator ``1 + n_t / sum ln`` of the papers that use them.

Eigenvalues and their gradient. ``W^T W = V diag(lambda) V^T`` is diagonalised
(:func:`jaxww.linalg.host.eigh`: LAPACK on the host on CPU devices, ``jnp.linalg.eigh``
elsewhere; for weights sharded over a mesh see :mod:`jaxww.linalg.sharded`) and the eigenvalues are re-evaluated as Rayleigh quotients
``lambda_i = ||W v_i||^2`` with ``v_i`` held fixed (``stop_gradient``). This is the
exact eigenvalue derivative ``d lambda_i / d W = 2 W v_i v_i^T`` (Hellmann-Feynman)
without the ``1 / (lambda_i - lambda_j)`` terms of the ``eigh`` JVP, so repeated
eigenvalues (zero, orthogonal or rank-deficient matrices) give finite gradients.

Failures never produce NaN gradients: an estimate that cannot be made (fewer than two
eigenvalues above ``1e-5``, a flat tail, weights with NaN or Inf) has ``alpha = NaN``
and a ``status`` (:data:`jaxww.FIT_REASONS`), a zero gradient, and is dropped from the
penalties (and flagged in their ``has_aux`` output).

References:
  A. Clauset, C. R. Shalizi, M. E. J. Newman, "Power-law distributions in empirical
  data", SIAM Review 51 (2009).
  C. H. Martin, M. W. Mahoney, "Implicit self-regularization in deep neural
  networks", JMLR 22 (2021).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxww import checks
from jaxww.defaults import MIN_EVALS
from jaxww.fit import estimators as _estimators
from jaxww.fit.batching import as_spectra, map_spectra
from jaxww.fit.tail import DEFAULT_TEMPERATURE, EVALS_THRESH, Tail, TailAlpha, TailSpec, estimate
from jaxww.linalg import sharded as _mesh
from jaxww.linalg.batching import as_float, oriented
from jaxww.linalg.spectra import numerical_floor
from jaxww.reading.kernels import LayoutOverride
from jaxww.training.plan import Mask, make_plan
from jaxww.typing import ScanAxis


def tail_alpha(evals, tail: Tail | TailSpec = "ks", *, temperature: float = DEFAULT_TEMPERATURE,
               thresh: float = EVALS_THRESH, estimator: str | None = None) -> TailAlpha:
    """Differentiable tail exponent of eigenvalue spectra.

    .. math::

        \\alpha = 1 + \\frac{n_t - c}{\\sum_{j \\in \\text{tail}} \\ln(\\lambda_j / x_{\\min})}

    with ``c = 1`` for the small-sample ``"ks"``/``"soft"`` estimator (fewer than 20
    values), else ``c = 0``. With ``tail="soft"``,
    ``alpha = sum_i softmax(-D / T)_i alpha_i`` over the KS candidates.

    Args:
      evals: eigenvalues, shape ``(..., n)``, any order; values ``<= thresh`` and zero
        padding are ignored. Leading axes are a batch.
      tail: ``"ks"``, ``"soft"``, ``"fraction"``, a float share or an int count (see
        the module docstring).
      temperature: temperature ``T`` of the ``"soft"`` tail.
      thresh: eigenvalues at or below this are dropped.
      estimator: instead of ``tail``, a paper's estimator (:mod:`jaxww.fit.estimators`):
        ``"csn"`` (the ``"ks"`` tail), ``"hill_median"`` (TempBalance), ``"alpha_mid"`` or
        ``"alpha_peak"`` (AlphaPruning); None: ``tail`` decides.

    Returns:
      A :class:`TailAlpha` with fields of shape ``evals.shape[:-1]``.

    Example:
      >>> import numpy as np, jaxww
      >>> x = (1 - np.random.default_rng(0).random(2000)) ** (-1 / 2.5)  # Pareto, alpha=3.5
      >>> round(float(jaxww.tail_alpha(x).alpha), 1)
      3.5
    """
    spec = _estimators.tail_choice(tail, temperature, estimator, "ks")
    return map_spectra(_tail_rows_jit, as_spectra(evals, "tail_alpha"), spec, checks.number(thresh, "thresh"))


def tail_rows(flat, spec: TailSpec, thresh) -> TailAlpha:
    """The tail estimate (a :class:`TailAlpha` of ``(B,)`` fields) of each row of a ``(B, n)``
    batch of spectra; traceable (``thresh`` and ``spec.temperature`` may be traced). A
    paper's estimator (``spec.kind`` in :data:`jaxww.fit.estimators.PAPERS`) is
    :func:`jaxww.fit.estimators.estimate_rows`."""
    if spec.kind in _estimators.PAPERS:
        return _estimators.estimate_rows(flat, spec.kind, thresh)
    return jax.vmap(lambda e: estimate(e, spec, thresh))(flat)


_tail_rows_jit = jax.jit(tail_rows, static_argnames=("spec", "thresh"))


# --------------------------------------------------------------------- eigenvalues
def gram_eigvals(W):
    """``(lambda, finite)`` of a batch ``(..., N, M)``, ``N >= M``; lambda ascending.

    ``lambda_i = ||W v_i||^2`` with the eigenvectors ``v_i`` of ``W^T W`` held fixed
    (:func:`jaxww.linalg.sharded.rayleigh`): the value is the eigenvalue, the gradient the exact
    eigenvalue gradient. A matrix with NaN/Inf is replaced by zeros (``finite`` False)
    so nothing non-finite reaches LAPACK or the gradient. Values below the numerical
    floor ``max(lambda) * N * eps`` are 0, as in :func:`jaxww.eigenvalues`. Weights
    sharded over a mesh stay where they are (:mod:`jaxww.linalg.sharded`).
    """
    finite = jnp.isfinite(W).all(axis=(-2, -1))
    lam = _mesh.rayleigh(jnp.where(finite[..., None, None], W, jnp.zeros((), W.dtype)))
    return numerical_floor(lam, W.shape[-2]), finite


def spectrum(W) -> jax.Array:
    """Differentiable eigenvalues ``sigma_i(W)**2`` of a matrix or a batch, descending.

    The differentiable counterpart of :func:`jaxww.eigenvalues` (same values up to
    rounding, same numerical floor):

    .. math:: \\lambda_i = \\lVert W v_i \\rVert^2, \\quad
              \\frac{\\partial \\lambda_i}{\\partial W} = 2 W v_i v_i^T

    with ``v_i`` the eigenvectors of ``W^T W`` held fixed, so there are no
    ``1/(lambda_i - lambda_j)`` terms and repeated eigenvalues give finite gradients.
    A matrix with NaN or Inf gives NaN eigenvalues and a zero gradient.

    Args:
      W: array of shape ``(..., a, b)``; either orientation gives the same spectrum.

    Returns:
      Array of shape ``(..., min(a, b))``, descending.

    Example:
      >>> import jax.numpy as jnp, jaxww
      >>> jaxww.spectrum(jnp.diag(jnp.array([3.0, 2.0, 1.0])))
      Array([9., 4., 1.], dtype=float32)
    """
    W = as_float(W)
    if W.ndim < 2:
        raise ValueError(f"spectrum needs a matrix, got shape {W.shape}")
    return _spectrum_jit(W)


@jax.jit
def _spectrum_jit(W):
    lam, finite = gram_eigvals(oriented(W))
    lam = jnp.sort(lam, axis=-1)[..., ::-1]
    return jnp.where(finite[..., None], lam, jnp.nan)


def alpha(W, tail: Tail | TailSpec = "ks", *, temperature: float = DEFAULT_TEMPERATURE,
          thresh: float = EVALS_THRESH, estimator: str | None = None) -> jax.Array:
    """Differentiable power-law exponent of the spectrum of ``W`` (one per matrix).

    ``tail_alpha(spectrum(W), tail).alpha``: with ``tail="ks"`` the value is the
    ``alpha`` of :func:`jaxww.fit_power_law` on the same eigenvalues, and the gradient
    is taken with the tail index held fixed.

    Args:
      W: a matrix ``(a, b)`` or a batch ``(..., a, b)`` (one alpha per matrix).
      tail: ``"ks"``, ``"soft"``, ``"fraction"``, a float share or an int count.
      temperature: temperature of the ``"soft"`` tail.
      thresh: eigenvalues at or below this are dropped.
      estimator: instead of ``tail``, a paper's estimator (:mod:`jaxww.fit.estimators`):
        ``"csn"`` (the ``"ks"`` tail), ``"hill_median"`` (TempBalance), ``"alpha_mid"`` or
        ``"alpha_peak"`` (AlphaPruning); None: ``tail`` decides.

    Returns:
      Array of shape ``W.shape[:-2]``; NaN (with a zero gradient) where no tail can
      be fitted: see :func:`tail_alpha` for the status.

    Example:
      >>> import jax, jaxww
      >>> W = jax.random.normal(jax.random.key(0), (64, 32))
      >>> g = jax.grad(lambda w: jaxww.alpha(w, tail="fraction"))(W)
      >>> bool(jax.numpy.isfinite(g).all())
      True
    """
    spec = _estimators.tail_choice(tail, temperature, estimator, "ks")
    W = as_float(W)
    if W.ndim < 2:
        raise ValueError(f"alpha needs a matrix, got shape {W.shape}")
    return _alpha_jit(W, spec, checks.number(thresh, "thresh"))


@functools.partial(jax.jit, static_argnames=("spec", "thresh"))
def _alpha_jit(W, spec, thresh):
    lam, finite = gram_eigvals(oriented(W))
    lam = jnp.where(finite[..., None], lam, jnp.nan)
    return map_spectra(tail_rows, lam, spec, thresh).alpha


# ----------------------------------------------------------------------- pytrees
@functools.partial(jax.jit, static_argnames=("spec", "thresh", "scale"))
def _group_estimates(mats, spec, thresh, scale):
    """TailAlpha and largest pooled eigenvalue of a ``(G, rf, N, M)`` group (NaN: non-finite)."""
    lam, finite = gram_eigvals(mats)
    pooled = lam.reshape(lam.shape[0], -1) * scale
    fin = finite.all(axis=-1)
    pooled = jnp.where(fin[:, None], pooled, jnp.nan)
    est = tail_rows(pooled, spec, thresh)
    top = jnp.where(fin, jnp.max(jnp.where(fin[:, None], pooled, 0.0), axis=-1), jnp.nan)
    return est, top


def tree_estimates(params, spec, mask, layouts, thresh, min_evals, where, scan_axis=None):
    """``(plan, TailAlpha, largest pooled eigenvalue)`` of the layers of ``params`` (per kernel,
    in kernel order: :func:`plan_estimates`)."""
    plan = make_plan(params, mask, layouts, min_evals=min_evals, scan_axis=scan_axis, where=where)
    return (plan,) + plan_estimates(plan, plan.stacks(), spec, thresh)


def plan_estimates(plan, stacks, spec, thresh):
    """``(TailAlpha, largest pooled eigenvalue)`` per kernel (kernel order) of the plan's
    group ``stacks`` (:meth:`jaxww.training.plan.Plan.stacks`); differentiable in ``stacks``."""
    out = [_group_estimates(W, spec, thresh, g.scale) for g, W in zip(plan.groups, stacks)]
    est = jax.tree.map(lambda *a: plan.scatter(a), *[e for e, _ in out])
    return est, plan.scatter([t for _, t in out])


def tree_alpha(params, tail: Tail | TailSpec = "ks", *, temperature: float = DEFAULT_TEMPERATURE,
               mask: Mask = None, layouts: LayoutOverride = None, thresh: float = EVALS_THRESH,
               min_evals: int = MIN_EVALS, scan_axis: ScanAxis = None, estimator: str | None = None) -> dict:
    """Differentiable alpha of every eligible weight matrix of a params pytree.

    Layers are found and read as by :func:`jaxww.analyze` (the same reading, the same
    rows with its default ``min_evals``; a live ``nnx.Module`` read from its modules'
    configuration, a tree by its names); same-shape matrices are batched into one
    ``eigh`` call.

    Args:
      params: a params pytree, an ``nnx.State`` or an ``nnx.Module``.
      tail, temperature, thresh: as in :func:`alpha`.
      mask: optax-style mask (a tree of bools, a prefix of the params tree, or a
        callable returning one): only leaves marked True are considered.
      layouts: layout overrides, as in :func:`jaxww.analyze`.
      min_evals: layers with fewer eigenvalues are left out (:func:`jaxww.analyze`'s
        default; its verdicts need :data:`jaxww.defaults.MIN_VERDICT_EVALS`).
      scan_axis: the layer axis of scanned stacks, as in :func:`jaxww.analyze`.
      estimator: as in :func:`alpha`; ``tree_alpha(params, estimator=e)`` is the ``alpha``
        of ``analyze(params, estimator=e)`` row by row.

    Returns:
      ``{layer name: alpha}`` with the names of :func:`jaxww.analyze`'s rows
      (NaN where the fit failed).

    Raises:
      ValueError: no eligible weight matrix.

    Example:
      >>> import jax, jaxww
      >>> params = {"dense": {"kernel": jax.random.normal(jax.random.key(0), (128, 64))}}
      >>> list(jaxww.tree_alpha(params))
      ['dense/kernel']
    """
    spec = _estimators.tail_choice(tail, temperature, estimator, "ks")
    plan, est, _ = tree_estimates(params, spec, mask, layouts, checks.number(thresh, "thresh"), min_evals,
                                  "tree_alpha", scan_axis)
    return {k.name: est.alpha[i] for i, k in enumerate(plan.kernels)}
