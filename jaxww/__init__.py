"""jaxww: Heavy-Tailed Self-Regularization (HTSR) analysis of JAX/Flax models.

The pipeline, one stage per module or package::

    params, model or checkpoint --reading--> weight matrices --streaming/spectra--> eigenvalues
        --powerlaw--> alpha, xmin, D --metrics--> norms, ranks --report--> Report

Names are imported on first use (``import jaxww`` loads neither JAX nor NumPy), so the
command line starts at once.
"""

import importlib

__version__ = "0.1.0"

#: Where each public name lives.
_EXPORTS = {
    "jaxww.fit.tail": ('FIT_DEGENERATE', 'FIT_NONFINITE', 'FIT_OK', 'FIT_REASONS', 'FIT_TOO_FEW'),
    "jaxww.fit.bootstrap": ('PowerLawTest', 'bootstrap_power_law'),
    "jaxww.fit.distributions": ('Comparison', 'compare_distributions'),
    "jaxww.analysis.describe": ('Description', 'describe', 'get_esd'),
    "jaxww.analysis.diff": ('ModelDiff', 'diff_models'),
    "jaxww.fit.fingers": ('FingerFit', 'fit_fingers'),
    "jaxww.reading.checkpoints": ('load_params', 'open_checkpoint'),
    "jaxww.reading.tensors": ('CheckpointError', 'LazyTensor'),
    "jaxww.reading.kernels": ('Kernel', 'Skipped', 'find_kernels'),
    "jaxww.reading.layouts": ('LAYOUTS', 'Reading'),
    "jaxww.reading.name_rules": ('infer_layout',),
    "jaxww.reading.params": ('flatten_params', 'model_layouts'),
    "jaxww.fit.metrics": ('SpectralMetrics', 'spectral_metrics', 'warning'),
    "jaxww.fit.scan": ('PowerLawFit',),
    "jaxww.fit.powerlaw": ('fit_power_law',),
    "jaxww.analysis.progress": ('ProgressEvent',),
    "jaxww.training.penalties": ('LayerPenalties', 'TailAlpha', 'TailSpec', 'alpha', 'alpha_penalty', 'spectral_norm_penalty', 'spectrum', 'tail_alpha', 'tail_spec', 'tree_alpha', 'weighted_alpha_penalty'),
    "jaxww.analysis.analyze": ('analyze',),
    "jaxww.report.columns": ('COLUMNS', 'SUMMARY_METRICS'),
    "jaxww.report.report": ('Report',),
    "jaxww.analysis.smoothing": ('smooth',),
    "jaxww.linalg.spectra": ('batched_spectra', 'eigenvalues'),
    "jaxww.training.tracking": ('History', 'Tracker', 'TrackingError', 'from_checkpoints', 'plot_history'),
    "jaxww.fit.tpl": ('TPLFit', 'fit_truncated_power_law'),
    "jaxww.training.transforms": ('AlphaRegularizationState', 'AlphaScaleState', 'add_alpha_decayed_weights', 'add_alpha_regularization', 'scale_by_alpha'),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


#: The stage folders, public subpackages (``jaxww.fit.tail``, ...); no other module is an
#: attribute of the package.
_SUBPACKAGES = ("analysis", "fit", "linalg", "reading", "report", "training")


def __getattr__(name: str):
    """A public name (imported from its module on first use) or a stage subpackage."""
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    if name in _SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'jaxww' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_WHERE))
