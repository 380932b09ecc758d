"""GoFlow2 v2.2.1 collector: Deployment, metrics Service and the UDP NodePort routers export to.

Flags are v2's: there is no `-transport stdout`; stdout is `-transport file` with an empty
`-transport.file`. The NodePort uses externalTrafficPolicy Local so the datagram's source address
(GoFlow2's `router` label / `sampler_address`) stays the exporter's, not a node's SNAT address —
which means the pod must run on the node routers send to: pass that node's name as `node_name`.

With `flows.enabled` (default) the pod gets a second container, the flow aggregator (docs/flow-metrics.md):
GoFlow2 writes JSON to a FIFO on a memory emptyDir and the aggregator, a stdlib-only script shipped
in a ConfigMap and run by a stock python image, turns it into bounded Prometheus series on port
`flow-metrics`. GoFlow2's container starts through the image's own /bin/sh to create the FIFO and
hold it open read+write for GoFlow2's lifetime (see `fifo_script`).

With `flows.names.kubernetes` the aggregator names talker addresses from the API server (flowagg/names.py)
as ServiceAccount `netviz-flowagg`: its token is projected into the aggregator container only (the pod
automounts none, so GoFlow2 has no API credentials), and its ClusterRole grants get/list/watch on
exactly what naming reads. The ClusterRole and binding are install objects (render/install.py): an
administrator applies them; the pipeline applies the ServiceAccount.
"""
from __future__ import annotations

import hashlib
import json

from .. import flowagg
from ..settings import Settings
from . import labels, namespace, pod_security_level

NAME = "goflow2"
SELECTOR = {"app": NAME}
FLOWS_VOLUME = "flows"
FLOWAGG = "flowagg"  # the aggregator container
FLOWAGG_CONFIGMAP = "goflow2-flowagg"
FLOWAGG_VOLUME = "flowagg"
FLOWAGG_DIR = "/etc/netviz-flowagg"
FLOWS_PORT_NAME = "flow-metrics"
FLOWAGG_UID = 65534  # nobody: the python image would run as root otherwise
# netsampler/goflow2 declares `USER flow` by name (`adduser -S flow`: uid 100, group nogroup 65533). A
# kubelet cannot prove a named user is not root, so runAsNonRoot without a numeric runAsUser ends in
# CreateContainerConfigError; run as the image's own user, by number.
GOFLOW2_UID, GOFLOW2_GID = 100, 65533
# Names the routers know (routers/hostnames.py): one ConfigMap per router, written by that router's step
# (a partition run applies only its own; one shared object would lose the other routers' keys under
# server-side apply), projected together into one directory the aggregator re-reads. Optional: the
# aggregator starts before any router step ran.
ROUTER_HOSTS_PREFIX = "goflow2-flowagg-hosts-"
ROUTER_HOSTS_KEY = "hosts.json"
ROUTER_HOSTS_VOLUME = "router-hosts"
ROUTER_HOSTS_DIR = "/var/run/netviz-router-hosts"
FLOWAGG_SA = "netviz-flowagg"  # ServiceAccount, ClusterRole and ClusterRoleBinding of the aggregator
SA_TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"  # where names.py reads token and CA
SA_TOKEN_VOLUME = "flowagg-api"
# flowagg/names.py lists and watches exactly these, no more (ReplicaSets and Jobs as metadata only)
NAMES_WATCHED = (("", ("pods", "services", "nodes")), ("apps", ("replicasets",)), ("batch", ("jobs",)))
# The kafka transport (flows.transport: kafka): GoFlow2 keys each message by these fields (a 4-byte
# FNV-32 of them, goflow2 v2.2.1 format/protobuf), and with hashing on the key picks the partition: one
# (exporter, src, dst) pair always lands on one partition, so one aggregator replica holds all of it.
KAFKA_KEY = ("sampler_address", "src_addr", "dst_addr")
# sarama batches messages up to 5 s by default: flows would reach the dashboards seconds later than
# through the FIFO; 1 s keeps them close, at one produce request per second per broker at low rates
KAFKA_FLUSH = "1s"
MAPPING_CONFIGMAP = "goflow2-mapping"
MAPPING_VOLUME = "mapping"
MAPPING_DIR = "/etc/goflow2"
KAFKA_CA_VOLUME = "kafka-ca"
KAFKA_CA_DIR = "/etc/netviz-kafka-ca"
# A container that exits with an error leaves its last log lines in its status, so the rollout's
# finding says why it crashes (e.g. GoFlow2: "kafka: client has run out of available brokers")
TERMINATION_MESSAGE = "FallbackToLogsOnError"


def fifo_script(s: Settings) -> str:
    """/bin/sh script of the GoFlow2 container (alpine busybox; `$@` = GoFlow2's args).

    goflow2 v2.2.1's file transport opens `-transport.file` with O_APPEND|O_CREATE|O_WRONLY once at
    start (before its HTTP server) and never reopens it except on SIGHUP; a write error (EPIPE once
    the reader is gone) only fails that record. So: create the FIFO before GoFlow2 can create a
    regular file there, and keep it open read+write on fd 3 for GoFlow2's lifetime. GoFlow2's open
    never blocks, an aggregator restart never leaves it writing into a broken pipe (records wait
    in the pipe buffer, then the UDP socket; GoFlow2's drop counters show any loss), and when GoFlow2
    exits the last writer is gone, so the aggregator reads EOF and restarts with it."""
    return ("set -eu\n"
            f"f={s.flows.fifo}\n"
            '[ -p "$f" ] || { rm -f "$f"; mkfifo -m 0644 "$f"; }\n'
            'exec 3<>"$f"\n'
            'exec ./goflow2 "$@"\n')


def flowagg_config(s: Settings) -> dict:
    f = s.flows
    return {"top_k": f.top_k.model_dump(), "networks": {k: list(v) for k, v in f.networks.items()},
            "idle_seconds": f.idle_seconds,
            "names": {"kubernetes": f.names.kubernetes, "max_entries": f.names.max_entries,
                      "hosts": dict(sorted(f.names.hosts.items())),
                      "router_hosts_dir": ROUTER_HOSTS_DIR if reads_router_names(s) else None}}


def reads_router_names(s: Settings) -> bool:
    """The router step reads the routers' names and the aggregator mounts them."""
    return s.flows.enabled and s.flows.names.from_routers and bool(s.routers)


def router_hosts_configmap(s: Settings, router: str, names: dict[str, str]) -> dict:
    """The names one router knows, as the aggregator reads them (sorted: same names, same object)."""
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": ROUTER_HOSTS_PREFIX + router, "namespace": s.goflow2.namespace,
                         "labels": labels(NAME, "router-hosts")},
            "data": {ROUTER_HOSTS_KEY: json.dumps(dict(sorted(names.items())), indent=0, sort_keys=True) + "\n"}}


def router_hosts_volume(s: Settings) -> dict:
    """Every configured router's names ConfigMap, each optional, as <router>.json in one directory."""
    return {"name": ROUTER_HOSTS_VOLUME, "projected": {"defaultMode": 0o444, "sources": [
        {"configMap": {"name": ROUTER_HOSTS_PREFIX + r.name, "optional": True,
                       "items": [{"key": ROUTER_HOSTS_KEY, "path": f"{r.name}.json"}]}} for r in s.routers]}}


def flowagg_configmap(s: Settings) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": FLOWAGG_CONFIGMAP, "namespace": s.goflow2.namespace, "labels": labels(NAME, FLOWAGG)},
            "data": {**flowagg.sources(),
                     "config.json": json.dumps(flowagg_config(s), indent=1, sort_keys=True) + "\n"}}


def flowagg_rbac(s: Settings) -> list[dict]:
    """The aggregator's ServiceAccount (the pipeline applies it) and its ClusterRole + binding (install
    objects: an administrator applies them); [] when names from Kubernetes are off."""
    if not (s.flows.enabled and s.flows.names.kubernetes):
        return []
    ns, lbl = s.goflow2.namespace, labels(NAME, FLOWAGG)
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": FLOWAGG_SA, "namespace": ns, "labels": lbl}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": FLOWAGG_SA, "labels": lbl},
         "rules": [{"apiGroups": [g], "resources": list(r), "verbs": ["get", "list", "watch"]} for g, r in NAMES_WATCHED]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": FLOWAGG_SA, "labels": lbl},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": FLOWAGG_SA},
         "subjects": [{"kind": "ServiceAccount", "name": FLOWAGG_SA, "namespace": ns}]},
    ]


def sa_token_volume() -> dict:
    """What the kubelet's automount would project (token, cluster CA, namespace), as a volume that only
    the aggregator container mounts. The token is bound to the pod and rotated; names.py re-reads it."""
    return {"name": SA_TOKEN_VOLUME, "projected": {"defaultMode": 0o444, "sources": [
        {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace",
                                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}]}}


def aggregator_container(s: Settings, image: str, command: list[str], args: list[str], uid: int,
                         resources: dict, mounts: list[dict], liveness_delay: int = 10) -> dict:
    """An aggregator container, the FIFO sidecar or a kafka replica: same series on the same port, same
    probes and the same hardened security context; what differs is given."""
    probe = {"httpGet": {"path": "/healthz", "port": FLOWS_PORT_NAME}, "periodSeconds": 10, "timeoutSeconds": 2}
    return {
        "name": FLOWAGG, "image": image, "imagePullPolicy": "IfNotPresent", "command": command,
        "args": [*args, "--listen", f"0.0.0.0:{s.flows.metrics_port}"],
        "terminationMessagePolicy": TERMINATION_MESSAGE,
        "ports": [{"name": FLOWS_PORT_NAME, "containerPort": s.flows.metrics_port, "protocol": "TCP"}],
        "readinessProbe": probe | {"initialDelaySeconds": 2},
        "livenessProbe": probe | {"initialDelaySeconds": liveness_delay, "failureThreshold": 3},
        "resources": resources,
        "securityContext": {"runAsNonRoot": True, "runAsUser": uid, "runAsGroup": uid,
                            "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": mounts,
    }


def flowagg_container(s: Settings) -> dict:
    f = s.flows
    return aggregator_container(
        s, f.image, ["python3", "-u", "-B", f"{FLOWAGG_DIR}/flowagg.py"],
        ["--input", str(f.fifo), "--config", f"{FLOWAGG_DIR}/config.json"], FLOWAGG_UID,
        # bench: ~55 MiB peak RSS after 10M distinct pairs; ~150k records per CPU-second; Kubernetes
        # names add ~10-14 MiB per 10,000 pods, at most ~40 MiB at the default 50,000 objects (flowagg_names.py)
        {"requests": {"cpu": "20m", "memory": "48Mi"}, "limits": {"cpu": "500m", "memory": "128Mi"}},
        [{"name": FLOWS_VOLUME, "mountPath": str(f.fifo.parent)},
         {"name": FLOWAGG_VOLUME, "mountPath": FLOWAGG_DIR, "readOnly": True}]
        + ([{"name": SA_TOKEN_VOLUME, "mountPath": SA_TOKEN_DIR, "readOnly": True}] if f.names.kubernetes else [])
        + ([{"name": ROUTER_HOSTS_VOLUME, "mountPath": ROUTER_HOSTS_DIR, "readOnly": True}]
           if reads_router_names(s) else []))


def kafka_transport(s: Settings) -> bool:
    return s.flows.enabled and s.flows.transport == "kafka"


def mapping_configmap(s: Settings) -> dict:
    """GoFlow2's mapping file: only the message key (the fields stay GoFlow2's own protobuf fields)."""
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": MAPPING_CONFIGMAP, "namespace": s.goflow2.namespace, "labels": labels(NAME, "mapping")},
            "data": {"mapping.yaml": "formatter:\n  key:\n" + "".join(f"    - {k}\n" for k in KAFKA_KEY)}}


def kafka_args(s: Settings) -> list[str]:
    k = s.flows.kafka
    out = ["-transport", "kafka", "-format", "bin", f"-transport.kafka.brokers={','.join(k.brokers)}",
           f"-transport.kafka.topic={k.topic}", f"-transport.kafka.version={k.protocol_version}",
           "-transport.kafka.hashing=true", f"-transport.kafka.flushfreq={KAFKA_FLUSH}", f"-mapping={MAPPING_DIR}/mapping.yaml"]
    if k.compression != "none":
        out.append(f"-transport.kafka.compression={k.compression}")
    if k.tls:
        out.append("-transport.kafka.tls=true")
    if k.sasl:  # user and password come from the environment (KAFKA_SASL_USER/PASS), from the Secret
        out.append(f"-transport.kafka.sasl={k.sasl.mechanism}")
    return out


def kafka_env_and_mounts(s: Settings) -> tuple[list[dict], list[dict], list[dict]]:
    """(env, volumeMounts, volumes) that give a container the brokers' credentials: SASL from the Secret
    by reference (never a value in the spec), the CA mounted from its Secret."""
    k = s.flows.kafka
    env, mounts, volumes = [], [], []
    if k.sasl:
        env += [{"name": var, "valueFrom": {"secretKeyRef": {"name": k.sasl.secret, "key": key}}}
                for var, key in (("KAFKA_SASL_USER", "username"), ("KAFKA_SASL_PASS", "password"))]
    if k.tls and k.tls.ca_secret:
        env.append({"name": "SSL_CERT_FILE", "value": f"{KAFKA_CA_DIR}/ca.crt"})  # Go's and Python's CA file
        mounts.append({"name": KAFKA_CA_VOLUME, "mountPath": KAFKA_CA_DIR, "readOnly": True})
        volumes.append({"name": KAFKA_CA_VOLUME, "secret": {"secretName": k.tls.ca_secret, "defaultMode": 0o444,
                                                             "items": [{"key": "ca.crt", "path": "ca.crt"}]}})
    return env, mounts, volumes


def args(s: Settings) -> list[str]:
    g = s.goflow2
    if kafka_transport(s):
        return ["-listen", f"netflow://:{g.netflow_port}", *kafka_args(s), "-addr", f":{g.metrics_port}"]
    if s.flows.enabled:
        out_file = str(s.flows.fifo)
    else:
        out_file = str(g.flows_file) if g.flows_file else ""  # "" = stdout
    return ["-listen", f"netflow://:{g.netflow_port}",
            "-transport", "file", f"-transport.file={out_file}",
            "-format", "json",
            "-addr", f":{g.metrics_port}"]


def deployment(s: Settings, node_name: str | None = None) -> dict:
    g = s.goflow2
    probe = {"httpGet": {"path": "/__health", "port": "metrics"}, "periodSeconds": 10, "timeoutSeconds": 2}
    container = {
        "name": NAME, "image": g.image, "imagePullPolicy": "IfNotPresent", "args": args(s),
        "terminationMessagePolicy": TERMINATION_MESSAGE,
        "ports": [{"name": "netflow", "containerPort": g.netflow_port, "protocol": "UDP"},
                  {"name": "metrics", "containerPort": g.metrics_port, "protocol": "TCP"}],
        "readinessProbe": probe | {"initialDelaySeconds": 2},
        "livenessProbe": probe | {"initialDelaySeconds": 10, "failureThreshold": 3},
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}},
        "securityContext": {"runAsNonRoot": True, "runAsUser": GOFLOW2_UID, "runAsGroup": GOFLOW2_GID,
                            "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
    }
    # RuntimeDefault seccomp: with the containers' settings this meets Pod Security "restricted"
    # no container gets API credentials by default; the aggregator gets its own (sa_token_volume)
    # "default" spelt out: a switch to the kafka transport moves the aggregator's account off this pod, and
    # a dropped serviceAccountName comes back from the deprecated serviceAccount field the API server keeps
    pod: dict = {"securityContext": {"seccompProfile": {"type": "RuntimeDefault"}}, "automountServiceAccountToken": False,
                 "serviceAccountName": "default", "containers": [container], "nodeSelector": {"kubernetes.io/os": "linux"}}
    if node_name:  # externalTrafficPolicy Local only delivers on nodes running the pod
        pod["nodeSelector"]["kubernetes.io/hostname"] = node_name
    template_meta: dict = {"labels": labels(NAME)}
    if kafka_transport(s):  # no sidecar: the aggregators are their own Deployment (render/aggregators.py)
        env, mounts, volumes = kafka_env_and_mounts(s)
        container["volumeMounts"] = [{"name": MAPPING_VOLUME, "mountPath": MAPPING_DIR, "readOnly": True}, *mounts]
        pod["volumes"] = [{"name": MAPPING_VOLUME, "configMap": {"name": MAPPING_CONFIGMAP, "defaultMode": 0o444}},
                          *volumes]
        if env:
            container["env"] = env
        digest = hashlib.sha256(json.dumps(mapping_configmap(s)["data"], sort_keys=True).encode()).hexdigest()[:16]
        template_meta["annotations"] = {"netviz.io/goflow2-mapping": digest}
    elif s.flows.enabled:
        container["command"] = ["/bin/sh", "-c", fifo_script(s), NAME]  # args follow as "$@"
        container["volumeMounts"] = [{"name": FLOWS_VOLUME, "mountPath": str(s.flows.fifo.parent)}]
        pod["containers"].append(flowagg_container(s))
        # Memory medium: the FIFO's bytes live in the kernel pipe buffer (64 KiB), never on disk.
        pod["volumes"] = [{"name": FLOWS_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
                          {"name": FLOWAGG_VOLUME, "configMap": {"name": FLOWAGG_CONFIGMAP, "defaultMode": 0o444}}]
        if s.flows.names.kubernetes:
            pod["serviceAccountName"] = FLOWAGG_SA
            pod["volumes"].append(sa_token_volume())
        if reads_router_names(s):
            pod["volumes"].append(router_hosts_volume(s))
        # a new aggregator version or config rolls the pod (a mounted ConfigMap alone would not restart it)
        digest = hashlib.sha256(json.dumps(flowagg_configmap(s)["data"], sort_keys=True).encode()).hexdigest()[:16]
        template_meta["annotations"] = {"netviz.io/flowagg-config": digest}
    elif g.flows_file:
        container["volumeMounts"] = [{"name": FLOWS_VOLUME, "mountPath": str(g.flows_file.parent)}]
        pod["volumes"] = [{"name": FLOWS_VOLUME, "emptyDir": {"sizeLimit": "512Mi"}}]
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": NAME, "namespace": g.namespace, "labels": labels(NAME)},
            # One collector: the old pod goes before the new one starts (maxSurge 0), so two pods never split
            # an exporter's template state. Not Recreate: it waits for the old pod to stop, which a pod on a
            # lost node never does, so GoFlow2 could not move off that node (placement.py).
            "spec": {"replicas": 1, "selector": {"matchLabels": SELECTOR},
                     "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
                     "template": {"metadata": template_meta, "spec": pod}}}


def metrics_service(s: Settings) -> dict:
    g = s.goflow2
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": NAME, "namespace": g.namespace, "labels": labels(NAME, "metrics")},
            "spec": {"type": "ClusterIP", "selector": SELECTOR,
                     "ports": [{"name": "metrics", "port": g.metrics_port, "targetPort": "metrics",
                                "protocol": "TCP"}]}}


def netflow_service(s: Settings) -> dict:
    g = s.goflow2
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": f"{NAME}-netflow", "namespace": g.namespace, "labels": labels(NAME, "netflow")},
            "spec": {"type": "NodePort", "externalTrafficPolicy": "Local", "selector": SELECTOR,
                     "ports": [{"name": "netflow", "port": g.netflow_port, "targetPort": "netflow",
                                "nodePort": g.netflow_node_port, "protocol": "UDP"}]}}


def render(s: Settings, node_name: str | None = None) -> list[dict]:
    """All GoFlow2 objects, in apply order (with the kafka transport the aggregators are
    render/aggregators.py's, applied by their own step)."""
    if kafka_transport(s):
        flows = [mapping_configmap(s)]
    else:
        flows = [*flowagg_rbac(s), flowagg_configmap(s)] if s.flows.enabled else []
    ns = namespace(s.goflow2.namespace, pod_security_level(s, s.goflow2.namespace))
    return [ns, *flows, deployment(s, node_name), metrics_service(s), netflow_service(s)]
