"""Plan task 4: scrape jobs for Caretta and GoFlow2 in whichever form the user's Prometheus takes,
and the netviz alert rules (render/alerts.py) with them.

Fix to the plan: `caretta-caretta.caretta.svc:7117` does not exist and a Service address would
load-balance scrapes across per-node agents; every Caretta pod is discovered and scraped instead.
Where and how they are written is the resolved Prometheus target's business (targets/prometheus_*.py:
file, chart, operator); this module only runs it and reports.
"""

import dagster as dg

from ..checks import poll
from ..checks.scrape import rules_health, scrape_health
from ..findings import healthy
from ..freshness import exporter_addresses
from ..resources.cluster import ClusterResource
from ..resources.prometheus import PrometheusResource
from ..settings import Settings, SettingsError
from ..targets.prometheus import ApplyError, PrometheusTarget
from . import OWNERS
from .caretta import caretta
from .goflow2 import goflow2
from .report import apply_metadata

GROUP = "prometheus"


def resolved(cluster: ClusterResource) -> tuple[Settings, PrometheusTarget]:
    """The run's resolution (ClusterResource.resolved); a mode auto cannot resolve fails the step."""
    try:
        return cluster.resolved.settings, cluster.resolved.require_prometheus()
    except SettingsError as exc:
        raise dg.Failure(str(exc)) from None


@dg.asset(group_name=GROUP, deps=[caretta, goflow2], kinds={"prometheus"}, owners=OWNERS,
          description="Changes your Prometheus: the netviz-caretta (every pod), netviz-goflow2 and netviz-flows "
                      "scrape jobs and the netviz alert rules, as a config file + reload (file mode), in the "
                      "chart's server ConfigMap (chart), or as PodMonitors and a PrometheusRule (operator)")
def prometheus_scrape_config(context: dg.AssetExecutionContext, cluster: ClusterResource,
                             prometheus: PrometheusResource) -> dg.MaterializeResult:
    s, target = resolved(cluster)
    try:
        done = target.apply(s, cluster, prometheus, exporter_addresses(s.routers))
    except ApplyError as exc:
        raise dg.Failure(description=str(exc)) from exc
    meta = apply_metadata(done.outcomes) if not done.changed and not done.summary else {
        "changed": dg.MetadataValue.int(len(done.changed)), "summary": dg.MetadataValue.text(done.summary)}
    meta |= {k: dg.MetadataValue.md(v) for k, v in done.notes.items()}
    meta |= {k: dg.MetadataValue.path(v) for k, v in done.paths.items()}
    return dg.MaterializeResult(metadata=meta | {"mode": dg.MetadataValue.text(target.mode)})


@dg.asset_check(asset=prometheus_scrape_config, blocking=True,
                description="Prometheus scrapes every Caretta pod and the GoFlow2 pod (up == 1)")
def scrape_targets_up(cluster: ClusterResource, prometheus: PrometheusResource) -> dg.AssetCheckResult:
    s, target = resolved(cluster)
    # discovery refresh (5 s) + the first scrape interval; in Prometheus pods first the config's way in
    found = poll(lambda: scrape_health(s, prometheus, cluster.kube, target),
                 timeout=s.checks.deadline_seconds + target.sync_seconds, interval=1)
    scrape = found[0]
    problems = [f.reason for f in found[1:] if not f.healthy] + scrape.details["problems"]
    return dg.AssetCheckResult(passed=healthy(found), severity=dg.AssetCheckSeverity.ERROR,
                               metadata={"targets": dg.MetadataValue.json(scrape.details["targets"]),
                                         "problems": dg.MetadataValue.text("; ".join(problems) or "none")})


@dg.asset_check(asset=prometheus_scrape_config, blocking=False,
                description="Prometheus has loaded every netviz alert rule (group netviz)")
def alert_rules_loaded(cluster: ClusterResource, prometheus: PrometheusResource) -> dg.AssetCheckResult:
    s, target = resolved(cluster)
    # a reload loads a rule file at once; in Prometheus pods the rules first travel like the config
    f = poll(lambda: rules_health(s, prometheus, target),
             timeout=s.checks.deadline_seconds + target.sync_seconds, interval=2)
    return dg.AssetCheckResult(passed=f.healthy, severity=dg.AssetCheckSeverity.ERROR,
                               metadata={"alerts": dg.MetadataValue.json(f.details.get("alerts", {})),
                                         "rule_files": dg.MetadataValue.text(", ".join(f.details.get("files", [])) or "none"),
                                         "problems": dg.MetadataValue.text("; ".join(f.details["problems"]) or "none")})
