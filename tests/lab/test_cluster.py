"""The lab cluster: kwok nodes, real rollouts, the restricted pipeline user, CRDs, kwok exec mapping.
(The real nodes have their own tests: test_real_nodes.py.)

Needs the running lab (session fixture `lab` from tests/conftest.py). Every object is created in a
throwaway namespace (or as a server-side dry run) and removed afterwards.
"""
from __future__ import annotations

import subprocess
import time
import uuid

import pytest

from netviz_lab import clusterapi

pytestmark = pytest.mark.lab

IMAGE = "registry.k8s.io/pause:3.10"  # kwok only simulates the pod lifecycle
KWOK_ONLY = {"type": "kwok"}  # these tests are about the simulated nodes


@pytest.fixture(scope="module")
def admin(lab):
    return clusterapi.dynamic(lab)


@pytest.fixture(scope="module")
def pipeline(lab):
    return clusterapi.dynamic(lab, lab.pipeline_kubeconfig)


@pytest.fixture(scope="module")
def ns(admin):
    name = f"nvz-test-cluster-{uuid.uuid4().hex[:6]}"
    namespaces = admin.resources.get(api_version="v1", kind="Namespace")
    namespaces.create(body={"metadata": {"name": name}})
    yield name
    namespaces.delete(name=name)


@pytest.fixture(scope="module", autouse=True)
def kwok_nodes(lab):
    """Three simulated nodes for this module (the lab starts with none unless `up --nodes N`)."""
    clusterapi.ensure_nodes(lab, max(lab.nodes, 3))
    yield
    clusterapi.ensure_nodes(lab, lab.nodes)


def _kwok_nodes(admin) -> list[dict]:
    nodes = admin.resources.get(api_version="v1", kind="Node").get(label_selector="type=kwok").to_dict()["items"]
    return [n for n in nodes if n["metadata"]["name"].startswith(clusterapi.NODE_PREFIX)]


def _wait(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        ok, last = pred()
        if ok:
            return last
        time.sleep(0.25)
    pytest.fail(f"{what} not reached in {timeout}s; last state: {last}")


def test_nodes_ready_with_kernel_version(lab, admin):
    nodes = _kwok_nodes(admin)
    assert len(nodes) >= 3
    for n in nodes:
        st = n["status"]
        ready = {c["type"]: c["status"] for c in st["conditions"]}.get("Ready")
        assert ready == "True", n["metadata"]["name"]
        assert st["nodeInfo"]["kernelVersion"] == clusterapi.DEFAULT_KERNEL
        assert not n["spec"].get("taints"), n["spec"].get("taints")
        assert n["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"
        assert {"type": "InternalIP", "address": "198.18.0.1"} in st["addresses"]


def test_deployment_and_daemonset_roll_out(admin, ns):
    nodes = len(_kwok_nodes(admin))
    labels = {"app": "nvz-cluster-test"}
    pod = {"metadata": {"labels": labels},
           "spec": {"nodeSelector": KWOK_ONLY, "containers": [{"name": "c", "image": IMAGE}]}}
    deploy = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": ns},
              "spec": {"replicas": 2, "selector": {"matchLabels": labels}, "template": pod}}
    ds_labels = {"app": "nvz-cluster-test-ds"}
    ds = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent", "namespace": ns},
          "spec": {"selector": {"matchLabels": ds_labels},
                   "template": {**pod, "metadata": {"labels": ds_labels}}}}
    deployments = admin.resources.get(api_version="apps/v1", kind="Deployment")
    daemonsets = admin.resources.get(api_version="apps/v1", kind="DaemonSet")
    deployments.server_side_apply(body=deploy, namespace=ns, field_manager="netviz-test", force_conflicts=True)
    daemonsets.server_side_apply(body=ds, namespace=ns, field_manager="netviz-test", force_conflicts=True)

    def deploy_done():
        o = deployments.get(name="web", namespace=ns).to_dict()
        st = o.get("status") or {}
        avail = {c["type"]: c["status"] for c in st.get("conditions") or []}.get("Available")
        ok = (st.get("observedGeneration") == o["metadata"]["generation"] and avail == "True"
              and 2 == st.get("replicas") == st.get("updatedReplicas") == st.get("readyReplicas")
              == st.get("availableReplicas"))
        return ok, st

    def ds_done():
        o = daemonsets.get(name="agent", namespace=ns).to_dict()
        st = o.get("status") or {}
        ok = (st.get("observedGeneration") == o["metadata"]["generation"]
              and st.get("desiredNumberScheduled") == nodes
              and all(st.get(k) == nodes for k in ("currentNumberScheduled", "updatedNumberScheduled",
                                                    "numberAvailable", "numberReady")))
        return ok, st

    _wait(deploy_done, 60, "Deployment rollout")
    _wait(ds_done, 60, "DaemonSet rollout")
    pods = admin.resources.get(api_version="v1", kind="Pod").get(namespace=ns).to_dict()["items"]
    assert len(pods) == 2 + nodes
    for p in pods:
        assert p["status"]["phase"] == "Running"
        assert p["status"]["podIP"].startswith("198.19.")  # from topology.KWOK_POD_CIDR
        assert p["spec"]["nodeName"].startswith(clusterapi.NODE_PREFIX)
    ds_pods = [p for p in pods if p["metadata"]["labels"].get("app") == ds_labels["app"]]
    assert len({p["spec"]["nodeName"] for p in ds_pods}) == nodes  # one per node


def test_crds_established(admin, pipeline):
    """The Operator's own CRDs for the monitor kinds (its Prometheus CRD comes with the Operator)."""
    crds = admin.resources.get(api_version="apiextensions.k8s.io/v1", kind="CustomResourceDefinition")
    for plural in clusterapi.MONITOR_CRDS:
        o = crds.get(name=f"{plural}.monitoring.coreos.com").to_dict()
        conds = {c["type"]: c["status"] for c in o["status"]["conditions"]}
        assert conds["Established"] == "True" and conds["NamesAccepted"] == "True"
        assert o["spec"]["scope"] == "Namespaced"
    assert pipeline.resources.get(api_version="monitoring.coreos.com/v1", kind="PodMonitor")


def test_kubectl_exec_runs_locally_through_kwok(lab, admin, ns):
    """kwok's ClusterExec maps exec in any kwok pod to a local command (as the lab's user, on the host)."""
    pods = admin.resources.get(api_version="v1", kind="Pod")
    pods.create(namespace=ns, body={"metadata": {"name": "exec-target"},
                                    "spec": {"nodeSelector": KWOK_ONLY,
                                             "containers": [{"name": "c", "image": IMAGE}]}})
    _wait(lambda: ((p := pods.get(name="exec-target", namespace=ns).to_dict())["status"].get("phase") == "Running",
                   p["status"]), 30, "pod Running")
    token = uuid.uuid4().hex
    for kubeconfig in (lab.admin_kubeconfig,):  # the pipeline may not exec here (test_least_privilege.py)
        res = subprocess.run([str(lab.bin("kubectl")), f"--kubeconfig={kubeconfig}", "-n", ns, "exec",
                              "exec-target", "--", "echo", token], capture_output=True, text=True, timeout=30)
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip() == token
