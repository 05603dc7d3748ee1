"""jaxww: Heavy-Tailed Self-Regularization (HTSR) analysis of JAX/Flax models.

The pipeline, one module per step::

    params pytree --kernels--> weight matrices --spectra--> eigenvalues
                  --powerlaw--> alpha, xmin, D --metrics--> norms, ranks --report--> Report
"""

from jaxww._tail import FIT_DEGENERATE, FIT_NONFINITE, FIT_OK, FIT_REASONS, FIT_TOO_FEW
from jaxww.bootstrap import PowerLawTest, bootstrap_power_law
from jaxww.compare import Comparison, compare_distributions
from jaxww.describe import Description, describe, get_esd
from jaxww.diff import ModelDiff, diff_models
from jaxww.fingers import FingerFit, fit_fingers
from jaxww.reading.checkpoints import CheckpointError, LazyTensor, load_params, open_checkpoint
from jaxww.reading.kernels import LAYOUTS, Kernel, Reading, Skipped, find_kernels, flatten_params, infer_layout
from jaxww.metrics import SpectralMetrics, spectral_metrics, warning
from jaxww.powerlaw import PowerLawFit, fit_power_law
from jaxww.progress import ProgressEvent
from jaxww.regularizers import (
    LayerPenalties, TailAlpha, TailSpec, alpha, alpha_penalty, spectral_norm_penalty, spectrum,
    tail_alpha, tail_spec, tree_alpha, weighted_alpha_penalty,
)
from jaxww.report import COLUMNS, SUMMARY_METRICS, Report, analyze
from jaxww.smoothing import smooth
from jaxww.spectra import batched_spectra, eigenvalues
from jaxww.tpl import TPLFit, fit_truncated_power_law
from jaxww.transforms import (
    AlphaRegularizationState, AlphaScaleState, add_alpha_decayed_weights, add_alpha_regularization,
    scale_by_alpha,
)

__version__ = "0.1.0"

__all__ = [
    "COLUMNS", "FIT_DEGENERATE", "FIT_NONFINITE", "FIT_OK", "FIT_REASONS", "FIT_TOO_FEW",
    "LAYOUTS", "SUMMARY_METRICS",
    "AlphaRegularizationState", "AlphaScaleState", "CheckpointError", "Comparison", "Description",
    "FingerFit", "Kernel", "LayerPenalties", "LazyTensor", "ModelDiff", "PowerLawFit", "PowerLawTest", "ProgressEvent", "Reading", "Report",
    "Skipped", "SpectralMetrics", "TPLFit", "TailAlpha", "TailSpec",
    "add_alpha_decayed_weights", "add_alpha_regularization", "alpha", "alpha_penalty", "analyze",
    "batched_spectra", "bootstrap_power_law", "compare_distributions", "describe", "diff_models", "eigenvalues",
    "find_kernels", "fit_fingers", "fit_power_law", "fit_truncated_power_law", "flatten_params",
    "get_esd", "infer_layout", "load_params", "open_checkpoint", "scale_by_alpha", "smooth", "spectral_metrics",
    "spectral_norm_penalty", "spectrum", "tail_alpha", "tail_spec", "tree_alpha", "warning",
    "weighted_alpha_penalty",
]
