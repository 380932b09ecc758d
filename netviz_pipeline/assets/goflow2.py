"""Plan task 3: the GoFlow2 NetFlow collector (Deployment, metrics Service, NodePort UDP Service).

Fixes to the plan: v2 has no `stdout` transport (`-transport file` with an empty path is stdout);
the NodePort keeps the exporter's source address (externalTrafficPolicy Local) so per-router
metrics stay per router, which pins the pod to the node whose address the routers send to. With
standby nodes that node is chosen by placement.py, and the pod moves when its node is lost.
"""

import time

import dagster as dg

from .. import placement
from ..checks.kafka import MAX_LAG, lag_between, lag_finding
from ..render import MANAGED_BY
from ..render import aggregators as render_aggregators
from ..render import goflow2 as render_goflow2
from ..resources.cluster import ClusterResource
from ..resources.kafka import KafkaError, KafkaResource
from . import OWNERS
from .flow_topic import flow_topic
from .report import apply_metadata, finding_result, rollout_metadata

GROUP = "goflow2"


@dg.asset(group_name=GROUP, deps=[flow_topic], kinds={"kubernetes"}, owners=OWNERS,
          description="Changes the cluster: GoFlow2's namespace, the Deployment (collector + flow aggregator "
                      "sidecar, or with transport kafka the collector and the aggregators' own Deployment) "
                      "pinned to the node routers send to, the aggregator's ConfigMap, the metrics "
                      "Service and the NodePort (UDP) where routers send NetFlow; with standby nodes, moves "
                      "GoFlow2 off a lost or cordoned node")
def goflow2(context: dg.AssetExecutionContext, cluster: ClusterResource) -> dg.MaterializeResult:
    s = cluster.settings
    where, _ = placement.look(s, cluster.kube)
    if where.node is None:
        raise dg.Failure(description=f"no node has address {where.address} (cluster.node_address): routers "
                                     "would send NetFlow to a NodePort nowhere; set it to a node's InternalIP")
    if where.moves:
        context.log.warning(f"GoFlow2 {where.reason}; the routers follow in router_softflowd")
    outcomes = cluster.apply(render_goflow2.render(s, node_name=where.node) + render_aggregators.render(s))
    removed = remove_other_transport(cluster, s)
    if removed:
        context.log.info(f"removed what the other flow transport used: {', '.join(removed)}")
    return dg.MaterializeResult(metadata=apply_metadata(outcomes) | {
        "removed": dg.MetadataValue.text(", ".join(removed) or "none"),
        "netflow_endpoint": dg.MetadataValue.text(f"{where.address}:{s.goflow2.netflow_node_port}/udp"),
        "collector_node": dg.MetadataValue.text(where.node), "placement": dg.MetadataValue.text(where.reason)})


def remove_other_transport(cluster: ClusterResource, s) -> list[str]:
    """Delete the objects only the transport not in use renders, if netviz made them (a switch of
    flows.transport); a converged run finds none and deletes nothing."""
    removed = []
    for api_version, kind, name in render_aggregators.other_transport_objects(s):
        obj = cluster.kube.get(api_version, kind, name, s.goflow2.namespace)
        managed = ((obj or {}).get("metadata", {}).get("labels") or {}).get("app.kubernetes.io/managed-by")
        if obj is not None and managed == MANAGED_BY and cluster.kube.delete(api_version, kind, name, s.goflow2.namespace):
            removed.append(f"{kind} {name}")
    return removed


@dg.asset_check(asset=goflow2, blocking=True, description="Deployment rolled out (kstatus rules, waiting reasons)")
def goflow2_rollout(cluster: ClusterResource) -> dg.AssetCheckResult:
    s = cluster.settings
    r, obj, pods = cluster.wait_rollout("Deployment", render_goflow2.NAME, s.goflow2.namespace)
    if r.ready and render_goflow2.kafka_transport(s):
        r, obj, pods = cluster.wait_rollout("Deployment", render_aggregators.NAME, s.goflow2.namespace)
    return dg.AssetCheckResult(passed=r.ready, severity=dg.AssetCheckSeverity.ERROR,
                               metadata=rollout_metadata(r, obj, pods))


LAG_SAMPLE_S = 10.0


@dg.asset_check(asset=goflow2, blocking=False,
                description="Transport kafka: the aggregators' consumer group keeps up (lag not large and growing)")
def aggregators_keep_up(cluster: ClusterResource, kafka: KafkaResource) -> dg.AssetCheckResult:
    s = cluster.settings
    if not render_goflow2.kafka_transport(s):
        return dg.AssetCheckResult(passed=True, metadata={"transport": "fifo"})
    k = s.flows.kafka
    try:
        before = kafka.lag(k.consumer_group, k.topic)
        t0 = time.monotonic()
        time.sleep(LAG_SAMPLE_S)
        after = kafka.lag(k.consumer_group, k.topic)
    except KafkaError as exc:
        return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.WARN, description=str(exc))
    f = lag_finding(*lag_between(before, after), time.monotonic() - t0, MAX_LAG, "kafka")
    return finding_result(f, dg.AssetCheckSeverity.WARN)
