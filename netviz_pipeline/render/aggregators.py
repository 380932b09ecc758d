"""The flow aggregators of the `kafka` transport: `flows.kafka.replicas` pods consuming GoFlow2's topic as
one consumer group (netviz_pipeline/flowagg/kafka_input.py, run from the netviz image).

Each pod counts the partitions the group gives it. GoFlow2 keys every message by (exporter, src, dst)
(render/goflow2.KAFKA_KEY), so a pair lives on one partition and in one replica's top-k: summing the
replicas' series gives the whole picture, and a pair's Space-Saving error is bounded by its own
replica's stream (docs/flow-metrics.md#kafka). The pods serve the same series as the FIFO sidecar, on the
same port name, under app label `flowagg`: every Prometheus mode scrapes them as job netviz-flows.

Credentials: SASL's user and password are mounted from their Secret as files the consumer reads (never
an argument or an env value in the spec), the CA from its Secret. Names from Kubernetes and from the
routers work as in the sidecar (same ServiceAccount, same projected volumes).
"""
from __future__ import annotations

import hashlib
import json

from ..settings import Settings
from . import goflow2, labels

NAME = "flowagg"
SELECTOR = {"app": NAME}
CONFIGMAP = "flowagg-kafka"
CONFIG_DIR = "/etc/netviz-flowagg"
SASL_VOLUME = "kafka-sasl"
SASL_DIR = "/etc/netviz-kafka-sasl"
UID = 65534  # nobody: the consumer needs no identity of its own
# messages waiting in the topic above which a growing backlog is "falling behind" (what one replica
# counts in well under a second: docs/benchmarks.md): the check, the sensor and the alert rule share it
MAX_LAG = 10_000
# librdkafka's names for GoFlow2's SASL mechanisms
SASL_MECHANISMS = {"plain": "PLAIN", "scram-sha256": "SCRAM-SHA-256", "scram-sha512": "SCRAM-SHA-512"}


def security_protocol(k) -> str:
    """librdkafka's security.protocol for the `flows.kafka` section (pods and pipeline alike)."""
    return ("SASL_" if k.sasl else "") + ("SSL" if k.tls else "PLAINTEXT")


def security(s: Settings) -> dict:
    """librdkafka settings for TLS/SASL, and the files (mounted from Secrets) that hold the secrets."""
    k = s.flows.kafka
    out: dict = {}
    protocol = security_protocol(k)
    if protocol != "PLAINTEXT":
        out["security.protocol"] = protocol
    if k.tls and k.tls.ca_secret:
        out["ssl.ca.location"] = f"{goflow2.KAFKA_CA_DIR}/ca.crt"
    if k.sasl:
        out["sasl.mechanism"] = SASL_MECHANISMS[k.sasl.mechanism]
    return out


def secret_files(s: Settings) -> dict[str, str]:
    """librdkafka setting -> file holding its value (a Secret's key mounted read-only)."""
    k = s.flows.kafka
    if not k.sasl:
        return {}
    return {"sasl.username": f"{SASL_DIR}/username", "sasl.password": f"{SASL_DIR}/password"}


def config(s: Settings) -> dict:
    """config.json of kafka_input: the sidecar's counting settings plus where to consume."""
    k = s.flows.kafka
    return goflow2.flowagg_config(s) | {"kafka": {
        "brokers": list(k.brokers), "topic": k.topic, "group": k.consumer_group,
        "security": security(s), "secret_files": secret_files(s)}}


def configmap(s: Settings) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": CONFIGMAP, "namespace": s.goflow2.namespace, "labels": labels(NAME)},
            "data": {"config.json": json.dumps(config(s), indent=1, sort_keys=True) + "\n"}}


def deployment(s: Settings) -> dict:
    f, k = s.flows, s.flows.kafka
    _, ca_mounts, ca_volumes = goflow2.kafka_env_and_mounts(s)
    mounts = [{"name": "config", "mountPath": CONFIG_DIR, "readOnly": True}, *ca_mounts]
    volumes = [{"name": "config", "configMap": {"name": CONFIGMAP, "defaultMode": 0o444}}, *ca_volumes]
    if k.sasl:
        mounts.append({"name": SASL_VOLUME, "mountPath": SASL_DIR, "readOnly": True})
        volumes.append({"name": SASL_VOLUME, "secret": {"secretName": k.sasl.secret, "defaultMode": 0o440,
                                                        "items": [{"key": "username", "path": "username"},
                                                                  {"key": "password", "path": "password"}]}})
    pod: dict = {"securityContext": {"seccompProfile": {"type": "RuntimeDefault"}, "fsGroup": UID},
                 "automountServiceAccountToken": False, "serviceAccountName": "default",
                 "nodeSelector": {"kubernetes.io/os": "linux"},
                 "terminationGracePeriodSeconds": 30}  # SIGTERM: commit what was counted, leave the group
    if f.names.kubernetes:
        pod["serviceAccountName"] = goflow2.FLOWAGG_SA
        mounts.append({"name": goflow2.SA_TOKEN_VOLUME, "mountPath": goflow2.SA_TOKEN_DIR, "readOnly": True})
        volumes.append(goflow2.sa_token_volume())
    if goflow2.reads_router_names(s):
        mounts.append({"name": goflow2.ROUTER_HOSTS_VOLUME, "mountPath": goflow2.ROUTER_HOSTS_DIR, "readOnly": True})
        volumes.append(goflow2.router_hosts_volume(s))
    container = goflow2.aggregator_container(
        s, k.image, ["python3", "-u", "-m", "netviz_pipeline.flowagg.kafka_input"],
        ["--config", f"{CONFIG_DIR}/config.json"], UID,
        # librdkafka's fetch buffers on top of the sidecar's figures (render/goflow2.flowagg_container)
        {"requests": {"cpu": "50m", "memory": "96Mi"}, "limits": {"cpu": "1", "memory": "256Mi"}},
        mounts, liveness_delay=20)
    pod |= {"containers": [container], "volumes": volumes}
    # a new config rolls the pods (a mounted ConfigMap alone would not restart them)
    digest = hashlib.sha256(json.dumps(configmap(s)["data"], sort_keys=True).encode()).hexdigest()[:16]
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": NAME, "namespace": s.goflow2.namespace, "labels": labels(NAME)},
            # RollingUpdate: a new pod joins the group before an old one leaves; the group rebalances
            "spec": {"replicas": k.replicas, "selector": {"matchLabels": SELECTOR},
                     "template": {"metadata": {"labels": labels(NAME), "annotations": {"netviz.io/flowagg-config": digest}},
                                  "spec": pod}}}


def other_transport_objects(s: Settings) -> list[tuple[str, str, str]]:
    """(apiVersion, kind, name) in goflow2.namespace that only the transport NOT in use renders: what the
    goflow2 step removes after a switch (else a switch back to fifo would leave consumers of a topic
    nobody produces to, scraped as flows). The grant allows deleting exactly these names (`prunable`)."""
    if goflow2.kafka_transport(s):
        return [("v1", "ConfigMap", goflow2.FLOWAGG_CONFIGMAP)]
    return [("apps/v1", "Deployment", NAME), ("v1", "ConfigMap", CONFIGMAP), ("v1", "ConfigMap", goflow2.MAPPING_CONFIGMAP)]


def prunable() -> dict[str, list[str]]:
    """Every name other_transport_objects may return, by resource: the grant's resourceNames."""
    return {"deployments": [NAME], "configmaps": sorted([CONFIGMAP, goflow2.MAPPING_CONFIGMAP, goflow2.FLOWAGG_CONFIGMAP])}


def render(s: Settings) -> list[dict]:
    """The aggregators' objects in apply order; [] unless the transport is kafka."""
    if not goflow2.kafka_transport(s):
        return []
    # the aggregators' ClusterRole and binding are install objects: the pipeline verifies them
    return [*goflow2.flowagg_rbac(s), configmap(s), deployment(s)]
