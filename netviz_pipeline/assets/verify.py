"""Plan task 7: end-to-end verification — the data really reaches every dashboard panel, and canary
traffic sent now is seen as its own flow within a deadline.

The common failure of every comparable tool is "installed, but the dashboard is empty": checks/panels.py
runs every panel's query against Prometheus.
"""

import subprocess
import time

import dagster as dg

from .. import freshness
from ..checks import poll
from ..checks.caretta import caretta_finding
from ..checks.panels import panel_report, panels_finding
from ..findings import Finding
from ..render.scrape import FLOWS_JOB
from ..resources.cluster import ClusterResource
from ..resources.prometheus import PrometheusResource
from . import OWNERS
from .dashboards import caretta_dashboard, goflow2_dashboard
from .prometheus import prometheus_scrape_config

GROUP = "verification"
CANARY_RESEND_S = 5.0


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


def run_canary(s, cluster: ClusterResource) -> str:
    """Send the canary traffic: the configured command, in a pod through the API's exec when
    `checks.canary_pod` is set, else on the pipeline's host. Raises with its output when it fails."""
    c = s.checks
    if c.canary_pod:
        pod, rc, out = cluster.kube.exec_in_pod(c.canary_pod.namespace, c.canary_pod.label_selector,
                                                c.canary_command, c.canary_pod.container, timeout=c.deadline_seconds)
        where = f"pod {c.canary_pod.namespace}/{pod}"
    else:
        res = subprocess.run(c.canary_command, capture_output=True, text=True, timeout=c.deadline_seconds)
        rc, out, where = res.returncode, res.stdout + res.stderr, "the pipeline's host"
    if rc != 0:
        raise RuntimeError(f"canary command exited {rc} in {where}: {out.strip()[-500:]}")
    return where


@dg.asset_check(asset=end_to_end, blocking=True,
                description="Canary traffic sent now shows up as its own top-talker flow within the deadline")
def canary_seen(cluster: ClusterResource, prometheus: PrometheusResource) -> dg.AssetCheckResult:
    s = cluster.settings
    c = s.checks
    if not c.canary_command:
        return dg.AssetCheckResult(passed=True, severity=dg.AssetCheckSeverity.WARN, metadata={
            "skipped": dg.MetadataValue.text("no checks.canary_command configured")})
    q = freshness.current_talker_query(str(c.canary_source), str(c.canary_destination))
    before = freshness.value(prometheus.query(q))
    try:
        where = run_canary(s, cluster)
    except Exception as exc:  # noqa: BLE001 - reported as the check's failure
        return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.ERROR,
                                   metadata={"error": dg.MetadataValue.text(str(exc))})
    sent = last = time.monotonic()
    sends = 1

    def seen() -> Finding:
        # Sent again while unseen: a flow exported before GoFlow2 has the exporter's v9 template (a
        # collector that just started) is dropped, and softflowd re-sends templates only every 16 packets.
        nonlocal last, sends
        v = freshness.value(prometheus.query(q))
        if v <= before and time.monotonic() - last >= CANARY_RESEND_S:
            try:
                run_canary(s, cluster)
                sends += 1
            except Exception:  # noqa: BLE001 - the first send worked; keep waiting for it
                pass
            last = time.monotonic()
        return Finding("canary", v > before, f"{v - before:.0f} bytes counted for the canary's flow", {"bytes": v})

    f = poll(seen, timeout=c.deadline_seconds, interval=0.5)
    grown, after = f.healthy, f.details["bytes"]
    return dg.AssetCheckResult(passed=grown, severity=dg.AssetCheckSeverity.ERROR, metadata={
        "flow": dg.MetadataValue.text(f"{c.canary_source} -> {c.canary_destination}"),
        "sent_from": dg.MetadataValue.text(where),
        "bytes_counted": dg.MetadataValue.float(after - before),
        "sends": dg.MetadataValue.int(sends),
        "seen_after_s" if grown else "not_seen_within_s": dg.MetadataValue.float(
            round(time.monotonic() - sent, 1) if grown else float(c.deadline_seconds))})
