"""Does every dashboard panel show data: each panel query of each dashboard in `dashboards/`, run against
Prometheus, returns series carrying the labels the panel renders (node-graph fields for the service map).
"Installed, but the dashboard is empty" is the common failure of every comparable tool."""
from __future__ import annotations

from ..dashboards import load_dashboard, panel_queries
from ..findings import Finding
from ..render.dashboards import DASHBOARD_DIR
from ..resources.prometheus import PrometheusResource


def panel_report(prom: PrometheusResource) -> tuple[list[str], list[str]]:
    """(passed, failed) lines, one per panel query of every dashboard."""
    passed, failed = [], []
    for path in sorted(DASHBOARD_DIR.glob("*.json")):
        for q in panel_queries(load_dashboard(path)):
            name = f"{path.stem} / {q.panel_title} [{q.ref_id}]"
            try:
                expr = q.ready()  # built-ins, and the dashboard's variables at their defaults
                result = prom.query(expr) if q.instant else prom.query_range(expr, seconds=300, step=15)
            except Exception as exc:  # noqa: BLE001 - a broken query is a failed panel, reported
                failed.append(f"{name}: {exc}")
                continue
            if not result:
                failed.append(f"{name}: no data")
                continue
            missing = sorted({lbl for r in result for lbl in q.required_labels if lbl not in r.get("metric", {})})
            (failed if missing else passed).append(
                f"{name}: {len(result)} series" + (f", missing labels {missing}" if missing else ""))
    return passed, failed


def panels_finding(prom: PrometheusResource) -> Finding:
    """Every panel query returns data. Details: `passed` and `failed`, one line per panel query."""
    passed, failed = panel_report(prom)
    return Finding("panels", not failed, f"{len(failed)} of {len(passed) + len(failed)} panel queries without data"
                   if failed else f"all {len(passed)} panel queries return data", {"passed": passed, "failed": failed})
