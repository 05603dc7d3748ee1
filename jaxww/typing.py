"""Type aliases of the arguments that several stages take (base level: imports nothing of jaxww).

Example:
  >>> from jaxww.typing import LayoutOverride
  >>> overrides: LayoutOverride = {r"conv": "conv"}
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence, Union

#: ``layouts=``: ``{regex: layout}`` (first match wins) or a callable ``(name, shape) -> layout
#: or None``; a layout is a name from :data:`jaxww.defaults.LAYOUTS`, a
#: :class:`jaxww.reading.layouts.Reading` or a :class:`jaxww.reading.layouts.Skip`
#: (:func:`jaxww.model_layouts` gives a live model's).
LayoutOverride = Union[Callable[[str, tuple], Any], Mapping[str, Any], None]

#: ``scan_axis=``: the position of the layer axis of stacked leaves, an int or ``{regex: int}``
#: per leaf name; None: found from the scanned subtree.
ScanAxis = Union[int, Mapping[str, int], None]

#: ``layers=`` of :func:`jaxww.analyze`: a regex (``re.search`` on the layer name), a callable
#: ``name -> bool``, a layer id, or a list of ids and names.
LayerSelection = Union[str, Callable[[str], bool], int, Sequence[Union[int, str]], None]

#: An optax-style mask: a tree of bools, a prefix of the params tree, or a callable
#: returning one; None selects every leaf.
Mask = Union[Any, Callable[[Any], Any], None]

#: ``tail=`` of the training-time alpha: ``"ks"``, ``"soft"``, ``"fraction"``, a share of the
#: spectrum (float) or a number of eigenvalues (int); :func:`jaxww.tail_spec` checks it.
Tail = Union[str, int, float]
