"""Plan tasks 1-2: Caretta (eBPF pod-to-pod map) and its dashboard.

Fixes to the plan: the chart has no Service to scrape, so a headless Service (and pod discovery) lets
Prometheus reach every DaemonSet pod; nodes are checked before rollout (kernel version, BTF, the
BPF-map memory charge on kernels >= 6.1 that OOM-kills the chart's 300Mi limit).
"""

import dagster as dg

from .. import preflight
from ..render import caretta as render_caretta
from ..resources.cluster import ClusterResource
from . import OWNERS
from .report import apply_metadata, rollout_metadata, table

GROUP = "caretta"


@dg.asset(group_name=GROUP, kinds={"kubernetes"}, owners=OWNERS,
          description="Changes the cluster: Caretta's namespace, ServiceAccount, ClusterRole and binding (read "
                      "only what Caretta watches), the DaemonSet (one eBPF agent per node) and a headless Service. "
                      "First checks every node's kernel, BTF and memory (preflight); applies nothing if one fails")
def caretta(context: dg.AssetExecutionContext, cluster: ClusterResource) -> dg.MaterializeResult:
    s = cluster.settings
    findings = preflight.caretta_preflight(cluster.kube.list("v1", "Node"), s.caretta.resources.memory_limit)
    for f in findings:
        (context.log.warning if f.severity != "info" else context.log.info)(f"preflight {f.node}: {f.message}")
    if preflight.blocks_rollout(findings, s.caretta.preflight):
        raise dg.Failure(
            description="Caretta preflight found nodes where the agent cannot run; nothing was applied. "
                        "Fix the findings or set caretta.preflight: warn.",
            metadata={"findings": _findings(findings)})
    outcomes = cluster.apply(render_caretta.render(s))
    return dg.MaterializeResult(metadata=apply_metadata(outcomes) |
                                {"preflight": _findings(findings)})


def _findings(findings: list[preflight.Finding]) -> dg.MetadataValue:
    if not findings:
        return dg.MetadataValue.text("all nodes pass")
    return table([{"node": f.node, "severity": f.severity, "finding": f.message} for f in findings])


@dg.asset_check(asset=caretta, blocking=True, description="DaemonSet rolled out on every eligible node (desired > 0)")
def caretta_rollout(cluster: ClusterResource) -> dg.AssetCheckResult:
    s = cluster.settings
    r, obj, pods = cluster.wait_rollout("DaemonSet", render_caretta.NAME, s.caretta.namespace)
    return dg.AssetCheckResult(passed=r.ready, severity=dg.AssetCheckSeverity.ERROR,
                               metadata=rollout_metadata(r, obj, pods))

