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
from kubernetes.dynamic.exceptions import ForbiddenError

from netviz_lab import clusterapi

pytestmark = pytest.mark.lab

IMAGE = "registry.k8s.io/pause:3.10"  # kwok only simulates the pod lifecycle
KWOK_ONLY = {"type": "kwok"}  # these tests are about the simulated nodes
CRDS = ("servicemonitors", "podmonitors", "scrapeconfigs")


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


def test_pipeline_user_allowed_what_the_role_grants(admin, pipeline, ns):
    fm = dict(field_manager="netviz-pipeline", force_conflicts=True)
    pipeline.resources.get(api_version="v1", kind="Node").get()
    pipeline.resources.get(api_version="v1", kind="Namespace").get(name=ns)
    cms = pipeline.resources.get(api_version="v1", kind="ConfigMap")
    cms.server_side_apply(body={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"},
                                "data": {"k": "v"}}, namespace=ns, **fm)
    assert cms.get(name="cfg", namespace=ns).data.k == "v"
    pipeline.resources.get(api_version="v1", kind="ServiceAccount").server_side_apply(
        body={"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "caretta"}}, namespace=ns, **fm)
    pipeline.resources.get(api_version="v1", kind="Pod").get(namespace=ns)
    pipeline.resources.get(api_version="v1", kind="Event").get(namespace=ns)
    pipeline.resources.get(api_version="apiextensions.k8s.io/v1", kind="CustomResourceDefinition").get()
    pipeline.resources.get(api_version="monitoring.coreos.com/v1", kind="ServiceMonitor").server_side_apply(
        body={"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "metadata": {"name": "sm"},
              "spec": {"selector": {"matchLabels": {"app": "x"}}, "endpoints": [{"port": "metrics"}]}},
        namespace=ns, **fm)
    # bind/escalate only for the `caretta` ClusterRole: a server-side dry run still runs RBAC's escalation
    # checks, and leaves nothing behind (a real pipeline may own `caretta` in this lab).
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "caretta"},
            "rules": [{"apiGroups": [""], "resources": ["pods", "nodes"], "verbs": ["get", "list", "watch"]}]}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": "caretta"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "caretta"},
               "subjects": [{"kind": "ServiceAccount", "name": "caretta", "namespace": ns}]}
    pipeline.resources.get(api_version="rbac.authorization.k8s.io/v1", kind="ClusterRole").server_side_apply(
        body=role, dry_run="All", **fm)
    crb = pipeline.resources.get(api_version="rbac.authorization.k8s.io/v1", kind="ClusterRoleBinding")
    crb.server_side_apply(body=binding, dry_run="All", **fm)


@pytest.mark.parametrize("action", [
    "create-secret", "list-secrets", "delete-namespace", "delete-configmap", "bind-cluster-admin",
    "escalate-other-role", "create-crd", "delete-node",
])
def test_pipeline_user_denied_outside_the_role(pipeline, ns, action):
    r = lambda av, k: pipeline.resources.get(api_version=av, kind=k)  # noqa: E731
    rbac = "rbac.authorization.k8s.io/v1"
    calls = {
        "create-secret": lambda: r("v1", "Secret").create(
            body={"metadata": {"name": "s"}, "stringData": {"a": "b"}}, namespace=ns),
        "list-secrets": lambda: r("v1", "Secret").get(namespace=ns),
        "delete-namespace": lambda: r("v1", "Namespace").delete(name=ns),
        "delete-configmap": lambda: r("v1", "ConfigMap").delete(name="cfg", namespace=ns),
        "bind-cluster-admin": lambda: r(rbac, "ClusterRoleBinding").server_side_apply(
            body={"apiVersion": rbac, "kind": "ClusterRoleBinding", "metadata": {"name": "nvz-test-escalate"},
                  "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                              "name": "cluster-admin"},
                  "subjects": [{"kind": "User", "name": "netviz-pipeline"}]},
            field_manager="netviz-pipeline", dry_run="All"),
        "escalate-other-role": lambda: r(rbac, "ClusterRole").server_side_apply(
            body={"apiVersion": rbac, "kind": "ClusterRole", "metadata": {"name": "nvz-test-not-caretta"},
                  "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]},
            field_manager="netviz-pipeline", dry_run="All"),
        "create-crd": lambda: r("apiextensions.k8s.io/v1", "CustomResourceDefinition").create(
            body={"metadata": {"name": "things.example.com"},
                  "spec": {"group": "example.com", "scope": "Namespaced",
                           "names": {"kind": "Thing", "plural": "things"},
                           "versions": [{"name": "v1", "served": True, "storage": True,
                                         "schema": {"openAPIV3Schema": {"type": "object"}}}]}},
            dry_run="All"),
        "delete-node": lambda: r("v1", "Node").delete(name=clusterapi.node_name(0), dry_run="All"),
    }
    with pytest.raises(ForbiddenError):
        calls[action]()


def test_crds_established(admin, pipeline):
    crds = admin.resources.get(api_version="apiextensions.k8s.io/v1", kind="CustomResourceDefinition")
    for plural in CRDS:
        o = crds.get(name=f"{plural}.monitoring.coreos.com").to_dict()
        conds = {c["type"]: c["status"] for c in o["status"]["conditions"]}
        assert conds["Established"] == "True" and conds["NamesAccepted"] == "True"
        assert o["spec"]["scope"] == "Namespaced"
    assert pipeline.resources.get(api_version="monitoring.coreos.com/v1alpha1", kind="ScrapeConfig")


def test_kubectl_exec_runs_locally_through_kwok(lab, admin, ns):
    """kwok's ClusterExec maps exec in any kwok pod to a local command (as the lab's user, on the host)."""
    pods = admin.resources.get(api_version="v1", kind="Pod")
    pods.create(namespace=ns, body={"metadata": {"name": "exec-target"},
                                    "spec": {"nodeSelector": KWOK_ONLY,
                                             "containers": [{"name": "c", "image": IMAGE}]}})
    _wait(lambda: ((p := pods.get(name="exec-target", namespace=ns).to_dict())["status"].get("phase") == "Running",
                   p["status"]), 30, "pod Running")
    token = uuid.uuid4().hex
    for kubeconfig in (lab.admin_kubeconfig, lab.pipeline_kubeconfig):
        res = subprocess.run([str(lab.bin("kubectl")), f"--kubeconfig={kubeconfig}", "-n", ns, "exec",
                              "exec-target", "--", "echo", token], capture_output=True, text=True, timeout=30)
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip() == token
