"""Layers without loops in the product, read from the source (importgraph.py: imports inside functions
count). Held here: the settings are the pure layer (YAML and pydantic, nothing that talks to the world,
no other netviz module); no import loop anywhere in the package; the sensor and the checks import no
asset module."""
from __future__ import annotations

import subprocess
import sys

from importgraph import cycles, import_graph, loaded_by

PACKAGE = "netviz_pipeline"
# What the settings layer may load beyond the standard library: parsing and validation, no I/O clients.
PURE_THIRD_PARTY = {"yaml", "pydantic"}
PURE_OWN = {PACKAGE, f"{PACKAGE}.settings"}  # the package's __init__ (module level) and the settings
FORBIDDEN = ("paramiko", "requests", "kubernetes", "dagster", "urllib3")


def _third_party(names: set[str]) -> set[str]:
    return {n.split(".")[0] for n in names} - set(sys.stdlib_module_names) - {"__future__", PACKAGE}


# -- (a) the settings layer is pure --------------------------------------------------------------
def test_settings_import_nothing_that_does_io_nor_other_netviz_modules():
    loaded = loaded_by(import_graph(PACKAGE), f"{PACKAGE}.settings")
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
    graph = import_graph(PACKAGE)
    assert graph[f"{PACKAGE}.routers.registry"][f"{PACKAGE}.routers.opnsense"] is True  # from . import opnsense
    assert graph[f"{PACKAGE}.loading"][f"{PACKAGE}.routers.registry"] is True  # from .routers import registry
    assert graph[PACKAGE].get(f"{PACKAGE}.definitions") is False  # the lazy `defs`
    assert f"{PACKAGE}.settings" in graph[f"{PACKAGE}.routers.opnsense"]
    assert f"{PACKAGE}.definitions" not in loaded_by(graph, f"{PACKAGE}.settings")
    assert f"{PACKAGE}.definitions" in loaded_by({**graph, "x": {PACKAGE: True}}, "x")  # `from pkg import defs`


# -- no cycles where settings meet the routers -----------------------------------------------------
def test_no_import_cycles_in_routers_and_settings():
    graph = import_graph(PACKAGE)
    nodes = {m for m in graph if m in (f"{PACKAGE}.settings", f"{PACKAGE}.loading", f"{PACKAGE}.resources.router")
             or m == f"{PACKAGE}.routers" or m.startswith(f"{PACKAGE}.routers.")}
    assert {f"{PACKAGE}.routers.registry", f"{PACKAGE}.routers.opnsense", f"{PACKAGE}.loading"} <= nodes
    sub = {m: {t for t in graph[m] if t in nodes} for m in nodes}
    assert cycles(sub) == []
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]  # the check can fail


def _own_graph() -> dict[str, set[str]]:
    graph = import_graph(PACKAGE)
    return {m: {t for t in graph[m] if t in graph} for m in graph}


def test_no_import_cycles_anywhere_in_the_package():
    """Counting imports inside functions; a package's __init__ that re-exports from its own modules is
    the one edge left out (importing `pkg.mod` runs `pkg/__init__` first, so that edge is the parent
    relation, not a loop)."""
    graph = _own_graph()
    no_parent_edges = {m: {t for t in ts if not t.startswith(m + ".")} for m, ts in graph.items()}
    assert cycles(no_parent_edges) == []


def test_the_sensor_and_the_checks_import_no_asset_module():
    graph = import_graph(PACKAGE)
    for module in (f"{PACKAGE}.sensors", *(m for m in graph if m.startswith(f"{PACKAGE}.checks"))):
        assets = sorted(m for m in loaded_by(graph, module) if m.startswith(f"{PACKAGE}.assets"))
        assert assets == [], f"{module} loads {assets}"
