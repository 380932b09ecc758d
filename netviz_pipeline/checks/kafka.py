"""Findings about the `kafka` flow transport: is the topic shaped as the settings ask, and are the
aggregators keeping up (consumer-group lag). Pure rules over what resources/kafka.py reads."""
from __future__ import annotations

from ..findings import Finding
from ..resources.kafka import PartitionLag, TopicShape

SUBJECT_TOPIC = "kafka-topic"
SUBJECT_LAG = "aggregators"


def topic_finding(shape: TopicShape, partitions: int, replicas: int, owner: str) -> Finding:
    """The topic exists with at least the partitions asked and at least one per aggregator replica
    (a group gives each partition to one member: with fewer partitions the extra replicas idle)."""
    details = {"topic": shape.name, "partitions": shape.partitions, "wanted_partitions": partitions,
               "replication_factor": shape.replication_factor, "aggregator_replicas": replicas}
    fix = ("run netviz_deploy (the flow_topic step creates or grows it)" if owner == "netviz"
           else "ask the team that owns it (flows.kafka.topic_owner: external)")
    if shape.partitions == 0:
        return Finding(SUBJECT_TOPIC, False, f"topic {shape.name} does not exist: GoFlow2 cannot produce; {fix}",
                       details, heal=owner == "netviz")
    if shape.partitions < replicas:
        return Finding(SUBJECT_TOPIC, False,
                       f"topic {shape.name} has {shape.partitions} partition(s) for {replicas} aggregator replicas: "
                       f"{replicas - shape.partitions} would idle; {fix}, or lower flows.kafka.replicas",
                       details, heal=owner == "netviz")
    if shape.partitions < partitions:
        return Finding(SUBJECT_TOPIC, False, f"topic {shape.name} has {shape.partitions} partitions, the settings ask "
                                             f"{partitions}; {fix}", details, heal=owner == "netviz")
    return Finding(SUBJECT_TOPIC, True, f"topic {shape.name}: {shape.partitions} partitions, replication "
                                        f"factor {shape.replication_factor}", details)


def total_lag(parts: list[PartitionLag]) -> int:
    return sum(p.lag for p in parts)


def lag_finding(before: list[PartitionLag], after: list[PartitionLag], seconds: float, max_lag: int) -> Finding:
    """Falling behind is lag that is both large and growing across the observation (a burst the group
    works off is not); "no flows" is a topic whose end did not move (nothing produced), told apart
    because healing each needs someone else."""
    lag0, lag1 = total_lag(before), total_lag(after)
    produced = sum(a.high_watermark for a in after) - sum(b.high_watermark for b in before)
    counted = sum(max(a.committed, 0) for a in after) - sum(max(b.committed, 0) for b in before)
    details = {"lag_before": lag0, "lag_after": lag1, "produced": produced, "counted": counted,
               "seconds": round(seconds, 1), "max_lag": max_lag}
    if lag1 > max_lag and lag1 > lag0:
        return Finding(SUBJECT_LAG, False,
                       f"aggregators falling behind: lag grew from {lag0} to {lag1} messages in {seconds:.0f}s "
                       f"({produced} produced, {counted} counted); give them more CPU or raise flows.kafka.replicas "
                       "(and partitions)", details, heal=False)
    if produced == 0:
        return Finding(SUBJECT_LAG, True, f"no flows produced in {seconds:.0f}s (lag {lag1}); the freshness "
                                          "checks say whether the routers are quiet or gone", details)
    return Finding(SUBJECT_LAG, True, f"aggregators keep up: lag {lag1} messages ({produced} produced, "
                                      f"{counted} counted in {seconds:.0f}s)", details)
