"""The stored notebooks: four of them, each clean and ready to run at its small size.

They are executed once in the suite, by the documentation build
(``tests/integration/test_docs_site.py``: myst-nb runs each in a fresh kernel and a
temporary directory, at the stored ``SIZE = "small"``, and a failing cell fails the build);
``notebooks/run.py`` runs them as a user would. Checked here on the stored files: the ``SIZE`` knob comes
first, no outputs are stored (figures are outputs of a run, never tracked files, so a
stale figure or number cannot be committed), and the text states no measured number (a
decimal fraction outside code): the code prints those, from the same run.
"""

from __future__ import annotations

import importlib.util
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("notebooks_run", ROOT / "notebooks" / "run.py")
run = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run)

nbformat = pytest.importorskip("nbformat")
NOTEBOOKS = run.notebooks()
EXPECTED = ["01_quickstart", "02_alpha_in_training", "03_scale", "04_htsr_phenomena", "05_batch_size"]


def _read(path):
    return nbformat.read(str(path), as_version=4)


def test_the_notebooks_are_there():
    assert [p.stem for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_notebook_is_clean(path):
    nb = _read(path)
    code = [c for c in nb.cells if c.cell_type == "code"]
    first = code[0]
    assert "parameters" in first.metadata.get("tags", ()), "the first code cell is the SIZE knob"
    assert re.match(r'SIZE = "small"', first.source), first.source
    assert run.parameters_cell(nb) == nb.cells.index(first)
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None, f"stored outputs in: {cell.source[:60]!r}"
        assert "sys.path" not in cell.source, "a notebook imports the installed jaxww, nothing by path"
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            prose = re.sub(r"`[^`]*`|\$[^$]*\$|```.*?```", "", cell.source, flags=re.S)
            assert not re.search(r"\d\.\d", prose), f"a measured number in the text: {cell.source[:200]!r}"
