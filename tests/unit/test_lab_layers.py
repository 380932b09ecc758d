"""The lab's layers: its import graph has no loop (imports inside functions count), and what it ships
(netviz_lab/shipped/) imports nothing from the lab."""
from __future__ import annotations

import ast
from pathlib import Path

import importgraph

import netviz_lab

LAB = Path(netviz_lab.__file__).resolve().parent
SHIPPED = "netviz_lab.shipped"


def module_name(path: Path) -> str:
    rel = path.relative_to(LAB.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def lab_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(LAB.rglob("*.py")) if "__pycache__" not in p.parts}


def _resolve(name: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = name.split(".") if is_package else name.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def lab_imports(name: str, path: Path, known: set[str]) -> list[tuple[str, str, str]]:
    """(imported module, imported name, local name) for every import anywhere in the file (module level,
    functions, branches), relative imports resolved. `from X import y` imports module X.y when that is
    a module, else X (the name y comes from X's file or its package __init__)."""
    is_package = path.name == "__init__.py"
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(alias.name, "", alias.asname or alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(name, is_package, node)
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                out.append((sub, "", alias.asname or alias.name) if sub in known else
                           (target, alias.name, alias.asname or alias.name))
    return out


def import_graph() -> dict[str, set[str]]:
    """netviz_lab module -> the netviz_lab modules it imports, anywhere in its file (importgraph.py)."""
    graph = importgraph.import_graph("netviz_lab")
    return {m: {t for t in edges if t in graph} - {m} for m, edges in graph.items()}


def test_graph_sees_the_lab():
    graph = import_graph()
    assert {"netviz_lab.__main__", "netviz_lab.supervisor", "netviz_lab.images.builder", SHIPPED} <= set(graph)
    assert "netviz_lab.lab" in graph["netviz_lab.supervisor"]
    assert "netviz_lab.images.builder" in graph["netviz_lab.images.recipes"]  # `from .builder import ...`
    assert "netviz_lab.cluster" in graph["netviz_lab.__main__"]  # an import inside a function counts


def test_lab_import_graph_is_acyclic():
    assert importgraph.cycles(import_graph()) == []


def test_supervisor_imports_no_component():
    """Components (hostnet, router, cluster, prometheus, nodes) import the supervisor's Service, so the
    supervisor must be given them, never import them."""
    assert import_graph()["netviz_lab.supervisor"] <= {"netviz_lab.lab", "netviz_lab.proc"}


def test_shipped_imports_nothing_from_the_lab():
    graph = import_graph()
    shipped = {m for m in graph if m == SHIPPED or m.startswith(SHIPPED + ".")}
    assert len(shipped) >= 5
    offenders = {m: sorted(graph[m]) for m in shipped if graph[m]}
    assert not offenders, f"shipped programs import the lab: {offenders}"


def test_no_module_uses_another_modules_private_names():
    """`module._name` on an imported netviz_lab module, or `from .module import _name`: the other module
    needs a public name for it."""
    mods = lab_modules()
    known = set(mods)
    offenders = []
    for name, path in mods.items():
        imports = [(m, n, local) for m, n, local in lab_imports(name, path, known) if m.startswith("netviz_lab")]
        offenders += [f"{name}: from {m} import {n}" for m, n, _ in imports if n.startswith("_")]
        modules = {local for m, n, local in imports if not n and m in known}
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                offenders.append(f"{name}:{node.lineno}: {node.value.id}.{node.attr}")
    assert not offenders, offenders
