"""Flax NNX modules: how each module's own configuration reads its weights.

``jaxww.analyze(module)`` on a live ``nnx.Module`` reads ``nnx.state(module, nnx.Param)``.
For the modules below, how a weight becomes matrices comes from the module's attributes,
not from the leaf's name, so a stack built by ``nnx.vmap`` / ``nnx.scan`` is one matrix per
layer under any attribute name, and a grouped convolution is read per group:

====================== =================================== ===================================
module                 weight                              matrices
====================== =================================== ===================================
``Linear`` (and        ``kernel`` ``(*L, in, out)``         one ``in x out`` per layer
``LoRALinear``)
``Embed``              ``embedding`` ``(*L, vocab, d)``     the table, per layer
``Conv``               ``kernel`` ``(*L, k1..kd, in/G,      ``in/G x out/G`` per tap and group,
                       out)``, ``G = feature_group_count``  pooled (``G = 1``: one ``in x out``
                                                            per tap); depthwise (``in/G = 1``)
                                                            skipped: per-channel filters
``ConvTranspose``      ``kernel`` ``(*L, k1..kd, in, out)`` one per tap
====================== =================================== ===================================

``*L`` are the leading axes that ``nnx.vmap`` / ``nnx.scan`` added (one kernel per index).
A grouped convolution's output channels are group-major (channel ``o`` belongs to group
``o // (out/G)``), so the kernel is viewed as ``(.., in/G, G, out/G)``: taps and groups are
the pooled matrices, the spectrum of the block-diagonal map of each tap. The modules'
other weights, and other modules, are read by name (:mod:`jaxww.reading.layouts`).
"""

from __future__ import annotations

from flax import nnx

from jaxww.reading.layouts import Reading, Skip, conv_reading


def readings(module: nnx.Module) -> dict:
    """``{leaf name: Reading or Skip}`` for the weights whose module's configuration says
    how they are read; names as :func:`jaxww.flatten_params` gives them."""
    out = {}
    for path, node in nnx.iter_graph(module):
        if isinstance(node, nnx.Module):
            for attr, reading in _module_readings(node).items():
                out["/".join(map(str, path + (attr,)))] = reading
    return out


def _module_readings(m: nnx.Module) -> dict:
    if isinstance(m, nnx.Linear):
        return {"kernel": _stacked(m.kernel.shape, (m.in_features, m.out_features),
                                   Reading("dense", "dense", (0,), (1,)))}
    if isinstance(m, nnx.Embed):
        return {"embedding": _stacked(m.embedding.shape, (m.num_embeddings, m.features),
                                      Reading("embedding", "embedding", (0,), (1,)))}
    if isinstance(m, nnx.Conv):
        return {"kernel": _conv(m.kernel.shape, tuple(m.kernel_size), m.in_features, m.out_features,
                                m.feature_group_count)}
    if isinstance(m, nnx.ConvTranspose):
        sides = (m.out_features, m.in_features) if m.transpose_kernel else (m.in_features, m.out_features)
        return {"kernel": _conv(m.kernel.shape, tuple(m.kernel_size), *sides, 1)}
    return {}


def _conv(shape: tuple, size: tuple, fan_in: int, fan_out: int, groups: int):
    """The reading of a convolution kernel ``(*L, *size, fan_in / groups, fan_out)``."""
    r = conv_reading(size, fan_in, fan_out, groups)
    return r if isinstance(r, Skip) else _stacked(shape, size + (fan_in // groups, fan_out), r)


def _stacked(shape: tuple, core: tuple, reading: Reading):
    """``reading`` (of a leaf of shape ``core``) with the leading axes of ``shape`` as layer
    axes, or a :class:`Skip` when ``shape`` does not end in ``core``."""
    lead = len(shape) - len(core)
    if lead < 0 or tuple(shape[lead:]) != core:
        return Skip(f"shape {tuple(shape)} does not end in the module's {core} (a stack with its layer "
                    "axis elsewhere); pass layouts= to say how to read it")
    up = lambda axes: tuple(a + lead for a in axes)  # noqa: E731
    return reading._replace(rows=up(reading.rows), cols=up(reading.cols), taps=up(reading.taps),
                            splits=tuple((a, None) for a in range(lead)),
                            view=None if reading.view is None else tuple(shape[:lead]) + reading.view)
