"""Chart mode: the prometheus-community chart's server, configured through its ConfigMap.

The netviz jobs are merged into the ConfigMap's prometheus.yml and the rules into its
alerting_rules.yml (in the chart's default rule_files); the chart's reloader sidecar reloads once the
kubelet has copied the ConfigMap into the pod. Under `auto` the server is found through its Deployment:
labelled as the chart labels it (21+: `app.kubernetes.io/name=prometheus` +
`app.kubernetes.io/component=server`; older: `app=prometheus` + `component=server`), with a
`config-volume` ConfigMap that a reloader watches. So the pipeline needs no cluster-wide read of ConfigMaps.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from kubernetes.client.exceptions import ApiException

from ..render import alerts
from ..render.scrape import merge_scrape_configs, pod_scrape_jobs
from ..settings import PromChart, Settings, SettingsError
from .prometheus import (KUBELET_SYNC_SECONDS, KUBELET_SYNC_WHY, Applied, ApplyError, Grant, Lister,
                         PrometheusTarget)

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


def _mount_paths(pod: dict, volume: str) -> set[str]:
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
    if not watched & _mount_paths(pod, CONFIG_VOLUME):
        return None  # nothing reloads Prometheus when the ConfigMap changes: not the chart's shape
    return ChartServer(meta.get("namespace", ""), meta.get("name", ""), cm)


def chart_servers(deployments: list[dict]) -> list[ChartServer]:
    return sorted(filter(None, map(chart_server, deployments)), key=str)


@dataclass(frozen=True)
class ChartTarget(PrometheusTarget):
    mode = "chart"
    sync_seconds = KUBELET_SYNC_SECONDS
    chart: PromChart

    @classmethod
    def from_settings(cls, s: Settings) -> ChartTarget:
        return cls(s.prometheus.chart)

    @classmethod
    def section_problem(cls, s: Settings) -> str | None:
        return None if s.prometheus.chart else "prometheus.mode: chart needs a prometheus.chart section"

    @classmethod
    def claim(cls, s: Settings, kube: Lister | None) -> ChartTarget | None:
        return cls(s.prometheus.chart) if s.prometheus.chart else None

    @classmethod
    def discover(cls, s: Settings, kube: Lister | None) -> ChartTarget | None:
        if kube is None:
            return None
        found = chart_servers(kube.list("apps/v1", "Deployment"))
        if len(found) > 1:
            raise SettingsError(["prometheus.mode: auto found several chart-shaped Prometheus servers ("
                                 + "; ".join(map(str, found)) + "): name the one to use in prometheus.chart "
                                 "(configmap_namespace, configmap_name)"])
        return cls(PromChart(configmap_namespace=found[0].namespace, configmap_name=found[0].configmap)) \
            if found else None

    @classmethod
    def may_become(cls, s: Settings, kube: Lister | None) -> ChartTarget | None:
        try:
            return cls.claim(s, kube) or cls.discover(s, kube)
        except SettingsError:  # several: the pipeline's run says which to name; nothing to grant yet
            return None

    def scrape_objects(self, s: Settings, exporters: list[str] | None = None) -> list[dict]:
        return pod_scrape_jobs(s, exporters)  # the chart's server discovers in-cluster

    def apply(self, s: Settings, cluster, prom, exporters: list[str]) -> Applied:
        c = self.chart
        try:
            cm = cluster.kube.get("v1", "ConfigMap", c.configmap_name, c.configmap_namespace)
        except ApiException as exc:
            if exc.status != 403:
                raise
            raise ApplyError(f"the pipeline may not read ConfigMap {c.configmap_namespace}/{c.configmap_name} (the "
                             "chart's Prometheus server config): an administrator grants it once with `python -m "
                             "netviz_pipeline.admin apply --kubeconfig <admin kubeconfig>`, which finds the chart's "
                             "server too when prometheus.mode is auto") from None
        if cm is None:
            raise ApplyError(f"prometheus.chart: ConfigMap {c.configmap_namespace}/{c.configmap_name} not found")
        data = cm.get("data") or {}
        jobs = self.scrape_objects(s, exporters)
        new, jobs_changed = merge_scrape_configs(data.get(c.key, ""), jobs)
        new, listed = alerts.merge_rule_files(new, alerts.CHART_RULES_PATH)  # in the chart's default rule_files
        rules, rules_changed = alerts.merge_chart_alerting_rules(data.get(alerts.CHART_RULES_KEY, ""), s)
        # Both keys every time: server-side apply deletes a field this manager applied before and leaves
        # out now, and after an adopt we are the only owner of the one left unchanged.
        body = {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": c.configmap_name, "namespace": c.configmap_namespace},
                "data": {c.key: new, alerts.CHART_RULES_KEY: rules}}
        outcomes = cluster.apply([body]) if jobs_changed or listed or rules_changed else []
        return Applied(outcomes=tuple(outcomes), notes={
            "extraScrapeConfigs": "Helm owns this ConfigMap; to survive `helm upgrade`, add to the chart's "
                                  "extraScrapeConfigs:\n```yaml\n" + json.dumps(jobs, indent=1) + "\n```",
            "serverFiles": "and these values, which render the netviz alert rules into the same ConfigMap (merge "
                           "the `groups` with your own alerting rules if you have any):\n```yaml\n"
                           + alerts.chart_values_snippet(s) + "```"})

    def grants(self, s: Settings) -> list[Grant]:
        # only the chart's server ConfigMap, never the namespace's others
        return [Grant(self.chart.configmap_namespace, "chart", (
            {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [self.chart.configmap_name],
             "verbs": ["get", "patch"]},))]

    def missing_rules(self, s: Settings) -> str:
        return (f" ({KUBELET_SYNC_WHY}; with ownership.on_foreign_manager skip a Helm-owned ConfigMap is left "
                "alone: add the serverFiles values from the materialisation to the chart's values)")
