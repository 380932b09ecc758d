"""Holding the pipeline's identity, try the known ways to gain more than it was granted; each is denied.

The grant is what `python -m netviz_pipeline.admin apply` installs for the lab's settings
(render/install.py): cluster-wide reads, a Role per managed namespace, no RBAC writes, no Secrets, no
exec (the lab's settings name no canary pod). `netviz_deploy`/`netviz_verify` pass with exactly this
identity (tests/pipeline). Runs on the pristine lab; nothing is left behind.
"""
from __future__ import annotations

import copy
import re
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic.exceptions import ForbiddenError

from netviz_lab import clusterapi

pytestmark = pytest.mark.lab

RBAC = "rbac.authorization.k8s.io/v1"
FM = {"field_manager": "netviz-pipeline"}


@pytest.fixture(scope="module")
def pipeline(lab):
    return clusterapi.dynamic(lab, lab.pipeline_kubeconfig)


@pytest.fixture(scope="module")
def admin(lab):
    return clusterapi.dynamic(lab)


def r(dc, api_version: str, kind: str):
    return dc.resources.get(api_version=api_version, kind=kind)


def kubectl(lab, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(lab.bin("kubectl")), f"--kubeconfig={lab.pipeline_kubeconfig}", *args],
                          capture_output=True, text=True, timeout=60)


WIDEN = {"apiVersion": RBAC, "kind": "ClusterRole", "metadata": {"name": "caretta"},
         "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]}
BIND_SELF = {"apiVersion": RBAC, "kind": "ClusterRoleBinding", "metadata": {"name": "nvz-attack"},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "caretta"},
             "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "netviz-pipeline"}]}


def _pod(name: str, ns: str, **spec) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
            "spec": {"containers": [{"name": "c", "image": "python:3.12-alpine", "command": ["sleep", "60"]}], **spec}}


HOSTILE_POD = {"hostPID": True, "volumes": [{"name": "root", "hostPath": {"path": "/"}}],
               "containers": [{"name": "c", "image": "python:3.12-alpine", "command": ["sleep", "60"],
                               "securityContext": {"privileged": True},
                               "volumeMounts": [{"name": "root", "mountPath": "/host"}]}]}

ATTACKS = {
    # the path the old grant allowed: widen caretta to everything, bind it to ourselves
    "widen-caretta-clusterrole": lambda p: r(p, RBAC, "ClusterRole").server_side_apply(
        body=WIDEN, force_conflicts=True, **FM),
    "bind-caretta-to-self": lambda p: r(p, RBAC, "ClusterRoleBinding").create(body=BIND_SELF),
    "bind-cluster-admin": lambda p: r(p, RBAC, "ClusterRoleBinding").create(
        body=BIND_SELF | {"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                      "name": "cluster-admin"}}),
    "create-clusterrole": lambda p: r(p, RBAC, "ClusterRole").create(body=WIDEN | {"metadata": {"name": "nvz-attack"}}),
    "create-role-in-managed-ns": lambda p: r(p, RBAC, "Role").create(namespace="caretta", body={
        "apiVersion": RBAC, "kind": "Role", "metadata": {"name": "nvz-attack"},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]}),
    "rolebinding-admin-in-managed-ns": lambda p: r(p, RBAC, "RoleBinding").create(namespace="goflow2", body={
        "apiVersion": RBAC, "kind": "RoleBinding", "metadata": {"name": "nvz-attack"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
        "subjects": BIND_SELF["subjects"]}),
    "patch-own-role": lambda p: r(p, RBAC, "Role").patch(
        name="netviz-pipeline", namespace="caretta", content_type="application/merge-patch+json",
        body={"rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]}),
    "read-secrets-managed-ns": lambda p: r(p, "v1", "Secret").get(namespace="caretta"),
    "read-secrets-kube-system": lambda p: r(p, "v1", "Secret").get(namespace="kube-system"),
    "read-secrets-cluster-wide": lambda p: r(p, "v1", "Secret").get(),
    "token-for-caretta-sa": lambda p: client.CoreV1Api(p.client).create_namespaced_service_account_token(
        "caretta", "caretta", {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}}),
    "token-for-kube-system-sa": lambda p: client.CoreV1Api(p.client).create_namespaced_service_account_token(
        "default", "kube-system", {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}}),
    "pod-hostpath-privileged-in-demo": lambda p: r(p, "v1", "Pod").create(
        namespace="demo", body=_pod("nvz-attack", "demo", **HOSTILE_POD)),
    "pod-hostpath-privileged-in-caretta": lambda p: r(p, "v1", "Pod").create(
        namespace="caretta", body=_pod("nvz-attack", "caretta", **HOSTILE_POD)),
    "deployment-in-unmanaged-ns": lambda p: r(p, "apps/v1", "Deployment").create(namespace="demo", body={
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "nvz-attack"},
        "spec": {"selector": {"matchLabels": {"a": "b"}},
                 "template": {"metadata": {"labels": {"a": "b"}}, "spec": HOSTILE_POD}}}),
    "delete-namespace": lambda p: r(p, "v1", "Namespace").delete(name="goflow2", dry_run="All"),
    "delete-configmap": lambda p: r(p, "v1", "ConfigMap").delete(name="kube-root-ca.crt", namespace="goflow2",
                                                                   dry_run="All"),
    "create-namespace": lambda p: r(p, "v1", "Namespace").create(body={"metadata": {"name": "nvz-attack"}}),
    "patch-node": lambda p: r(p, "v1", "Node").patch(name="netviz-node-1", content_type="application/merge-patch+json",
                                                     body={"metadata": {"labels": {"nvz-attack": "1"}}}),
    "create-crd": lambda p: r(p, "apiextensions.k8s.io/v1", "CustomResourceDefinition").create(
        body={"metadata": {"name": "things.example.com"},
              "spec": {"group": "example.com", "scope": "Namespaced", "names": {"kind": "Thing", "plural": "things"},
                       "versions": [{"name": "v1", "served": True, "storage": True,
                                     "schema": {"openAPIV3Schema": {"type": "object"}}}]}}, dry_run="All"),
    "create-csr": lambda p: r(p, "certificates.k8s.io/v1", "CertificateSigningRequest").create(body={
        "metadata": {"name": "nvz-attack"}, "spec": {"request": "", "signerName": "kubernetes.io/kube-apiserver-client",
                                                     "usages": ["client auth"]}}, dry_run="All"),
    "create-validating-webhook": lambda p: r(p, "admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration")
    .create(body={"metadata": {"name": "nvz-attack"}, "webhooks": []}, dry_run="All"),
}


def _forbidden(call) -> None:
    """The call is refused by authorization (403), whichever client raised it."""
    with pytest.raises((ForbiddenError, ApiException)) as exc:
        call()
    assert getattr(exc.value, "status", 403) == 403, exc.value


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_api_attack_is_forbidden(pipeline, attack):
    _forbidden(lambda: ATTACKS[attack](pipeline))


@pytest.mark.parametrize("args", [
    ("auth", "can-i", "--as=netviz-lab-admin", "get", "secrets"),  # impersonation
    ("--as=system:admin", "--as-group=system:masters", "get", "secrets", "-A"),
    ("--as=system:serviceaccount:caretta:caretta", "get", "pods"),
], ids=["impersonate-user", "impersonate-masters", "impersonate-caretta-sa"])
def test_impersonation_is_forbidden(lab, args):
    # discovery as the impersonated user is refused too, with "Forbidden: unknown": answer it from
    # kubectl's cache (filled as the pipeline) so the impersonated request itself is what is refused
    assert kubectl(lab, "api-resources", "-o", "name").returncode == 0
    res = kubectl(lab, *args)
    assert res.returncode != 0 and "cannot impersonate" in res.stderr, res.stdout + res.stderr


@pytest.mark.parametrize("verb", ["exec", "attach"])
@pytest.mark.parametrize("namespace", ["demo", "caretta", "goflow2", "kube-system"])
def test_no_exec_or_attach_into_any_pod(pipeline, admin, verb, namespace):
    """No canary pod in the lab's settings: no exec anywhere, not even in the namespaces it manages.
    (A POST to the subresource: authorization answers before the missing upgrade or a missing pod.)"""
    pods = r(admin, "v1", "Pod").get(namespace=namespace).to_dict()["items"]
    name = pods[0]["metadata"]["name"] if pods else "any"
    core = client.CoreV1Api(pipeline.client)
    call = core.connect_post_namespaced_pod_exec if verb == "exec" else core.connect_post_namespaced_pod_attach
    kw = {"command": ["true"]} if verb == "exec" else {}
    _forbidden(lambda: call(name, namespace, **kw))


def test_can_i_for_pods_exec_and_secrets_is_no_everywhere(lab):
    for ns in ("caretta", "goflow2", "monitoring", "demo", "kube-system"):
        for what in (("create", "pods", "--subresource=exec"), ("get", "pods", "--subresource=exec"),
                     ("create", "pods", "--subresource=attach"), ("get", "secrets"), ("create", "rolebindings"),
                     ("escalate", "roles"), ("bind", "clusterroles"),
                     ("create", "serviceaccounts", "--subresource=token"), ("delete", "pods")):
            res = kubectl(lab, "auth", "can-i", *what, "-n", ns)
            assert res.stdout.strip() == "no", (ns, what, res.stdout, res.stderr)


def test_goflow2_namespace_enforces_pod_security_restricted_behind_the_policy(lab, pipeline, admin):
    """A Deployment the admission policy lets through (an allowed image, nothing privileged) but that
    does not meet Pod Security "restricted" gets no pod in GoFlow2's namespace: the ReplicaSet's pod
    creation is refused. (A privileged one is refused earlier, by the policy.)"""
    name = f"nvz-attack-{uuid.uuid4().hex[:6]}"
    plain = {"containers": [{"name": "c", "image": "netsampler/goflow2:v2.2.1"}]}  # root allowed, caps kept
    deps = r(pipeline, "apps/v1", "Deployment")
    _forbidden(lambda: deps.create(namespace="goflow2", dry_run="All", body={
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": HOSTILE_POD}}}))
    deps.create(namespace="goflow2", body={
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": plain}}})
    try:
        deadline = time.monotonic() + 60
        refused = ""
        while time.monotonic() < deadline and not refused:
            for e in r(admin, "v1", "Event").get(namespace="goflow2").to_dict()["items"]:
                if e.get("reason") == "FailedCreate" and name in e["involvedObject"]["name"]:
                    refused = e["message"]
            time.sleep(0.5)
        assert 'violates PodSecurity "restricted' in refused, refused
        assert not r(admin, "v1", "Pod").get(namespace="goflow2", label_selector=f"app={name}").items
    finally:
        r(admin, "apps/v1", "Deployment").delete(name=name, namespace="goflow2")


def _can_i_rows(text: str) -> set[tuple[str, tuple[str, ...], frozenset[str]]]:
    """`kubectl auth can-i --list` rows as (resource, resource names, verbs), without the self-review
    rules every user has and the non-resource URLs."""
    rows = set()
    for line in text.splitlines():
        m = re.match(r"^(\S+)\s+\[(.*?)\]\s+\[(.*?)\]\s+\[(.*?)\]\s*$", line)
        if not m or m.group(1).startswith("selfsubject") or m.group(2):
            continue
        rows.add((m.group(1), tuple(m.group(3).split()), frozenset(m.group(4).split())))
    return rows


def test_the_grant_is_what_the_readme_shows(lab):
    """`kubectl auth can-i --list -n caretta` as the pipeline against the real API server (what the
    rendered grant gives) is exactly the table in docs/security.md, row for row."""
    res = kubectl(lab, "auth", "can-i", "--list", "-n", "caretta")
    assert res.returncode == 0, res.stderr
    readme = (Path(__file__).resolve().parents[2] / "docs" / "security.md").read_text()
    table = readme.split("`kubectl auth can-i --list -n caretta` as `netviz-pipeline`", 1)[1].split("```", 2)[1]
    live, documented = _can_i_rows(res.stdout), _can_i_rows(table)
    assert live == documented, f"live only: {sorted(live - documented)}; docs/security.md only: {sorted(documented - live)}"
    assert not {row[0] for row in live} & {"*.*", "secrets", "pods/exec", "roles.rbac.authorization.k8s.io",
                                           "rolebindings.rbac.authorization.k8s.io"}


def _caretta_ds(lab, **pod_changes) -> dict:
    """The product's own Caretta DaemonSet for the lab's settings, with an attacker's changes."""
    from netviz_lab import settings as lab_settings
    from netviz_pipeline.render import caretta as render_caretta
    from netviz_pipeline import loading

    ds = render_caretta.daemonset(loading.parse(lab_settings.settings(lab), check_host=False))
    ds["metadata"]["name"] = f"nvz-attack-{uuid.uuid4().hex[:6]}"
    pod = ds["spec"]["template"]["spec"]
    for key, change in pod_changes.items():
        change(pod)
    return ds


def _sidecar(**security) -> dict:
    """A container with an allowed, unprivileged image (GoFlow2's) and the attacker's settings."""
    return {"name": "side", "image": "netsampler/goflow2:v2.2.1", "securityContext": security}


def _first(key: str, value):
    return lambda p: p["containers"][0].setdefault("securityContext", {}).update({key: value})


def _plain(*change):
    """Caretta's DaemonSet reduced to one unprivileged container of an allowed image and no host paths
    (which the policy admits), then one change: so the rule that refuses is the one under test (the
    API server names one failed rule, not all)."""
    def apply(p: dict) -> None:
        p["containers"] = [_sidecar()]
        p.pop("volumes", None)
        for c in change:
            c(p)
    return apply


def _on_sidecar(**security):
    return lambda p: p["containers"][0]["securityContext"].update(security)


# attack -> (change to Caretta's own DaemonSet, the policy message the refusal must carry)
ADMISSION_ATTACKS = {
    "foreign-image": (_plain(lambda p: p["containers"][0].update(image="python:3.11-slim")), "only the netviz images"),
    "caretta-image-with-a-shell": (lambda p: p["containers"][0].update(command=["/bin/sh", "-c", "cat /proc/1/environ"]),
                                   "its own entrypoint"),
    "host-root-mount": (lambda p: p["volumes"].append({"name": "root", "hostPath": {"path": "/"}}), "host paths"),
    "host-network": (lambda p: p.update(hostNetwork=True), "no host network"),
    "host-pid": (lambda p: p.update(hostPID=True), "no host network, PID"),
    "other-service-account": (lambda p: p.update(serviceAccountName="netviz-pipeline"), "ServiceAccount"),
    "privileged-sidecar": (_plain(_on_sidecar(privileged=True)), "may run privileged"),
    # node takeover without `privileged` (issue 20), with an image on the allowed list
    "cap-sys-admin-sys-module": (_plain(_on_sidecar(capabilities={"add": ["SYS_ADMIN", "SYS_MODULE"]})),
                                 "capabilities.add"),
    "seccomp-unconfined-with-sys-ptrace": (_plain(_on_sidecar(capabilities={"add": ["SYS_PTRACE"]}),
                                                  lambda p: p.update(securityContext={"seccompProfile": {
                                                      "type": "Unconfined"}})),
                                           "denied request"),  # two rules: either may answer
    "seccomp-unconfined-pod": (_plain(lambda p: p.update(securityContext={"seccompProfile": {"type": "Unconfined"}})),
                               "seccompProfile"),
    "seccomp-unconfined-container": (_plain(_on_sidecar(seccompProfile={"type": "Unconfined"})), "seccompProfile"),
    "init-container-sys-admin": (_plain(lambda p: p.update(initContainers=[
        _sidecar(capabilities={"add": ["SYS_ADMIN"]}) | {"name": "init"}])), "capabilities.add"),
    "caretta-container-cap-add": (_first("capabilities", {"add": ["SYS_MODULE"]}), "capabilities.add"),
    "apparmor-unconfined": (_plain(_on_sidecar(appArmorProfile={"type": "Unconfined"})), "appArmorProfile"),
    "selinux-spc-t": (_plain(_on_sidecar(seLinuxOptions={"type": "spc_t"})), "seLinuxOptions"),
    # Unmasked needs a user namespace (hostUsers: false)
    "proc-mount-unmasked": (_plain(lambda p: p.update(hostUsers=False), _on_sidecar(procMount="Unmasked")),
                            "procMount"),
    "host-port": (_plain(lambda p: p["containers"][0].update(ports=[{"containerPort": 2222, "hostPort": 2222}])),
                  "hostPort"),
    "sysctls": (_plain(lambda p: p.update(securityContext={
        "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}]})), "sysctls"),
}


def test_the_plain_base_of_the_attacks_is_admitted(lab, pipeline):
    """Without its one change, each attack's base passes: the refusals below are the rules' doing."""
    body = _caretta_ds(lab, change=_plain())
    r(pipeline, "apps/v1", "DaemonSet").create(namespace="caretta", body=body, dry_run="All")


def _denied_by_policy(call, message: str) -> None:
    """Refused (403) by the admission policy, and the refusal names the rule that refused it."""
    with pytest.raises((ForbiddenError, ApiException)) as exc:
        call()
    assert getattr(exc.value, "status", 403) == 403, exc.value
    body = str(getattr(exc.value, "body", "") or exc.value)
    assert "ValidatingAdmissionPolicy" in body and message in body, body


@pytest.mark.parametrize("attack", sorted(ADMISSION_ATTACKS))
def test_privileged_workloads_it_may_write_are_bounded_by_the_admission_policy(lab, pipeline, attack):
    """Caretta's namespace admits privileged pods (Caretta needs them) and the pipeline may write
    DaemonSets there; the ValidatingAdmissionPolicy keeps that grant to Caretta's own shape: no way to
    the node through another field either."""
    change, message = ADMISSION_ATTACKS[attack]
    body = _caretta_ds(lab, change=change)
    _denied_by_policy(lambda: r(pipeline, "apps/v1", "DaemonSet").create(namespace="caretta", body=body,
                                                                         dry_run="All"), message)


def _service(**spec) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"nvz-attack-{uuid.uuid4().hex[:6]}"},
            "spec": {"selector": {"app": "goflow2"}, "ports": [{"port": 2055, "protocol": "UDP"}], **spec}}


@pytest.mark.parametrize("spec,message", [
    ({"externalIPs": ["198.18.0.1"]}, "externalIPs"),  # CVE-2020-8554: take over traffic to that address
    ({"type": "LoadBalancer"}, "spec.type"),
    ({"type": "ExternalName", "externalName": "kubernetes.default.svc", "selector": None, "ports": None}, "spec.type"),
], ids=["external-ip", "load-balancer", "external-name"])
@pytest.mark.parametrize("namespace", ["goflow2", "caretta"])
def test_services_it_may_write_claim_no_external_addresses(pipeline, namespace, spec, message):
    body = _service(**spec)
    body["spec"] = {k: v for k, v in body["spec"].items() if v is not None}
    _denied_by_policy(lambda: r(pipeline, "v1", "Service").create(namespace=namespace, body=body, dry_run="All"),
                      message)


def test_the_products_own_services_pass_the_admission_policy(lab, pipeline):
    from netviz_lab import settings as lab_settings
    from netviz_pipeline.render import caretta as render_caretta
    from netviz_pipeline.render import goflow2 as render_goflow2
    from netviz_pipeline import loading

    s = loading.parse(lab_settings.settings(lab), check_host=False)
    services = [o for o in render_caretta.render(s) + render_goflow2.render(s) if o["kind"] == "Service"]
    assert {o["spec"].get("type", "ClusterIP") for o in services} == {"ClusterIP", "NodePort"}
    for svc in services:
        body = copy.deepcopy(svc)
        body["metadata"]["name"] = f"nvz-check-{uuid.uuid4().hex[:6]}"
        for port in body["spec"]["ports"]:
            port.pop("nodePort", None)  # the product's own Service holds it
        r(pipeline, "v1", "Service").create(namespace=svc["metadata"]["namespace"], body=body, dry_run="All")


def test_the_products_own_daemonset_passes_the_admission_policy(lab, pipeline):
    body = _caretta_ds(lab)
    r(pipeline, "apps/v1", "DaemonSet").create(namespace="caretta", body=body, dry_run="All")  # no exception
