"""Plan task 7: end-to-end verification — the data really reaches every dashboard panel, and canary
traffic sent now is seen as its own flow within a deadline.

The common failure of every comparable tool is "installed, but the dashboard is empty": checks/panels.py
runs every panel's query against Prometheus.
"""

import dagster as dg

from .. import freshness
from ..checks import poll
from ..checks.canary import canary_finding
from ..checks.caretta import caretta_finding
from ..checks.panels import panel_report, panels_finding
from ..render.scrape import FLOWS_JOB
from ..resources.cluster import ClusterResource
from ..resources.prometheus import PrometheusResource
from . import OWNERS
from .dashboards import caretta_dashboard, goflow2_dashboard
from .prometheus import prometheus_scrape_config

GROUP = "verification"


@dg.asset(group_name=GROUP, deps=[prometheus_scrape_config, caretta_dashboard, goflow2_dashboard],
          kinds={"prometheus"}, owners=OWNERS,
          description="Changes nothing: proves end to end that Caretta links, flows (with a canary when set) "
                      "and every dashboard panel have data in Prometheus")
def end_to_end(context: dg.AssetExecutionContext, prometheus: PrometheusResource) -> dg.MaterializeResult:
    passed, failed = panel_report(prometheus)
    # numbers as numbers, so the UI plots them across runs
    series = {k: int(freshness.value(prometheus.query(f'sum({m}{{job="{FLOWS_JOB}"}})')))
              for k, m in (("flow_series", "netviz_flow_series"), ("flow_series_budget", "netviz_flow_series_budget"))}
    return dg.MaterializeResult(metadata={"panels_with_data": dg.MetadataValue.int(len(passed)),
                                          "panels_without_data": dg.MetadataValue.int(len(failed)),
                                          **{k: dg.MetadataValue.int(v) for k, v in series.items()}})


@dg.asset_check(asset=end_to_end, blocking=True, description="Every panel of every dashboard returns data")
def every_panel_has_data(cluster: ClusterResource, prometheus: PrometheusResource) -> dg.AssetCheckResult:
    # rate() needs two scrapes of fresh series after a deploy
    panels = poll(lambda: panels_finding(prometheus), timeout=cluster.settings.checks.deadline_seconds,
                         interval=3)
    passed, failed = panels.details["passed"], panels.details["failed"]
    return dg.AssetCheckResult(passed=panels.healthy, severity=dg.AssetCheckSeverity.ERROR, metadata={
        "failed": dg.MetadataValue.md("\n".join(f"- {f}" for f in failed) or "none"),
        "passed": dg.MetadataValue.md("\n".join(f"- {p}" for p in passed) or "none")})


@dg.asset_check(asset=end_to_end, blocking=True,
                description="Caretta agents poll and links grow; the flow_freshness sensor re-evaluates it")
def caretta_links_present(cluster: ClusterResource, prometheus: PrometheusResource) -> dg.AssetCheckResult:
    s = cluster.settings
    f = poll(lambda: caretta_finding(s, prometheus), timeout=s.checks.deadline_seconds)
    meta = {"link_series": dg.MetadataValue.int(f.details["link_series"])} if "link_series" in f.details else {}
    return dg.AssetCheckResult(passed=f.healthy, severity=dg.AssetCheckSeverity.ERROR,
                               metadata=meta | {"detail": dg.MetadataValue.text(f.reason)})


@dg.asset_check(asset=end_to_end, blocking=True,
                description="Canary traffic sent now shows up as its own top-talker flow within the deadline")
def canary_seen(cluster: ClusterResource, prometheus: PrometheusResource) -> dg.AssetCheckResult:
    c = cluster.settings.checks
    if not c.canary_command:
        return dg.AssetCheckResult(passed=True, severity=dg.AssetCheckSeverity.WARN, metadata={
            "skipped": dg.MetadataValue.text("no checks.canary_command configured")})
    f = canary_finding(cluster.settings, prometheus, cluster.kube)
    if "error" in f.details:
        return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.ERROR,
                                   metadata={"error": dg.MetadataValue.text(f.details["error"])})
    d = f.details
    return dg.AssetCheckResult(passed=f.healthy, severity=dg.AssetCheckSeverity.ERROR, metadata={
        "flow": dg.MetadataValue.text(f"{c.canary_source} -> {c.canary_destination}"),
        "sent_from": dg.MetadataValue.text(d["sent_from"]),
        "bytes_counted": dg.MetadataValue.float(d["bytes_counted"]),
        "sends": dg.MetadataValue.int(d["sends"]),
        "seen_after_s" if f.healthy else "not_seen_within_s": dg.MetadataValue.float(d["waited_s"])})
