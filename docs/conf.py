"""Sphinx configuration of the jaxww documentation site.

Build it (``pip install ".[docs]"``) from the project root::

    sphinx-build -W --keep-going -b html docs docs/_build/html

The pages are MyST Markdown (``docs/*.md``), the API reference is autodoc over the public
names of ``jaxww/__init__.pyi`` (``docs/api/*.md``), and the notebooks (``docs/notebooks``,
a link to ``notebooks/``) are executed by myst-nb at their stored size (``SIZE = "small"``),
so the site shows their outputs while the committed notebooks stay output-free. A cell that
fails fails the build. ``tests/integration/test_docs_site.py`` runs this build.
"""

import os
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.pop("MPLBACKEND", None)   # the notebooks' kernels draw with the inline backend

import jaxww  # noqa: E402  (after the path: the jaxww of this source tree)

project = "jaxww"
author = "the jaxww authors"
copyright = "the jaxww authors, Apache-2.0"
release = version = jaxww.__version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
]
exclude_patterns = ["_build", "notebooks/executed", "**/.ipynb_checkpoints", "Thumbs.db", ".DS_Store"]

# MyST: anchors for the `page.md#section` links the pages use between themselves.
myst_enable_extensions = ["colon_fence", "deflist", "dollarmath"]
myst_heading_anchors = 3

# myst-nb: execute every notebook (the stored ones have no outputs) in a temporary directory,
# at the size of its `parameters` cell; a failing cell fails the build.
nb_execution_mode = "force"
nb_execution_in_temp = True
nb_execution_timeout = 600
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True

# autodoc + napoleon: Google-style docstrings, documented under the names users import.
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_default_options = {"members": True, "undoc-members": False}
autosummary_generate = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True
add_module_names = False
maximum_signature_line_length = 88   # a long signature gets one parameter a line

html_theme = "sphinx_book_theme"
html_title = "jaxww"
html_theme_options = {
    "repository_url": "https://github.com/jaxww/jaxww",
    "use_repository_button": False,
    "show_toc_level": 2,
    "navigation_with_keys": False,
}
html_static_path = ["_static"]
html_css_files = ["jaxww.css"]
