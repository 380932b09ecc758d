"""netviz as a service inside the cluster, in the shape of Dagster's own Helm chart. Pure rendering;
`python -m netviz_pipeline.service k8s` prints it for an administrator to apply (the pipeline's identity
cannot create itself).

Three Deployments and Postgres:
- **code server** (`netviz-code`): the netviz image serving its definitions over gRPC (`dagster api
  grpc`); the webserver and the daemon load the code from it, never import it themselves. It evaluates
  the health sensor's ticks (Dagster runs sensors in the code server), so it runs as the pipeline's
  ServiceAccount, as the runs do.
- **webserver** (`netviz-webserver`) and **daemon** (`netviz-daemon`, one replica, Recreate: the daemon
  is the health sensor and the healer, two would heal twice), as ServiceAccount `netviz-dagster`, whose
  Role in this namespace holds only what launching runs needs: Jobs, their pods, pods/log and events.
- **runs**: each run a Kubernetes Job (dagster-k8s K8sRunLauncher) from the same image, as the pipeline's
  least-privilege ServiceAccount `netviz-pipeline` (granted by `admin apply --subject
  serviceaccount:<ns>/netviz-pipeline`), with the settings, the routers' SSH key and the optional
  `netviz-env` Secret mounted as the code server has them.
- **storage**: the user's Postgres (`PostgresRef`): run history, event logs, sensor cursors and the
  healing state survive any pod. Its password only from the Secret `netviz-postgres` (key
  `postgresql-password`, Dagster's convention) into `DAGSTER_PG_PASSWORD`: dagster.yaml references the
  variable, and the run Job's command, which carries the instance serialised, holds only that reference.
- `dagster.yaml` in a ConfigMap; the storage is created or upgraded by an init container of the
  webserver and of the daemon (`service migrate`: the Postgres login checked, its refusal named in the
  termination message, then `dagster instance migrate`), and a second one waits until the code
  server answers its gRPC health check. Postgres DDL is transactional: if both create a new schema at
  once, one fails and its pod restarts into the finished one.

Every pod runs as root with every capability dropped, a read-only root filesystem and RuntimeDefault
seccomp: Secret files are root-owned, and making them group-readable for another user (fsGroup) is
exactly what the settings refuse for a private key (as OpenSSH does).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import yaml

from ..targets import Resolved
from . import instance

PART_OF = "netviz"
CODE, WEBSERVER, DAEMON = "netviz-code", "netviz-webserver", "netviz-daemon"
SERVICE_ACCOUNT = "netviz-pipeline"  # the runs: the pipeline's least-privilege identity
DAGSTER_ACCOUNT = "netviz-dagster"  # webserver and daemon: launch and watch the run Jobs
INSTANCE_CONFIGMAP = "netviz-dagster-instance"
WORKSPACE_CONFIGMAP = "netviz-dagster-workspace"
SETTINGS_CONFIGMAP = "netviz-settings"
SSH_SECRET = "netviz-router-ssh"
ENV_SECRET = "netviz-env"
POSTGRES_SECRET = "netviz-postgres"
POSTGRES_PASSWORD_KEY = "postgresql-password"  # dagster-k8s's key for postgres_password_secret
POSTGRES_PASSWORD_ENV = "DAGSTER_PG_PASSWORD"
SSH_DIR = "/etc/netviz/ssh"
SETTINGS_PATH = "/etc/netviz/config/netviz.yaml"
DAGSTER_HOME = "/var/lib/dagster"
WORKSPACE_DIR = "/etc/dagster-workspace"
PORT = 3000
GRPC_PORT = 4000
LOCATION = "netviz"
MIGRATE = ["python3", "-m", "netviz_pipeline.service", "migrate", "--home", DAGSTER_HOME]
# What K8sRunLauncher calls (dagster-k8s 0.29.27: launch, watch, terminate, run monitoring, logs)
LAUNCH_RULES = [
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "delete", "get", "list", "watch"]},
    # run monitoring reads the Job's status subresource (read_namespaced_job_status): without it the
    # daemon marks every run failed ("Detected run worker status UNKNOWN") while it is still running
    {"apiGroups": ["batch"], "resources": ["jobs/status"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "delete"]},
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["get", "list", "watch"]},
]
SECURITY = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}
POD_SECURITY = {"runAsUser": 0, "seccompProfile": {"type": "RuntimeDefault"}}


@dataclass(frozen=True)
class PostgresRef:
    """Where Dagster's storage lives. The password is never here: Secret POSTGRES_SECRET holds it."""
    host: str
    port: int = 5432
    user: str = "dagster"
    db: str = "dagster"

    def postgres_db(self) -> dict:
        return {"hostname": self.host, "port": self.port, "username": self.user, "db_name": self.db,
                "password": {"env": POSTGRES_PASSWORD_ENV}}


def problems(r: Resolved) -> list[str]:
    """What makes these settings unusable inside the pods; empty = fine. Checked before rendering. `r`:
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


# What every pod that loads netviz's code or settings mounts (code server and runs alike)
NETVIZ_VOLUMES = [
    {"name": "settings", "configMap": {"name": SETTINGS_CONFIGMAP}},
    {"name": "ssh", "secret": {"secretName": SSH_SECRET, "defaultMode": 0o400}},
    {"name": "home", "emptyDir": {}},
    {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
]
NETVIZ_MOUNTS = [
    {"name": "settings", "mountPath": SETTINGS_PATH.rsplit("/", 1)[0], "readOnly": True},
    {"name": "ssh", "mountPath": SSH_DIR, "readOnly": True},
    {"name": "home", "mountPath": DAGSTER_HOME},
    {"name": "tmp", "mountPath": "/tmp"},
]
NETVIZ_ENV = [{"name": "NETVIZ_CONFIG", "value": SETTINGS_PATH}, {"name": "DAGSTER_HOME", "value": DAGSTER_HOME},
              {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"}]
ENV_FROM = [{"secretRef": {"name": ENV_SECRET, "optional": True}}]
PG_PASSWORD = {"name": POSTGRES_PASSWORD_ENV,
               "valueFrom": {"secretKeyRef": {"name": POSTGRES_SECRET, "key": POSTGRES_PASSWORD_KEY}}}


def _snake(obj):
    """dagster-k8s reads Kubernetes fields in the Python client's snake_case."""
    if isinstance(obj, dict):
        return {re.sub(r"(?<!^)(?=[A-Z])", "_", k).lower(): _snake(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_snake(v) for v in obj]
    return obj


def run_launcher(image: str, namespace: str, node_selector: dict[str, str] | None = None) -> dict:
    """K8sRunLauncher: each run a Job from `image` as SERVICE_ACCOUNT, set up as the code server is."""
    pod_spec: dict = {"security_context": _snake(POD_SECURITY)}
    if node_selector:
        pod_spec["node_selector"] = dict(node_selector)
    return {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": {
        "service_account_name": SERVICE_ACCOUNT, "instance_config_map": INSTANCE_CONFIGMAP,
        "postgres_password_secret": POSTGRES_SECRET, "dagster_home": DAGSTER_HOME,
        "job_image": image, "job_namespace": namespace, "image_pull_policy": "IfNotPresent",
        "load_incluster_config": True,
        "env_vars": [f"{e['name']}={e['value']}" for e in NETVIZ_ENV if e["name"] != "DAGSTER_HOME"],
        "volumes": _snake(NETVIZ_VOLUMES), "volume_mounts": _snake(NETVIZ_MOUNTS),
        "security_context": _snake(SECURITY),
        "resources": {"requests": {"cpu": "100m", "memory": "384Mi"}, "limits": {"memory": "1Gi"}},
        "labels": {"app.kubernetes.io/part-of": PART_OF},
        "run_k8s_config": {"pod_spec_config": pod_spec, "container_config": {"env_from": _snake(ENV_FROM)}},
    }}


def dagster_yaml(image: str, namespace: str, pg: PostgresRef, node_selector: dict[str, str] | None = None,
                 run_start_timeout: int = instance.RUN_START_TIMEOUT) -> str:
    return instance.dagster_yaml(postgres_db=pg.postgres_db(), run_start_timeout=run_start_timeout,
                                 run_launcher=run_launcher(image, namespace, node_selector))


# The code server's address as Kubernetes hands it to every pod of the namespace started after its Service
# (service links): found without cluster DNS, which not every cluster runs (the lab has none).
CODE_HOST_ENV = CODE.upper().replace("-", "_") + "_SERVICE_HOST"


def workspace_yaml() -> str:
    return yaml.safe_dump({"load_from": [{"grpc_server": {
        "host": {"env": CODE_HOST_ENV}, "port": GRPC_PORT, "location_name": LOCATION}}]}, sort_keys=False)


def _meta(name: str, namespace: str) -> dict:
    return {"name": name, "namespace": namespace,
            "labels": {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": PART_OF}}


def _deployment(name: str, namespace: str, pod: dict, node_selector: dict[str, str] | None) -> dict:
    selector = {"app.kubernetes.io/name": name}
    pod = {"securityContext": POD_SECURITY, **pod}
    if node_selector:
        pod["nodeSelector"] = dict(node_selector)
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(name, namespace),
            "spec": {"replicas": 1, "strategy": {"type": "Recreate"}, "selector": {"matchLabels": selector},
                     "template": {"metadata": {"labels": selector}, "spec": pod}}}


def _dagster_container(name: str, image: str, command: list[str], memory: str) -> dict:
    """Webserver, daemon and their migrate step: the instance and the workspace, the Postgres password."""
    return {"name": name, "image": image, "imagePullPolicy": "IfNotPresent", "command": command,
            "env": [{"name": "DAGSTER_HOME", "value": DAGSTER_HOME}, PG_PASSWORD,
                    {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"}],
            "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": memory}},
            "securityContext": SECURITY, "terminationMessagePolicy": "FallbackToLogsOnError",
            "volumeMounts": [{"name": "home", "mountPath": DAGSTER_HOME},
                             {"name": "instance", "mountPath": f"{DAGSTER_HOME}/dagster.yaml",
                              "subPath": "dagster.yaml", "readOnly": True},
                             {"name": "workspace", "mountPath": WORKSPACE_DIR, "readOnly": True},
                             {"name": "tmp", "mountPath": "/tmp"}]}


# Waits for the code server (its gRPC health check) before the webserver or the daemon starts: started
# first, they would record the location as failed ("Could not reach user code server") until a reload.
WAIT_FOR_CODE = """\
import os, subprocess, sys, time
host = os.environ[sys.argv[1]]
while subprocess.run(["dagster", "api", "grpc-health-check", "-h", host, "-p", sys.argv[2]]).returncode:
    print("waiting for the code server at", host, flush=True)
    time.sleep(2)
"""


def _dagster_pod(containers: list[dict], image: str) -> dict:
    # `service migrate`: the Postgres login checked first, so a refusal is named in the termination message
    migrate = _dagster_container("migrate", image, MIGRATE, "512Mi")
    wait = _dagster_container("wait-for-code", image, ["python3", "-c", WAIT_FOR_CODE, CODE_HOST_ENV, str(GRPC_PORT)],
                              "256Mi")
    return {"serviceAccountName": DAGSTER_ACCOUNT, "initContainers": [migrate, wait], "containers": containers,
            "volumes": [{"name": "home", "emptyDir": {}},
                        {"name": "instance", "configMap": {"name": INSTANCE_CONFIGMAP}},
                        {"name": "workspace", "configMap": {"name": WORKSPACE_CONFIGMAP}},
                        {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}}]}


def render(settings_text: str, image: str, pg: PostgresRef, namespace: str = "netviz", node_port: int | None = None,
           node_selector: dict[str, str] | None = None, run_start_timeout: int = instance.RUN_START_TIMEOUT) -> list[dict]:
    """The objects, in apply order. Secrets the user creates first: POSTGRES_SECRET, SSH_SECRET, and
    optionally ENV_SECRET (webhook URL, Grafana token as environment variables)."""
    workspace = f"{WORKSPACE_DIR}/workspace.yaml"
    grpc = {"name": "code", "image": image, "imagePullPolicy": "IfNotPresent",
            "command": ["dagster", "api", "grpc", "-m", "netviz_pipeline", "-h", "0.0.0.0", "-p", str(GRPC_PORT)],
            # K8sRunLauncher's default image for a run is the code server's own
            # the Postgres password too: sensor ticks are evaluated here, against the instance the daemon
            # hands over by reference (its password {env: DAGSTER_PG_PASSWORD})
            "env": [*NETVIZ_ENV, {"name": "DAGSTER_CURRENT_IMAGE", "value": image}, PG_PASSWORD], "envFrom": ENV_FROM,
            "ports": [{"name": "grpc", "containerPort": GRPC_PORT}],
            "readinessProbe": {"exec": {"command": ["dagster", "api", "grpc-health-check", "-p", str(GRPC_PORT)]},
                               "periodSeconds": 10, "timeoutSeconds": 10},
            "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "768Mi"}},
            "securityContext": SECURITY, "terminationMessagePolicy": "FallbackToLogsOnError",
            "volumeMounts": NETVIZ_MOUNTS}
    code_pod = {"serviceAccountName": SERVICE_ACCOUNT, "containers": [grpc], "volumes": NETVIZ_VOLUMES}
    webserver = _dagster_container("webserver", image, ["dagster-webserver", "-w", workspace, "-h", "0.0.0.0",
                                                        "-p", str(PORT)], "768Mi")
    webserver["ports"] = [{"name": "http", "containerPort": PORT}]
    webserver["readinessProbe"] = {"httpGet": {"path": "/server_info", "port": "http"}, "periodSeconds": 10}
    daemon = _dagster_container("daemon", image, ["dagster-daemon", "run", "-w", workspace], "768Mi")
    ui = {"type": "NodePort" if node_port else "ClusterIP", "selector": {"app.kubernetes.io/name": WEBSERVER},
          "ports": [{"name": "http", "port": PORT, "targetPort": "http", **({"nodePort": node_port} if node_port else {})}]}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(SERVICE_ACCOUNT, namespace)},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(DAGSTER_ACCOUNT, namespace)},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": _meta(DAGSTER_ACCOUNT, namespace),
         "rules": LAUNCH_RULES},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": _meta(DAGSTER_ACCOUNT, namespace),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": DAGSTER_ACCOUNT},
         "subjects": [{"kind": "ServiceAccount", "name": DAGSTER_ACCOUNT, "namespace": namespace}]},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(SETTINGS_CONFIGMAP, namespace),
         "data": {"netviz.yaml": settings_text}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(INSTANCE_CONFIGMAP, namespace),
         "data": {"dagster.yaml": dagster_yaml(image, namespace, pg, node_selector, run_start_timeout)}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(WORKSPACE_CONFIGMAP, namespace),
         "data": {"workspace.yaml": workspace_yaml()}},
        _deployment(CODE, namespace, code_pod, node_selector),
        {"apiVersion": "v1", "kind": "Service", "metadata": _meta(CODE, namespace),
         "spec": {"selector": {"app.kubernetes.io/name": CODE},
                  "ports": [{"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc"}]}},
        _deployment(WEBSERVER, namespace, _dagster_pod([webserver], image), node_selector),
        {"apiVersion": "v1", "kind": "Service", "metadata": _meta(WEBSERVER, namespace), "spec": ui},
        _deployment(DAEMON, namespace, _dagster_pod([daemon], image), node_selector),
    ]


def to_yaml(objs: list[dict]) -> str:
    return yaml.safe_dump_all(objs, sort_keys=False)
