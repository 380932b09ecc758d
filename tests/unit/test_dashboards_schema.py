"""Every dashboard decoded strictly with Grafana's own schema types (tools/dashcheck: the Grafana
Foundation SDK v0.0.22, every panel and query plugin registered), and proof the check can fail."""
from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from netviz_pipeline.render.dashboards import DASHBOARD_DIR

REPO = Path(__file__).resolve().parents[2]
DASHCHECK = Path(os.environ.get("NETVIZ_DASHCHECK", REPO / ".build" / "dashcheck"))
MISSING = "required field is missing from input"  # the SDK's message, exactly
ACCEPTED = "[accepted: missing-required-with-default]"
SUMMARY = re.compile(r"^dashcheck: (\d+) files, (\d+) panels, (\d+) missing-required-with-default \(accepted\), "
                     r"(\d+) errors")


@pytest.fixture(scope="module")
def dashcheck() -> str:
    if not os.access(DASHCHECK, os.X_OK):
        pytest.fail(f"{DASHCHECK} is not built: run `make dashcheck` (`make unit-test` and `make test` build it first)")
    return str(DASHCHECK)


def run(dashcheck: str, *files: Path, strict: bool = False) -> tuple[int, list[str], tuple[int, ...]]:
    args = [dashcheck, *(["-strict"] if strict else []), *map(str, files)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    *lines, last = done.stdout.splitlines()
    summary = SUMMARY.match(last)
    assert summary, done.stdout + done.stderr
    return done.returncode, lines, tuple(map(int, summary.groups()))


def dashboards() -> list[Path]:
    found = sorted(DASHBOARD_DIR.glob("*.json"))
    assert {p.name for p in found} >= {"caretta.json", "goflow2.json"}
    return found


def test_every_dashboard_passes_grafanas_schema(dashcheck):
    files = dashboards()
    rc, lines, (nfiles, panels, accepted, errors) = run(dashcheck, *files)
    assert rc == 0 and errors == 0, "\n".join(lines)
    assert nfiles == len(files)
    assert panels == sum(1 + len(panel.get("panels", []))  # a row's own panels count too
                         for p in files for panel in json.loads(p.read_text())["panels"])
    # What passes is exactly the one accepted class: the SDK's own message, nothing else.
    assert len(lines) == accepted
    assert all(line.endswith(f": {MISSING} {ACCEPTED}") for line in lines), "\n".join(lines)


def test_strict_mode_reports_the_accepted_lines_as_errors(dashcheck):
    """-strict accepts nothing: the same lines, now failing, so acceptance hides nothing else."""
    files = dashboards()
    _, lines, (_, _, accepted, _) = run(dashcheck, *files)
    rc, strict_lines, (_, _, strict_accepted, errors) = run(dashcheck, *files, strict=True)
    assert strict_accepted == 0 and errors == accepted and rc == (1 if accepted else 0)
    assert [line.replace(ACCEPTED, "[error: missing-required]") for line in lines] == strict_lines


def _first(d: dict, panel_type: str) -> int:
    return next(i for i, p in enumerate(d["panels"]) if p["type"] == panel_type)


def _panel_field(d):
    d["panels"][0]["colour"] = "red"
    return "$.panels[0].colour", "unknown-field"


def _grid_type(d):
    d["panels"][1]["gridPos"]["h"] = "eight"
    return "$.panels[1].gridPos.h", "wrong-type"


def _top_field(d):
    d["bogus"] = True
    return "$.bogus", "unknown-field"


def _grid_constraint(d):  # panel constraints: the SDK's Dashboard.Validate never reaches panels itself
    d["panels"][2]["gridPos"]["w"] = 30
    return "$.panels[2].gridPos.w", "failed-constraint"


def _option_field(d):  # options go through the panel plugin's own types
    i = _first(d, "timeseries")
    d["panels"][i]["options"]["legendz"] = {}
    return f"$.panels[{i}].options.legendz", "unknown-field"


def _option_type(d):
    i = _first(d, "stat")
    d["panels"][i]["options"]["graphMode"] = 5
    return f"$.panels[{i}].options.graphMode", "wrong-type"


def _field_config_field(d):  # fieldConfig, which the SDK's panel decoder reads loosely
    d["panels"][0]["fieldConfig"]["defaults"]["unitz"] = "s"
    return "$.panels[0].fieldConfig.defaults.unitz", "unknown-field"


def _target_field(d):
    d["panels"][0]["targets"][0]["exprr"] = "up"
    return "$.panels[0].targets[0].exprr", "unknown-field"


def _panel_type(d):
    d["panels"][3]["type"] = "nosuchpanel"
    return "$.panels[3].type", "unknown-panel-type"


def _required_elsewhere(d):  # the accepted class is scoped: a missing schemaVersion still fails
    del d["schemaVersion"]
    return "$.schemaVersion", "missing-required"


@pytest.mark.parametrize("breakage", [_panel_field, _grid_type, _top_field, _grid_constraint, _option_field,
                                      _option_type, _field_config_field, _target_field, _panel_type,
                                      _required_elsewhere], ids=lambda f: f.__name__.strip("_"))
def test_a_broken_copy_fails_naming_the_path(dashcheck, tmp_path, breakage):
    d = json.loads((DASHBOARD_DIR / "caretta.json").read_text())
    path, kind = breakage(d)
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(d))
    rc, lines, (_, _, _, errors) = run(dashcheck, broken)
    assert rc == 1 and errors >= 1
    errors_here = [line for line in lines if not line.endswith(ACCEPTED)]
    assert any(line.startswith(f"{broken}: {path}: ") and line.endswith(f"[error: {kind}]")
               for line in errors_here), "\n".join(errors_here)
