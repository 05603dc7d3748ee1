"""Every column list of jaxww's tables, in one place: the report's rows and summary, the
layer table of ``describe``, and the columns each display shows (the notebook's HTML,
the command line's table, the diff's table).

The optional analyses add their own columns after :data:`COLUMNS`
(:mod:`jaxww.analysis.optional`).
"""

#: Columns of ``Report.details``, in order.
COLUMNS = (
    "layer_id", "name", "layer_type", "shape", "N", "M", "Q", "rf", "num_evals",
    "alpha", "D", "xmin", "xmax", "sigma", "num_pl_spikes",
    "log_norm", "log_spectral_norm", "spectral_norm", "norm", "alpha_weighted",
    "log_alpha_norm", "stable_rank", "matrix_rank", "entropy",
    "status", "warning", "reason",
)
#: Layer-averaged metrics of ``Report.summary`` (means over successful fits).
SUMMARY_METRICS = ("log_norm", "alpha", "alpha_weighted", "log_alpha_norm",
                   "log_spectral_norm", "stable_rank")
#: Columns of ``Description.details``: what a layer is, before any spectrum.
DESCRIBE_COLUMNS = ("layer_id", "name", "layer_type", "shape", "N", "M", "Q", "rf", "num_evals")
#: Report columns that describe a layer or its outcome rather than measure it (a diff
#: does not compare them).
NOT_METRICS = DESCRIBE_COLUMNS + ("status", "warning", "reason")
#: Report columns that hold no number (``Report.tree`` refuses them).
NOT_NUMERIC = ("name", "layer_type", "shape", "status", "warning", "reason", "trap_indices")

#: Columns of the compact report table of a notebook (those present in the report).
REPORT_COLUMNS = ("layer_id", "name", "layer_type", "shape", "num_evals", "alpha", "alpha_weighted",
                  "log_norm", "log_spectral_norm", "stable_rank", "status", "warning", "reason")
#: Columns shown with three decimals wherever they appear (their deltas too): alpha and the
#: quantities on its scale or on a log scale. Other float columns get one precision per
#: column from their largest value (:func:`jaxww.report.cells.formatter`).
THREE_DECIMALS = ("alpha", "raw_alpha", "alpha_weighted", "log_norm", "log_spectral_norm",
                  "log_alpha_norm", "D", "sigma", "entropy", "overlap_left", "overlap_right")
#: Columns of the compact diff table, before the metric deltas.
DIFF_COLUMNS = ("name", "shape", "k", "overlap_left", "overlap_right")
#: Columns of the command line's table.
SHOWN = ("layer_id", "name", "layer_type", "N", "M", "rf", "alpha", "D", "xmin", "alpha_weighted",
         "log_spectral_norm", "stable_rank", "status", "warning")
#: Columns of the skipped leaves in the command line's table.
SHOWN_SKIPPED = ("name", "shape", "dtype", "reason")
#: What a diff row says of the layer, before its overlaps and metrics.
DIFF_LAYER_COLUMNS = ("name", "layer_type", "shape", "N", "M", "rf")
