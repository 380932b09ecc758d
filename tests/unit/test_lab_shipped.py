"""netviz_lab/shipped/: what runs inside the lab's images and router/LAN namespaces is stdlib only
(the rule in netviz_lab/shipped/__init__.py), and every file the host code ships is there."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from netviz_lab import shipped

SHIPPED = Path(shipped.__file__).resolve().parent
MODULES = sorted(p for p in SHIPPED.rglob("*.py") if "__pycache__" not in p.parts)


def non_stdlib_imports(path: Path) -> list[str]:
    """Every import in the file (anywhere: module level, functions, branches) that is not the standard
    library's, relative imports included (they would reach the lab)."""
    bad = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                bad.append(f"line {node.lineno}: relative import from {'.' * node.level}{node.module or ''}")
                continue
            names = [node.module or ""]
        else:
            continue
        bad += [f"line {node.lineno}: {n}" for n in names if n.split(".")[0] not in sys.stdlib_module_names]
    return bad


def test_the_fence_sees_every_shipped_program():
    names = {p.relative_to(SHIPPED).as_posix() for p in MODULES}
    assert {"__init__.py", "caretta_standin.py", "routerinit.py", "traffic.py", "pfsense/__init__.py",
            "pfsense/pfsense_emu.py"} <= names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.relative_to(SHIPPED).as_posix())
def test_stdlib_only(path: Path):
    assert non_stdlib_imports(path) == []


def test_the_check_catches_what_it_must(tmp_path):
    f = tmp_path / "x.py"
    f.write_text("import os, json\nfrom http.server import HTTPServer\ndef f():\n    import yaml\n"
                 "    from netviz_lab import proc\n    from . import sibling\n    from .. import lab\n")
    assert non_stdlib_imports(f) == ["line 4: yaml", "line 5: netviz_lab", "line 6: relative import from .",
                                     "line 7: relative import from .."]


def test_every_path_the_host_ships_exists():
    for name in ("CARETTA_STANDIN", "ROUTERINIT", "PFSENSE_EMU", "SOFTFLOWD_BOOT", "TRAFFIC", "PAUSE_C"):
        path = getattr(shipped, name)
        assert path.is_file() and path.resolve().parent.is_relative_to(SHIPPED), name
    # run as programs (a file path, not a module of the lab): executable where the host copies them as is
    assert os.access(shipped.PFSENSE_EMU, os.X_OK) and os.access(shipped.SOFTFLOWD_BOOT, os.X_OK)


def test_traffic_runs_alone_without_site_packages():
    """As the lab runs it in the LAN/WAN namespaces: a file, nothing but the stdlib on sys.path."""
    res = subprocess.run([sys.executable, "-I", "-S", str(shipped.TRAFFIC), "--help"], capture_output=True,
                         text=True, timeout=30, env={"PATH": os.environ.get("PATH", "")})
    assert res.returncode == 0, res.stderr
    assert "server" in res.stdout and "client" in res.stdout
