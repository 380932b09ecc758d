"""Are the dashboards where Grafana loads them: each ConfigMap as rendered, labelled and placed where the
sidecar the cluster shows (targets.grafana) watches; listed by Grafana's HTTP API when it is configured."""
from __future__ import annotations

import json

from ..findings import Finding
from ..render.dashboards import configmap_name, dashboard_configmaps
from ..settings import Settings
from ..targets import Resolved


def configmap_problems(s: Settings, wanted: dict, live: dict | None) -> list[str]:
    """How a live dashboard ConfigMap differs from the rendered one (empty: as deployed)."""
    g, meta = s.grafana, wanted["metadata"]
    if live is None:
        return [f"ConfigMap {meta['namespace']}/{meta['name']} missing"]
    problems = []
    if (live["metadata"].get("labels") or {}).get(g.sidecar_label_key) != g.sidecar_label_value:
        problems.append(f"ConfigMap lacks the sidecar label {g.sidecar_label_key}={g.sidecar_label_value}")
    if live.get("data") != wanted["data"]:
        problems.append("ConfigMap content differs from dashboards/ (edited by hand?)")
    return problems


def discoverable(stem: str, r: Resolved, kube, grafana) -> Finding:
    """Where the Grafana sidecar will load it. Details: `problems` (list) and `checked_via`.
    `grafana`: resources.grafana.GrafanaResource (its HTTP API, when configured)."""
    s, sidecar = r.settings, r.grafana.sidecar
    ns = s.grafana.dashboards_namespace
    wanted = next(c for c in dashboard_configmaps(s) if c["metadata"]["name"] == configmap_name(stem))
    cm = kube.get("v1", "ConfigMap", configmap_name(stem), ns)
    problems = configmap_problems(s, wanted, cm)
    if sidecar and not sidecar.watches(ns):
        problems.append(f"the sidecar of {sidecar.deployment} does not watch {ns}")
    api = grafana.find_dashboard(json.loads((cm or {}).get("data", {}).get(f"{stem}.json", "{}")).get("uid", "")) \
        if grafana.configured and cm else None
    if grafana.configured and cm and api is None:
        problems.append("Grafana's HTTP API does not list the dashboard (sidecar not loading it?)")
    return Finding(f"dashboard:{stem}", not problems, "; ".join(problems) or "where the sidecar loads it",
                   {"problems": problems,
                    "checked_via": "Grafana HTTP API and ConfigMap" if grafana.configured else "ConfigMap"})


def drift(s: Settings, kube) -> list[Finding]:
    """Per dashboard (subject `dashboard:<stem>`): is its ConfigMap as rendered, else what is wrong (for
    the health sensor). `s`: resolved settings (their grafana section as the cluster shows it).
    Details: `problems` (list)."""
    out = []
    for cm in dashboard_configmaps(s):
        stem = next(iter(cm["data"])).removesuffix(".json")
        live = kube.get("v1", "ConfigMap", cm["metadata"]["name"], cm["metadata"]["namespace"])
        problems = configmap_problems(s, cm, live)
        out.append(Finding(f"dashboard:{stem}", not problems, "; ".join(problems) or "as deployed",
                           {"problems": problems}))
    return out
