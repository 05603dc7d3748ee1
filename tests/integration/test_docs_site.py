"""The documentation site (``docs/``, Sphinx + myst-nb) builds with warnings as errors.

The build is where the notebooks are executed in the suite (at their stored size,
``SIZE = "small"``): a broken cross-reference, a page missing from the toctree, a docstring
that does not parse or a notebook cell that fails is red. ``test_notebooks.py`` checks the
stored notebook files; this test checks what the site shows of them.
"""

from __future__ import annotations

import ast
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
API_PAGES = sorted((DOCS / "api").glob("*.md"))
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
ENTRY = re.compile(r"^\.\. (?:autofunction|autoclass|data):: (\w+)$", re.M)


def _public_names() -> list[str]:
    tree = ast.parse((ROOT / "jaxww" / "__init__.pyi").read_text())
    return [a.asname for node in tree.body if isinstance(node, ast.ImportFrom) and node.module != "jaxww"
            for a in node.names]


def test_every_public_name_has_one_api_entry():
    entries = [name for page in API_PAGES for name in ENTRY.findall(page.read_text())]
    assert sorted(entries) == sorted(_public_names()), (
        f"missing: {sorted(set(_public_names()) - set(entries))}, "
        f"not public: {sorted(set(entries) - set(_public_names()))}, "
        f"twice: {sorted({n for n in entries if entries.count(n) > 1})}")


def build(out: pathlib.Path) -> subprocess.CompletedProcess:
    """``sphinx-build -W --keep-going -b html docs out/html``, importing this source tree."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("MPLBACKEND", None)   # the notebooks' kernels draw inline, as in a user's notebook
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", "-q",
           "-d", str(out / "doctrees"), str(DOCS), str(out / "html")]
    return subprocess.run(cmd, cwd=out, env=env, capture_output=True, text=True, timeout=1800)


def _failure(stderr: str) -> str:
    """The build's warnings, and the traceback Sphinx saved when it stopped (a failed notebook)."""
    saved = re.findall(r"\S*sphinx-err-\S+\.log", stderr)
    return "\n".join([stderr[-4000:]] + [pathlib.Path(p).read_text()[-4000:] for p in saved if os.path.exists(p)])


@pytest.mark.slow
def test_site_builds_with_warnings_as_errors(tmp_path):
    for module in ("sphinx", "myst_nb", "sphinx_book_theme", "nbclient", "ipykernel"):
        pytest.importorskip(module)
    tracked = {p: sorted(q.name for q in p.iterdir()) for p in (DOCS, ROOT / "notebooks")}
    proc = build(tmp_path)
    assert proc.returncode == 0, _failure(proc.stderr)
    html = tmp_path / "html"
    api = "".join((html / "api" / f"{p.stem}.html").read_text() for p in API_PAGES)
    assert [n for n in _public_names() if f'id="jaxww.{n}"' not in api] == []
    for path in NOTEBOOKS:
        page = (html / "notebooks" / f"{path.stem}.html").read_text()
        assert re.search(r'<img[^>]+src="[^"]*_images/', page), f"{path.stem}: no figure shown"
        assert "cell_output" in page, f"{path.stem}: no outputs"
    assert {p: sorted(q.name for q in p.iterdir()) for p in tracked} == tracked, "the build wrote into the sources"
