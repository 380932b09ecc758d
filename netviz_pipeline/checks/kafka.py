"""Findings about the `kafka` flow transport: is the topic shaped as the settings ask, and are the
aggregators keeping up (consumer-group lag). Pure rules over what resources/kafka.py reads."""
from __future__ import annotations

from ..findings import Finding
from ..render import aggregators
from ..resources.kafka import PartitionLag, TopicShape

SUBJECT_TOPIC = "kafka-topic"
SUBJECT_LAG = "aggregators"
MAX_LAG = aggregators.MAX_LAG


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


def lag_between(before: list[PartitionLag], after: list[PartitionLag]) -> tuple[int, int, int, int]:
    """(lag before, lag after, produced, counted) between two reads of the group's partitions."""
    produced = sum(a.high_watermark for a in after) - sum(b.high_watermark for b in before)
    counted = sum(max(a.committed, 0) for a in after) - sum(max(b.committed, 0) for b in before)
    return total_lag(before), total_lag(after), produced, counted


def lag_finding(lag0: float, lag1: float, produced: float, counted: float, seconds: float, max_lag: int,
                via: str) -> Finding:
    """The one rule for "are the aggregators keeping up", asked by the asset check (the group's offsets,
    read from Kafka) and by the sensor (the replicas' own series, from Prometheus).

    Falling behind is lag that is both large and growing across the observation (a burst the group
    works off is not); stalled is a large backlog nobody counts; "no flows" is nothing produced and
    nothing left to count, told apart because healing each needs someone else (more aggregator CPU or
    replicas; the routers)."""
    details = {"lag_before": int(lag0), "lag_after": int(lag1), "produced": int(produced), "counted": int(counted),
               "seconds": round(seconds, 1), "max_lag": max_lag, "checked_via": via}
    if lag1 > max_lag and counted <= 0:
        return Finding(SUBJECT_LAG, False,
                       f"aggregators stalled: {lag1:.0f} messages wait in the topic and none was counted in "
                       f"{seconds:.0f}s; check the flowagg pods' logs (and that they reach the brokers)", details,
                       heal=False)
    if lag1 > max_lag and lag1 > lag0:
        return Finding(SUBJECT_LAG, False,
                       f"aggregators falling behind: lag grew from {lag0:.0f} to {lag1:.0f} messages in {seconds:.0f}s "
                       f"({produced:.0f} produced, {counted:.0f} counted); give them more CPU or raise "
                       "flows.kafka.replicas (and partitions)", details, heal=False)
    if produced <= 0 and lag1 == 0:
        return Finding(SUBJECT_LAG, True, f"no flows produced in {seconds:.0f}s and none left to count; the "
                                          "freshness checks say whether the routers are quiet or gone", details)
    return Finding(SUBJECT_LAG, True, f"aggregators keep up: lag {lag1:.0f} messages ({produced:.0f} produced, "
                                      f"{counted:.0f} counted in {seconds:.0f}s)", details)


SENSOR_WINDOW_S = 120


def lag_from_series(prom, job: str, max_lag: int) -> Finding:
    """The sensor's view: the replicas' summed lag now and SENSOR_WINDOW_S ago, and what they counted
    in between (netviz_flow_kafka_* series); a replica that cannot reach the brokers is its own finding."""
    from ..freshness import value

    sel = f'{{job="{job}"}}'
    w = SENSOR_WINDOW_S
    disconnected = prom.query(f"netviz_flow_kafka_connected{sel} == 0")
    if disconnected:
        pods = sorted(r["metric"].get("pod", r["metric"].get("instance", "?")) for r in disconnected)
        return Finding(SUBJECT_LAG, False, f"aggregator replica(s) {', '.join(pods)} cannot reach the Kafka brokers "
                                           "(flows.kafka.brokers): flows wait in the topic; check the brokers and the "
                                           "network between them", {"disconnected": pods}, heal=False)
    lag1 = value(prom.query(f"sum(netviz_flow_kafka_lag_messages{sel})"))
    lag0 = value(prom.query(f"sum(netviz_flow_kafka_lag_messages{sel} offset {w}s)"))
    counted = value(prom.query(f"sum(increase(netviz_flow_kafka_messages_total{sel}[{w}s]))"))
    return lag_finding(lag0, lag1, counted + lag1 - lag0, counted, w, max_lag, "prometheus")
