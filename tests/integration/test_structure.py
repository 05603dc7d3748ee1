"""The source tree keeps its house rules (tools/structure.py): imports run one way between
the stage folders with no circle, no module over 400 lines, no function over 60 code lines,
no private name used across modules."""

import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _structure():
    spec = importlib.util.spec_from_file_location("structure", ROOT / "tools" / "structure.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_source_tree_keeps_the_house_rules():
    assert _structure().breaches() == []


def test_the_checks_can_fail(tmp_path):
    """Each rule reports a tree that breaks it (a copy of the rules run on a made-up package)."""
    structure = _structure()
    pkg = tmp_path / "jaxww"
    (pkg / "fit").mkdir(parents=True)
    (pkg / "training").mkdir()
    for d in (pkg, pkg / "fit", pkg / "training"):
        (d / "__init__.py").write_text("")
    (pkg / "fit" / "a.py").write_text("from jaxww.training import b\n_x = 1\n")
    (pkg / "training" / "b.py").write_text(
        "from jaxww.fit import a\nfrom jaxww.fit.a import _x\n\n\ndef f():\n"
        + "".join(f"    y{i} = {i}\n" for i in range(61)) + "    return a._x\n")
    (pkg / "fit" / "big.py").write_text("x = 1\n" * 401)
    structure.PACKAGE = pkg
    found = "\n".join(structure.breaches())
    assert "imports jaxww.training.b, a higher stage" in found
    assert "private name _x of jaxww.fit.a" in found
    assert "uses the private name a._x" in found
    assert "fit/big.py: 401 lines" in found
    assert "function f has 62 code lines" in found
    assert "import circle: jaxww.fit.a -> jaxww.training.b -> jaxww.fit.a" in found
