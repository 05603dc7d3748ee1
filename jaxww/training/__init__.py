"""The training stage: alpha inside and beside a training loop.

* :mod:`~jaxww.training.plan`: which weight matrices of a params tree are computed together
  (read as :func:`jaxww.analyze` reads them), and how results go back to the leaves.
* :mod:`~jaxww.training.estimates`: the differentiable alpha (``spectrum``, ``alpha``,
  ``tail_alpha``, ``tree_alpha``).
* :mod:`~jaxww.training.penalties`: the loss terms built on it (``alpha_penalty``,
  ``weighted_alpha_penalty``, ``spectral_norm_penalty``).
* :mod:`~jaxww.training.transforms`: the optax transforms, one factory a module
  (:mod:`~jaxww.training.regularization`, :mod:`~jaxww.training.scaling`) over what they
  share (:mod:`~jaxww.training.refresh`, :mod:`~jaxww.training.misuse`).
* :mod:`~jaxww.training.tracking`: ``Tracker``, ``analyze`` in the background every ``k``
  steps (its worker: :mod:`~jaxww.training.worker`); :mod:`~jaxww.training.history`:
  ``History``, ``from_checkpoints``, ``plot_history``.
"""
