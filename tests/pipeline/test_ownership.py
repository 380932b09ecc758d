"""Server-side apply semantics against the real API server: convergence and foreign owners."""
from __future__ import annotations

import uuid

import pytest
from kubernetes.dynamic import DynamicClient

from netviz_lab.lab import Lab
from netviz_pipeline.render import install
from netviz_pipeline.resources.kube import FIELD_MANAGER, Kube

pytestmark = pytest.mark.lab



def _cm(ns: str, data: dict, labels: dict | None = None) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "owned", "namespace": ns, "labels": labels or {}}, "data": data}


@pytest.fixture
def scratch(lab: Lab, admin_api):
    """A fresh namespace per test (a deleted one stays Terminating for a while)."""
    dc = DynamicClient(admin_api)
    ns = dc.resources.get(api_version="v1", kind="Namespace")
    name = f"netviz-ownership-{uuid.uuid4().hex[:8]}"
    ns.server_side_apply(body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
                         field_manager="test-admin")
    # the administrator grants the pipeline this namespace, as `netviz_pipeline.admin` does for its own
    rbac = "rbac.authorization.k8s.io/v1"
    dc.resources.get(api_version=rbac, kind="Role").server_side_apply(body={
        "apiVersion": rbac, "kind": "Role", "metadata": {"name": install.NAME, "namespace": name},
        "rules": install.PURPOSE_RULES["workloads"]}, field_manager="test-admin")
    dc.resources.get(api_version=rbac, kind="RoleBinding").server_side_apply(body={
        "apiVersion": rbac, "kind": "RoleBinding", "metadata": {"name": install.NAME, "namespace": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": install.NAME},
        "subjects": [install.Subject.parse(install.DEFAULT_SUBJECT).ref()]}, field_manager="test-admin")
    yield dc, name
    ns.delete(name=name)


def test_apply_creates_then_leaves_a_converged_object_untouched(lab: Lab, scratch):
    dc, ns = scratch
    kube = Kube(str(lab.pipeline_kubeconfig))
    assert kube.apply(_cm(ns, {"a": "1"})).action == "created"
    rv = kube.get("v1", "ConfigMap", "owned", ns)["metadata"]["resourceVersion"]
    again = kube.apply(_cm(ns, {"a": "1"}))
    assert again.action == "unchanged" and again.changes == []
    assert kube.get("v1", "ConfigMap", "owned", ns)["metadata"]["resourceVersion"] == rv
    changed = kube.apply(_cm(ns, {"a": "2"}))
    assert changed.action == "updated" and changed.changes == ["data.a"]


def test_an_object_helm_manages_is_skipped_or_adopted(lab: Lab, scratch):
    dc, ns = scratch
    cms = dc.resources.get(api_version="v1", kind="ConfigMap")
    cms.server_side_apply(body=_cm(ns, {"a": "helm"}, {"app.kubernetes.io/managed-by": "Helm"}), field_manager="helm")
    kube = Kube(str(lab.pipeline_kubeconfig))
    skipped = kube.apply(_cm(ns, {"a": "ours"}), on_foreign="skip")
    assert skipped.action == "skipped" and "helm" in skipped.reason
    assert kube.get("v1", "ConfigMap", "owned", ns)["data"] == {"a": "helm"}
    adopted = kube.apply(_cm(ns, {"a": "ours"}), on_foreign="adopt")
    assert adopted.action == "adopted"
    live = kube.get("v1", "ConfigMap", "owned", ns)
    assert live["data"] == {"a": "ours"}
    owners = {m["manager"] for m in live["metadata"]["managedFields"] if "f:data" in str(m.get("fieldsV1"))}
    assert owners == {FIELD_MANAGER}


def test_a_hand_edit_of_an_object_we_manage_is_drift_and_is_restored(lab: Lab, scratch):
    dc, ns = scratch
    kube = Kube(str(lab.pipeline_kubeconfig))
    assert kube.apply(_cm(ns, {"a": "1"})).action == "created"
    cms = dc.resources.get(api_version="v1", kind="ConfigMap")
    cms.patch(body={"data": {"a": "edited"}}, name="owned", namespace=ns,
              content_type="application/merge-patch+json", field_manager="kubectl-edit")
    restored = kube.apply(_cm(ns, {"a": "1"}), on_foreign="skip")
    assert restored.action == "updated" and restored.changes == ["data.a"]
    assert "kubectl-edit" in restored.reason
    assert kube.get("v1", "ConfigMap", "owned", ns)["data"] == {"a": "1"}
