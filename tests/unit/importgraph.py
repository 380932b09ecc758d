"""The import graph of a package, read from the source (ast), not from what one test run happened to import.

`import_graph` lists what every module of a package may import: module-level imports and imports inside
functions and methods alike (a function's import runs whenever it is called), relative imports resolved;
only `if TYPE_CHECKING:` blocks are left out (they never run). Importing a module also runs its parent
packages' __init__, at module level only (a PEP 562 `__getattr__` there runs when the attribute is asked
for): `loaded_by` follows that. `cycles` finds import loops. Used by test_layers.py (the product) and
test_lab_layers.py (the lab)."""
from __future__ import annotations

import ast
import importlib.util
from pathlib import Path


def _modules(package: str) -> dict[str, Path]:
    root = Path(importlib.util.find_spec(package).submodule_search_locations[0])  # finds, does not import
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def import_graph(package: str) -> dict[str, dict[str, bool]]:
    """module -> {what it imports: True when at module level, False when inside a function}, for every
    module of `package`. A target inside the package is a module of it (`from .x import Name` -> the
    module x; `from . import x` -> x); an outside one is named as written (`from a import b` -> a and a.b)."""
    modules = _modules(package)
    graph: dict[str, dict[str, bool]] = {}
    for name, path in modules.items():
        is_pkg = path.name == "__init__.py"
        edges: dict[str, bool] = {}

        def add(target: str, top: bool) -> None:
            edges[target] = edges.get(target, False) or top

        def visit(node: ast.AST, top: bool) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.If) and _is_type_checking(child.test):
                    for other in child.orelse:
                        visit(other, top)
                    continue
                if isinstance(child, ast.Import):
                    for alias in child.names:
                        add(alias.name, top)
                elif isinstance(child, ast.ImportFrom):
                    if child.level:
                        base = name.split(".") if is_pkg else name.split(".")[:-1]
                        base = base[:len(base) - (child.level - 1)]
                        source = ".".join(base + ([child.module] if child.module else []))
                    else:
                        source = child.module
                    internal = source == package or source.startswith(package + ".")
                    for alias in child.names:
                        sub = f"{source}.{alias.name}"
                        if internal:
                            add(sub if sub in modules else source, top)
                        else:
                            add(source, top)
                            if alias.name != "*":
                                add(sub, top)
                visit(child, top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

        visit(ast.parse(path.read_text(), str(path)), True)
        graph[name] = edges
    return graph


def parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def loaded_by(graph: dict[str, dict[str, bool]], module: str) -> set[str]:
    """Everything importing `module` may load: its imports (any level) and theirs, and each loaded module's
    parent packages with their module-level imports."""
    loaded: set[str] = set()
    done: set[tuple[str, bool]] = set()
    todo = [(module, True)]  # (module, all of its imports or only its module-level ones)
    while todo:
        m, everything = todo.pop()
        if (m, everything) in done or (m, True) in done:
            continue
        done.add((m, everything))
        loaded.add(m)
        todo += [(t, True) for t, top in graph.get(m, {}).items() if everything or top]
        todo += [(p, False) for p in parents(m) if p in graph]
    return loaded


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component that has one (Tarjan), as a path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph[v]:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return found
