"""Kafka as a resource: the flow topic's shape, creating or growing it, and the aggregators' consumer-group
lag (confluent-kafka's AdminClient and a metadata-only Consumer; librdkafka speaks the protocol).

Used only with `flows.transport: kafka`. Credentials come from the settings' references (SASL user and
password from the environment variables named there, the CA from a file), never from the metadata.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

import dagster as dg

from ..render import aggregators
from .config import NetvizConfig

TIMEOUT_S = 10.0


class KafkaError(RuntimeError):
    pass


@dataclass(frozen=True)
class TopicShape:
    name: str
    partitions: int  # 0: the topic does not exist
    replication_factor: int


@dataclass(frozen=True)
class PartitionLag:
    partition: int
    committed: int  # -1: the group never committed on it
    high_watermark: int

    @property
    def lag(self) -> int:
        """Messages not yet counted; a never-committed partition counts from its low end (0 here)."""
        return max(0, self.high_watermark - max(self.committed, 0))


def client_config(settings, timeout_s: float = TIMEOUT_S) -> dict:
    """librdkafka settings for the pipeline's own connection (secrets read from the environment)."""
    k = settings.flows.kafka
    conf: dict = {"bootstrap.servers": ",".join(k.brokers), "socket.timeout.ms": int(timeout_s * 1000),
                  "security.protocol": aggregators.security_protocol(k)}
    if k.tls and k.tls.ca_file:
        conf["ssl.ca.location"] = str(k.tls.ca_file)
    if k.sasl:
        conf |= {"sasl.mechanism": aggregators.SASL_MECHANISMS[k.sasl.mechanism],
                 "sasl.username": os.environ.get(k.sasl.username_env, ""),
                 "sasl.password": os.environ.get(k.sasl.password_env, "")}
    return conf


class _Errors:
    """librdkafka's error callback: the client's own reasons (e.g. "SASL authentication error:
    Authentication failed: Invalid username or password"), which a failed request reports only as
    "Broker transport failure"."""

    def __init__(self):
        self.seen: list[str] = []

    def __call__(self, err) -> None:
        text = re.sub(r" \(after \d+ms in state \w+\)", "", err.str())  # one line per distinct reason
        if text not in self.seen:
            self.seen.append(text)

    def why(self) -> str:
        auth = [e for e in self.seen if "SASL" in e or "SSL" in e or "uthenticat" in e]
        return "; ".join((auth or self.seen)[-2:])


class KafkaResource(dg.ConfigurableResource):
    config: NetvizConfig
    timeout_seconds: float = TIMEOUT_S

    def _conf(self) -> tuple[dict, _Errors]:
        errors = _Errors()
        return client_config(self.config.settings, self.timeout_seconds) | {"error_cb": errors}, errors

    def _admin(self):
        from confluent_kafka.admin import AdminClient

        conf, errors = self._conf()
        return AdminClient(conf), errors

    def _unreachable(self, exc: Exception, client, errors: _Errors) -> KafkaError:
        k = self.config.settings.flows.kafka
        client.poll(0)  # serves the queued error callbacks
        why = errors.why()
        hint = ""
        if "SASL" in why or "uthenticat" in why:
            hint = (f" Check the user and password in ${k.sasl.username_env} / ${k.sasl.password_env} "
                    "(flows.kafka.sasl) and its mechanism." if k.sasl else
                    " The brokers ask for SASL: set flows.kafka.sasl.")
        elif "SSL" in why:
            hint = " Check flows.kafka.tls (ca_file: the CA that signed the brokers' certificates)."
        return KafkaError(f"Kafka brokers {','.join(k.brokers)} (flows.kafka.brokers) unreachable or refused the "
                          f"request: {exc}" + (f" ({why})" if why else "") + hint)

    def topic(self, name: str) -> TopicShape:
        from confluent_kafka import KafkaException

        admin, errors = self._admin()
        try:
            md = admin.list_topics(topic=name, timeout=self.timeout_seconds)
        except KafkaException as exc:
            raise self._unreachable(exc, admin, errors) from None
        t = md.topics.get(name)
        if t is None or t.error is not None and t.error.code() == 3:  # UNKNOWN_TOPIC_OR_PART
            return TopicShape(name, 0, 0)
        if t.error is not None:
            raise KafkaError(f"topic {name}: {t.error.str()}")
        rf = min((len(p.replicas) for p in t.partitions.values()), default=0)
        return TopicShape(name, len(t.partitions), rf)

    def create_topic(self, name: str, partitions: int, replication_factor: int | None) -> None:
        from confluent_kafka.admin import NewTopic

        admin, _ = self._admin()  # held until the future resolves: a collected client fails it (_DESTROY)
        fut = admin.create_topics([NewTopic(name, partitions, replication_factor or -1)], request_timeout=self.timeout_seconds)[name]
        try:
            fut.result(timeout=self.timeout_seconds + 5)
        except Exception as exc:  # noqa: BLE001 - KafkaException carries the broker's reason
            raise KafkaError(f"creating topic {name} ({partitions} partitions): {exc}") from None

    def grow_partitions(self, name: str, partitions: int) -> None:
        from confluent_kafka.admin import NewPartitions

        admin, _ = self._admin()
        fut = admin.create_partitions([NewPartitions(name, partitions)], request_timeout=self.timeout_seconds)[name]
        try:
            fut.result(timeout=self.timeout_seconds + 5)
        except Exception as exc:  # noqa: BLE001
            raise KafkaError(f"growing topic {name} to {partitions} partitions: {exc}") from None

    def lag(self, group: str, topic: str) -> list[PartitionLag]:
        """Committed offset and high watermark of every partition of `topic` for `group`."""
        from confluent_kafka import Consumer, KafkaException, TopicPartition

        shape = self.topic(topic)
        conf, errors = self._conf()
        consumer = Consumer(conf | {"group.id": group, "enable.auto.commit": False})  # never subscribes: it only reads the group's committed offsets
        try:
            parts = [TopicPartition(topic, p) for p in range(shape.partitions)]
            committed = consumer.committed(parts, timeout=self.timeout_seconds)
            out = []
            for tp in committed:
                _, high = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=self.timeout_seconds)
                out.append(PartitionLag(tp.partition, tp.offset if tp.offset >= 0 else -1, high))
            return out
        except KafkaException as exc:
            raise self._unreachable(exc, consumer, errors) from None
        finally:
            consumer.close()
