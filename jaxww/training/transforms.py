"""optax gradient transformations driven by the power-law exponent ``alpha`` of each layer
(the regulariser in :mod:`jaxww.training.regularization`, the scalings in
:mod:`jaxww.training.scaling`, what they share in :mod:`jaxww.training.refresh` and
:mod:`jaxww.training.misuse`).

Three small pieces, each an ``optax.GradientTransformation`` with a ``NamedTuple``
state, a ``mask`` like optax's (through :func:`optax.masked`) and composable with
``optax.chain``:

* :func:`add_alpha_regularization` adds ``strength * grad P`` to the updates, with
  ``P = mean_l d(alpha_l, target)`` (as :func:`optax.add_decayed_weights` adds
  ``weight_decay * params``);
* :func:`scale_by_alpha` scales each layer's updates by an affine function of its
  alpha (TempBalance's per-layer learning rates);
* :func:`add_alpha_decayed_weights` adds weight decay whose strength per layer is an
  affine function of its alpha (AlphaDecay).

All three take exact spectra every ``every`` steps, with LAPACK on the host
(:mod:`jaxww.linalg.factored`): eigenvalues only, plus for the regulariser the
eigenvectors of the tail. ``docs/training.md`` has the measured cost.

All three work under :func:`optax.inject_hyperparams`: their numeric
hyperparameters (strengths, ``target``, the scales, ``temperature``, ``thresh``) may
be arrays, traced ones included (checked only when concrete), so that they can be
scheduled or changed through ``state.hyperparams``; the structural ones are static
and go in ``static_args``: ``every`` always (optax injects every number, defaults
included), ``tail``, ``min_evals`` and ``scan_axis`` when they are numbers, ``mask`` and
``layouts`` when they are callables (optax takes any callable for a schedule). A traced
``every``, ``tail``, ``min_evals`` or ``scan_axis`` raises a ``TypeError`` that says so.

Layers stored as integers (quantised codes with their scale, read dequantised as
:func:`jaxww.analyze` reads them) are measured but never updated: their updates pass
through unchanged, and ``init`` names them in one ``UserWarning``. Integer weights are
quantised codes, not trained by gradient.

``update`` raises a ``ValueError`` naming the first difference when its params are not
those ``init`` saw (another layer; for the regulariser, another shape) or its updates have
another structure; and when the first update (``count == 0``) got the params and the
updates swapped: every weight-matrix leaf of ``updates`` has the norm ``init`` recorded
(``state.sq_norms``, to 1%) and some leaf of ``params`` has not. That is a fact of
values, checked at the refresh: it is raised from the host and surfaces as a
``JaxRuntimeError`` ending with the ``ValueError`` (jax 0.10.2; under ``jit`` or not), from
the call or from the first use of its results. Params replaced after ``init`` (loaded weights) match neither
side, and a state restored at ``count > 0`` is not checked: no error. The swap is checked
on CPU devices only: on a GPU or TPU the host call would take the refresh off the device.

References:
  Y. Zhou, T. Pang, K. Liu, C. H. Martin, M. W. Mahoney, Y. Yang, "Temperature
  balancing, layer-wise weight analysis, and neural network training" (TempBalance),
  NeurIPS 2023.
  D. He et al., "AlphaDecay: Module-wise weight decay for heavy-tailed balancing in
  LLMs", NeurIPS 2025.
"""

from jaxww.training.regularization import AlphaRegularizationState, add_alpha_regularization
from jaxww.training.scaling import AlphaScaleState, add_alpha_decayed_weights, alpha_scales, scale_by_alpha

__all__ = ["AlphaRegularizationState", "AlphaScaleState", "add_alpha_decayed_weights", "add_alpha_regularization",
           "alpha_scales", "scale_by_alpha"]
