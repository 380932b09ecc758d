"""netviz as a service inside the cluster: dagster-webserver and dagster-daemon in one pod, running as
the pipeline's own ServiceAccount. Pure rendering; `python -m netviz_pipeline.service k8s` prints it for
an administrator to apply (the pipeline's identity cannot create itself).

Why this shape:
- One pod, one replica, Recreate: the daemon is the health sensor and the healer; two of them would
  heal twice. Webserver and daemon share the instance (SQLite on one volume) as on a single host.
- Settings from a ConfigMap, the routers' SSH key and known_hosts from a Secret the user creates
  (`kubectl create secret generic netviz-router-ssh --from-file=...`), other secrets (webhook URL,
  Grafana token) as environment variables from an optional Secret `netviz-env`.
- The pod runs as root with every capability dropped and a read-only root filesystem: Secret files
  are root-owned, and making them group-readable for another user (fsGroup) is exactly what the settings
  refuse for a private key (as OpenSSH does).
"""
from __future__ import annotations

import yaml

from ..targets import Resolved
from . import instance

NAME = "netviz-dagster"
SERVICE_ACCOUNT = "netviz-pipeline"
SSH_SECRET = "netviz-router-ssh"
ENV_SECRET = "netviz-env"
SSH_DIR = "/etc/netviz/ssh"
SETTINGS_PATH = "/etc/netviz/config/netviz.yaml"
DAGSTER_HOME = "/var/lib/dagster"
WORKSPACE = "/app/workspace.yaml"
PORT = 3000


def problems(r: Resolved) -> list[str]:
    """What makes these settings unusable inside the pod; empty = fine. Checked before rendering. `r`:
    the settings resolved without a cluster (targets.resolve(s, None)); a Prometheus that auto cannot
    resolve offline is decided in the cluster."""
    s, prometheus, out = r.settings, r.prometheus, []
    if not s.cluster.in_cluster:
        out.append("cluster: set in_cluster: true (the pod uses its ServiceAccount) and drop kubeconfig")
    if prometheus is not None and (why := prometheus.pod_problem(s)):
        out.append(why)
    for i, r in enumerate(s.routers):
        for key in ("ssh_key_file", "known_hosts_file"):
            path = str(getattr(r, key))
            if not path.startswith(SSH_DIR + "/"):
                out.append(f"routers[{i}].{key}: {path} is not in the Secret's mount {SSH_DIR}: use "
                           f"{SSH_DIR}/<file name in Secret {SSH_SECRET}>")
    if s.checks.canary_command and not s.checks.canary_pod:
        out.append("checks.canary_command: in the cluster it would run inside the netviz pod, which is not on the "
                   "routers' LAN: set checks.canary_pod (run it in a pod that is) or remove it")
    return out


def _container(name: str, image: str, command: list[str], memory: str) -> dict:
    return {
        "name": name, "image": image, "imagePullPolicy": "IfNotPresent", "command": command,
        "env": [{"name": "DAGSTER_HOME", "value": DAGSTER_HOME}, {"name": "NETVIZ_CONFIG", "value": SETTINGS_PATH},
                {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"}],
        "envFrom": [{"secretRef": {"name": ENV_SECRET, "optional": True}}],
        "resources": {"requests": {"cpu": "100m", "memory": "384Mi"}, "limits": {"memory": memory}},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "home", "mountPath": DAGSTER_HOME},
                         {"name": "instance", "mountPath": f"{DAGSTER_HOME}/dagster.yaml", "subPath": "dagster.yaml",
                          "readOnly": True},
                         {"name": "settings", "mountPath": SETTINGS_PATH.rsplit("/", 1)[0], "readOnly": True},
                         {"name": "ssh", "mountPath": SSH_DIR, "readOnly": True},
                         {"name": "tmp", "mountPath": "/tmp"}],
    }


def render(settings_text: str, image: str, namespace: str = "netviz", node_port: int | None = None,
           home_claim: str | None = None, node_selector: dict[str, str] | None = None) -> list[dict]:
    """The objects, in apply order. `home_claim`: a PersistentVolumeClaim for the instance (runs,
    events, sensor state survive the pod); default an emptyDir (they do not)."""
    meta = lambda name: {"name": name, "namespace": namespace,  # noqa: E731
                         "labels": {"app.kubernetes.io/name": NAME, "app.kubernetes.io/part-of": "netviz"}}
    webserver = _container("webserver", image, ["dagster-webserver", "-w", WORKSPACE, "-h", "0.0.0.0", "-p",
                                                str(PORT)], "768Mi")
    webserver["ports"] = [{"name": "http", "containerPort": PORT}]
    webserver["readinessProbe"] = {"httpGet": {"path": "/server_info", "port": "http"}, "periodSeconds": 10}
    # run workers are children of the daemon's code server: they count against its limit
    daemon = _container("daemon", image, ["dagster-daemon", "run", "-w", WORKSPACE], "1536Mi")
    home = ({"persistentVolumeClaim": {"claimName": home_claim}} if home_claim else {"emptyDir": {}})
    # the instance's storage is created (or upgraded) once before both processes open it
    migrate = _container("migrate", image, instance.MIGRATE, "512Mi")
    pod = {"serviceAccountName": SERVICE_ACCOUNT,
           "securityContext": {"runAsUser": 0, "seccompProfile": {"type": "RuntimeDefault"}},
           "initContainers": [migrate], "containers": [webserver, daemon],
           "volumes": [{"name": "home", **home},
                       {"name": "instance", "configMap": {"name": f"{NAME}-instance"}},
                       {"name": "settings", "configMap": {"name": "netviz-settings"}},
                       {"name": "ssh", "secret": {"secretName": SSH_SECRET, "defaultMode": 0o400}},
                       {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}}]}
    if node_selector:
        pod["nodeSelector"] = dict(node_selector)
    selector = {"app.kubernetes.io/name": NAME}
    service = {"type": "NodePort" if node_port else "ClusterIP",
               "selector": selector, "ports": [{"name": "http", "port": PORT, "targetPort": "http",
                                                **({"nodePort": node_port} if node_port else {})}]}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(SERVICE_ACCOUNT)},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("netviz-settings"),
         "data": {"netviz.yaml": settings_text}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(f"{NAME}-instance"),
         "data": {"dagster.yaml": instance.dagster_yaml()}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta(NAME),
         "spec": {"replicas": 1, "strategy": {"type": "Recreate"}, "selector": {"matchLabels": selector},
                  "template": {"metadata": {"labels": selector}, "spec": pod}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": meta(NAME), "spec": service},
    ]


def to_yaml(objs: list[dict]) -> str:
    return yaml.safe_dump_all(objs, sort_keys=False)
