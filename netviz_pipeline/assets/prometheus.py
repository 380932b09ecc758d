"""Plan task 4: scrape jobs for Caretta and GoFlow2 in whichever form the user's Prometheus takes,
and the netviz alert rules (render/alerts.py) with them.

Fix to the plan: `caretta-caretta.caretta.svc:7117` does not exist and a Service address would
load-balance scrapes across per-node agents; every Caretta pod is discovered and scraped instead.
Modes: `file` (a config file and a rule file + POST /-/reload; a refused reload rolls both back),
`chart` (the prometheus-community chart's server ConfigMap, its prometheus.yml and alerting_rules.yml,
reloaded by its sidecar), `operator` (PodMonitors and a PrometheusRule).
`auto` is resolved once per run by prometheus_target (operator, the settings' chart/file, or a
chart-shaped server found in the cluster): ClusterResource.prometheus_settings, shared by the asset
and its checks.
"""

import json
import os
from pathlib import Path

import dagster as dg
from kubernetes.client.exceptions import ApiException

from .. import health
from ..findings import Finding
from ..freshness import exporter_addresses
from ..render import alerts
from ..render.scrape import file_sd_targets, merge_scrape_configs, monitors, pod_jobs, scrape_jobs
from ..resources.cluster import ClusterResource
from ..resources.prometheus import PrometheusError, PrometheusResource
from ..settings import Settings, SettingsError
from . import OWNERS
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
    """The settings with `prometheus.mode` resolved against the cluster (prometheus_target), once per
    run (ClusterResource.prometheus_settings); a mode auto cannot resolve fails the step."""
    try:
        return cluster.prometheus_settings
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
    new, jobs_changed = merge_scrape_configs(old, scrape_jobs(s, exporter_addresses(s.routers)))
    new, listed = alerts.merge_rule_files(new, str(f.rules_file))
    config_changed = jobs_changed or listed
    rules = f.rules_file
    old_rules = rules.read_text() if rules.exists() else None
    rules_text = alerts.rule_file_text(s)
    rules_changed = old_rules != rules_text
    if rules_changed:
        rules.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(rules, rules_text)
    if config_changed:
        _write_atomic(f.config_path, new)
    if config_changed or rules_changed:  # Prometheus re-reads rule files only on a reload too
        try:
            prom.reload(s.prometheus.reload_url)
        except PrometheusError as exc:
            # nothing half-applied: both files go back, so what is in force is what the files say
            undone = []
            if config_changed:
                _write_atomic(f.config_path, old)
                undone.append(f"{f.config_path} was restored to its previous content")
            if rules_changed:
                if old_rules is None:
                    rules.unlink(missing_ok=True)
                    undone.append(f"{rules} was removed (it did not exist before)")
                else:
                    _write_atomic(rules, old_rules)
                    undone.append(f"{rules} was restored to its previous content")
            raise dg.Failure(description=f"{exc}; {' and '.join(undone)}, so Prometheus and the files agree; "
                                         "re-run when Prometheus answers") from exc
        changed += [str(path) for path, c in ((f.config_path, config_changed), (rules, rules_changed)) if c]
    return {"changed": dg.MetadataValue.int(len(changed)),
            "summary": dg.MetadataValue.text(("updated " + ", ".join(changed)) if changed
                                             else "converged: config, rules and targets unchanged, no reload"),
            "config_path": dg.MetadataValue.path(str(f.config_path)),
            "rules_path": dg.MetadataValue.path(str(rules))}


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
    data = cm.get("data") or {}
    jobs = scrape_jobs(s, exporter_addresses(s.routers))
    new, jobs_changed = merge_scrape_configs(data.get(c.key, ""), jobs)
    new, listed = alerts.merge_rule_files(new, alerts.CHART_RULES_PATH)  # in the chart's default rule_files
    rules, rules_changed = alerts.merge_chart_alerting_rules(data.get(alerts.CHART_RULES_KEY, ""), s)
    # Both keys every time: server-side apply deletes a field this manager applied before and leaves
    # out now, and after an adopt we are the only owner of the one left unchanged.
    body = {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": c.configmap_name, "namespace": c.configmap_namespace},
            "data": {c.key: new, alerts.CHART_RULES_KEY: rules}}
    outcomes = cluster.apply([body]) if jobs_changed or listed or rules_changed else []
    meta = apply_metadata(outcomes)
    meta["extraScrapeConfigs"] = dg.MetadataValue.md(
        "Helm owns this ConfigMap; to survive `helm upgrade`, add to the chart's extraScrapeConfigs:\n```yaml\n"
        + json.dumps(jobs, indent=1) + "\n```")
    meta["serverFiles"] = dg.MetadataValue.md(
        "and these values, which render the netviz alert rules into the same ConfigMap (merge the `groups` "
        "with your own alerting rules if you have any):\n```yaml\n" + alerts.chart_values_snippet(s) + "```")
    return meta


@dg.asset(group_name=GROUP, deps=[caretta, goflow2], kinds={"prometheus"}, owners=OWNERS,
          description="Changes your Prometheus: the netviz-caretta (every pod), netviz-goflow2 and netviz-flows "
                      "scrape jobs and the netviz alert rules, as a config file + reload (file mode), in the "
                      "chart's server ConfigMap (chart), or as PodMonitors and a PrometheusRule (operator)")
def prometheus_scrape_config(context: dg.AssetExecutionContext, cluster: ClusterResource,
                             prometheus: PrometheusResource) -> dg.MaterializeResult:
    s = resolved_settings(cluster)
    mode = s.prometheus.mode
    if mode == "file":
        meta = apply_file_mode(s, cluster, prometheus)
    elif mode == "chart":
        meta = apply_chart_mode(s, cluster)
    else:
        meta = apply_metadata(cluster.apply(monitors(s, exporter_addresses(s.routers)) + [alerts.prometheus_rule(s)]))
    return dg.MaterializeResult(metadata=meta | {"mode": dg.MetadataValue.text(mode)})


def scrape_health(s: Settings, prom: PrometheusResource, cluster: ClusterResource) -> Finding:
    """Every netviz job has one healthy target per running pod. Details: `problems` (list) and
    `targets` (job -> what is up)."""
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
    return Finding("scrape_targets", not problems, "; ".join(problems) or "every netviz job has a healthy target "
                   "per running pod", {"problems": problems, "targets": table})


def _running(cluster: ClusterResource, ns: str, app: str) -> int:
    return sum((p.get("status") or {}).get("phase") == "Running"
               for p in cluster.kube.list("v1", "Pod", ns, label_selector=f"app={app}"))


@dg.asset_check(asset=prometheus_scrape_config, blocking=True,
                description="Prometheus scrapes every Caretta pod and the GoFlow2 pod (up == 1)")
def scrape_targets_up(cluster: ClusterResource, prometheus: PrometheusResource) -> dg.AssetCheckResult:
    s = resolved_settings(cluster)
    # discovery refresh (5 s) + the first scrape interval; in Prometheus pods first the config's way in
    timeout = s.checks.deadline_seconds + (CONFIGMAP_SYNC_SECONDS if s.prometheus.mode in ("chart", "operator") else 0)
    f = health.poll(lambda: scrape_health(s, prometheus, cluster), timeout=timeout, interval=1)
    return dg.AssetCheckResult(passed=f.healthy, severity=dg.AssetCheckSeverity.ERROR,
                               metadata={"targets": dg.MetadataValue.json(f.details["targets"]),
                                         "problems": dg.MetadataValue.text("; ".join(f.details["problems"]) or "none")})


def rules_health(s: Settings, prom: PrometheusResource) -> Finding:
    """Prometheus has loaded the `netviz` group with every alert we render, none failing to evaluate.
    Details: `problems` (list), and when Prometheus answered `alerts` (name -> state) and `files`."""
    want = alerts.alert_names(s)
    try:
        groups = prom.rules()
    except PrometheusError as exc:
        return Finding("alert_rules", False, str(exc), {"problems": [str(exc)]})
    ours = [g for g in groups if g.get("name") == alerts.GROUP]
    loaded = {r.get("name", ""): r for g in ours for r in g.get("rules") or []}
    table = {n: r.get("state", "") for n, r in loaded.items()}
    problems = [f"{n}: {r.get('lastError') or 'evaluation failed'}" for n, r in loaded.items() if r.get("health") == "err"]
    missing = [n for n in want if n not in loaded]
    if missing:
        mode = s.prometheus.mode
        where = {"file": f" (rule file {s.prometheus.file.rules_file}, listed in rule_files)" if s.prometheus.file else "",
                 "chart": f" ({_SYNC_WHY}; with ownership.on_foreign_manager skip a Helm-owned ConfigMap is left "
                          "alone: add the serverFiles values from the materialisation to the chart's values)",
                 "operator": f" ({_SYNC_WHY}; the Prometheus resource's ruleSelector must match "
                             "prometheus.operator.labels)"}.get(mode, "")
        problems.insert(0, f"alert rules not loaded in group {alerts.GROUP!r}: {', '.join(missing)}{where}")
    return Finding("alert_rules", not problems, "; ".join(problems) or f"all {len(want)} netviz alerts loaded",
                   {"problems": problems, "alerts": table, "files": sorted({g.get("file", "") for g in ours})})


@dg.asset_check(asset=prometheus_scrape_config, blocking=False,
                description="Prometheus has loaded every netviz alert rule (group netviz)")
def alert_rules_loaded(cluster: ClusterResource, prometheus: PrometheusResource) -> dg.AssetCheckResult:
    s = resolved_settings(cluster)
    # a reload loads a rule file at once; in Prometheus pods the rules first travel like the config
    timeout = s.checks.deadline_seconds + (CONFIGMAP_SYNC_SECONDS if s.prometheus.mode in ("chart", "operator") else 0)
    f = health.poll(lambda: rules_health(s, prometheus), timeout=timeout, interval=2)
    return dg.AssetCheckResult(passed=f.healthy, severity=dg.AssetCheckSeverity.ERROR,
                               metadata={"alerts": dg.MetadataValue.json(f.details.get("alerts", {})),
                                         "rule_files": dg.MetadataValue.text(", ".join(f.details.get("files", [])) or "none"),
                                         "problems": dg.MetadataValue.text("; ".join(f.details["problems"]) or "none")})
