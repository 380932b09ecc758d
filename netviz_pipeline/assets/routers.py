"""Plan task 5: softflowd on each router, exporting NetFlow v9 to GoFlow2's NodePort.

Fixes to the plan: persistence the platform supports (pfSense: the package's config.xml and sync,
never rc.conf; FreeBSD: rc vars via sysrc; Debian: /etc/softflowd/<instance>.conf), timeouts that
export finished flows in seconds, the libpcap immediate-mode shim on Debian's softflowd 1.1.0, and
no restart when the router already runs what is wanted.

Also reads, never changes, the names each router knows for its LAN hosts (DHCP static mappings, leases,
/etc/hosts: routers/hostnames.py) into that router's ConfigMap, which the flow aggregator re-reads:
a LAN address then shows as its host name on the flow dashboards.
"""
from concurrent.futures import ThreadPoolExecutor

import dagster as dg

from .. import placement
from .. import routers as drivers
from ..checks.exporters import netflow_check
from ..findings import Finding, healthy
from ..jobs import ROUTER_PARTITIONS
from ..render import goflow2 as render_goflow2
from ..resources.cluster import ClusterResource
from ..resources.prometheus import PrometheusResource
from ..resources.router import RouterError
from ..resources.routers import RoutersResource
from ..settings import Router, Settings
from . import OWNERS
from .goflow2 import goflow2
from .prometheus import prometheus_scrape_config
from .report import apply_metadata, table

GROUP = "routers"
ROUTER_WORKERS = 8


# After the scrape config (plan task 4 before 5), so its check can see the first datagrams counted.
@dg.asset(group_name=GROUP, deps=[goflow2, prometheus_scrape_config], kinds={"ssh"}, owners=OWNERS,
          partitions_def=ROUTER_PARTITIONS,
          description="Changes each router over SSH: installs softflowd if missing, writes its persistent config "
                      "(Debian conf, pfSense config.xml, FreeBSD rc vars, OPNsense API) exporting NetFlow to "
                      "GoFlow2 with short timeouts, and restarts it only when that changed or it runs otherwise")
def router_softflowd(context: dg.AssetExecutionContext, routers: RoutersResource,
                     cluster: ClusterResource) -> dg.MaterializeResult:
    s = routers.config.settings
    chosen = _routers_for_run(context, s)
    s = placement.for_routers(s, cluster.kube)  # with standbys the collector may have moved: follow it
    if s.cluster.node_address != routers.config.settings.cluster.node_address:
        context.log.info(f"the collector runs on a standby node: routers send NetFlow to {s.cluster.node_address}")
    rows: list[dict] = []
    failures, changed = [], 0
    read_names = render_goflow2.reads_router_names(s)
    names: dict[str, drivers.RouterNames] = {}

    def converge(r):
        try:
            with routers.session(r) as ssh:
                out = drivers.converge(ssh, s, r)
                if read_names:  # same session; a failure here is reported, never fails the router
                    try:
                        names[r.name] = drivers.host_names(ssh, r, out.platform)
                    except RouterError as exc:
                        names[r.name] = drivers.RouterNames(problems=[f"names not read: {exc}"])
                return out, None
        except RouterError as exc:  # one router down must not hide the others' results
            return None, exc

    # Routers are independent SSH sessions: converge them in parallel (the step's time is the slowest
    # router's, not the sum), report in the configured order.
    with ThreadPoolExecutor(max_workers=max(1, min(ROUTER_WORKERS, len(chosen)))) as pool:
        results = list(pool.map(converge, chosen))
    for r, (out, exc) in zip(chosen, results):
        if exc is not None:
            failures.append(f"{r.name}: {exc}")
            rows.append({"router": r.name, "platform": r.platform, "changed": False, "restarted": False,
                         "actions": f"error: {exc}", "seconds": 0.0, "host names": ""})
            continue
        for w in out.warnings:
            context.log.warning(f"{r.name}: {w}")
        changed += out.changed
        found = names.get(r.name)
        for p in found.problems if found else ():
            context.log.warning(f"{r.name}: host names: {p}")
        rows.append({"router": r.name, "platform": out.platform, "changed": out.changed, "restarted": out.restarted,
                     "actions": "; ".join(out.actions) or "none (converged)", "seconds": out.seconds,
                     "host names": found.summary() if found else "not read (flows or flows.names.from_routers off)"})
    if not context.has_partition_key:  # each router's partition shows its own result
        for row in rows:
            if not row["actions"].startswith("error:"):
                context.log_event(dg.AssetMaterialization(asset_key=context.asset_key, partition=row["router"],
                                                          metadata={"router": table([row])}))
    # Names of the routers that answered; a router that failed keeps its last ConfigMap (stale names beat
    # none while it is down).
    outcomes = cluster.apply([render_goflow2.router_hosts_configmap(s, r, n.names) for r, n in names.items()
                              if not n.problems or n.names])
    if failures:
        raise dg.Failure(description="could not converge: " + "; ".join(failures),
                         metadata={"routers": table(rows)})
    names_meta = {f"host_names_{k}": v for k, v in apply_metadata(outcomes).items()
                  if k in ("summary", "apply")} if read_names else {}
    return dg.MaterializeResult(metadata={
        **names_meta,
        "routers": table(rows),
        "changed": dg.MetadataValue.int(changed),
        "summary": dg.MetadataValue.text(f"{changed} of {len(chosen)} routers changed" if changed
                                         else f"converged: none of {len(chosen)} routers changed")})


def _routers_for_run(context: dg.AssetExecutionContext, s: Settings) -> list[Router]:
    """The run's router (its partition), or every router, with the partitions synced to the settings."""
    if context.has_partition_key:
        chosen = [r for r in s.routers if r.name == context.partition_key]
        if not chosen:
            raise dg.Failure(f"router {context.partition_key!r} is not in the settings (routers[].name): "
                             "run without a partition to sync the router partitions")
        return chosen
    names = [r.name for r in s.routers]
    known = set(context.instance.get_dynamic_partitions(ROUTER_PARTITIONS.name))
    if missing := [n for n in names if n not in known]:
        context.instance.add_dynamic_partitions(ROUTER_PARTITIONS.name, missing)
    for gone in sorted(known - set(names)):  # removed from the settings: no longer a router of ours
        context.instance.delete_dynamic_partition(ROUTER_PARTITIONS.name, gone)
    return list(s.routers)


@dg.asset_check(asset=router_softflowd, blocking=True,
                description="Every router's exporter is healthy: GoFlow2 counts its NetFlow, or softflowd runs and "
                            "its own counters show a quiet link; tells exporter down, unreachable, datagrams lost "
                            "and collector down apart. The flow_freshness sensor re-evaluates it between runs")
def netflow_arriving(cluster: ClusterResource, prometheus: PrometheusResource,
                     routers: RoutersResource) -> dg.AssetCheckResult:
    s = placement.for_routers(cluster.settings, cluster.kube)
    looks = netflow_check(s, prometheus, routers, timeout=s.checks.deadline_seconds)
    bad = [f"{lk.details['router']}: {lk.reason}" for lk in looks if not lk.healthy]
    return dg.AssetCheckResult(passed=healthy(looks), severity=dg.AssetCheckSeverity.ERROR, metadata={
        "routers": exporters_table(looks), "problems": dg.MetadataValue.text("; ".join(bad) or "none"),
        "datagrams": dg.MetadataValue.int(int(sum(lk.details["datagrams"] for lk in looks)))})


def exporters_table(looks: list[Finding]) -> dg.MetadataValue:
    """Per-router findings (checks.exporters.exporter_finding) as a Dagster table (numbers as numbers, so the UI
    can sort them)."""
    return table([{"router": lk.details["router"], "healthy": lk.healthy, "cause": lk.details["cause"],
                   "datagrams": int(lk.details["datagrams"]),
                   "reason": lk.reason.removeprefix(f"{lk.details['cause']}: ")} for lk in looks])

