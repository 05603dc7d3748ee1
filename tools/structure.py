"""The house rules of jaxww's source tree, checked from its text (run by the suite).

``python tools/structure.py`` prints every breach and exits 1 if there is any:

* imports run one way: a module imports only from its own folder or from a folder lower
  in :data:`STAGES` (function-local imports included), and no import circle anywhere;
* no module over :data:`MAX_MODULE_LINES` lines, no function over :data:`MAX_FUNCTION_LINES`
  code lines (docstring, comments and blank lines not counted);
* no underscore name used across modules (``from m import _x`` or ``m._x`` of another
  jaxww module).
"""

from __future__ import annotations

import ast
import pathlib
import sys

#: The folders of the pipeline, lowest first; ``""`` is the package's top-level modules.
STAGES = ("base", "reading", "linalg", "fit", "report", "analysis", "training", "")
#: Top-level modules below every stage (imported by any of them).
BASE = ("jaxww.defaults", "jaxww.typing", "jaxww.checks")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "jaxww"


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def stage(module: str) -> int:
    """The position in :data:`STAGES` of a jaxww module."""
    if module in BASE:
        return 0
    parts = module.split(".")
    return STAGES.index(parts[1]) if len(parts) > 2 or (len(parts) == 2 and parts[1] in STAGES) \
        else len(STAGES) - 1


def imports(tree: ast.AST, modules: set) -> list[tuple[int, str, list]]:
    """``(line, module, names)`` of every jaxww import; ``from jaxww.x import y`` of a
    module ``y`` counts as an import of ``jaxww.x.y``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "jaxww":
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.append((node.lineno, sub if sub in modules else node.module,
                              [] if sub in modules else [alias.name]))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name, []) for a in node.names if a.name.split(".")[0] == "jaxww"]
    return found


def module_aliases(tree: ast.AST, modules: set) -> set:
    """Local names bound to a jaxww module (``from jaxww.fit import tail as _tail``)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "jaxww":
            names |= {a.asname or a.name for a in node.names if f"{node.module}.{a.name}" in modules}
    return names


def code_lines(func: ast.AST, lines: list) -> int:
    body = func.body[1:] if ast.get_docstring(func) is not None else func.body
    start, end = body[0].lineno if body else func.lineno, func.end_lineno
    return sum(1 for text in lines[start - 1:end] if text.strip() and not text.strip().startswith("#"))


def breaches() -> list[str]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    graph: dict[str, set] = {}
    out = []
    for path in paths:
        name, text = module_name(path), path.read_text()
        tree, lines = ast.parse(text), text.splitlines()
        where = path.relative_to(PACKAGE.parent)
        if len(lines) > MAX_MODULE_LINES:
            out.append(f"{where}: {len(lines)} lines (at most {MAX_MODULE_LINES})")
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = code_lines(node, lines)
                if n > MAX_FUNCTION_LINES:
                    out.append(f"{where}:{node.lineno}: function {node.name} has {n} code lines "
                               f"(at most {MAX_FUNCTION_LINES})")
        graph[name] = set()
        for line, target, names in imports(tree, modules):
            if target == "jaxww" or target == name:
                continue
            graph[name].add(target)
            if stage(target) > stage(name) and not target.startswith(name + "."):
                out.append(f"{where}:{line}: imports {target}, a higher stage")
            out += [f"{where}:{line}: imports the private name {n} of {target}"
                    for n in names if n.startswith("_") and not n.startswith("__")]
        aliases = module_aliases(tree, modules)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                out.append(f"{where}:{node.lineno}: uses the private name {node.value.id}.{node.attr}")
    return out + [f"import circle: {' -> '.join(c)}" for c in circles(graph)]


def circles(graph: dict) -> list[list]:
    """One cycle per strongly connected component of more than one module."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp) + [sorted(comp)[0]])

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


if __name__ == "__main__":
    problems = breaches()
    print("\n".join(problems) or "the source tree keeps the house rules")
    sys.exit(1 if problems else 0)
