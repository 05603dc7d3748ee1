"""The static description of kernels that jitted programs are keyed on.

A program (spectra, fits, SVDs) depends on the shapes and layouts of its kernels, not on
their names nor on where their leaves sit in the whole tree: its kernels are passed as
static arguments with the name dropped and the leaf numbered among the leaves the
program is given, so two models (or two groups) of the same shapes share one program.
"""

from __future__ import annotations

from typing import Sequence

from jaxww.reading.kernels import Kernel


def used_leaves(kerns: Sequence[Kernel]) -> list[int]:
    """The leaves the kernels are read from, once each, in the order of first use."""
    return list(dict.fromkeys(k.leaf for k in kerns))


def static_specs(kerns: Sequence[Kernel], used: Sequence[int] | None = None) -> tuple[Kernel, ...]:
    """Each kernel without its name, its ``leaf`` the position of its leaf in ``used``.

    Args:
      kerns: the kernels of one program.
      used: the leaves passed to the program, in order (default :func:`used_leaves`).

    Returns:
      A tuple of hashable :class:`jaxww.Kernel`, for a ``static_argnames`` of ``jax.jit``.

    Example:
      >>> k = Kernel("a/kernel", 7, "dense", "dense", (64, 32), 64, 32, 1)
      >>> static_specs([k])[0].name, static_specs([k])[0].leaf
      ('', 0)
    """
    used = list(used_leaves(kerns) if used is None else used)
    return tuple(k.spec(used.index(k.leaf)) for k in kerns)
