"""The report stage: what an analysis shows, below the analysis that fills it.

``columns`` (every column list), ``report`` (:class:`~jaxww.report.report.Report` and its
DataFrames), ``html`` (what a notebook shows), ``export`` (JSON, CSV, HTML files),
``table`` (the command line's table), ``plots`` (figures). Nothing here imports
:mod:`jaxww.analysis`.
"""
