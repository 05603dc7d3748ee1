"""The analysis stage: :func:`~jaxww.analysis.analyze.analyze` and what is built on it.

``analyze`` runs its stages in order, each handing the next a typed value: reading
(:func:`jaxww.reading.layers.read_layers`), ``eigenvalues`` (over ``streaming``),
``fitting`` (with the ``optional`` analyses and ``randomize``), ``rows``; ``arguments``
records its options, ``progress`` counts the work, ``specs`` keys the jitted programs.
``describe``, ``diff`` and ``smoothing`` use the same reading and analysis.
"""
