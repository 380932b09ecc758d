"""Layers without loops, read from the source (ast), not from what one test run happened to import.

`import_graph` lists what every module of a package may import: module-level imports and imports inside
functions and methods alike (a function's import runs whenever it is called), relative imports resolved;
only `if TYPE_CHECKING:` blocks are left out (they never run). Importing a module also runs its parent
packages' __init__, at module level only (a PEP 562 `__getattr__` there runs when the attribute is asked
for): `loaded_by` follows that.

What is held here: the settings are the pure layer (YAML and pydantic, nothing that talks to the world,
no other netviz module), and settings, loading, the router platforms and the SSH resource import one
another without a cycle. The whole package's acyclicity is not asserted yet."""
from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

PACKAGE = "netviz_pipeline"
# What the settings layer may load beyond the standard library: parsing and validation, no I/O clients.
PURE_THIRD_PARTY = {"yaml", "pydantic"}
PURE_OWN = {PACKAGE, f"{PACKAGE}.settings"}  # the package's __init__ (module level) and the settings
FORBIDDEN = ("paramiko", "requests", "kubernetes", "dagster", "urllib3")


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


def import_graph(package: str = PACKAGE) -> dict[str, dict[str, bool]]:
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


def _parents(module: str) -> list[str]:
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
        todo += [(p, False) for p in _parents(m) if p in graph]
    return loaded


def _third_party(names: set[str]) -> set[str]:
    return {n.split(".")[0] for n in names} - set(sys.stdlib_module_names) - {"__future__", PACKAGE}


# -- (a) the settings layer is pure --------------------------------------------------------------
def test_settings_import_nothing_that_does_io_nor_other_netviz_modules():
    loaded = loaded_by(import_graph(), f"{PACKAGE}.settings")
    own = {m for m in loaded if m.split(".")[0] == PACKAGE}
    assert own <= PURE_OWN, f"settings load other netviz modules: {sorted(own - PURE_OWN)}"
    assert _third_party(loaded) <= PURE_THIRD_PARTY, sorted(_third_party(loaded) - PURE_THIRD_PARTY)
    assert not [m for m in loaded if m.split(".")[0] in FORBIDDEN]


def test_importing_settings_loads_no_client_library():
    """The same, as the interpreter sees it (a fresh one: this test run has imported everything)."""
    code = ("import sys, netviz_pipeline.settings; "
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(FORBIDDEN)!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_graph_sees_imports_inside_functions_and_resolves_relative_ones():
    graph = import_graph()
    assert graph[f"{PACKAGE}.routers.registry"][f"{PACKAGE}.routers.opnsense"] is True  # from . import opnsense
    assert graph[f"{PACKAGE}.loading"][f"{PACKAGE}.routers.registry"] is True  # from .routers import registry
    assert graph[PACKAGE].get(f"{PACKAGE}.definitions") is False  # the lazy `defs`
    assert f"{PACKAGE}.settings" in graph[f"{PACKAGE}.routers.opnsense"]
    assert f"{PACKAGE}.definitions" not in loaded_by(graph, f"{PACKAGE}.settings")
    assert f"{PACKAGE}.definitions" in loaded_by({**graph, "x": {PACKAGE: True}}, "x")  # `from pkg import defs`


# -- no cycles where settings meet the routers -----------------------------------------------------
def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
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


def test_no_import_cycles_in_routers_and_settings():
    graph = import_graph()
    nodes = {m for m in graph if m in (f"{PACKAGE}.settings", f"{PACKAGE}.loading", f"{PACKAGE}.resources.router")
             or m == f"{PACKAGE}.routers" or m.startswith(f"{PACKAGE}.routers.")}
    assert {f"{PACKAGE}.routers.registry", f"{PACKAGE}.routers.opnsense", f"{PACKAGE}.loading"} <= nodes
    sub = {m: {t for t in graph[m] if t in nodes} for m in nodes}
    assert _cycles(sub) == []
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]  # the check can fail


def _own_graph() -> dict[str, set[str]]:
    graph = import_graph()
    return {m: {t for t in graph[m] if t in graph} for m in graph}


def test_no_import_cycles_anywhere_in_the_package():
    """Counting imports inside functions; a package's __init__ that re-exports from its own modules is
    the one edge left out (importing `pkg.mod` runs `pkg/__init__` first, so that edge is the parent
    relation, not a loop)."""
    graph = _own_graph()
    no_parent_edges = {m: {t for t in ts if not t.startswith(m + ".")} for m, ts in graph.items()}
    assert _cycles(no_parent_edges) == []


def test_the_sensor_and_the_checks_import_no_asset_module():
    graph = import_graph()
    for module in (f"{PACKAGE}.sensors", *(m for m in graph if m.startswith(f"{PACKAGE}.checks"))):
        assets = sorted(m for m in loaded_by(graph, module) if m.startswith(f"{PACKAGE}.assets"))
        assert assets == [], f"{module} loads {assets}"
