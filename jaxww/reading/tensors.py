"""Tensors of checkpoint files: :class:`LazyTensor` (read when asked), :class:`CheckpointError`
and what every format reader shares (re-raising a reader's error with the file named, the
optional packages a format needs, PyTorch tensors as NumPy arrays)."""

from __future__ import annotations

import contextlib
import importlib
import math
import sys

import ml_dtypes
import numpy as np


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
        with read_errors(f"{self.file}: tensor {self.name!r} cannot be read"):
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


@contextlib.contextmanager
def read_errors(what: str):
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


def optional_import(module: str, install: str, what: str):
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"reading {what} needs: pip install {install}") from err


def from_torch(x):
    """A ``torch.Tensor`` as a NumPy array (bfloat16 kept as ml_dtypes' bfloat16, no copy on
    the CPU); anything else unchanged. torch is never imported here."""
    if type(x).__module__.split(".")[0] != "torch" or not hasattr(x, "detach"):
        return x
    t = x.detach().cpu()
    if str(t.dtype) == "torch.bfloat16":
        return t.view(dtype=sys.modules["torch"].int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()
