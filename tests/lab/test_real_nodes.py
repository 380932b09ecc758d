"""The real nodes: kubelet + containerd + runc + kube-proxy judge pods the way a cluster does.

Needs the running lab. Each test works in a throwaway namespace, on the real nodes only.
"""
from __future__ import annotations

import subprocess
import time
import uuid

import pytest
import requests

from netviz_lab import clusterapi, versions
from netviz_lab.topology import REAL_NODE_LABEL, REAL_NODES
from netviz_pipeline import readiness
from netviz_pipeline.render import goflow2 as render_goflow2
from netviz_lab.settings import settings as lab_settings
from netviz_pipeline import loading

pytestmark = pytest.mark.lab

PYTHON = "python:3.12-alpine"  # the lab's documented substitute image (netviz_lab/images.py)
REAL = dict([REAL_NODE_LABEL])


@pytest.fixture(scope="module")
def admin(lab):
    return clusterapi.dynamic(lab)


@pytest.fixture
def ns(admin):
    name = f"nvz-test-real-{uuid.uuid4().hex[:6]}"
    namespaces = admin.resources.get(api_version="v1", kind="Namespace")
    namespaces.create(body={"metadata": {"name": name}})
    yield name
    namespaces.delete(name=name)


def _wait(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        ok, last = pred()
        if ok:
            return last
        time.sleep(0.5)
    pytest.fail(f"{what} not reached in {timeout}s; last state: {last}")


def _pod(admin, ns: str, name: str) -> dict:
    return admin.resources.get(api_version="v1", kind="Pod").get(name=name, namespace=ns).to_dict()


def _create_pod(admin, ns: str, name: str, containers: list[dict], **spec) -> None:
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": name}},
            "spec": {"nodeSelector": REAL, "terminationGracePeriodSeconds": 1, "containers": containers, **spec}}
    admin.resources.get(api_version="v1", kind="Pod").create(body=body, namespace=ns)


def _waiting(pod: dict) -> dict:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        if (cs.get("state") or {}).get("waiting"):
            return cs["state"]["waiting"]
    return {}


def _kubectl(lab, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(lab.bin("kubectl")), f"--kubeconfig={lab.admin_kubeconfig}", *args],
                          capture_output=True, text=True, timeout=60)


def test_real_nodes_are_ready_kubelets_with_containerd(admin):
    nodes = {n["metadata"]["name"]: n for n in
             admin.resources.get(api_version="v1", kind="Node").get(label_selector="=".join(REAL_NODE_LABEL))
             .to_dict()["items"]}
    assert set(nodes) == {n.name for n in REAL_NODES}
    for spec in REAL_NODES:
        st = nodes[spec.name]["status"]
        assert {c["type"]: c["status"] for c in st["conditions"]}["Ready"] == "True"
        assert st["nodeInfo"]["kubeletVersion"] == versions.KUBERNETES
        assert st["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://1.6")
        assert {"type": "InternalIP", "address": spec.ip} in st["addresses"]
        assert "kwok.x-k8s.io/node" not in (nodes[spec.name]["metadata"].get("annotations") or {})


def test_pods_run_on_each_real_node_with_kubelet_status_and_answer_on_their_ip(lab, admin, ns):
    for i, node in enumerate(REAL_NODES):
        _create_pod(admin, ns, f"web-{i}", [{
            "name": "web", "image": PYTHON, "command": ["python3", "-m", "http.server", "8080"],
            "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1}}],
            nodeName=node.name)
    for i, node in enumerate(REAL_NODES):
        pod = _wait(lambda: ((p := _pod(admin, ns, f"web-{i}"))["status"].get("phase") == "Running"
                             and all(c.get("ready") for c in p["status"].get("containerStatuses") or [{}]), p),
                    90, f"web-{i} Ready")
        cs = pod["status"]["containerStatuses"][0]
        assert cs["containerID"].startswith("containerd://") and cs["imageID"]  # the kubelet's report
        ip = pod["status"]["podIP"]
        assert ip.startswith(node.pod_cidr.rsplit(".", 1)[0] + ".")
        assert requests.get(f"http://{ip}:8080/", timeout=5).status_code == 200
    # logs come from the container runtime through the kubelet (kwok had none)
    logs = _kubectl(lab, "-n", ns, "logs", "web-0")
    assert logs.returncode == 0 and "GET / HTTP" in logs.stdout + logs.stderr, logs.stderr


def test_unknown_image_fails_with_err_image_pull(admin, ns):
    _create_pod(admin, ns, "nope", [{"name": "c", "image": "example.invalid/netviz/nope:1"}])
    waiting = _wait(lambda: ((w := _waiting(_pod(admin, ns, "nope"))).get("reason") in ("ErrImagePull",
                                                                                          "ImagePullBackOff"), w),
                    90, "ErrImagePull")
    assert waiting["reason"] in readiness.STUCK_WAITING


def _goflow2_container(lab, security_context: dict | None = None) -> dict:
    """The product's GoFlow2 container (flows to stdout, no probes: only the security context matters)."""
    raw = lab_settings(lab) | {"flows": {"enabled": False}}
    c = render_goflow2.deployment(loading.parse(raw))["spec"]["template"]["spec"]["containers"][0]
    c = {k: v for k, v in c.items() if k not in ("readinessProbe", "livenessProbe")}
    return c if security_context is None else {**c, "securityContext": security_context}


def test_goflow2_security_context_is_accepted_by_a_real_kubelet(lab, admin, ns):
    """The product's GoFlow2 container runs; the plan's (runAsNonRoot without a numeric user) is refused,
    because the upstream image says `USER flow` by name."""
    product = _goflow2_container(lab)
    before = _goflow2_container(lab, {"runAsNonRoot": True, "allowPrivilegeEscalation": False,
                                 "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}})
    _create_pod(admin, ns, "goflow2-before", [before])
    _create_pod(admin, ns, "goflow2-product", [product])
    waiting = _wait(lambda: ((w := _waiting(_pod(admin, ns, "goflow2-before"))).get("reason")
                             == "CreateContainerConfigError", w), 60, "CreateContainerConfigError")
    assert "non-numeric user (flow)" in waiting["message"]
    _wait(lambda: ((p := _pod(admin, ns, "goflow2-product"))["status"].get("phase") == "Running", p["status"]),
          60, "product GoFlow2 Running")


def test_failing_readiness_probe_removes_the_pod_from_its_service(lab, admin, ns):
    _create_pod(admin, ns, "probed", [{
        "name": "web", "image": PYTHON, "workingDir": "/tmp",
        "command": ["sh", "-c", "touch /tmp/ready && exec python3 -m http.server 8080"],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 1, "failureThreshold": 1}}])
    admin.resources.get(api_version="v1", kind="Service").create(namespace=ns, body={
        "metadata": {"name": "probed"}, "spec": {"selector": {"app": "probed"}, "ports": [{"port": 8080}]}})
    slices = admin.resources.get(api_version="discovery.k8s.io/v1", kind="EndpointSlice")

    def ready_endpoints() -> list[bool]:
        items = slices.get(namespace=ns, label_selector="kubernetes.io/service-name=probed").to_dict()["items"]
        return [bool((e.get("conditions") or {}).get("ready")) for s in items for e in s.get("endpoints") or []]

    _wait(lambda: ((r := ready_endpoints()) == [True], r), 90, "endpoint ready")
    rm = _kubectl(lab, "-n", ns, "exec", "probed", "--", "rm", "/tmp/ready")
    assert rm.returncode == 0, rm.stderr  # exec through the real kubelet and containerd
    _wait(lambda: ((r := ready_endpoints()) == [False], r), 30, "endpoint not ready after the probe fails")
    pod = _pod(admin, ns, "probed")
    assert not pod["status"]["containerStatuses"][0]["ready"]


def test_container_over_its_memory_limit_is_oom_killed_and_the_rollout_check_says_so(admin, ns):
    labels = {"app": "hog"}
    deploy = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "hog", "namespace": ns},
              "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                       "template": {"metadata": {"labels": labels}, "spec": {
                           "nodeSelector": REAL, "terminationGracePeriodSeconds": 1,
                           "containers": [{"name": "hog", "image": PYTHON,
                                           "command": ["python3", "-c",
                                                       "b = bytearray(256 << 20); import time; time.sleep(600)"],
                                           "resources": {"limits": {"memory": "48Mi", "cpu": "200m"}}}]}}}}
    deployments = admin.resources.get(api_version="apps/v1", kind="Deployment")
    deployments.create(body=deploy, namespace=ns)
    pods = admin.resources.get(api_version="v1", kind="Pod")

    def verdict():
        obj = deployments.get(name="hog", namespace=ns).to_dict()
        items = pods.get(namespace=ns, label_selector="app=hog").to_dict()["items"]
        r = readiness.deployment(obj, items)
        return any("OOMKilled" in reason for reason in r.reasons), r

    r = _wait(verdict, 90, "OOMKilled named by the rollout check")
    assert not r.ready


def test_daemonset_spans_both_real_nodes_and_cluster_ip_reaches_the_api(lab, admin, ns):
    """A DaemonSet gets a pod per real node; from inside a pod the `kubernetes` Service (kube-proxy's
    ClusterIP DNAT to the API server) answers, as in-cluster clients (the Caretta stand-in) need."""
    labels = {"app": "agent"}
    ds = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent", "namespace": ns},
          "spec": {"selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels}, "spec": {
              "nodeSelector": REAL, "terminationGracePeriodSeconds": 1,
              "containers": [{"name": "c", "image": PYTHON, "command": ["sleep", "600"]}]}}}}
    dss = admin.resources.get(api_version="apps/v1", kind="DaemonSet")
    dss.create(body=ds, namespace=ns)

    def done():
        obj = dss.get(name="agent", namespace=ns).to_dict()
        return readiness.daemonset(obj).ready, obj.get("status")

    _wait(done, 90, "DaemonSet ready")
    items = admin.resources.get(api_version="v1", kind="Pod").get(namespace=ns, label_selector="app=agent") \
        .to_dict()["items"]
    assert sorted(p["spec"]["nodeName"] for p in items) == sorted(n.name for n in REAL_NODES)
    probe = ("import os, ssl, urllib.request, urllib.error\n"
             "url = 'https://%s:%s/readyz' % (os.environ['KUBERNETES_SERVICE_HOST'], os.environ['KUBERNETES_SERVICE_PORT'])\n"
             "ctx = ssl.create_default_context(cafile='/var/run/secrets/kubernetes.io/serviceaccount/ca.crt')\n"
             "try:\n    print(urllib.request.urlopen(url, context=ctx, timeout=5).status)\n"
             "except urllib.error.HTTPError as e:\n    print(e.code)\n")
    for p in items:
        res = _kubectl(lab, "-n", ns, "exec", p["metadata"]["name"], "--", "python3", "-c", probe)
        assert res.returncode == 0 and res.stdout.strip() in ("200", "401", "403"), res.stdout + res.stderr


def test_prometheus_and_operator_images_run_as_upstream_does(lab, admin, ns):
    """The locally built Prometheus 3 image serves its API under the chart's security context (numeric
    nobody, non-root); the Operator's two images run their binaries (for the chart and operator modes)."""
    from netviz_lab import images, nodes

    nodes.import_on_demand_images(lab)  # not imported at `up`: only these tests run them
    tag = images.prometheus_release(versions.PROMETHEUS)
    sc = {"runAsNonRoot": True, "runAsUser": 65534, "runAsGroup": 65534, "allowPrivilegeEscalation": False,
          "capabilities": {"drop": ["ALL"]}}
    _create_pod(admin, ns, "prometheus", [{"name": "prometheus", "image": f"quay.io/prometheus/prometheus:{tag}",
                                           "securityContext": sc,
                                           "readinessProbe": {"httpGet": {"path": "/-/ready", "port": 9090},
                                                              "periodSeconds": 1}}])
    for name, binary in (("prometheus-config-reloader", "prometheus-config-reloader"),
                         ("prometheus-operator", "operator")):
        _create_pod(admin, ns, name, [{"name": "c", "image": f"quay.io/prometheus-operator/{name}:"
                                                             f"{versions.PROMETHEUS_OPERATOR}",
                                       "args": ["--version"], "securityContext": sc}], restartPolicy="Never")
    pod = _wait(lambda: ((p := _pod(admin, ns, "prometheus"))["status"].get("phase") == "Running"
                         and all(c.get("ready") for c in p["status"].get("containerStatuses") or [{}]), p),
                90, "Prometheus Ready")
    info = requests.get(f"http://{pod['status']['podIP']}:9090/api/v1/status/buildinfo", timeout=5).json()["data"]
    assert info["version"] == tag.lstrip("v")
    for name in ("prometheus-config-reloader", "prometheus-operator"):
        _wait(lambda: ((p := _pod(admin, ns, name))["status"].get("phase") == "Succeeded", p["status"]), 60,
              f"{name} --version")
        out = _kubectl(lab, "-n", ns, "logs", name)
        assert versions.PROMETHEUS_OPERATOR.lstrip("v") in out.stdout + out.stderr, out.stdout + out.stderr
