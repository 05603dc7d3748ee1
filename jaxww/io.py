"""Weights from checkpoints as they ship: NumPy, safetensors (single or sharded), Flax
msgpack, Keras 3 HDF5 and Orbax.

Every loader returns a pytree that :func:`jaxww.analyze` accepts, with the names the
checkpoint gives its tensors: flat files give a flat ``{key: array}`` dict whose keys
become the layer names (``model.layers.0.mlp.up_proj.weight`` keeps its dots;
:func:`jaxww.infer_layout` reads both ``/`` and ``.``), Flax msgpack and Orbax give the
saved nested dict. Files are only read, never written. A file that cannot be read
raises :class:`CheckpointError` naming the file and, for one tensor, the tensor.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import struct
import zipfile

import jax
import numpy as np

#: What :func:`load_params` reads, as error messages say it.
SUPPORTED = ("a .npz, .safetensors, Flax .msgpack or Keras .weights.h5 / .keras file, "
             "a safetensors directory (model.safetensors, or a *.safetensors.index.json "
             "with its shards) or an Orbax checkpoint directory")

_INDEX = ".safetensors.index.json"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read: unknown kind, corrupt, truncated or empty.

    The message names the file and, when one tensor is at fault, the tensor.
    """


def load_params(path: str | os.PathLike):
    """Load a checkpoint for :func:`jaxww.analyze`, tensor by tensor, keeping its names.

    ================================== =========================================
    path                               read as
    ================================== =========================================
    ``*.npz``                          ``{key: array}`` (NumPy, no pickles)
    ``*.safetensors``                  ``{key: array}`` (bf16 stays bf16; ``io`` extra)
    ``*.safetensors.index.json``       the shards its ``weight_map`` names, one
                                       ``{key: array}`` in the index's order
    directory with one index or one    as the index / the file above (a Hugging
    ``*.safetensors`` file             Face model directory)
    ``*.msgpack``                      the state dict of ``flax.serialization.to_bytes``
    ``*.weights.h5`` / ``*.h5``        ``{hdf5 path: array}`` (Keras 3 ``save_weights``:
                                       ``layers/<layer>/vars/<i>``; the ``optimizer``
                                       group is left out; needs h5py)
    ``*.keras``                        the ``model.weights.h5`` inside the archive
    Orbax directory (``_METADATA``)    the restored tree (``orbax`` extra)
    Orbax step directory               its one item (``default/``, ...) or
                                       ``{item: tree}`` for several
    ================================== =========================================

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
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint at {path!r}")
    tree = _load_directory(path) if os.path.isdir(path) else _load_file(path)
    if not any(hasattr(leaf, "shape") for leaf in jax.tree_util.tree_leaves(tree)):
        raise CheckpointError(f"{path}: the checkpoint holds no tensors")
    return tree


def _load_file(path: str):
    name = os.path.basename(path).lower()
    for suffix, load in ((".npz", _load_npz), (".safetensors", _load_safetensors),
                         (_INDEX, _load_index), (".msgpack", _load_msgpack),
                         (".h5", _load_h5), (".keras", _load_keras)):
        if name.endswith(suffix):
            return load(path)
    raise CheckpointError(f"unsupported checkpoint {path!r}: expected {SUPPORTED}")


def _load_directory(path: str):
    """An Orbax checkpoint, an Orbax step of items, or a safetensors model directory."""
    entries = sorted(os.listdir(path))
    if "_METADATA" in entries:
        return _load_orbax(path)
    items = [e for e in entries if os.path.isfile(os.path.join(path, e, "_METADATA"))]
    if items:
        trees = {e: _load_orbax(os.path.join(path, e)) for e in items}
        return trees[items[0]] if len(items) == 1 else trees
    steps = [e for e in entries if e.isdigit() and os.path.isdir(os.path.join(path, e))]
    if steps:
        last = max(steps, key=int)
        raise CheckpointError(f"{path}: an Orbax CheckpointManager directory with steps "
                              f"{', '.join(sorted(steps, key=int))}; pass one step, e.g. "
                              f"{os.path.join(path, last)!r}")
    indexes = [e for e in entries if e.endswith(_INDEX)]
    files = indexes or [e for e in entries if e.endswith(".safetensors")]
    if len(files) > 1:
        raise CheckpointError(f"{path}: several {'indexes' if indexes else '.safetensors files and no index'} "
                              f"({', '.join(files)}); pass one of them")
    if files:
        return _load_file(os.path.join(path, files[0]))
    raise CheckpointError(f"{path}: a directory with no checkpoint in it; expected {SUPPORTED}")


@contextlib.contextmanager
def _reading(what: str):
    """Re-raise a reader's error as a :class:`CheckpointError` that starts with ``what``.

    The third-party readers (numpy, zipfile, safetensors, msgpack, h5py, orbax) raise
    many exception types for a damaged file; the original stays chained as the cause.
    """
    try:
        yield
    except (CheckpointError, MemoryError):
        raise
    except Exception as err:
        raise CheckpointError(f"{what} ({type(err).__name__}: {err})") from err


def _optional(module: str, install: str, what: str):
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"reading {what} needs: pip install {install}") from err


def _load_npz(path: str) -> dict:
    with _reading(f"{path}: not a readable .npz file"):
        data = np.load(path, allow_pickle=False)
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise CheckpointError(f"{path}: holds one unnamed array (a .npy file), not named arrays")
    with data:
        out = {}
        for key in data.files:
            with _reading(f"{path}: array {key!r} cannot be read"):
                out[key] = data[key]
    return out


def _load_safetensors(path: str, names: list[str] | None = None) -> dict:
    """The tensors of one safetensors file: all of them, or ``names`` (from an index)."""
    safetensors = _optional("safetensors", "'jaxww[io]'", ".safetensors files")
    try:
        handle = safetensors.safe_open(path, framework="flax")
    except (safetensors.SafetensorError, OSError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err}){_truncation(path)}") from err
    with handle as f:
        present = set(f.keys())
        names = list(f.keys()) if names is None else names
        absent = [n for n in names if n not in present]
        if absent:
            raise CheckpointError(f"{path}: has no tensor {absent[0]!r}"
                                  + (f" (nor {len(absent) - 1} more)" if len(absent) > 1 else "")
                                  + " that the index maps to it")
        out = {}
        for name in names:
            with _reading(f"{path}: tensor {name!r} cannot be read"):
                out[name] = f.get_tensor(name)
    return out


def _truncation(path: str) -> str:
    """``"; tensor 'x' ... truncated"`` when the header of ``path`` is whole but the data
    of a tensor runs past the end of the file, else ``""`` (a diagnosis, never raises).

    Layout of a safetensors file: 8-byte little-endian header length ``n``, ``n``
    bytes of JSON ``{name: {"data_offsets": [begin, end], ...}}``, then the data.
    """
    size = os.path.getsize(path)
    try:
        with open(path, "rb") as fh:
            n = struct.unpack("<Q", fh.read(8))[0]
            if n > size - 8:
                return ""
            header = json.loads(fh.read(n))
        ends = {k: v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"}
    except (OSError, ValueError, struct.error, TypeError, KeyError, IndexError, AttributeError):
        return ""
    data = size - 8 - n
    late = [k for k, end in ends.items() if end > data]
    if not late:
        return ""
    first = min(late, key=ends.get)
    return (f"; tensor {first!r} ends at data byte {ends[first]} but the file holds "
            f"{data} data bytes: the file is truncated")


def _load_index(path: str) -> dict:
    """A sharded safetensors checkpoint: the shards named by the index's ``weight_map``."""
    with _reading(f"{path}: not a safetensors index (JSON with a 'weight_map')"):
        with open(path, encoding="utf-8") as fh:
            weight_map = json.load(fh)["weight_map"]
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise TypeError("'weight_map' must map tensor names to shard file names")
    shards: dict[str, list[str]] = {}
    for name, shard in weight_map.items():
        shards.setdefault(shard, []).append(name)
    folder, out = os.path.dirname(path), {}
    for shard, names in shards.items():
        file = os.path.join(folder, shard)
        if not os.path.isfile(file):
            raise CheckpointError(f"{path}: shard {shard!r} is missing (it holds {names[0]!r}"
                                  + (f" and {len(names) - 1} more tensors)" if len(names) > 1 else ")"))
        out.update(_load_safetensors(file, names))
    return {name: out[name] for name in weight_map}


def _load_msgpack(path: str) -> dict:
    from flax import serialization

    with open(path, "rb") as fh:
        data = fh.read()
    with _reading(f"{path}: not a Flax msgpack file"):
        tree = serialization.msgpack_restore(data)
    if not isinstance(tree, dict):
        raise CheckpointError(f"{path}: holds a {type(tree).__name__}, not a Flax state dict")
    return tree


def _load_h5(path: str, source=None) -> dict:
    """Datasets of an HDF5 file by path, the top-level ``optimizer*`` groups left out."""
    h5py = _optional("h5py", "h5py", "Keras .h5 files")
    with _reading(f"{path}: not a readable HDF5 file"):
        fh = h5py.File(path if source is None else source, "r")
    with fh:
        names: list[str] = []
        fh.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
        out = {}
        for name in names:
            if not name.startswith("optimizer"):
                with _reading(f"{path}: dataset {name!r} cannot be read"):
                    out[name] = fh[name][()]
    return out


def _load_keras(path: str) -> dict:
    """The ``model.weights.h5`` of a Keras 3 ``.keras`` archive."""
    member = "model.weights.h5"
    with _reading(f"{path}: not a readable .keras archive"):
        with zipfile.ZipFile(path) as z:
            data = z.read(member)
    return _load_h5(f"{path}[{member}]", io.BytesIO(data))


def _load_orbax(path: str):
    """The tree of an Orbax PyTree checkpoint, every array restored as a NumPy array.

    Restoring to host memory needs no sharding, so a checkpoint saved from many
    devices (a TPU pod) loads on one CPU; a plain ``restore(path)`` refuses it.
    """
    ocp = _optional("orbax.checkpoint", "'jaxww[orbax]'", "Orbax checkpoints")
    checkpointer, path = ocp.PyTreeCheckpointer(), os.path.abspath(path)
    with _reading(f"{path}: the Orbax checkpoint cannot be restored"):
        metadata = checkpointer.metadata(path)
        tree = getattr(getattr(metadata, "item_metadata", None), "tree", metadata)
        to_numpy = jax.tree_util.tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
        return checkpointer.restore(path, restore_args=to_numpy)
