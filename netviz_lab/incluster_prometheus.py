"""Prometheus inside the lab cluster, the two ways users run it there (`python -m netviz_lab prometheus
chart|operator|remove`), on the real nodes, reachable from the host through a NodePort on node 1.

- **chart**: what the prometheus-community `prometheus` chart deploys for its server (release
  "prometheus" in namespace "prometheus"): a Helm-owned server ConfigMap (labels and annotations as Helm
  leaves them, written by field manager "helm"), a Deployment with the chart's
  prometheus-config-reloader sidecar that POSTs /-/reload when the mounted ConfigMap changes, and the
  chart's ServiceAccount and ClusterRole for Kubernetes discovery. Helm itself does not run here; its
  rendering is reproduced (`chart_objects`: chart 29.27.0 with default values, as `helm template` and
  Helm's own labels leave it), chart defaults kept (1 min scrape interval). Differences: the images are
  the lab's pinned Prometheus and reloader (3.16.0 and v0.85.0, not 3.14.0 and v0.93.1), storage is an
  emptyDir (no volume provisioner here; the chart's default is an 8 Gi PVC), the Service is a
  NodePort (ClusterIP by default) so the host reaches it, and the pods stay on the real nodes.
- **operator**: the Prometheus Operator at its pinned version with the CRDs and RBAC its project ships
  (copied from its Go module), reconciling a `Prometheus` resource into a StatefulSet with its own
  config-reloader; it selects PodMonitors labelled `release: netviz-lab` in every namespace.

Images come from the lab's on-demand set (upstream names and tags). Nothing here is product code.
"""
from __future__ import annotations

import time

import requests
import yaml
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError

from . import clusterapi, images, nodes, versions
from .lab import Lab
from .topology import COLLECTOR_NODE, REAL_NODE_LABEL

PROMETHEUS_IMAGE = f"quay.io/prometheus/prometheus:{images.prometheus_release(versions.PROMETHEUS)}"
RELOADER_IMAGE = f"quay.io/prometheus-operator/prometheus-config-reloader:{versions.PROMETHEUS_OPERATOR}"
CHART_VERSION = "29.27.0"  # the chart whose `helm template` output chart_objects reproduces (app v3.14.0)
REAL = dict([REAL_NODE_LABEL])

CHART_NS, RELEASE = "prometheus", "prometheus"
CHART_SERVER = f"{RELEASE}-server"
CHART_NODE_PORT = 30990
OPERATOR_NS = "prometheus-operator"
OPERATOR_PROMETHEUS = "netviz-lab"
OPERATOR_NODE_PORT = 30991
MONITOR_LABELS = {"release": "netviz-lab"}  # what the lab's Prometheus resource selects


def url(mode: str) -> str:
    return f"http://{COLLECTOR_NODE.ip}:{CHART_NODE_PORT if mode == 'chart' else OPERATOR_NODE_PORT}"


# -- chart ----------------------------------------------------------------------------------------
def _chart_labels(component: str = "server") -> dict:
    return {"app.kubernetes.io/component": component, "app.kubernetes.io/name": "prometheus",
            "app.kubernetes.io/instance": RELEASE, "app.kubernetes.io/version": PROMETHEUS_IMAGE.rsplit(":", 1)[1],
            "helm.sh/chart": f"prometheus-{CHART_VERSION}", "app.kubernetes.io/part-of": "prometheus",
            "app.kubernetes.io/managed-by": "Helm"}


def _helm_meta(name: str, namespace: str | None = CHART_NS) -> dict:
    meta = {"name": name, "labels": _chart_labels(),
            "annotations": {"meta.helm.sh/release-name": RELEASE, "meta.helm.sh/release-namespace": CHART_NS}}
    if namespace:
        meta["namespace"] = namespace
    return meta


CHART_DEFAULT_CONFIG = {  # the chart's default prometheus.yml, its user jobs cut to Prometheus itself
    "global": {"evaluation_interval": "1m", "scrape_interval": "1m", "scrape_timeout": "10s"},
    "scrape_configs": [{"job_name": "prometheus", "static_configs": [{"targets": ["localhost:9090"]}]}],
    "rule_files": ["/etc/config/recording_rules.yml", "/etc/config/alerting_rules.yml",
                   "/etc/config/rules", "/etc/config/alerts"],
}


def chart_objects(config: dict | None = None, alerting_rules: dict | None = None) -> list[dict]:
    """The chart's server objects (default values, release "prometheus"), as `helm template` renders them;
    `alerting_rules`: the value of serverFiles."alerting_rules.yml" (default `{}`)."""
    selector = {"app.kubernetes.io/component": "server", "app.kubernetes.io/name": "prometheus",
                "app.kubernetes.io/instance": RELEASE}
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _helm_meta(CHART_SERVER),
          "data": {"prometheus.yml": yaml.safe_dump(config or CHART_DEFAULT_CONFIG, sort_keys=False),
                   "alerting_rules.yml": yaml.safe_dump(alerting_rules or {}, sort_keys=False),
                   "alerts": "{}\n", "recording_rules.yml": "{}\n",
                   "rules": "{}\n", "allow-snippet-annotations": "false"}}
    sa = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _helm_meta(CHART_SERVER)}
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": _helm_meta(CHART_SERVER, None),
            "rules": [
                {"apiGroups": [""], "resources": ["nodes", "nodes/metrics", "services", "endpoints",
                                                  "pods", "ingresses", "configmaps"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses/status", "ingresses"],
                 "verbs": ["get", "list", "watch"]},
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]},
                {"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": _helm_meta(CHART_SERVER, None),
               "subjects": [{"kind": "ServiceAccount", "name": CHART_SERVER, "namespace": CHART_NS}],
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": CHART_SERVER}}
    reloader = {
        "name": "prometheus-server-configmap-reload", "image": RELOADER_IMAGE, "imagePullPolicy": "IfNotPresent",
        "args": ["--watched-dir=/etc/config", "--listen-address=0.0.0.0:8080",
                 "--reload-url=http://127.0.0.1:9090/-/reload"],
        "ports": [{"containerPort": 8080, "name": "metrics"}],
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "metrics", "scheme": "HTTP"},
                          "initialDelaySeconds": 2, "periodSeconds": 10},
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "metrics", "scheme": "HTTP"}, "periodSeconds": 10},
        "volumeMounts": [{"name": "config-volume", "mountPath": "/etc/config", "readOnly": True}]}
    server = {
        "name": "prometheus-server", "image": PROMETHEUS_IMAGE, "imagePullPolicy": "IfNotPresent",
        "args": ["--storage.tsdb.retention.time=15d", "--config.file=/etc/config/prometheus.yml",
                 "--storage.tsdb.path=/data", "--web.console.libraries=/etc/prometheus/console_libraries",
                 "--web.console.templates=/etc/prometheus/consoles", "--web.enable-lifecycle"],
        "ports": [{"containerPort": 9090}],
        "readinessProbe": {"httpGet": {"path": "/-/ready", "port": 9090, "scheme": "HTTP"},
                           "initialDelaySeconds": 30, "periodSeconds": 5, "timeoutSeconds": 4,
                           "failureThreshold": 3, "successThreshold": 1},
        "livenessProbe": {"httpGet": {"path": "/-/healthy", "port": 9090, "scheme": "HTTP"},
                          "initialDelaySeconds": 30, "periodSeconds": 15, "timeoutSeconds": 10,
                          "failureThreshold": 3, "successThreshold": 1},
        "volumeMounts": [{"name": "config-volume", "mountPath": "/etc/config"},
                         {"name": "storage-volume", "mountPath": "/data", "subPath": ""}]}
    deploy = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": _helm_meta(CHART_SERVER),
        "spec": {"selector": {"matchLabels": selector}, "replicas": 1, "revisionHistoryLimit": 10,
                 "strategy": {"type": "Recreate", "rollingUpdate": None},
                 "template": {
                     "metadata": {"labels": _chart_labels()},
                     "spec": {"enableServiceLinks": True, "serviceAccountName": CHART_SERVER,
                              "containers": [reloader, server], "hostNetwork": False, "dnsPolicy": "ClusterFirst",
                              "nodeSelector": dict(REAL),  # the lab's addition: never a kwok node
                              "securityContext": {"fsGroup": 65534, "runAsGroup": 65534, "runAsNonRoot": True,
                                                  "runAsUser": 65534},
                              "terminationGracePeriodSeconds": 300,
                              "volumes": [{"name": "config-volume", "configMap": {"name": CHART_SERVER}},
                                          {"name": "storage-volume", "emptyDir": {}}]}}}}  # PVC by default
    deploy["spec"]["strategy"].pop("rollingUpdate")
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": _helm_meta(CHART_SERVER),
           "spec": {"type": "NodePort", "selector": selector,  # the chart's default is ClusterIP
                    "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 9090,
                               "nodePort": CHART_NODE_PORT}]}}
    return [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": CHART_NS}}, cm, sa, role, binding,
            deploy, svc]


# -- operator -------------------------------------------------------------------------------------
def _upstream(lab: Lab, sub: str) -> list[dict]:
    docs = []
    for path in sorted((lab.operator_manifests / sub).glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def operator_objects(lab: Lab) -> list[dict]:
    """The Operator's example deployment (namespace moved from `default`), the example RBAC for a
    Prometheus, and a Prometheus resource selecting PodMonitors labelled MONITOR_LABELS everywhere."""
    out: list[dict] = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NS}}]
    for doc in _upstream(lab, "rbac-operator") + _upstream(lab, "rbac-prometheus"):
        if doc["kind"] == "ServiceMonitor":
            continue  # monitors the Operator itself; not needed
        if doc["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            doc["metadata"]["namespace"] = OPERATOR_NS
        for subject in doc.get("subjects") or []:
            subject["namespace"] = OPERATOR_NS
        if doc["kind"] == "Deployment":
            doc["spec"]["template"]["spec"]["nodeSelector"] = dict(REAL)
        out.append(doc)
    out.append({
        "apiVersion": "monitoring.coreos.com/v1", "kind": "Prometheus",
        "metadata": {"name": OPERATOR_PROMETHEUS, "namespace": OPERATOR_NS},
        "spec": {"replicas": 1, "version": PROMETHEUS_IMAGE.rsplit(":", 1)[1], "image": PROMETHEUS_IMAGE,
                 "serviceAccountName": "prometheus", "scrapeInterval": "30s",
                 "podMonitorSelector": {"matchLabels": dict(MONITOR_LABELS)}, "podMonitorNamespaceSelector": {},
                 "serviceMonitorSelector": {"matchLabels": dict(MONITOR_LABELS)}, "serviceMonitorNamespaceSelector": {},
                 "ruleSelector": {"matchLabels": dict(MONITOR_LABELS)}, "ruleNamespaceSelector": {},
                 "nodeSelector": dict(REAL)}})
    out.append({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": f"{OPERATOR_PROMETHEUS}-nodeport", "namespace": OPERATOR_NS},
                "spec": {"type": "NodePort", "selector": {"prometheus": OPERATOR_PROMETHEUS},
                         "ports": [{"name": "web", "port": 9090, "targetPort": 9090,
                                    "nodePort": OPERATOR_NODE_PORT}]}})
    return out


# -- apply / wait / remove ------------------------------------------------------------------------
def _rolled_out(dc: DynamicClient, mode: str) -> bool:
    """The chart's Deployment (Recreate) or the Operator's StatefulSet runs its current template, ready."""
    kind, name, ns = (("Deployment", CHART_SERVER, CHART_NS) if mode == "chart" else
                      ("StatefulSet", f"prometheus-{OPERATOR_PROMETHEUS}", OPERATOR_NS))
    try:
        obj = dc.resources.get(api_version="apps/v1", kind=kind).get(name=name, namespace=ns).to_dict()
    except NotFoundError:
        return False
    st = obj.get("status") or {}
    return (st.get("observedGeneration") == obj["metadata"]["generation"] and st.get("replicas") == 1
            and st.get("updatedReplicas") == 1 and st.get("readyReplicas") == 1)


def wait_ready(dc: DynamicClient, mode: str, timeout: float = 240) -> float:
    """Seconds until the Prometheus is rolled out and answers /-/ready through its NodePort."""
    t0 = time.monotonic()
    while True:
        try:
            if _rolled_out(dc, mode) and requests.get(f"{url(mode)}/-/ready", timeout=2).status_code == 200:
                return time.monotonic() - t0
        except requests.RequestException:
            pass
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"the lab's {mode} Prometheus at {url(mode)} not ready after {timeout:.0f}s")
        time.sleep(1)


def _server_pods(dc: DynamicClient, mode: str) -> list[dict]:
    ns, selector = ((CHART_NS, "app.kubernetes.io/component=server,app.kubernetes.io/instance=prometheus")
                    if mode == "chart" else (OPERATOR_NS, f"prometheus={OPERATOR_PROMETHEUS}"))
    return [p.to_dict() for p in dc.resources.get(api_version="v1", kind="Pod").get(
        namespace=ns, label_selector=selector).items]


def _restart_empty(dc: DynamicClient, mode: str, timeout: float = 240) -> None:
    """Deletes the server pod (its TSDB is an emptyDir) and waits for its replacement to be ready."""
    old = {p["metadata"]["uid"] for p in _server_pods(dc, mode)}
    pods = dc.resources.get(api_version="v1", kind="Pod")
    for p in _server_pods(dc, mode):
        pods.delete(name=p["metadata"]["name"], namespace=p["metadata"]["namespace"])
    deadline = time.monotonic() + timeout
    while True:
        now = _server_pods(dc, mode)
        if now and all(p["metadata"]["uid"] not in old and any(
                c["type"] == "Ready" and c["status"] == "True" for c in (p.get("status") or {}).get("conditions") or [])
                for p in now):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the {mode} Prometheus pod was not replaced within {timeout:.0f}s")
        time.sleep(1)


def deploy(lab: Lab, mode: str, empty: bool = False) -> str:
    """Deploys (idempotently) the chart-shaped or Operator-managed Prometheus; returns its URL once ready.
    `empty`: restart it without data, so what it holds afterwards came after this call."""
    nodes.import_on_demand_images(lab)
    if mode == "operator":
        clusterapi.apply_operator_crds(lab, lab.operator_crds(("prometheuses",)))
    elif mode != "chart":
        raise ValueError(f"mode {mode!r}: chart or operator")
    dc = clusterapi.dynamic(lab)
    clusterapi.apply_objects(dc, chart_objects() if mode == "chart" else operator_objects(lab),
                             "helm" if mode == "chart" else clusterapi.FIELD_MANAGER)
    time.sleep(1)  # let the controller observe a changed template before judging the rollout
    wait_ready(dc, mode)
    if empty:
        _restart_empty(dc, mode)
        wait_ready(dc, mode)
    return url(mode)


def deploy_chart_config(lab: Lab, config: dict, alerting_rules: dict | None = None) -> None:
    """What `helm upgrade` with changed values (e.g. extraScrapeConfigs, serverFiles) does to the server
    ConfigMap."""
    cm = next(o for o in chart_objects(config, alerting_rules) if o["kind"] == "ConfigMap")
    clusterapi.apply_objects(clusterapi.dynamic(lab), [cm], "helm")


def remove(lab: Lab, modes: tuple[str, ...] = ("chart", "operator")) -> list[str]:
    """Deletes the in-cluster Prometheuses of `modes` (namespaces and cluster-scoped RBAC); returns what it
    deleted."""
    dc = clusterapi.dynamic(lab)
    gone = []
    if "operator" in modes:
        try:  # the Prometheus resource first: its StatefulSet is deleted with it (owner reference)
            dc.resources.get(api_version="monitoring.coreos.com/v1", kind="Prometheus").delete(
                name=OPERATOR_PROMETHEUS, namespace=OPERATOR_NS)
            gone.append(f"Prometheus/{OPERATOR_PROMETHEUS}")
        except Exception:  # noqa: BLE001 - CRD or resource absent
            pass
    objects = {"chart": (("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", CHART_SERVER),
                         ("rbac.authorization.k8s.io/v1", "ClusterRole", CHART_SERVER),
                         ("v1", "Namespace", CHART_NS)),
               "operator": (("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "prometheus"),
                            ("rbac.authorization.k8s.io/v1", "ClusterRole", "prometheus"),
                            ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "prometheus-operator"),
                            ("rbac.authorization.k8s.io/v1", "ClusterRole", "prometheus-operator"),
                            ("v1", "Namespace", OPERATOR_NS))}
    for api, kind, name in (o for m in modes for o in objects[m]):
        try:
            dc.resources.get(api_version=api, kind=kind).delete(name=name)
            gone.append(f"{kind}/{name}")
        except NotFoundError:
            pass
    return gone


def wait_gone(lab: Lab, timeout: float = 120, modes: tuple[str, ...] = ("chart", "operator")) -> None:
    """Until the namespaces of `modes` are fully deleted (a re-deploy into a Terminating namespace fails)."""
    dc = clusterapi.dynamic(lab)
    ns = dc.resources.get(api_version="v1", kind="Namespace")
    deadline = time.monotonic() + timeout
    for name in [{"chart": CHART_NS, "operator": OPERATOR_NS}[m] for m in modes]:
        while True:
            try:
                ns.get(name=name)
            except NotFoundError:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"namespace {name} still terminating after {timeout:.0f}s")
            time.sleep(1)
