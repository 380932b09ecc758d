from __future__ import annotations

import json

from netviz_pipeline.render import caretta


def by_kind(objs):
    return {o["kind"]: o for o in objs}


def test_objects_and_order(settings):
    kinds = [o["kind"] for o in caretta.render(settings)]
    assert kinds == ["Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "DaemonSet", "Service"]


def test_deterministic(settings):
    assert json.dumps(caretta.render(settings)) == json.dumps(caretta.render(settings))


def test_namespace_allows_privileged_pods(settings):
    ns = by_kind(caretta.render(settings))["Namespace"]
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"


def test_cluster_role_is_read_only_and_minimal(settings):
    role = by_kind(caretta.render(settings))["ClusterRole"]
    granted = {(g, r) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]}
    assert granted == {("", "pods"), ("", "nodes"), ("", "services"), ("apps", "replicasets"),
                       ("apps", "daemonsets"), ("apps", "statefulsets"), ("apps", "deployments"),
                       ("batch", "jobs"), ("batch", "cronjobs")}
    assert all(rule["verbs"] == ["get", "list", "watch"] for rule in role["rules"])
    assert not any("*" in str(rule) or "secrets" in str(rule) for rule in role["rules"])


def test_binding_points_at_our_service_account(settings):
    b = by_kind(caretta.render(settings))["ClusterRoleBinding"]
    assert b["subjects"] == [{"kind": "ServiceAccount", "name": "caretta", "namespace": "caretta"}]
    assert b["roleRef"]["name"] == "caretta"


def test_daemonset_matches_upstream_shape(settings):
    ds = by_kind(caretta.render(settings))["DaemonSet"]
    pod = ds["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert ds["metadata"]["name"] == "caretta" and ds["spec"]["selector"]["matchLabels"] == {"app": "caretta"}
    assert ds["spec"]["template"]["metadata"]["labels"]["app"] == "caretta"
    assert c["image"] == "quay.io/groundcover/caretta:v0.0.16"
    assert c["securityContext"] == {"privileged": True, "readOnlyRootFilesystem": True}
    assert c["ports"] == [{"name": "prom-metrics", "containerPort": 7117, "protocol": "TCP"}]
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env == {"RESOLVE_DNS": "true", "PROMETHEUS_PORT": "7117", "PROMETHEUS_ENDPOINT": "/metrics",
                   "POLL_INTERVAL": "5"}
    assert {v["name"]: v["hostPath"]["path"] for v in pod["volumes"]} == {"proc": "/proc", "debug": "/sys/kernel/debug"}
    assert {m["mountPath"] for m in c["volumeMounts"]} == {"/proc", "/sys/kernel/debug"}
    assert "hostNetwork" not in pod and "hostPID" not in pod and "livenessProbe" not in c and "args" not in c
    taints = {t["key"] for t in pod["tolerations"]}
    assert taints == {"node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master"}
    assert pod["serviceAccountName"] == "caretta"


def test_memory_limit_avoids_the_kernel_6_1_oom(settings, make):
    ds = by_kind(caretta.render(settings))["DaemonSet"]
    limits = ds["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["memory"] == "512Mi"  # upstream 300Mi is OOM-killed on >= 6.1
    s = make(caretta={"resources": {"memory_limit": "1Gi"}})
    ds = by_kind(caretta.render(s))["DaemonSet"]
    assert ds["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] == "1Gi"


def test_service_is_headless_and_selects_every_pod(settings):
    svc = by_kind(caretta.render(settings))["Service"]
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["selector"] == {"app": "caretta"}
    assert svc["spec"]["ports"][0]["port"] == 7117


def test_namespace_from_settings(make):
    objs = caretta.render(make(caretta={"namespace": "ebpf"}))
    assert {o["metadata"].get("namespace") for o in objs if o["kind"] not in
            ("Namespace", "ClusterRole", "ClusterRoleBinding")} == {"ebpf"}
    assert by_kind(objs)["ClusterRoleBinding"]["subjects"][0]["namespace"] == "ebpf"


def test_no_status_or_server_fields(settings):
    text = json.dumps(caretta.render(settings))
    assert '"status"' not in text and "resourceVersion" not in text and "managedFields" not in text
