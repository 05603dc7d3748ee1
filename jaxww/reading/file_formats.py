"""Checkpoint files read by their own headers: ``.npz``, safetensors (single, or sharded with
an index), Flax ``.msgpack``, Keras 3 HDF5 (``.weights.h5``, ``.keras``) and PyTorch state
dicts. Each ``load_*`` takes a path and returns ``{name: tensor}`` (or the saved dict):
:class:`~jaxww.reading.tensors.LazyTensor` leaves where the header gives shapes and dtypes."""

from __future__ import annotations

import io
import json
import math
import os
import struct
import zipfile

import ml_dtypes
import numpy as np

from jaxww.reading.tensors import CheckpointError, LazyTensor, from_torch, optional_import, read_errors


def load_npz(path: str) -> dict:
    """``{key: LazyTensor}`` of an ``.npz`` archive, shapes from each member's ``.npy`` header."""
    heads = {}
    with read_errors(f"{path}: not a readable .npz file"), zipfile.ZipFile(path) as z:
        for member in z.namelist():
            key = member.removesuffix(".npy")
            with read_errors(f"{path}: array {key!r} cannot be read"), z.open(member) as fh:
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
    with read_errors(f"{path}: not a readable safetensors file"):
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


def load_safetensors(path: str, names: list[str] | None = None) -> dict:
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


def load_index(path: str) -> dict:
    """A sharded safetensors checkpoint: the shards named by the index's ``weight_map``."""
    with read_errors(f"{path}: not a safetensors index (JSON with a 'weight_map')"):
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
        out.update(load_safetensors(file, names))
    return {name: out[name] for name in weight_map}


def load_msgpack(path: str) -> dict:
    from flax import serialization

    with open(path, "rb") as fh:
        data = fh.read()
    with read_errors(f"{path}: not a Flax msgpack file"):
        tree = serialization.msgpack_restore(data)
    if not isinstance(tree, dict):
        raise CheckpointError(f"{path}: holds a {type(tree).__name__}, not a Flax state dict")
    return tree


def load_h5(path: str, source=None) -> dict:
    """Datasets of an HDF5 file by path, the top-level ``optimizer*`` groups left out:
    :class:`LazyTensor` from a file, arrays from an in-memory ``source``."""
    h5py = optional_import("h5py", "h5py", "Keras .h5 files")
    with read_errors(f"{path}: not a readable HDF5 file"):
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
                with read_errors(f"{path}: dataset {name!r} cannot be read"):
                    out[name] = fh[name][()]
            return out

    def reader(name):
        def read():
            with h5py.File(path, "r") as f:
                return f[name][()]
        return read

    return {n: LazyTensor(path, n, s, d, reader(n)) for n, (s, d) in found.items()}


def load_keras(path: str) -> dict:
    """The ``model.weights.h5`` of a Keras 3 ``.keras`` archive."""
    member = "model.weights.h5"
    with read_errors(f"{path}: not a readable .keras archive"):
        with zipfile.ZipFile(path) as z:
            data = z.read(member)
    return load_h5(f"{path}[{member}]", io.BytesIO(data))


def load_torch(path: str) -> dict:
    """A PyTorch state dict (``torch.save``): ``torch.load(weights_only=True)``, no pickled
    code run; tensors as NumPy arrays."""
    torch = optional_import("torch", "torch", "PyTorch .pth/.bin files")
    with read_errors(f"{path}: not a PyTorch state dict readable with weights_only=True"):
        state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]   # a training checkpoint holding the state dict
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a state dict")
    return {k: from_torch(v) for k, v in state.items()}
