"""Orbax PyTree checkpoints: their arrays as :class:`~jaxww.reading.tensors.LazyTensor` read by
a partial restore, or the tree restored whole."""

from __future__ import annotations

import contextlib
import logging
import os

import jax
import numpy as np

from jaxww.reading.tensors import LazyTensor, optional_import, read_errors


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


def load_orbax(path: str, lazy: bool):
    """The tree of an Orbax PyTree checkpoint: with ``lazy``, from its metadata, a
    :class:`LazyTensor` per array (read alone by a partial restore); else, or where the
    metadata holds anything but arrays under string keys, restored whole as NumPy arrays.

    Restoring to host memory needs no sharding, so a checkpoint saved from many
    devices (a TPU pod) loads on one CPU; a plain ``restore(path)`` refuses it.
    """
    ocp = optional_import("orbax.checkpoint", "'jaxww[orbax]'", "Orbax checkpoints")
    checkpointer, path = ocp.PyTreeCheckpointer(), os.path.abspath(path)
    with read_errors(f"{path}: the Orbax checkpoint cannot be restored"), _orbax_quiet():
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
