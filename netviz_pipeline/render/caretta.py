"""Caretta without its Helm chart: the v0.0.16 DaemonSet shape, least-privilege RBAC and a headless
Service. The chart has no Service and grants a wide read set; Caretta's resolver only watches the
kinds below. Every pod serves only its own node's links, so the Service is headless (one endpoint
per pod) for scraping — never a ClusterIP that would load-balance scrapes across nodes."""
from __future__ import annotations

from ..settings import Settings
from . import labels, namespace, pod_security_level

NAME = "caretta"
METRICS_PORT = 7117
METRICS_PORT_NAME = "prom-metrics"
SELECTOR = {"app": NAME}
NODE_SELECTOR = {"kubernetes.io/os": "linux"}
TOLERATIONS = [{"key": f"node-role.kubernetes.io/{r}", "operator": "Exists", "effect": "NoSchedule"}
               for r in ("control-plane", "master")]
# What the preflight probe found (preflight.py, render/preflight_probe.py), kept on the DaemonSet so a
# run against the same nodes (same boot IDs) need not probe again and still reports what it found.
PREFLIGHT_NODES = "netviz.io/preflight-nodes"  # nodes_fingerprint() of the nodes probed
PREFLIGHT_NO_KPROBES = "netviz.io/preflight-no-kprobes"  # comma-separated nodes without kprobes

# pkg/k8s/ipresolver.go watches exactly these (get/list/watch)
WATCHED = (("", ("pods", "nodes", "services")),
           ("apps", ("replicasets", "daemonsets", "statefulsets", "deployments")),
           ("batch", ("jobs", "cronjobs")))


def cluster_role() -> dict:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": NAME, "labels": labels(NAME)},
            "rules": [{"apiGroups": [g], "resources": list(r), "verbs": ["get", "list", "watch"]}
                      for g, r in WATCHED]}


def preflight_record(fingerprint: str, no_kprobes: list[str]) -> dict[str, str]:
    """The annotations recording a probe's outcome (the no-kprobes key only when there are some)."""
    out = {PREFLIGHT_NODES: fingerprint}
    if no_kprobes:
        out[PREFLIGHT_NO_KPROBES] = ",".join(sorted(no_kprobes))
    return out


def recorded_preflight(live: dict | None) -> tuple[str, list[str]] | None:
    """(fingerprint, nodes without kprobes) as a live DaemonSet records them; None: never probed."""
    annotations = ((live or {}).get("metadata") or {}).get("annotations") or {}
    if PREFLIGHT_NODES not in annotations:
        return None
    return annotations[PREFLIGHT_NODES], [n for n in annotations.get(PREFLIGHT_NO_KPROBES, "").split(",") if n]


def daemonset(s: Settings, preflight: dict[str, str] | None = None) -> dict:
    """`preflight`: the probe's record (preflight_record) for the DaemonSet's own annotations."""
    c, res = s.caretta, s.caretta.resources
    env = {"RESOLVE_DNS": str(c.resolve_dns).lower(), "PROMETHEUS_PORT": str(METRICS_PORT),
           "PROMETHEUS_ENDPOINT": "/metrics", "POLL_INTERVAL": str(c.poll_interval_seconds)}
    container = {
        "name": NAME, "image": c.image, "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": METRICS_PORT_NAME, "containerPort": METRICS_PORT, "protocol": "TCP"}],
        "env": [{"name": k, "value": v} for k, v in env.items()],
        "securityContext": {"privileged": True, "readOnlyRootFilesystem": True},
        "resources": {"requests": {"cpu": res.cpu_request, "memory": res.memory_request},
                      "limits": {"cpu": res.cpu_limit, "memory": res.memory_limit}},
        "volumeMounts": [{"name": "proc", "mountPath": "/proc"},
                         {"name": "debug", "mountPath": "/sys/kernel/debug"}],
    }
    pod = {
        "serviceAccountName": NAME,
        "nodeSelector": dict(NODE_SELECTOR),
        "tolerations": [dict(t) for t in TOLERATIONS],
        "containers": [container],
        "volumes": [{"name": "proc", "hostPath": {"path": "/proc"}},
                    {"name": "debug", "hostPath": {"path": "/sys/kernel/debug"}}],
    }
    meta: dict = {"name": NAME, "namespace": c.namespace, "labels": labels(NAME)}
    if preflight:
        meta["annotations"] = dict(preflight)
    return {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": meta,
            "spec": {"selector": {"matchLabels": SELECTOR},
                     "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
                     "template": {"metadata": {"labels": labels(NAME)}, "spec": pod}}}


def headless_service(s: Settings) -> dict:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": NAME, "namespace": s.caretta.namespace, "labels": labels(NAME, "metrics")},
            "spec": {"clusterIP": "None", "selector": SELECTOR,
                     "ports": [{"name": METRICS_PORT_NAME, "port": METRICS_PORT, "targetPort": METRICS_PORT_NAME,
                                "protocol": "TCP"}]}}


def render(s: Settings, preflight: dict[str, str] | None = None) -> list[dict]:
    """All Caretta objects, in apply order (`preflight`: see daemonset)."""
    ns = s.caretta.namespace
    return [
        namespace(ns, pod_security_level(s, ns)),
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": NAME, "namespace": ns, "labels": labels(NAME)}},
        cluster_role(),
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": NAME, "labels": labels(NAME)},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": NAME},
         "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": ns}]},
        daemonset(s, preflight),
        headless_service(s),
    ]
