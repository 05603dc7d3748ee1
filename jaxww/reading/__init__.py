"""The reading stage: a params tree, a model or a checkpoint -> the weight matrices to analyse.

Modules, each importing only those above it in this list:

* :mod:`~jaxww.reading.checkpoints`: files as they ship, read from their headers
  (:func:`open_checkpoint`, :class:`LazyTensor`) or whole (:func:`load_params`);
* :mod:`~jaxww.reading.quant`: integer weights with their scales;
* :mod:`~jaxww.reading.layouts`: how a leaf becomes matrices (:class:`Reading`,
  :func:`infer_layout`);
* :mod:`~jaxww.reading.keras`: a Keras 3 model's layers read as its code uses them;
* :mod:`~jaxww.reading.kernels`: every leaf of a tree as kernels or skips
  (:func:`find_kernels`);
* :mod:`~jaxww.reading.deltas`: ``W - W_base`` and LoRA pairs;
* :mod:`~jaxww.reading.layers`: :func:`read_layers`, what ``analyze`` reads.
"""

from jaxww.reading.checkpoints import SUPPORTED, CheckpointError, LazyTensor, load_params, open_checkpoint
from jaxww.reading.kernels import Kernel, Skipped, find_kernels, flatten_params, read_params
from jaxww.reading.layers import read_layers
from jaxww.reading.layouts import LAYOUTS, Reading, infer_layout

__all__ = ["LAYOUTS", "SUPPORTED", "CheckpointError", "Kernel", "LazyTensor", "Reading", "Skipped",
           "find_kernels", "flatten_params", "infer_layout", "load_params", "open_checkpoint",
           "read_layers", "read_params"]
