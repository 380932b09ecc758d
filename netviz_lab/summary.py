"""What `make demo` prints after deploying: what runs where, and where to look."""
from __future__ import annotations

import os

import requests
from kubernetes import config as k8s_config
from kubernetes.dynamic import DynamicClient

from .lab import Lab
from .prometheus import URL

QUERIES = {
    "Caretta links (stand-in data)": 'count(caretta_links_observed{job="netviz-caretta"})',
    "NetFlow datagrams/s per exporter": 'sum by (router) (rate(goflow2_flow_process_nf_total{job="netviz-goflow2"}[1m]))',
}


def last_run(dagster_home: str) -> list[str]:
    """The latest run in this Dagster home: its status, what changed and each check's result."""
    if not dagster_home:
        return []
    os.environ["DAGSTER_HOME"] = dagster_home
    import dagster as dg

    with dg.DagsterInstance.get() as inst:
        runs = inst.get_runs(limit=1)
        if not runs:
            return []
        run = runs[0]
        changed, checks = [], []
        for rec in inst.all_logs(run.run_id):
            ev = rec.dagster_event
            if ev is None:
                continue
            if ev.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
                mat = ev.event_specific_data.materialization
                summary = mat.metadata.get("summary")
                changed.append(f"{mat.asset_key.to_user_string()}: {summary.value if summary else 'done'}")
            elif ev.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
                data = ev.event_specific_data
                checks.append(f"{data.check_name} {'passed' if data.passed else 'FAILED'}")
    return ([f"netviz_deploy {run.status.value.lower()} (run {run.run_id[:8]})"] + [f"  {c}" for c in changed]
            + [f"  checks: {', '.join(checks)}", ""])


def render(lab: Lab, settings_path: str, dagster_home: str, log: str = "") -> str:
    dc = DynamicClient(k8s_config.new_client_from_config(config_file=str(lab.admin_kubeconfig)))
    lines = ["", *last_run(dagster_home), "netviz demo: deployed into the lab", ""]
    for api, kind, ns in (("apps/v1", "DaemonSet", "caretta"), ("apps/v1", "Deployment", "goflow2"),
                          ("v1", "Service", "goflow2"), ("v1", "ConfigMap", "monitoring")):
        for obj in dc.resources.get(api_version=api, kind=kind).get(namespace=ns).items:
            if kind == "ConfigMap" and not obj.metadata.name.startswith("netviz-"):
                continue
            lines.append(f"  {kind:11} {ns}/{obj.metadata.name}")
    lines.append("")
    for title, expr in QUERIES.items():
        result = requests.get(f"{URL}/api/v1/query", params={"query": expr}, timeout=5).json()["data"]["result"]
        values = ", ".join(f"{r['metric'].get('router', '')}={float(r['value'][1]):.2f}".lstrip("=") for r in result)
        lines.append(f"  {title}: {values or 'no data'}")
    lines += ["", "Where to look:",
              f"  Prometheus:     {URL}/targets  (jobs netviz-caretta, netviz-goflow2)",
              *([f"  Event stream:   {log}"] if log else []),
              "  Dagster UI:     make service  (webserver + daemon with the health sensor; docs/operating.md "
              "\"As a service on one host\")",
              f"  kubectl:        {lab.bin('kubectl')} --kubeconfig {lab.admin_kubeconfig} get pods -A",
              "  Dashboards:     dashboards/*.json (Grafana cannot run here; the ConfigMaps above carry the "
              "sidecar label)",
              "  Stop the lab:   .venv/bin/python -m netviz_lab down", ""]
    return "\n".join(lines)
