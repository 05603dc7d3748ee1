"""The reading stage: a params tree, a model or a checkpoint -> the weight matrices to analyse.

Modules, each importing only those above it in this list:

* :mod:`~jaxww.reading.tensors`: :class:`LazyTensor` (a checkpoint's tensor, read when
  asked) and :class:`CheckpointError`;
* :mod:`~jaxww.reading.file_formats`, :mod:`~jaxww.reading.orbax_checkpoints`: each format
  read from its own headers;
* :mod:`~jaxww.reading.checkpoints`: a path -> its tree, read from the headers
  (:func:`open_checkpoint`) or whole (:func:`load_params`);
* :mod:`~jaxww.reading.quant`: integer weights with their scales;
* :mod:`~jaxww.reading.layouts`: how a leaf becomes matrices (:class:`Reading`, the named
  layouts, ``layouts=``);
* :mod:`~jaxww.reading.name_rules`: a leaf's reading from its name and shape
  (:func:`infer_layout`, the layer axis of stacks);
* :mod:`~jaxww.reading.keras`, :mod:`~jaxww.reading.nnx`: a Keras 3 model's / an
  ``nnx.Module``'s weights read as its code uses them;
* :mod:`~jaxww.reading.params`: the named leaves of what a user passes, in the model's
  order (:func:`flatten_params`, :func:`read_params`, :func:`model_layouts`);
* :mod:`~jaxww.reading.kernels`: every leaf as kernels or skips (:func:`find_kernels`);
* :mod:`~jaxww.reading.deltas`: ``W - W_base`` and LoRA pairs;
* :mod:`~jaxww.reading.layers`: :func:`read_layers`, what ``analyze`` and training read.
"""

from jaxww.reading.checkpoints import SUPPORTED, load_params, open_checkpoint
from jaxww.reading.kernels import Kernel, Skipped, find_kernels
from jaxww.reading.layers import read_layers
from jaxww.reading.layouts import LAYOUTS, Reading
from jaxww.reading.name_rules import infer_layout
from jaxww.reading.params import flatten_params, read_params
from jaxww.reading.tensors import CheckpointError, LazyTensor

__all__ = ["LAYOUTS", "SUPPORTED", "CheckpointError", "Kernel", "LazyTensor", "Reading", "Skipped",
           "find_kernels", "flatten_params", "infer_layout", "load_params", "open_checkpoint",
           "read_layers", "read_params"]
