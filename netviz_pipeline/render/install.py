"""What an administrator installs once, and the pipeline only verifies: namespaces, Caretta's and the
flow aggregator's cluster-scoped RBAC, and the pipeline's own grant.

Why split: writing a ClusterRole and binding it needs `escalate`/`bind` and cluster-wide `create` on
RBAC, and those two verbs are enough to make any identity cluster-admin (widen the role, bind it to
yourself). So the pipeline's day-to-day identity gets
- one ClusterRole of cluster-wide reads it needs to decide (nodes, namespaces, Deployments to find
  Grafana's sidecar, the CRDs and Prometheus resources for `mode: auto`, and `get` on exactly the
  install objects it verifies), and
- a namespaced Role in each namespace the settings name, with only what that namespace is for:
  workloads (Caretta, GoFlow2), dashboards, the chart's Prometheus ConfigMap (that one object),
  operator monitors and alert rules (PodMonitors, the PrometheusRule), and pod exec only where the
  canary pod runs;
- a ValidatingAdmissionPolicy bounding what its Deployments and DaemonSets may contain (Caretta's
  namespace must allow privileged pods; the pipeline may not use that for anything but Caretta), and
  Pod Security "restricted" on GoFlow2's namespace.
No Secrets, no RBAC writes, no exec anywhere else, and no delete but of the Caretta preflight probe's
own DaemonSet in Caretta's namespace (by name).

The flow aggregator's ClusterRole (`netviz-flowagg`, get/list/watch on pods, services, nodes,
replicasets, jobs: render/goflow2.py) is bound to a ServiceAccount in GoFlow2's namespace that the
pipeline creates, and the admission policy lets only GoFlow2's Deployment there use it. The pipeline
writes the aggregator's code (a ConfigMap), so whoever controls the pipeline can read what that role
reads, cluster-wide (pod specs included); `flows.names.kubernetes: false` removes the role.

`python -m netviz_pipeline.admin` prints or applies these with the administrator's credentials.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Sequence

from .. import placement
from ..settings import Settings
from ..targets import ForInstall, for_install
from ..targets.prometheus import Grant, PrometheusTarget
from . import caretta as render_caretta
from . import aggregators as render_aggregators
from . import goflow2 as render_goflow2
from . import namespace as render_namespace
from . import pod_security_level
from . import preflight_probe as render_probe

NAME = "netviz-pipeline"  # the pipeline's ClusterRole, Roles, bindings and admission policy
SERVICES_POLICY = f"{NAME}-services"  # the admission policy for its Services
DEFAULT_SUBJECT = "user:netviz-pipeline"
INSTALL_KINDS = frozenset({"Namespace", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
                           "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"})
ADMISSION = "admissionregistration.k8s.io/v1"
_PART_OF = {"app.kubernetes.io/part-of": "netviz"}

_APPLY = ["get", "list", "watch", "create", "patch"]  # server-side apply creates or patches
PURPOSE_RULES: dict[str, list[dict]] = {
    "workloads": [
        {"apiGroups": [""], "resources": ["serviceaccounts", "services", "configmaps"], "verbs": _APPLY},
        {"apiGroups": ["apps"], "resources": ["deployments", "daemonsets"], "verbs": _APPLY},
        {"apiGroups": ["apps"], "resources": ["replicasets"], "verbs": ["get", "list"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["list"]},
    ],
    "dashboards": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "create", "patch"]}],
    # the caretta asset deletes its preflight probe when done (assets/caretta.py): that DaemonSet only
    "preflight": [{"apiGroups": ["apps"], "resources": ["daemonsets"], "resourceNames": [render_probe.NAME],
                   "verbs": ["delete"]}],
    # the goflow2 step removes what only the other flow transport renders, by name (render/aggregators.py)
    "transport-switch": [{"apiGroups": ["apps"], "resources": ["deployments"],
                          "resourceNames": render_aggregators.prunable()["deployments"], "verbs": ["delete"]},
                         {"apiGroups": [""], "resources": ["configmaps"],
                          "resourceNames": render_aggregators.prunable()["configmaps"], "verbs": ["delete"]}],
    # with standby nodes, placement.py reads the kubelets' leases to tell a lost node (read only)
    "node-leases": [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "list"]}],
    # exec over SPDY is a POST (create), over WebSocket a GET (the Python client's upgrade): both needed
    "canary": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
               {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create", "get"]}],
}


@dataclass(frozen=True)
class Subject:
    """Who the pipeline runs as: `user:<name>` (a client certificate) or `serviceaccount:<ns>/<name>`."""

    kind: str
    name: str
    namespace: str | None = None

    @classmethod
    def parse(cls, text: str) -> "Subject":
        kind, _, rest = text.partition(":")
        if kind == "user" and rest:
            return cls("User", rest)
        if kind == "serviceaccount" and rest.count("/") == 1 and all(rest.split("/")):
            ns, name = rest.split("/")
            return cls("ServiceAccount", name, ns)
        raise ValueError(f"subject {text!r}: use user:<name> or serviceaccount:<namespace>/<name>")

    @property
    def username(self) -> str:
        """As the API server names it in requests (admission's request.userInfo.username)."""
        return self.name if self.kind == "User" else f"system:serviceaccount:{self.namespace}:{self.name}"

    def ref(self) -> dict:
        if self.kind == "User":
            return {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": self.name}
        return {"kind": "ServiceAccount", "name": self.name, "namespace": self.namespace}


def namespace_purposes(s: Settings, prometheus: Sequence[PrometheusTarget]) -> dict[str, list[str]]:
    """Each namespace the pipeline writes to, with what for (stable order). `s`: resolved settings (the
    dashboards namespace where Grafana's sidecar looks); `prometheus`: the targets to grant for
    (targets.for_install)."""
    out: dict[str, list[str]] = {}

    def add(ns: str, purpose: str) -> None:
        if purpose not in out.setdefault(ns, []):
            out[ns].append(purpose)

    for ns in (s.caretta.namespace, s.goflow2.namespace):
        add(ns, "workloads")
    add(s.caretta.namespace, "preflight")
    add(s.goflow2.namespace, "transport-switch")
    add(s.grafana.dashboards_namespace, "dashboards")
    if s.cluster.standby_node_addresses:
        add(placement.LEASE_NAMESPACE, "node-leases")
    for g in _grants(s, prometheus):
        add(g.namespace, g.purpose)
    if s.checks.canary_pod:
        add(s.checks.canary_pod.namespace, "canary")
    return out


def _grants(s: Settings, prometheus: Sequence[PrometheusTarget]) -> list[Grant]:
    return [g for t in prometheus for g in t.grants(s)]


def rules_for(namespace: str, purposes: list[str], s: Settings, prometheus: Sequence[PrometheusTarget]) -> list[dict]:
    rules: list[dict] = []
    from_targets = {(g.namespace, g.purpose): g.rules for g in _grants(s, prometheus)}
    for purpose in purposes:
        for rule in from_targets.get((namespace, purpose)) or PURPOSE_RULES[purpose]:
            if rule not in rules:
                rules.append(dict(rule))
    return rules


def cluster_role() -> dict:
    """Cluster-wide reads only."""
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": NAME, "labels": dict(_PART_OF)},
            "rules": [
                {"apiGroups": [""], "resources": ["nodes", "namespaces"], "verbs": ["get", "list"]},
                {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["list"]},  # Grafana's sidecar
                {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"],
                 "verbs": ["get", "list"]},
                {"apiGroups": ["monitoring.coreos.com"], "resources": ["prometheuses"], "verbs": ["list"]},
                # verifies (never writes) the install objects below
                {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles", "clusterrolebindings"],
                 "resourceNames": [render_caretta.NAME, render_goflow2.FLOWAGG_SA], "verbs": ["get"]},
            ]}


def _cel_list(items) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"  # image refs are validated: no quotes inside


# Pod Security "baseline"'s SELinux types: anything else (spc_t, ...) runs a container unconfined
_SELINUX_TYPES = ["container_t", "container_init_t", "container_kvm_t", "container_engine_t"]
_APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"


def product_images(s: Settings) -> list[str]:
    """Every image the product's workloads run, for these settings."""
    # the aggregators' python image runs Caretta's preflight probe too, with flows disabled as well
    return [s.caretta.image, s.goflow2.image, render_probe.image(s)]


def flowagg_deployment(s: Settings) -> str:
    """The Deployment whose pods run as the aggregator's ServiceAccount: the GoFlow2 pod with its
    sidecar (fifo), or the aggregators' own (kafka)."""
    return render_aggregators.NAME if render_goflow2.kafka_transport(s) else render_goflow2.NAME


def product_capabilities(s: Settings) -> list[str]:
    """Capabilities the product's own pods add (today none: Caretta is privileged, the rest drop ALL).
    The admission policy allows exactly these, so a new need shows up here and in its test."""
    pods = [o["spec"]["template"]["spec"] for o in render_caretta.render(s) + render_goflow2.render(s)
            + render_aggregators.render(s) if o["kind"] in ("Deployment", "DaemonSet")]
    return sorted({cap for pod in pods for c in pod["containers"] + pod.get("initContainers", [])
                   for cap in ((c.get("securityContext") or {}).get("capabilities") or {}).get("add", [])})


def _unset_or(obj: str, field: str, test: str) -> str:
    """CEL: `obj.field` is absent or passes `test` (written against `obj.field`)."""
    return f"(!has({obj}.{field}) || {test})"


def _security_context_checks(caps: list[str]) -> list[tuple[str, str]]:
    """The ways a pod takes its node without `privileged`, pod and container level alike."""
    pod, sc = "variables.pod.securityContext", "c.securityContext"

    def each(test: str) -> str:
        return f"variables.containers.all(c, !has(c.securityContext) || {test})"

    def both(field: str, test) -> str:
        return (f"(!has(variables.pod.securityContext) || {_unset_or(pod, field, test(pod + '.' + field))}) && "
                + each(_unset_or(sc, field, test(sc + "." + field))))

    return [
        (each(_unset_or(sc, "capabilities", _unset_or(sc + ".capabilities", "add",
                                                      f"{sc}.capabilities.add.all(k, k in {_cel_list(caps)})"))),
         f"capabilities.add: only {', '.join(caps) or 'none'} (what the product's own pods add); "
         "SYS_ADMIN, SYS_MODULE, SYS_PTRACE and the like take the node"),
        (both("seccompProfile", lambda f: f"{f}.type != 'Unconfined'"),
         "seccompProfile: Unconfined is refused (pod and containers); use RuntimeDefault"),
        (both("appArmorProfile", lambda f: f"{f}.type != 'Unconfined'") + " && "
         "(!has(object.spec.template.metadata) || !has(object.spec.template.metadata.annotations) || "
         "!object.spec.template.metadata.annotations.exists(k, k.startsWith("
         f"{json.dumps(_APPARMOR_ANNOTATION)}) && object.spec.template.metadata.annotations[k] == 'unconfined'))",
         "appArmorProfile: Unconfined is refused (field and annotation)"),
        (each(_unset_or(sc, "procMount", f"{sc}.procMount != 'Unmasked'")),
         "procMount: Unmasked is refused (it exposes the host's /proc and /sys controls)"),
        (both("seLinuxOptions", lambda f: f"(!has({f}.user) && !has({f}.role) && "
                                          f"(!has({f}.type) || {f}.type in {_cel_list(_SELINUX_TYPES)}))"),
         "seLinuxOptions: only the container types " + ", ".join(_SELINUX_TYPES) + ", no user or role"),
        (both("windowsOptions", lambda f: f"!(has({f}.hostProcess) && {f}.hostProcess)"),
         "windowsOptions.hostProcess is refused"),
        (f"!has(variables.pod.securityContext) || {_unset_or(pod, 'sysctls', f'size({pod}.sysctls) == 0')}",
         "securityContext.sysctls: the product sets none"),
        ("variables.containers.all(c, !has(c.ports) || c.ports.all(p, !has(p.hostPort) || p.hostPort == 0))",
         "hostPort is refused (it binds on the node's address)"),
    ]


def admission_policy(s: Settings, subject: Subject) -> list[dict]:
    """What the pipeline may put in the workloads and Services it writes, enforced by the API server.

    The workloads Role must allow DaemonSets in Caretta's namespace, which Pod Security lets run
    privileged with host paths (Caretta needs both). Without this policy that grant is a way to root on
    every node. With it, the pipeline's Deployments and DaemonSets may only run the product's images;
    only Caretta's image, with its own entrypoint (no command or args), may be privileged or mount
    host paths, and only /proc and /sys/kernel/debug; no host network, PID or IPC; none of the other
    ways to the node without `privileged` (added capabilities, Unconfined seccomp or AppArmor, an
    unmasked /proc, SELinux types outside the container ones, Windows host processes, sysctls,
    hostPort), in Caretta's privileged namespace too; only the `caretta` or `default` ServiceAccount,
    and the aggregator's `netviz-flowagg` only in GoFlow2's Deployment in its namespace. Its Services
    claim no externalIPs (CVE-2020-8554: a Service can take over any address's traffic) and are
    ClusterIP or NodePort, as the product's are."""
    caretta_img = json.dumps(s.caretta.image)
    images = _cel_list(dict.fromkeys(product_images(s)))
    workload_namespaces = sorted({s.caretta.namespace, s.goflow2.namespace})
    checks = [
        ("variables.containers.all(c, c.image in " + images + ")",
         "only the netviz images from the settings may run: " + ", ".join(json.loads(images))),
        ("variables.containers.all(c, c.image == " + caretta_img + " || !has(c.securityContext) || "
         "!has(c.securityContext.privileged) || !c.securityContext.privileged)",
         "only Caretta's image may run privileged"),
        ("variables.containers.all(c, c.image != " + caretta_img + " || (!has(c.command) && !has(c.args)))",
         "Caretta's image runs with its own entrypoint (no command or args)"),
        ("!has(variables.pod.volumes) || variables.pod.volumes.all(v, !has(v.hostPath) || "
         "(v.hostPath.path in ['/proc', '/sys/kernel/debug'] && variables.containers.all(c, c.image == "
         + caretta_img + ")))", "host paths: only /proc and /sys/kernel/debug, only in Caretta's pods"),
        ("!(has(variables.pod.hostNetwork) && variables.pod.hostNetwork) && "
         "!(has(variables.pod.hostPID) && variables.pod.hostPID) && !(has(variables.pod.hostIPC) && variables.pod.hostIPC)",
         "no host network, PID or IPC namespaces"),
        *_security_context_checks(product_capabilities(s)),
        ("!has(variables.pod.serviceAccountName) || variables.pod.serviceAccountName in ['caretta', 'default'] || "
         f"(variables.pod.serviceAccountName == {json.dumps(render_goflow2.FLOWAGG_SA)} && "
         f"request.namespace == {json.dumps(s.goflow2.namespace)} && request.kind.kind == 'Deployment' && "
         f"object.metadata.name == {json.dumps(flowagg_deployment(s))})",
         f"only the caretta or default ServiceAccount ({render_goflow2.FLOWAGG_SA}: only the aggregator's "
         f"Deployment, {flowagg_deployment(s)})"),
    ]
    service_checks = [
        ("!has(object.spec.externalIPs) || size(object.spec.externalIPs) == 0",
         "spec.externalIPs is refused (CVE-2020-8554: it takes over traffic to those addresses)"),
        ("!has(object.spec.type) || object.spec.type in ['ClusterIP', 'NodePort']",
         "spec.type: only ClusterIP or NodePort, as the product's Services"),
    ]
    match_pipeline = [{"name": "the-pipeline",
                       "expression": f"request.userInfo.username == {json.dumps(subject.username)}"}]

    def policy(name: str, rules: list[dict], variables: list[dict], validations: list[tuple[str, str]]) -> dict:
        spec = {"failurePolicy": "Fail", "matchConstraints": {"resourceRules": rules},
                "matchConditions": match_pipeline,
                "validations": [{"expression": e, "message": m, "reason": "Forbidden"} for e, m in validations]}
        if variables:
            spec["variables"] = variables
        return {"apiVersion": ADMISSION, "kind": "ValidatingAdmissionPolicy",
                "metadata": {"name": name, "labels": dict(_PART_OF)}, "spec": spec}

    def binding(name: str) -> dict:
        return {"apiVersion": ADMISSION, "kind": "ValidatingAdmissionPolicyBinding",
                "metadata": {"name": name, "labels": dict(_PART_OF)},
                "spec": {"policyName": name, "validationActions": ["Deny"],
                         "matchResources": {"namespaceSelector": {"matchExpressions": [
                             {"key": "kubernetes.io/metadata.name", "operator": "In", "values": workload_namespaces}]}}}}

    workloads = policy(NAME, [{"apiGroups": ["apps"], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
                               "resources": ["deployments", "daemonsets"]}],
                       [{"name": "pod", "expression": "object.spec.template.spec"},
                        {"name": "containers", "expression": "variables.pod.containers + "
                         "(has(variables.pod.initContainers) ? variables.pod.initContainers : [])"}], checks)
    services = policy(SERVICES_POLICY, [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
                                         "resources": ["services"]}], [], service_checks)
    return [workloads, binding(NAME), services, binding(SERVICES_POLICY)]


def _binding(kind: str, role_kind: str, subject: Subject, namespace: str | None = None) -> dict:
    meta: dict = {"name": NAME, "labels": dict(_PART_OF)}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": meta,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": NAME},
            "subjects": [subject.ref()]}


def pipeline_grant(s: Settings, subject: Subject, prometheus: Sequence[PrometheusTarget]) -> list[dict]:
    """The pipeline identity's ClusterRole (reads) and one Role + RoleBinding per managed namespace."""
    out = [cluster_role(), _binding("ClusterRoleBinding", "ClusterRole", subject)]
    for ns, purposes in namespace_purposes(s, prometheus).items():
        out.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                    "metadata": {"name": NAME, "namespace": ns, "labels": dict(_PART_OF),
                                 "annotations": {"netviz.io/purposes": ",".join(purposes)}},
                    "rules": rules_for(ns, purposes, s, prometheus)})
        out.append(_binding("RoleBinding", "Role", subject, ns))
    return out


def install_objects(v: ForInstall | Settings, subject: Subject = Subject.parse(DEFAULT_SUBJECT)) -> list[dict]:
    """Everything an administrator applies, in apply order: namespaces first, bindings last. `v`:
    targets.for_install (what the cluster shows); bare settings are resolved without a cluster."""
    v = v if isinstance(v, ForInstall) else for_install(v, None)
    s = v.settings
    namespaces = [render_namespace(ns, pod_security_level(s, ns)) for ns in namespace_purposes(s, v.prometheus)
                  if ns in (s.caretta.namespace, s.goflow2.namespace, s.grafana.dashboards_namespace)]
    cluster_rbac = [o for o in render_caretta.render(s) + render_goflow2.flowagg_rbac(s)
                    if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    return namespaces + cluster_rbac + admission_policy(s, subject) + pipeline_grant(s, subject, v.prometheus)


def is_install_object(obj: dict) -> bool:
    return obj["kind"] in INSTALL_KINDS


# -- verification (the pipeline reads what the administrator applied) ---------------------------------
def _rule_key(rule: dict) -> tuple:
    return tuple(tuple(sorted(rule.get(k) or ())) for k in ("apiGroups", "resources", "resourceNames", "verbs",
                                                             "nonResourceURLs"))


def contains(have, want) -> bool:
    """`want` is `have` with fields the API server defaults left out."""
    if isinstance(want, dict):
        return isinstance(have, dict) and all(contains(have.get(k), v) for k, v in want.items())
    if isinstance(want, list):
        return isinstance(have, list) and len(have) == len(want) and all(map(contains, have, want))
    return have == want


def drift(wanted: dict, live: dict | None) -> list[str]:
    """What is missing or different in a live install object, one line each (empty: as installed)."""
    where = f"{wanted['kind']} {wanted['metadata'].get('namespace', '') + '/' if wanted['metadata'].get('namespace') else ''}" \
            f"{wanted['metadata']['name']}"
    if live is None:
        return [f"{where} is missing"]
    out = []
    if wanted["kind"] == "Namespace":
        have = (live.get("metadata") or {}).get("labels") or {}
        for k, v in (wanted["metadata"].get("labels") or {}).items():
            if k.startswith("pod-security.kubernetes.io/") and have.get(k) != v:
                out.append(f"{where}: label {k}={have.get(k)!r}, needs {v!r}")
    elif wanted["kind"] in ("ClusterRole", "Role"):
        want = {_rule_key(r) for r in wanted.get("rules") or []}
        have = {_rule_key(r) for r in live.get("rules") or []}
        if want - have:
            out.append(f"{where}: missing rules {sorted(want - have)}")
        if have - want:
            out.append(f"{where}: extra rules {sorted(have - want)}")
    elif wanted["kind"] in ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"):
        have = live.get("spec") or {}
        for key, value in wanted["spec"].items():  # the API server adds defaults: compare what we set
            if not contains(have.get(key), value):
                out.append(f"{where}: spec.{key} differs from what netviz installs")
    elif wanted["kind"] in ("ClusterRoleBinding", "RoleBinding"):
        if live.get("roleRef") != wanted["roleRef"]:
            out.append(f"{where}: roleRef {live.get('roleRef')}, needs {wanted['roleRef']}")
        have = [{k: v for k, v in sub.items() if k in ("kind", "name", "namespace")} for sub in live.get("subjects") or []]
        for sub in wanted["subjects"]:
            if {k: v for k, v in sub.items() if k in ("kind", "name", "namespace")} not in have:
                out.append(f"{where}: subject {sub['kind']} {sub.get('namespace', '') and sub['namespace'] + '/'}"
                           f"{sub['name']} is not bound")
    else:  # netviz's own service objects (admin --service-image): what netviz sets, API defaults aside
        for key in ("spec", "data"):
            if key in wanted and not contains(live.get(key), wanted[key]):
                out.append(f"{where}: {key} differs from what netviz installs")
    return out
