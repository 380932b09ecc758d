"""GoFlow2 v2.2.1 collector: Deployment, metrics Service and the UDP NodePort routers export to.

Flags are v2's: there is no `-transport stdout`; stdout is `-transport file` with an empty
`-transport.file`. The NodePort uses externalTrafficPolicy Local so the datagram's source address
(GoFlow2's `router` label / `sampler_address`) stays the exporter's, not a node's SNAT address —
which means the pod must run on the node routers send to: pass that node's name as `node_name`.
"""
from __future__ import annotations

from ..settings import Settings
from . import labels, namespace

NAME = "goflow2"
SELECTOR = {"app": NAME}
FLOWS_VOLUME = "flows"


def args(s: Settings) -> list[str]:
    g = s.goflow2
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
        "ports": [{"name": "netflow", "containerPort": g.netflow_port, "protocol": "UDP"},
                  {"name": "metrics", "containerPort": g.metrics_port, "protocol": "TCP"}],
        "readinessProbe": probe | {"initialDelaySeconds": 2},
        "livenessProbe": probe | {"initialDelaySeconds": 10, "failureThreshold": 3},
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}},
        "securityContext": {"runAsNonRoot": True, "allowPrivilegeEscalation": False,
                            "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}},
    }
    pod: dict = {"containers": [container], "nodeSelector": {"kubernetes.io/os": "linux"}}
    if node_name:  # externalTrafficPolicy Local only delivers on nodes running the pod
        pod["nodeSelector"]["kubernetes.io/hostname"] = node_name
    if g.flows_file:
        container["volumeMounts"] = [{"name": FLOWS_VOLUME, "mountPath": str(g.flows_file.parent)}]
        pod["volumes"] = [{"name": FLOWS_VOLUME, "emptyDir": {"sizeLimit": "512Mi"}}]
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": NAME, "namespace": g.namespace, "labels": labels(NAME)},
            # Recreate: one collector; never two pods splitting one exporter's template state
            "spec": {"replicas": 1, "selector": {"matchLabels": SELECTOR}, "strategy": {"type": "Recreate"},
                     "template": {"metadata": {"labels": labels(NAME)}, "spec": pod}}}


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
    """All GoFlow2 objects, in apply order."""
    return [namespace(s.goflow2.namespace), deployment(s, node_name), metrics_service(s), netflow_service(s)]
