"""Plan task 4: scrape jobs for Caretta and GoFlow2 in whichever form the user's Prometheus takes.

Fix to the plan: `caretta-caretta.caretta.svc:7117` does not exist and a Service address would
load-balance scrapes across per-node agents; every Caretta pod is discovered and scraped instead.
Modes: `file` (a config file + POST /-/reload; a refused config is rolled back), `chart` (the
prometheus-community chart's server ConfigMap, reloaded by its sidecar), `operator` (PodMonitors).
`auto` is resolved once per run by prometheus_target (operator, the settings' chart/file, or a
chart-shaped server found in the cluster).
"""

import json
import os
from pathlib import Path

import dagster as dg
from kubernetes.client.exceptions import ApiException

from .. import health, prometheus_target
from ..render.scrape import file_sd_targets, merge_scrape_configs, monitors, pod_jobs, scrape_jobs
from ..resources.cluster import ClusterResource
from ..resources.prometheus import PrometheusError, PrometheusResource
from ..settings import Settings, SettingsError
from .caretta import caretta
from .goflow2 import goflow2
from .report import apply_metadata

GROUP = "prometheus"
# In a Prometheus pod, a new config arrives through a volume the kubelet refreshes on its sync period
# (1 min by default) before the reloader sidecar reloads: the chart's ConfigMap, or the Secret the
# Operator renders from PodMonitors. Measured in the lab: 40-100 s from the write to the new targets.
CONFIGMAP_SYNC_SECONDS = 90
_SYNC_WHY = ("the kubelet copies a changed config into the Prometheus pod on its sync period, about a minute "
             "(the chart's ConfigMap, or the Secret the Operator renders from the PodMonitors), then the "
             "reloader sidecar reloads Prometheus")


def resolved_settings(cluster: ClusterResource) -> Settings:
    """The settings with `prometheus.mode` resolved against the cluster (prometheus_target)."""
    try:
        return prometheus_target.discover(cluster.kube, cluster.config.settings)
    except SettingsError as exc:
        raise dg.Failure(str(exc)) from None


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.netviz-tmp")
    tmp.write_text(text)
    os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o644)
    os.replace(tmp, path)


def _targets(s: Settings, cluster: ClusterResource) -> dict[str, list[dict]]:
    return {job: file_sd_targets(cluster.kube.list("v1", "Pod", ns, label_selector=f"app={app}"), app, port)
            for job, ns, app, port in pod_jobs(s)}


def apply_file_mode(s: Settings, cluster: ClusterResource, prom: PrometheusResource) -> dict:
    f = s.prometheus.file
    changed: list[str] = []
    if f.discovery == "file_sd":
        f.targets_dir.mkdir(parents=True, exist_ok=True)
        for job, groups in _targets(s, cluster).items():
            path = f.targets_dir / f"{job}.json"
            text = json.dumps(groups, indent=1, sort_keys=True) + "\n"
            if not path.exists() or path.read_text() != text:
                _write_atomic(path, text)  # file_sd is re-read by Prometheus; no reload needed
                changed.append(str(path))
    old = f.config_path.read_text()
    new, config_changed = merge_scrape_configs(old, scrape_jobs(s))
    if config_changed:
        _write_atomic(f.config_path, new)
        try:
            prom.reload(s.prometheus.reload_url)
        except PrometheusError as exc:
            _write_atomic(f.config_path, old)  # nothing half-applied: the old config stays in force
            raise dg.Failure(description=f"{exc}; {f.config_path} was restored to its previous content, "
                                         "so Prometheus and the file agree; re-run when Prometheus answers") from exc
        changed.append(str(f.config_path))
    return {"changed": dg.MetadataValue.int(len(changed)),
            "summary": dg.MetadataValue.text(("updated " + ", ".join(changed)) if changed
                                             else "converged: config and targets unchanged, no reload"),
            "config_path": dg.MetadataValue.path(str(f.config_path))}


def apply_chart_mode(s: Settings, cluster: ClusterResource) -> dict:
    c = s.prometheus.chart
    try:
        cm = cluster.kube.get("v1", "ConfigMap", c.configmap_name, c.configmap_namespace)
    except ApiException as exc:
        if exc.status != 403:
            raise
        raise dg.Failure(f"the pipeline may not read ConfigMap {c.configmap_namespace}/{c.configmap_name} (the "
                         "chart's Prometheus server config): an administrator grants it once with `python -m "
                         "netviz_pipeline.admin apply --kubeconfig <admin kubeconfig>`, which finds the chart's "
                         "server too when prometheus.mode is auto") from None
    if cm is None:
        raise dg.Failure(f"prometheus.chart: ConfigMap {c.configmap_namespace}/{c.configmap_name} not found")
    new, changed = merge_scrape_configs((cm.get("data") or {}).get(c.key, ""), scrape_jobs(s))
    body = {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": c.configmap_name, "namespace": c.configmap_namespace}, "data": {c.key: new}}
    outcomes = cluster.apply([body]) if changed else []
    meta = apply_metadata(outcomes)
    meta["extraScrapeConfigs"] = dg.MetadataValue.md(
        "Helm owns this ConfigMap; to survive `helm upgrade`, add to the chart's extraScrapeConfigs:\n```yaml\n"
        + json.dumps(scrape_jobs(s), indent=1) + "\n```")
    return meta


@dg.asset(group_name=GROUP, deps=[caretta, goflow2], kinds={"prometheus"},
          description="Scrape jobs netviz-caretta (every pod), netviz-goflow2 and netviz-flows")
def prometheus_scrape_config(context: dg.AssetExecutionContext, cluster: ClusterResource,
                             prometheus: PrometheusResource) -> dg.MaterializeResult:
    s = resolved_settings(cluster)
    mode = s.prometheus.mode
    if mode == "file":
        meta = apply_file_mode(s, cluster, prometheus)
    elif mode == "chart":
        meta = apply_chart_mode(s, cluster)
    else:
        meta = apply_metadata(cluster.apply(monitors(s)))
    return dg.MaterializeResult(metadata=meta | {"mode": dg.MetadataValue.text(mode)})


def scrape_health(s: Settings, prom: PrometheusResource, cluster: ClusterResource) -> tuple[bool, list[str], dict]:
    """Every netviz job has one healthy target per running pod."""
    expected = {job: _running(cluster, ns, app) for job, ns, app, _ in pod_jobs(s)}
    targets = [t for t in prom.targets() if t.get("labels", {}).get("job") in expected]
    problems = []
    table = {}
    for job, want in expected.items():
        mine = [t for t in targets if t["labels"]["job"] == job]
        up = [t for t in mine if t.get("health") == "up"]
        table[job] = f"{len(up)} up of {len(mine)} targets, {want} running pods"
        if want == 0:
            problems.append(f"{job}: no running pods to scrape")
        elif not mine:
            problems.append(f"{job}: not in Prometheus's loaded config yet" + (
                f" ({_SYNC_WHY})" if s.prometheus.mode in ("chart", "operator") else ""))
        elif len(up) < want:
            errors = sorted({t.get("lastError", "") for t in mine if t.get("health") != "up"} - {""})
            problems.append(f"{job}: {len(up)}/{want} targets up" + (f" ({'; '.join(errors)[:300]})" if errors else ""))
    return not problems, problems, table


def _running(cluster: ClusterResource, ns: str, app: str) -> int:
    return sum((p.get("status") or {}).get("phase") == "Running"
               for p in cluster.kube.list("v1", "Pod", ns, label_selector=f"app={app}"))


@dg.asset_check(asset=prometheus_scrape_config, blocking=True,
                description="Prometheus scrapes every Caretta pod and the GoFlow2 pod (up == 1)")
def scrape_targets_up(cluster: ClusterResource, prometheus: PrometheusResource) -> dg.AssetCheckResult:
    s = resolved_settings(cluster)
    # discovery refresh (5 s) + the first scrape interval; in Prometheus pods first the config's way in
    timeout = s.checks.deadline_seconds + (CONFIGMAP_SYNC_SECONDS if s.prometheus.mode in ("chart", "operator") else 0)
    ok, problems, table = health.poll(lambda: scrape_health(s, prometheus, cluster), timeout=timeout, interval=1)
    return dg.AssetCheckResult(passed=ok, severity=dg.AssetCheckSeverity.ERROR,
                               metadata={"targets": dg.MetadataValue.json(table),
                                         "problems": dg.MetadataValue.text("; ".join(problems) or "none")})
