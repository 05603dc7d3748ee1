"""The public names of jaxww, each re-exported from the module that defines it.

The one list of them: type checkers and IDEs read this stub, and ``jaxww/__init__.py``
reads it to import each name on first use (so ``import jaxww`` loads neither JAX nor
NumPy and the command line starts at once)."""

from jaxww.analysis.analyze import analyze as analyze
from jaxww.analysis.describe import Description as Description
from jaxww.analysis.describe import describe as describe
from jaxww.analysis.describe import get_esd as get_esd
from jaxww.analysis.diff import ModelDiff as ModelDiff
from jaxww.analysis.diff import diff_models as diff_models
from jaxww.analysis.distances import Distances as Distances
from jaxww.analysis.distances import distances as distances
from jaxww.analysis.progress import ProgressEvent as ProgressEvent
from jaxww.analysis.smoothing import smooth as smooth
from jaxww.fit.bootstrap import PowerLawTest as PowerLawTest
from jaxww.fit.bootstrap import bootstrap_power_law as bootstrap_power_law
from jaxww.fit.distributions import Comparison as Comparison
from jaxww.fit.distributions import compare_distributions as compare_distributions
from jaxww.fit.farms import Farms as Farms
from jaxww.fit.farms import farms_esd as farms_esd
from jaxww.fit.fingers import FingerFit as FingerFit
from jaxww.fit.fingers import fit_fingers as fit_fingers
from jaxww.fit.metrics import SpectralMetrics as SpectralMetrics
from jaxww.fit.metrics import spectral_metrics as spectral_metrics
from jaxww.fit.metrics import warning as warning
from jaxww.fit.powerlaw import fit_power_law as fit_power_law
from jaxww.fit.scan import PowerLawFit as PowerLawFit
from jaxww.fit.tail import FIT_DEGENERATE as FIT_DEGENERATE
from jaxww.fit.tail import FIT_NONFINITE as FIT_NONFINITE
from jaxww.fit.tail import FIT_OK as FIT_OK
from jaxww.fit.tail import FIT_REASONS as FIT_REASONS
from jaxww.fit.tail import FIT_TOO_FEW as FIT_TOO_FEW
from jaxww.fit.tail import TailAlpha as TailAlpha
from jaxww.fit.tail import TailSpec as TailSpec
from jaxww.fit.tail import tail_spec as tail_spec
from jaxww.fit.tpl import TPLFit as TPLFit
from jaxww.fit.tpl import fit_truncated_power_law as fit_truncated_power_law
from jaxww.linalg.spectra import batched_spectra as batched_spectra
from jaxww.linalg.spectra import eigenvalues as eigenvalues
from jaxww.reading.checkpoints import load_params as load_params
from jaxww.reading.checkpoints import open_checkpoint as open_checkpoint
from jaxww.reading.kernels import Kernel as Kernel
from jaxww.reading.kernels import Skipped as Skipped
from jaxww.reading.kernels import find_kernels as find_kernels
from jaxww.reading.layouts import LAYOUTS as LAYOUTS
from jaxww.reading.layouts import Reading as Reading
from jaxww.reading.name_rules import infer_layout as infer_layout
from jaxww.reading.params import flatten_params as flatten_params
from jaxww.reading.params import model_layouts as model_layouts
from jaxww.reading.tensors import CheckpointError as CheckpointError
from jaxww.reading.tensors import LazyTensor as LazyTensor
from jaxww.report.columns import COLUMNS as COLUMNS
from jaxww.report.columns import SUMMARY_METRICS as SUMMARY_METRICS
from jaxww.report.report import Report as Report
from jaxww.training.estimates import alpha as alpha
from jaxww.training.estimates import spectrum as spectrum
from jaxww.training.estimates import tail_alpha as tail_alpha
from jaxww.training.estimates import tree_alpha as tree_alpha
from jaxww.training.history import History as History
from jaxww.training.history import from_checkpoints as from_checkpoints
from jaxww.training.history import plot_history as plot_history
from jaxww.training.penalties import LayerPenalties as LayerPenalties
from jaxww.training.penalties import alpha_penalty as alpha_penalty
from jaxww.training.penalties import spectral_norm_penalty as spectral_norm_penalty
from jaxww.training.penalties import weighted_alpha_penalty as weighted_alpha_penalty
from jaxww.training.pruning import layerwise_sparsity as layerwise_sparsity
from jaxww.training.pruning import prune_by_magnitude as prune_by_magnitude
from jaxww.training.regularization import AlphaRegularizationState as AlphaRegularizationState
from jaxww.training.regularization import add_alpha_regularization as add_alpha_regularization
from jaxww.training.scaling import AlphaScaleState as AlphaScaleState
from jaxww.training.scaling import add_alpha_decayed_weights as add_alpha_decayed_weights
from jaxww.training.scaling import scale_by_alpha as scale_by_alpha
from jaxww.training.tracking import Tracker as Tracker
from jaxww.training.tracking import TrackingError as TrackingError

from jaxww import analysis as analysis, fit as fit, linalg as linalg, reading as reading
from jaxww import report as report, training as training

__version__: str
