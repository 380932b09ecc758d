"""Which Prometheus the pipeline writes to, resolved once from the settings and what the cluster shows.

`prometheus.mode: auto` resolves, in this order, to
1. `operator` when a `monitoring.coreos.com/v1` Prometheus resource exists (the Operator reconciles
   PodMonitors into it);
2. `chart` when the settings have a `prometheus.chart` section, then `file` when they have a
   `prometheus.file` section (what the user wrote wins over what is found);
3. `chart` when exactly one chart-shaped Prometheus server is found: a Deployment labelled as the
   prometheus-community chart labels its server (chart 21+ `app.kubernetes.io/name=prometheus` +
   `app.kubernetes.io/component=server`, older `app=prometheus` + `component=server`) whose
   `config-volume` is a ConfigMap watched by the chart's reloader sidecar. The server ConfigMap is found
   through its Deployment, so the pipeline needs no cluster-wide read of ConfigMaps.
Downstream code sees the resolved settings (mode never "auto", chart section filled in), so the scrape
jobs, the RBAC it verifies and the checks all follow the same decision.
"""
from __future__ import annotations

from dataclasses import dataclass

from .settings import PromChart, Settings, SettingsError

CHART_SERVER_LABELS = ({"app.kubernetes.io/name": "prometheus", "app.kubernetes.io/component": "server"},
                       {"app": "prometheus", "component": "server"})
# prometheus-config-reloader (chart 20+) and jimmidyson/configmap-reload (older charts)
RELOADER_ARGS = ("--watched-dir=", "--volume-dir=")
CONFIG_VOLUME = "config-volume"


@dataclass(frozen=True)
class ChartServer:
    namespace: str
    deployment: str
    configmap: str

    def __str__(self) -> str:
        return f"Deployment {self.namespace}/{self.deployment} (ConfigMap {self.configmap})"


def _mount_path(pod: dict, volume: str) -> set[str]:
    return {m.get("mountPath", "").rstrip("/") for c in pod.get("containers") or []
            for m in c.get("volumeMounts") or [] if m.get("name") == volume}


def chart_server(deployment: dict) -> ChartServer | None:
    """The chart's Prometheus server behind this Deployment, or None if it is not shaped like one."""
    meta = deployment.get("metadata") or {}
    labels = meta.get("labels") or {}
    if not any(all(labels.get(k) == v for k, v in want.items()) for want in CHART_SERVER_LABELS):
        return None
    pod = ((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}
    cm = next((v["configMap"].get("name") for v in pod.get("volumes") or []
               if v.get("name") == CONFIG_VOLUME and v.get("configMap")), None)
    if not cm:
        return None
    watched = {a.split("=", 1)[1].rstrip("/") for c in pod.get("containers") or [] for a in c.get("args") or []
               if a.startswith(RELOADER_ARGS)}
    if not watched & _mount_path(pod, CONFIG_VOLUME):
        return None  # nothing reloads Prometheus when the ConfigMap changes: not the chart's shape
    return ChartServer(meta.get("namespace", ""), meta.get("name", ""), cm)


def chart_servers(deployments: list[dict]) -> list[ChartServer]:
    return sorted(filter(None, map(chart_server, deployments)), key=str)


def resolve(s: Settings, prometheus_resources: int, charts: list[ChartServer]) -> Settings:
    """Settings with `prometheus.mode` resolved (see the module docstring). Raises SettingsError when
    auto finds nothing to use or cannot choose."""
    p = s.prometheus
    if p.mode != "auto":
        return s
    if prometheus_resources:
        mode, chart = "operator", p.chart
    elif p.chart:
        mode, chart = "chart", p.chart
    elif p.file:
        mode, chart = "file", None
    elif len(charts) == 1:
        mode, chart = "chart", PromChart(configmap_namespace=charts[0].namespace, configmap_name=charts[0].configmap)
    elif charts:
        raise SettingsError(["prometheus.mode: auto found several chart-shaped Prometheus servers ("
                             + "; ".join(map(str, charts)) + "): name the one to use in prometheus.chart "
                             "(configmap_namespace, configmap_name)"])
    else:
        raise SettingsError(["prometheus.mode: auto found no Prometheus resource and no chart-shaped Prometheus "
                             "server Deployment, and the settings have neither a prometheus.file nor a "
                             "prometheus.chart section: set one"])
    return s.model_copy(update={"prometheus": p.model_copy(update={"mode": mode, "chart": chart})})


def discover(kube, s: Settings) -> Settings:
    """`resolve` with what the cluster shows (through `kube`, a resources.kube.Kube): Prometheus
    resources, and chart-shaped server Deployments when the settings name no chart or file."""
    if s.prometheus.mode != "auto":
        return s
    try:
        prometheuses = len(kube.list("monitoring.coreos.com/v1", "Prometheus"))
    except Exception:  # noqa: BLE001 - the CRD is absent (or unreadable): no Operator to use
        prometheuses = 0
    needs_scan = not prometheuses and not (s.prometheus.chart or s.prometheus.file)
    return resolve(s, prometheuses, chart_servers(kube.list("apps/v1", "Deployment")) if needs_scan else [])
