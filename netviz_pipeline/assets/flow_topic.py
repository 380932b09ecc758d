"""The `kafka` flow transport's topic (flows.transport: kafka; with the default fifo this step has
nothing to do and says so). GoFlow2 produces to it and the aggregators consume it as one group.

With `topic_owner: netviz` the step creates the topic with the partitions asked, or grows it (Kafka
cannot shrink a topic: fewer partitions asked than present is left alone and reported). With
`external` the user's Kafka team owns it: the step only verifies, and changes nothing.
"""

import dagster as dg

from ..checks.kafka import topic_finding
from ..render.goflow2 import kafka_transport
from ..resources.cluster import ClusterResource
from ..resources.kafka import KafkaError, KafkaResource
from . import OWNERS
from .report import finding_result

GROUP = "goflow2"


@dg.asset(group_name=GROUP, kinds={"kafka"}, owners=OWNERS,
          description="Changes Kafka (transport kafka only): creates the flow topic with the partitions asked, "
                      "or grows it; verifies only when flows.kafka.topic_owner is external")
def flow_topic(context: dg.AssetExecutionContext, cluster: ClusterResource, kafka: KafkaResource) -> dg.MaterializeResult:
    if not kafka_transport(cluster.settings):
        return dg.MaterializeResult(metadata={"transport": "fifo", "changed": 0,
                                              "note": "flows.transport is fifo: no topic is used"})
    k = cluster.settings.flows.kafka
    try:
        shape = kafka.topic(k.topic)
        action = "unchanged"
        if k.topic_owner == "netviz":
            if shape.partitions == 0:
                kafka.create_topic(k.topic, k.partitions, k.replication_factor)
                action = "created"
            elif shape.partitions < k.partitions:
                kafka.grow_partitions(k.topic, k.partitions)
                action = f"grown from {shape.partitions}"
            elif shape.partitions > k.partitions:
                context.log.warning(f"topic {k.topic} has {shape.partitions} partitions, more than the {k.partitions} "
                                    "asked: Kafka cannot shrink a topic, left as is")
            shape = kafka.topic(k.topic) if action != "unchanged" else shape
    except KafkaError as exc:
        raise dg.Failure(description=str(exc)) from None
    context.log.info(f"topic {k.topic}: {action} ({shape.partitions} partitions)")
    return dg.MaterializeResult(metadata={"transport": "kafka", "topic": k.topic, "action": action,
                                          "changed": int(action != "unchanged"), "partitions": shape.partitions,
                                          "replication_factor": shape.replication_factor, "owner": k.topic_owner})


@dg.asset_check(asset=flow_topic, blocking=True,
                description="The topic exists with the partitions asked, at least one per aggregator replica")
def flow_topic_shape(cluster: ClusterResource, kafka: KafkaResource) -> dg.AssetCheckResult:
    if not kafka_transport(cluster.settings):
        return dg.AssetCheckResult(passed=True, metadata={"transport": "fifo"})
    k = cluster.settings.flows.kafka
    try:
        shape = kafka.topic(k.topic)
    except KafkaError as exc:
        return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.ERROR, description=str(exc))
    return finding_result(topic_finding(shape, k.partitions, k.replicas, k.topic_owner))
