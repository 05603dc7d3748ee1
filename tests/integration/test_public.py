"""The public face: ``jaxww/__init__.pyi`` is the one list of the public names; a type
checker reads it, and ``import jaxww`` serves each name from the module the stub names,
importing nothing heavy until a name is used."""

import ast
import importlib
import inspect
import pathlib
import subprocess
import sys

import jaxww

STUB = pathlib.Path(jaxww.__file__).with_name("__init__.pyi")


def _stub_imports():
    tree = ast.parse(STUB.read_text())
    return [(node.module, a.name, a.asname) for node in tree.body if isinstance(node, ast.ImportFrom)
            for a in node.names]


def test_every_stub_name_is_the_object_its_module_defines():
    names = [(m, n, a) for m, n, a in _stub_imports() if m != "jaxww"]
    assert sorted(a for _, _, a in names) == jaxww.__all__
    for module, name, alias in names:
        assert name == alias, f"{module}.{name} re-exported as {alias}: the stub says 'X as X'"
        obj = getattr(importlib.import_module(module), name)
        assert getattr(jaxww, name) is obj
        home = getattr(obj, "__module__", module)
        if inspect.isfunction(obj) or inspect.isclass(obj):
            assert home == module, f"jaxww.{name} is defined in {home}, the stub names {module}"


def test_only_the_stage_folders_are_module_attributes():
    code = ("import jaxww, sys\n"
            "light = 'jax' not in sys.modules and 'numpy' not in sys.modules\n"
            "private = [n for n in ('cli', 'demo', 'defaults', 'checks', 'typing', 'spectra', 'report.report')"
            " if hasattr(jaxww, n)]\n"
            "stages = [n for n in ('reading', 'linalg', 'fit', 'report', 'analysis', 'training')"
            " if hasattr(jaxww, n)]\n"
            "print(len(stages), private, light, set(dir(jaxww)) >= set(jaxww.__all__))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["6", "[]", "True", "True"], out
