"""Plan task 3: the GoFlow2 NetFlow collector (Deployment, metrics Service, NodePort UDP Service).

Fixes to the plan: v2 has no `stdout` transport (`-transport file` with an empty path is stdout);
the NodePort keeps the exporter's source address (externalTrafficPolicy Local) so per-router
metrics stay per router, which pins the pod to the node whose address the routers send to.
"""

import dagster as dg

from ..render import goflow2 as render_goflow2
from ..resources.cluster import ClusterResource
from . import OWNERS
from .report import apply_metadata, rollout_metadata

GROUP = "goflow2"


def node_for_address(nodes: list[dict], address: str) -> str | None:
    """Name of the node whose InternalIP (or ExternalIP) is `address`, first by name."""
    for node in sorted(nodes, key=lambda n: n["metadata"]["name"]):
        for a in (node.get("status") or {}).get("addresses") or []:
            if a.get("address") == address and a.get("type") in ("InternalIP", "ExternalIP"):
                return node["metadata"]["name"]
    return None


@dg.asset(group_name=GROUP, kinds={"kubernetes"}, owners=OWNERS,
          description="Changes the cluster: GoFlow2's namespace, the Deployment (collector + flow aggregator "
                      "sidecar) pinned to the node routers send to, the aggregator's ConfigMap, the metrics "
                      "Service and the NodePort (UDP) where routers send NetFlow")
def goflow2(context: dg.AssetExecutionContext, cluster: ClusterResource) -> dg.MaterializeResult:
    s = cluster.settings
    node = node_for_address(cluster.kube.list("v1", "Node"), s.cluster.node_address)
    if node is None:
        raise dg.Failure(description=f"no node has address {s.cluster.node_address} (cluster.node_address): routers "
                                     "would send NetFlow to a NodePort nowhere; set it to a node's InternalIP")
    outcomes = cluster.apply(render_goflow2.render(s, node_name=node))
    return dg.MaterializeResult(metadata=apply_metadata(outcomes) | {
        "netflow_endpoint": dg.MetadataValue.text(f"{s.cluster.node_address}:{s.goflow2.netflow_node_port}/udp"),
        "collector_node": dg.MetadataValue.text(node)})


@dg.asset_check(asset=goflow2, blocking=True, description="Deployment rolled out (kstatus rules, waiting reasons)")
def goflow2_rollout(cluster: ClusterResource) -> dg.AssetCheckResult:
    s = cluster.settings
    r, obj, pods = cluster.wait_rollout("Deployment", render_goflow2.NAME, s.goflow2.namespace)
    return dg.AssetCheckResult(passed=r.ready, severity=dg.AssetCheckSeverity.ERROR,
                               metadata=rollout_metadata(r, obj, pods))
