"""Run the notebooks headless, at a chosen size, and keep the executed copies.

Every notebook of this folder starts with one knob, in the cell tagged ``parameters``::

    SIZE = "small"   # "small": a laptop CPU, about a minute; "full": a GPU or TPU

This script executes notebooks with nbclient (``pip install ".[all]"`` installs it), with
``SIZE`` set by a cell injected after that one (as papermill does), each in a fresh
temporary directory (nothing is written next to the notebooks), and writes the executed
copies, outputs and figures included, to ``--out``. In the test suite the documentation
build executes them, at the stored small size (``tests/integration/test_docs_site.py``).

Run::

    python notebooks/run.py                                  # all four, small, into notebooks/executed/
    python notebooks/run.py 04_htsr_phenomena --size full    # one notebook, full size
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
SIZES = ("small", "full")


def notebooks() -> list[pathlib.Path]:
    """The notebooks of this folder, in their numbered order."""
    return sorted(HERE.glob("[0-9][0-9]_*.ipynb"))


def parameters_cell(nb) -> int:
    """The index of the cell tagged ``parameters`` (it must set ``SIZE``)."""
    for i, cell in enumerate(nb.cells):
        if "parameters" in cell.get("metadata", {}).get("tags", ()):
            return i
    raise ValueError("no cell tagged 'parameters' (the SIZE knob)")


def execute(path, size: str = "small", timeout: int = 600, pythonpath=None):
    """Execute a notebook at ``size``: ``(executed notebook, seconds)``.

    Args:
      path: the ``.ipynb`` file.
      size: ``"small"`` or ``"full"``, assigned to ``SIZE`` after the parameters cell.
      timeout: seconds allowed to any one cell.
      pythonpath: a directory put first on the kernel's ``PYTHONPATH`` (the suite passes the
        source tree under test, so the notebook imports that ``jaxww``).

    Raises:
      nbclient.exceptions.CellExecutionError: a cell failed (its traceback in the message).
    """
    import nbclient
    import nbformat
    from jupyter_client.manager import KernelManager

    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")
    nb = nbformat.read(str(path), as_version=4)
    at = parameters_cell(nb)
    injected = nbformat.v4.new_code_cell(f"SIZE = {size!r}", metadata={"tags": ["injected-parameters"]})
    nb.cells.insert(at + 1, injected)
    env = dict(os.environ)
    env.pop("MPLBACKEND", None)   # the kernel's own (inline) backend, as in a user's notebook
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(pythonpath)] + [p for p in [env.get("PYTHONPATH")] if p])
    with tempfile.TemporaryDirectory(prefix="jaxww-nb-") as cwd:
        # a local kernel over unix sockets in the temporary directory (over TCP the kernel
        # warns that its traffic is unencrypted)
        km = KernelManager(kernel_name="python3", transport="ipc", ip=os.path.join(cwd, "kernel"))
        client = nbclient.NotebookClient(nb, km=km, timeout=timeout, resources={"metadata": {"path": cwd}})
        start = time.perf_counter()
        try:
            client.execute(env=env)
        finally:
            if km.has_kernel:
                km.shutdown_kernel(now=True)
        return nb, time.perf_counter() - start


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help="notebooks to run (default: all), e.g. 01_quickstart")
    ap.add_argument("--size", choices=SIZES, default="small")
    ap.add_argument("--out", default=str(HERE / "executed"), help="folder for the executed copies")
    args = ap.parse_args(argv)
    try:
        import nbclient
        import nbformat
    except ImportError as err:
        ap.error(f"{err.name} is missing: pip install '.[all]' installs what runs the notebooks")

    paths = notebooks()
    if args.names:
        by_name = {p.stem: p for p in paths}
        unknown = [n for n in args.names if n.removesuffix(".ipynb") not in by_name]
        if unknown:
            ap.error(f"no notebook {', '.join(unknown)} (there are {', '.join(by_name)})")
        paths = [by_name[n.removesuffix(".ipynb")] for n in args.names]
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    failed = 0
    for path in paths:
        try:
            nb, seconds = execute(path, args.size)
        except nbclient.exceptions.CellExecutionError as err:
            failed += 1
            print(f"{path.name}: a cell failed at size {args.size}:\n{err}", file=sys.stderr)
            continue
        nbformat.write(nb, str(out / path.name))
        print(f"{path.name}: {seconds:.0f} s at size {args.size} -> {out / path.name}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
