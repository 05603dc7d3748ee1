"""Weights from checkpoints as they ship: NumPy, safetensors (single or sharded), Flax
msgpack, Keras 3 HDF5 and Orbax.

:func:`open_checkpoint` reads only what the headers say (names, shapes, dtypes) where
the format has them (safetensors, ``.npz``, ``.h5``): its tensors are
:class:`LazyTensor` handles whose data is read when asked, so
:func:`jaxww.analyze` plans from the headers and reads a few tensors at a time.
:func:`load_params` reads everything into NumPy arrays.

Every loader returns a pytree that :func:`jaxww.analyze` accepts, with the names the
checkpoint gives its tensors: flat files give a flat ``{key: array}`` dict whose keys
become the layer names (``model.layers.0.mlp.up_proj.weight`` keeps its dots;
:func:`jaxww.infer_layout` reads both ``/`` and ``.``), Flax msgpack and Orbax give the
saved nested dict. Files are only read, never written. A file that cannot be read
raises :class:`CheckpointError` naming the file and, for one tensor, the tensor.
"""

from __future__ import annotations

import os

import jax

from jaxww.defaults import SUPPORTED
from jaxww.reading import file_formats as _files
from jaxww.reading.orbax_checkpoints import load_orbax
from jaxww.reading.tensors import CheckpointError, LazyTensor

_INDEX = ".safetensors.index.json"


def open_checkpoint(path: str | os.PathLike):
    """The tree of a checkpoint (as :func:`load_params`) with its tensors left on disk
    where the format's header gives names, shapes and dtypes: safetensors files,
    directories and indexes, ``.npz`` and ``.h5`` / ``.weights.h5`` files hold
    :class:`LazyTensor` leaves; the other formats are read whole.

    Opening reads the headers only (a 70B safetensors checkpoint opens in well under a
    second); :func:`jaxww.analyze` and :func:`jaxww.describe` take the path itself and
    open it this way.

    Args:
      path: a file or directory as in :func:`load_params`.

    Returns:
      A pytree whose leaves are :class:`LazyTensor` or NumPy arrays.

    Raises:
      As :func:`load_params`; a truncated safetensors file is refused here, naming the
      first tensor whose data is missing.
    """
    return _open(path, lazy=True)


def _open(path, lazy: bool):
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint at {path!r}")
    tree = _load_directory(path, lazy) if os.path.isdir(path) else _load_file(path)
    if not any(hasattr(leaf, "shape") for leaf in jax.tree_util.tree_leaves(tree)):
        raise CheckpointError(f"{path}: the checkpoint holds no tensors")
    return tree


def load_params(path: str | os.PathLike):
    """Load a checkpoint for :func:`jaxww.analyze`, tensor by tensor, keeping its names.

    ================================== =========================================
    path                               read as
    ================================== =========================================
    ``*.npz``                          ``{key: array}`` (NumPy, no pickles)
    ``*.safetensors``                  ``{key: array}`` (bf16 stays bf16)
    ``*.safetensors.index.json``       the shards its ``weight_map`` names, one
                                       ``{key: array}`` in the index's order
    directory with one index or one    as the index / the file above (a Hugging
    ``*.safetensors`` file             Face model directory)
    ``*.msgpack``                      the state dict of ``flax.serialization.to_bytes``
    ``*.weights.h5`` / ``*.h5``        ``{hdf5 path: array}`` (Keras 3 ``save_weights``:
                                       ``layers/<layer>/vars/<i>``; the ``optimizer``
                                       group is left out; needs h5py)
    ``*.keras``                        the ``model.weights.h5`` inside the archive
    ``*.pth`` / ``*.pt`` / ``*.bin``   a PyTorch state dict (``torch.load`` with
                                       ``weights_only=True``; needs torch)
    Orbax directory (``_METADATA``)    the restored tree (``orbax`` extra)
    Orbax step directory               its one item (``default/``, ...) or
                                       ``{item: tree}`` for several
    ================================== =========================================

    Every array is read into memory; :func:`open_checkpoint` leaves them on disk (and
    ``jaxww.analyze(path)`` reads them a few at a time).

    Keras HDF5 files do not store variable names, only their order: a 2-D
    ``vars/0`` is read as a dense matrix (``embedding`` under an embedding layer),
    while convolution and attention kernels need ``layouts=``, e.g.
    ``{"conv": "conv", "(query|key|value)_dense": "attention_qkv",
    "output_dense": "attention_out"}``.

    Args:
      path: a file or directory as in the table.

    Returns:
      A pytree of arrays with the checkpoint's names.

    Raises:
      FileNotFoundError: nothing exists at ``path``.
      CheckpointError: (a ``ValueError``) an unknown kind, a corrupt or truncated
        file, a sharded index naming a missing shard or tensor, or no tensors at all.
      ImportError: the optional package the format needs is missing.

    Example:
      >>> import numpy as np, jaxww, tempfile, os
      >>> f = os.path.join(tempfile.mkdtemp(), "w.npz")
      >>> np.savez(f, **{"dense/kernel": np.ones((16, 8), np.float32)})
      >>> list(jaxww.load_params(f))
      ['dense/kernel']
    """
    return _read_all(_open(path, lazy=False))


def _read_all(tree):
    """``tree`` with every :class:`LazyTensor` read (dict order kept, unlike ``tree_map``)."""
    if isinstance(tree, LazyTensor):
        return tree.read()
    if isinstance(tree, dict):
        return {k: _read_all(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_read_all(v) for v in tree)
    return tree


def _load_file(path: str):
    name = os.path.basename(path).lower()
    for suffix, load in ((".npz", _files.load_npz), (".safetensors", _files.load_safetensors),
                         (_INDEX, _files.load_index), (".msgpack", _files.load_msgpack),
                         (".h5", _files.load_h5), (".keras", _files.load_keras),
                         (".pth", _files.load_torch), (".pt", _files.load_torch), (".bin", _files.load_torch)):
        if name.endswith(suffix):
            return load(path)
    raise CheckpointError(f"unsupported checkpoint {path!r}: expected {SUPPORTED}")


def _load_directory(path: str, lazy: bool):
    """An Orbax checkpoint, an Orbax step of items, or a safetensors model directory; a
    directory holding more than one of them is refused, naming them."""
    entries = sorted(os.listdir(path))
    items = [e for e in entries if os.path.isfile(os.path.join(path, e, "_METADATA"))]
    indexes = [e for e in entries if e.endswith(_INDEX)]
    files = indexes or [e for e in entries if e.endswith(".safetensors")]
    if files and ("_METADATA" in entries or items):
        orbax = "an Orbax checkpoint" + (f" ({', '.join(items)})" if items else "")
        raise CheckpointError(f"{path}: holds both {orbax} and safetensors ({', '.join(files)}); "
                              "pass the one to read, e.g. " + repr(os.path.join(path, files[0])))
    if "_METADATA" in entries:
        return load_orbax(path, lazy)
    if items:
        trees = {e: load_orbax(os.path.join(path, e), lazy) for e in items}
        return trees[items[0]] if len(items) == 1 else trees
    steps = [e for e in entries if e.isdigit() and os.path.isdir(os.path.join(path, e))]
    if steps:
        last = max(steps, key=int)
        raise CheckpointError(f"{path}: an Orbax CheckpointManager directory with steps "
                              f"{', '.join(sorted(steps, key=int))}; pass one step, e.g. "
                              f"{os.path.join(path, last)!r}")
    if len(files) > 1:
        raise CheckpointError(f"{path}: several {'indexes' if indexes else '.safetensors files and no index'} "
                              f"({', '.join(files)}); pass one of them")
    if files:
        return _load_file(os.path.join(path, files[0]))
    raise CheckpointError(f"{path}: a directory with no checkpoint in it; expected {SUPPORTED}")
