"""Plan task 4: scrape jobs for Caretta and GoFlow2 in whichever form the user's Prometheus takes.

Fix to the plan: `caretta-caretta.caretta.svc:7117` does not exist and a Service address would
load-balance scrapes across per-node agents; every Caretta pod is discovered and scraped instead.
Modes: `file` (a config file + POST /-/reload; a refused config is rolled back), `chart` (the
prometheus-community chart's server ConfigMap, reloaded by its sidecar), `operator` (PodMonitors).
`auto` picks operator when a Prometheus custom resource exists, else chart/file from settings.
"""

import json
import os
from pathlib import Path

import dagster as dg

from .. import health
from ..render.scrape import file_sd_targets, merge_scrape_configs, monitors, pod_jobs, scrape_jobs
from ..resources.cluster import ClusterResource
from ..resources.prometheus import PrometheusError, PrometheusResource
from ..settings import Settings
from .caretta import caretta
from .goflow2 import goflow2
from .report import apply_metadata

GROUP = "prometheus"


def detect_mode(s: Settings, cluster: ClusterResource) -> str:
    if s.prometheus.mode != "auto":
        return s.prometheus.mode
    try:
        if cluster.kube.list("monitoring.coreos.com/v1", "Prometheus"):
            return "operator"
    except Exception:  # noqa: BLE001 - CRD absent or not readable: no operator
        pass
    if s.prometheus.chart:
        return "chart"
    if s.prometheus.file:
        return "file"
    raise dg.Failure("prometheus.mode auto found no Prometheus custom resource and settings have neither a "
                     "prometheus.file nor a prometheus.chart section: set one")


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
    cm = cluster.kube.get("v1", "ConfigMap", c.configmap_name, c.configmap_namespace)
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
    s = cluster.config.settings
    mode = detect_mode(s, cluster)
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
    s = cluster.config.settings
    # discovery refresh (5 s) + the first scrape interval
    ok, problems, table = health.poll(lambda: scrape_health(s, prometheus, cluster),
                                      timeout=s.checks.deadline_seconds, interval=1)
    return dg.AssetCheckResult(passed=ok, severity=dg.AssetCheckSeverity.ERROR,
                               metadata={"targets": dg.MetadataValue.json(table),
                                         "problems": dg.MetadataValue.text("; ".join(problems) or "none")})
