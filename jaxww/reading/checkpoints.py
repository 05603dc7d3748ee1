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

import contextlib
import math
import importlib
import io
import json
import logging
import os
import struct
import sys
import zipfile

import jax
import ml_dtypes
import numpy as np

from jaxww.defaults import SUPPORTED

_INDEX = ".safetensors.index.json"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read: unknown kind, corrupt, truncated or empty.

    The message names the file and, when one tensor is at fault, the tensor.
    """


class LazyTensor:
    """A tensor of a checkpoint file, read only when asked.

    ``shape`` and ``dtype`` come from the file's header; ``np.asarray(t)`` (or
    :meth:`read`) reads the data into a new NumPy array each time (nothing is kept).

    Attributes:
      file: the file holding the tensor.
      name: the tensor's name in that file.
      shape, dtype: as stored.

    Example:
      >>> import numpy as np, jaxww, tempfile, os
      >>> f = os.path.join(tempfile.mkdtemp(), "w.npz")
      >>> np.savez(f, w=np.ones((16, 8), np.float32))
      >>> t = jaxww.open_checkpoint(f)["w"]
      >>> t.shape, t.dtype, float(np.asarray(t).sum())
      ((16, 8), dtype('float32'), 128.0)
    """

    __slots__ = ("file", "name", "shape", "dtype", "_read")

    def __init__(self, file: str, name: str, shape: tuple, dtype, read):
        self.file, self.name, self._read = file, name, read
        self.shape, self.dtype = tuple(int(s) for s in shape), np.dtype(dtype)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def read(self) -> np.ndarray:
        """The data, a new array; :class:`CheckpointError` naming the file and the tensor
        when it cannot be read."""
        with _reading(f"{self.file}: tensor {self.name!r} cannot be read"):
            out = self._read()
        if out.shape != self.shape or out.dtype != self.dtype:
            raise CheckpointError(f"{self.file}: tensor {self.name!r} reads as {out.dtype}{list(out.shape)}, "
                                  f"its header says {self.dtype}{list(self.shape)}")
        return out

    def __array__(self, dtype=None, copy=None):
        out = self.read()
        return out if dtype is None else out.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f"LazyTensor({self.name!r}, shape={self.shape}, dtype={self.dtype}, file={self.file!r})"


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


def from_torch(x):
    """A ``torch.Tensor`` as a NumPy array (bfloat16 kept as ml_dtypes' bfloat16, no copy on
    the CPU); anything else unchanged. torch is never imported here."""
    if type(x).__module__.split(".")[0] != "torch" or not hasattr(x, "detach"):
        return x
    t = x.detach().cpu()
    if str(t.dtype) == "torch.bfloat16":
        return t.view(dtype=sys.modules["torch"].int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


def _load_torch(path: str) -> dict:
    """A PyTorch state dict (``torch.save``): ``torch.load(weights_only=True)``, no pickled
    code run; tensors as NumPy arrays."""
    torch = _optional("torch", "torch", "PyTorch .pth/.bin files")
    with _reading(f"{path}: not a PyTorch state dict readable with weights_only=True"):
        state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]   # a training checkpoint holding the state dict
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a state dict")
    return {k: from_torch(v) for k, v in state.items()}


def _load_file(path: str):
    name = os.path.basename(path).lower()
    for suffix, load in ((".npz", _load_npz), (".safetensors", _load_safetensors),
                         (_INDEX, _load_index), (".msgpack", _load_msgpack),
                         (".h5", _load_h5), (".keras", _load_keras),
                         (".pth", _load_torch), (".pt", _load_torch), (".bin", _load_torch)):
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
        return _load_orbax(path, lazy)
    if items:
        trees = {e: _load_orbax(os.path.join(path, e), lazy) for e in items}
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


@contextlib.contextmanager
def _reading(what: str):
    """Re-raise a reader's error as a :class:`CheckpointError` that starts with ``what``.

    The third-party readers (numpy, zipfile, msgpack, h5py, orbax) raise many exception
    types for a damaged file; the original stays chained as the cause.
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
    """``{key: LazyTensor}`` of an ``.npz`` archive, shapes from each member's ``.npy`` header."""
    heads = {}
    with _reading(f"{path}: not a readable .npz file"), zipfile.ZipFile(path) as z:
        for member in z.namelist():
            key = member.removesuffix(".npy")
            with _reading(f"{path}: array {key!r} cannot be read"), z.open(member) as fh:
                major, _ = np.lib.format.read_magic(fh)
                read_header = np.lib.format.read_array_header_1_0 if major == 1 else \
                    np.lib.format.read_array_header_2_0
                shape, _, dtype = read_header(fh)
                if dtype.hasobject:
                    raise ValueError("an object array (pickles are not loaded)")
            heads[key] = (shape, dtype)

    def reader(key):
        def read():
            with np.load(path, allow_pickle=False) as data:
                return data[key]
        return read

    return {k: LazyTensor(path, k, s, d, reader(k)) for k, (s, d) in heads.items()}


#: safetensors dtype names -> NumPy dtypes (``BF16`` and the float8 kinds from ml_dtypes,
#: which JAX depends on).
_ST_DTYPES = {"BOOL": np.bool_, "U8": np.uint8, "I8": np.int8, "U16": np.uint16, "I16": np.int16,
              "U32": np.uint32, "I32": np.int32, "U64": np.uint64, "I64": np.int64,
              "F16": np.float16, "F32": np.float32, "F64": np.float64,
              "BF16": ml_dtypes.bfloat16, "F8_E4M3": ml_dtypes.float8_e4m3fn,
              "F8_E5M2": ml_dtypes.float8_e5m2}


def _safetensors_header(path: str) -> tuple[dict, int]:
    """``({name: {"dtype", "shape", "data_offsets"}}, data start)`` of a safetensors file.

    Layout: an 8-byte little-endian header length ``n``, ``n`` bytes of JSON
    ``{name: {"dtype", "shape", "data_offsets": [begin, end]}}`` (offsets from the data
    start, byte ``8 + n``), then the data. Every entry is checked against its shape and
    the file's size, so a damaged or truncated file is refused before any data is read.
    """
    size = os.path.getsize(path)
    with _reading(f"{path}: not a readable safetensors file"):
        with open(path, "rb") as fh:
            n = struct.unpack("<Q", fh.read(8))[0]
            if n > size - 8:
                raise ValueError(f"a header of {n} bytes in a file of {size}")
            header = json.loads(fh.read(n))
        header.pop("__metadata__", None)
        for name, e in header.items():
            begin, end = (int(v) for v in e["data_offsets"])
            want = math.prod(e["shape"]) * np.dtype(_ST_DTYPES[e["dtype"]]).itemsize
            if end - begin != want:
                raise ValueError(f"tensor {name!r}: {end - begin} bytes for {e['dtype']}{e['shape']}")
    data = size - 8 - n
    late = [k for k, e in header.items() if e["data_offsets"][1] > data]
    if late:
        first = min(late, key=lambda k: header[k]["data_offsets"][1])
        raise CheckpointError(f"{path}: tensor {first!r} ends at data byte {header[first]['data_offsets'][1]} "
                              f"but the file holds {data} data bytes: the file is truncated")
    return header, 8 + n


def _load_safetensors(path: str, names: list[str] | None = None) -> dict:
    """``{name: LazyTensor}`` of one safetensors file: all its tensors in the order of its
    data, or ``names`` (from an index). Only the header is read."""
    header, start = _safetensors_header(path)
    names = sorted(header, key=lambda k: header[k]["data_offsets"][0]) if names is None else names
    absent = [n for n in names if n not in header]
    if absent:
        raise CheckpointError(f"{path}: has no tensor {absent[0]!r}"
                              + (f" (nor {len(absent) - 1} more)" if len(absent) > 1 else "")
                              + " that the index maps to it")
    return {n: _safetensors_tensor(path, n, header[n], start) for n in names}


def _safetensors_tensor(path: str, name: str, entry: dict, start: int) -> LazyTensor:
    dtype, shape = np.dtype(_ST_DTYPES[entry["dtype"]]), tuple(entry["shape"])
    offset, count = start + int(entry["data_offsets"][0]), math.prod(shape)

    def read():
        with open(path, "rb") as fh:
            fh.seek(offset)
            out = np.fromfile(fh, dtype, count)
        if out.size != count:
            raise ValueError(f"the file ends after {out.size} of its {count} values")
        return out.reshape(shape)

    return LazyTensor(path, name, shape, dtype, read)


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
    """Datasets of an HDF5 file by path, the top-level ``optimizer*`` groups left out:
    :class:`LazyTensor` from a file, arrays from an in-memory ``source``."""
    h5py = _optional("h5py", "h5py", "Keras .h5 files")
    with _reading(f"{path}: not a readable HDF5 file"):
        fh = h5py.File(path if source is None else source, "r")
    with fh:
        found: dict = {}

        def visit(name, obj):   # a value other than None would stop the visit
            if isinstance(obj, h5py.Dataset) and not name.startswith("optimizer"):
                found[name] = (obj.shape, obj.dtype)

        fh.visititems(visit)
        if source is not None:
            out = {}
            for name in found:
                with _reading(f"{path}: dataset {name!r} cannot be read"):
                    out[name] = fh[name][()]
            return out

    def reader(name):
        def read():
            with h5py.File(path, "r") as f:
                return f[name][()]
        return read

    return {n: LazyTensor(path, n, s, d, reader(n)) for n, (s, d) in found.items()}


def _load_keras(path: str) -> dict:
    """The ``model.weights.h5`` of a Keras 3 ``.keras`` archive."""
    member = "model.weights.h5"
    with _reading(f"{path}: not a readable .keras archive"):
        with zipfile.ZipFile(path) as z:
            data = z.read(member)
    return _load_h5(f"{path}[{member}]", io.BytesIO(data))


class _NoStepMetadataWarning(logging.Filter):
    """Drops Orbax's ``Metadata file does not exist`` warning. A ``CheckpointManager``
    keeps the step's ``_CHECKPOINT_METADATA`` one level above the item directory
    (``run/<step>/default``) that a plain checkpointer reads, and looks for it there:
    one absl WARNING per step read, about a file this reader does not need (orbax-checkpoint
    0.12.8; drop this filter once a release stops logging it)."""

    def filter(self, record):
        return not str(record.msg).startswith("Metadata file does not exist")


@contextlib.contextmanager
def _orbax_quiet():
    """:class:`_NoStepMetadataWarning` on absl's logger for the duration of a read."""
    logger, quiet = logging.getLogger("absl"), _NoStepMetadataWarning()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


def _load_orbax(path: str, lazy: bool):
    """The tree of an Orbax PyTree checkpoint: with ``lazy``, from its metadata, a
    :class:`LazyTensor` per array (read alone by a partial restore); else, or where the
    metadata holds anything but arrays under string keys, restored whole as NumPy arrays.

    Restoring to host memory needs no sharding, so a checkpoint saved from many
    devices (a TPU pod) loads on one CPU; a plain ``restore(path)`` refuses it.
    """
    ocp = _optional("orbax.checkpoint", "'jaxww[orbax]'", "Orbax checkpoints")
    checkpointer, path = ocp.PyTreeCheckpointer(), os.path.abspath(path)
    with _reading(f"{path}: the Orbax checkpoint cannot be restored"), _orbax_quiet():
        metadata = checkpointer.metadata(path)
        tree = getattr(getattr(metadata, "item_metadata", None), "tree", metadata)
        flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
        if not lazy or not all(hasattr(m, "shape") and hasattr(m, "dtype") and
                   all(isinstance(k, jax.tree_util.DictKey) for k in keys) for keys, m in flat):
            to_numpy = jax.tree_util.tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
            return checkpointer.restore(path, restore_args=to_numpy)

    def reader(keys):
        def read():
            item = args = None
            for k in reversed([k.key for k in keys]):   # {k0: {k1: ... leaf}}
                item = {k: np.zeros(0) if item is None else item}
                args = {k: ocp.RestoreArgs(restore_type=np.ndarray) if args is None else args}
            with _orbax_quiet():
                out = checkpointer.restore(path, args=ocp.args.PyTreeRestore(
                    item=item, restore_args=args, partial_restore=True))
            for k in keys:
                out = out[k.key]
            return out
        return read

    leaves = [LazyTensor(path, "/".join(str(k.key) for k in keys), m.shape, m.dtype,
                         reader(keys)) for keys, m in flat]
    return jax.tree_util.tree_unflatten(treedef, leaves)
