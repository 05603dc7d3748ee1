"""jaxww: Heavy-Tailed Self-Regularization (HTSR) analysis of JAX/Flax models.

The pipeline, one module per step::

    params pytree --kernels--> weight matrices --spectra--> eigenvalues
                  --powerlaw--> alpha, xmin, D --metrics--> norms, ranks --report--> Report
"""

from jaxww._tail import (
    FIT_DEGENERATE, FIT_NONFINITE, FIT_OK, FIT_REASONS, FIT_TOO_FEW,
)
from jaxww.io import load_params
from jaxww.kernels import LAYOUTS, Kernel, Skipped, find_kernels, flatten_params, infer_layout
from jaxww.metrics import SpectralMetrics, spectral_metrics, warning
from jaxww.powerlaw import PowerLawFit, fit_power_law
from jaxww.regularizers import (
    LayerPenalties, TailAlpha, TailSpec, alpha, alpha_penalty, spectral_norm_penalty, spectrum,
    tail_alpha, tail_spec, tree_alpha, weighted_alpha_penalty,
)
from jaxww.report import COLUMNS, SUMMARY_METRICS, Report, analyze
from jaxww.spectra import batched_spectra, eigenvalues
from jaxww.transforms import (
    AlphaRegularizationState, AlphaScaleState, add_alpha_decayed_weights, add_alpha_regularization,
    scale_by_alpha,
)

__version__ = "0.1.0"

__all__ = [
    "COLUMNS", "FIT_DEGENERATE", "FIT_NONFINITE", "FIT_OK", "FIT_REASONS", "FIT_TOO_FEW",
    "LAYOUTS", "SUMMARY_METRICS",
    "AlphaRegularizationState", "AlphaScaleState", "Kernel", "LayerPenalties", "PowerLawFit",
    "Report", "Skipped", "SpectralMetrics", "TailAlpha", "TailSpec",
    "add_alpha_decayed_weights", "add_alpha_regularization", "alpha", "alpha_penalty", "analyze",
    "batched_spectra", "eigenvalues", "find_kernels", "fit_power_law", "flatten_params",
    "infer_layout", "load_params", "scale_by_alpha", "spectral_norm_penalty", "spectral_metrics",
    "spectrum", "tail_alpha", "tail_spec", "tree_alpha", "warning", "weighted_alpha_penalty",
]
