"""jaxww: Heavy-Tailed Self-Regularization (HTSR) analysis of JAX/Flax models.

The pipeline, one folder per stage, each importing only those before it::

    params, model or checkpoint --reading/--> weight matrices --linalg/--> eigenvalues
        --fit/--> alpha, xmin, D, norms, ranks --report/--> Report
    analysis/: ``analyze`` and the optional analyses over those stages; training/: the
    penalties, optax transforms and tracking that use them inside a training loop.

Names are imported on first use (``import jaxww`` loads neither JAX nor NumPy), so the
command line starts at once.
"""

import ast
import importlib
import os

__version__ = "0.1.0"


def _public_names() -> dict:
    """``{name: module}`` of the public names, read from the stub beside this file
    (``__init__.pyi``: the one list of them, which type checkers and IDEs follow)."""
    with open(os.path.join(os.path.dirname(__file__), "__init__.pyi"), encoding="utf-8") as f:
        stub = ast.parse(f.read())
    return {alias.asname or alias.name: node.module for node in stub.body
            if isinstance(node, ast.ImportFrom) and node.module != __name__ for alias in node.names}


_WHERE = _public_names()
#: The stage folders, public subpackages (``jaxww.fit.tail``, ...); no other module is an
#: attribute of the package.
_SUBPACKAGES = ("analysis", "fit", "linalg", "reading", "report", "training")

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    """A public name (imported from its module on first use) or a stage subpackage."""
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    if name in _SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'jaxww' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_WHERE) | set(_SUBPACKAGES))
