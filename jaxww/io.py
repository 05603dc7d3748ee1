"""Weights from files: ``.npz``, ``.safetensors`` and Orbax checkpoint directories.

Every loader returns a pytree that :func:`jaxww.analyze` accepts; flat files give a
flat ``{key: array}`` dict whose keys become the layer names (``model.layers.0.mlp``
keys keep their dots; :func:`jaxww.infer_layout` reads both ``/`` and ``.``).
"""

from __future__ import annotations

import os

import numpy as np


def load_params(path: str | os.PathLike):
    """Load a checkpoint for :func:`jaxww.analyze`.

    Args:
      path: a ``.npz`` file (NumPy), a ``.safetensors`` file (needs the ``io`` extra:
        ``pip install 'jaxww[io]'``; bf16 tensors load as JAX arrays), or an Orbax
        checkpoint directory (needs the ``orbax`` extra).

    Returns:
      A pytree of arrays: a flat dict for files, the restored tree for Orbax.

    Raises:
      FileNotFoundError: nothing exists at ``path``.
      ValueError: the format is not one of the above.
      ImportError: the optional package for the format is missing.

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
    if os.path.isdir(path):
        return _load_orbax(path)
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    if path.endswith(".safetensors"):
        try:
            from safetensors.flax import load_file
        except ImportError as err:
            raise ImportError("reading .safetensors needs: pip install 'jaxww[io]'") from err
        return load_file(path)
    raise ValueError(f"unsupported checkpoint {path!r}: expected a .npz or .safetensors file "
                     "or an Orbax checkpoint directory")


def _load_orbax(path: str):
    try:
        import orbax.checkpoint as ocp
    except ImportError as err:
        raise ImportError("reading Orbax checkpoints needs: pip install 'jaxww[orbax]'") from err
    return ocp.PyTreeCheckpointer().restore(os.path.abspath(path))
