"""Install objects (what an administrator applies) and the pipeline's grant: least privilege by construction."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from netviz_pipeline.render import install
from netviz_pipeline import loading
from netviz_pipeline.settings import SettingsError

ROOT = Path(__file__).resolve().parents[2]
DEFAULTS = {"cluster": {"in_cluster": True, "node_address": "10.0.0.1"}, "prometheus": {"url": "http://prometheus:9090"}}


def _settings(**sections):
    return loading.parse(copy.deepcopy(DEFAULTS) | sections, check_host=False)


def _by_key(objs):
    return {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o for o in objs}


def _grant_rules(objs):
    return [(o["kind"], o["metadata"].get("namespace"), r) for o in objs if o["kind"] in ("ClusterRole", "Role")
            and o["metadata"]["name"] == install.NAME for r in o["rules"]]


def test_the_pipeline_grant_has_no_escalation_path(make):
    s = make(checks={"canary_command": ["true"], "canary_source": "198.18.1.20", "canary_destination": "198.18.2.10",
                     "canary_pod": {"namespace": "demo", "label_selector": "app=client"}},
             prometheus={"url": "http://127.0.0.1:9090", "mode": "auto",
                         "chart": {"configmap_namespace": "prom", "configmap_name": "prometheus-server"}})
    for kind, ns, rule in _grant_rules(install.install_objects(s)):
        verbs, groups, resources = set(rule["verbs"]), set(rule["apiGroups"]), set(rule["resources"])
        assert not verbs & {"escalate", "bind", "impersonate", "deletecollection", "*"}, rule
        if "delete" in verbs:  # only the Caretta preflight probe's own DaemonSet, the other transport's objects, by name
            assert (kind, ns, rule) in [("Role", s.caretta.namespace, install.PURPOSE_RULES["preflight"][0])] + [
                ("Role", s.goflow2.namespace, r) for r in install.PURPOSE_RULES["transport-switch"]], rule
            assert rule["resourceNames"], rule
        assert "*" not in groups | resources, rule
        assert "secrets" not in resources and "serviceaccounts/token" not in resources, rule
        assert not ("rbac.authorization.k8s.io" in groups and verbs - {"get", "list", "watch"}), rule
        if kind == "ClusterRole":  # cluster-wide: reads only
            assert verbs <= {"get", "list", "watch"}, rule
        if "pods/exec" in resources or "pods/attach" in resources:
            assert (kind, ns) == ("Role", "demo"), rule  # only where the canary pod runs
        if "rbac.authorization.k8s.io" in groups:
            assert rule["resourceNames"] == ["caretta", "netviz-flowagg"], rule  # get: verifies install objects


def test_roles_follow_the_namespaces_the_settings_name(make):
    s = make(caretta={"namespace": "ebpf"}, goflow2={"namespace": "flows"}, grafana={"dashboards_namespace": "grafana"})
    roles = {o["metadata"]["namespace"]: o for o in install.install_objects(s) if o["kind"] == "Role"}
    assert set(roles) == {"ebpf", "flows", "grafana"}
    assert roles["grafana"]["rules"] == install.PURPOSE_RULES["dashboards"]
    bindings = [o for o in install.install_objects(s) if o["kind"] == "RoleBinding"]
    assert {b["metadata"]["namespace"] for b in bindings} == set(roles)
    assert all(b["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "netviz-pipeline"}]
               for b in bindings)


def test_no_exec_without_a_canary_pod_and_chart_access_is_one_configmap():
    plain = install.install_objects(_settings())
    assert not any("pods/exec" in r["resources"] for _, _, r in _grant_rules(plain))
    chart = install.install_objects(_settings(prometheus={
        "url": "http://p:9090", "mode": "chart", "chart": {"configmap_namespace": "prom", "configmap_name": "srv"}}))
    role = _by_key(chart)[("Role", "prom", install.NAME)]
    assert role["rules"] == [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["srv"],
                              "verbs": ["get", "patch"]}]


def test_subject_parsing():
    assert install.Subject.parse("serviceaccount:netviz/dagster").ref() == \
        {"kind": "ServiceAccount", "name": "dagster", "namespace": "netviz"}
    for bad in ("netviz-pipeline", "group:admins", "serviceaccount:only-name", "user:"):
        with pytest.raises(ValueError, match="user:<name> or serviceaccount"):
            install.Subject.parse(bad)


def test_drift_names_what_is_missing_widened_or_unbound():
    objs = _by_key(install.install_objects(_settings()))
    role = objs[("ClusterRole", None, "caretta")]
    assert install.drift(role, None) == ["ClusterRole caretta is missing"]
    assert install.drift(role, copy.deepcopy(role)) == []
    widened = copy.deepcopy(role)
    widened["rules"].append({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]})
    assert "extra rules" in install.drift(role, widened)[0]  # the privilege-escalation attack shows as drift
    crb = objs[("ClusterRoleBinding", None, "caretta")]
    unbound = copy.deepcopy(crb) | {"subjects": [{"kind": "ServiceAccount", "name": "other", "namespace": "x"}]}
    assert install.drift(crb, unbound) == ["ClusterRoleBinding caretta: subject ServiceAccount caretta/caretta is not bound"]
    ns = objs[("Namespace", None, "caretta")]
    plain = {"metadata": {"name": "caretta", "labels": {}}}
    assert any("pod-security.kubernetes.io/enforce" in p for p in install.drift(ns, plain))


def test_the_shipped_manifest_is_the_rendering_for_default_settings():
    shipped = [d for d in yaml.safe_load_all((ROOT / "manifests/rbac/netviz-pipeline.yaml").read_text()) if d]
    assert shipped == install.install_objects(_settings())


def test_admission_policy_names_the_settings_images_and_the_subject():
    s = _settings(caretta={"image": "registry.example/caretta:v1"})
    objs = _by_key(install.install_objects(s, install.Subject.parse("serviceaccount:netviz/dagster")))
    policy = objs[("ValidatingAdmissionPolicy", None, install.NAME)]
    exprs = " ".join(v["expression"] for v in policy["spec"]["validations"])
    assert '"registry.example/caretta:v1"' in exprs and '"netsampler/goflow2:v2.2.1"' in exprs
    assert policy["spec"]["matchConditions"][0]["expression"] == \
        'request.userInfo.username == "system:serviceaccount:netviz:dagster"'
    binding = objs[("ValidatingAdmissionPolicyBinding", None, install.NAME)]
    assert binding["spec"]["validationActions"] == ["Deny"]
    assert binding["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"][0]["values"] == \
        ["caretta", "goflow2"]
    # the API server's defaults are not drift; a changed validation is
    live = copy.deepcopy(policy)
    live["spec"]["matchConstraints"] |= {"matchPolicy": "Equivalent", "namespaceSelector": {}, "objectSelector": {}}
    assert install.drift(policy, live) == []
    live["spec"]["validations"] = live["spec"]["validations"][1:]
    assert install.drift(policy, live) == ["ValidatingAdmissionPolicy netviz-pipeline: spec.validations differs "
                                           "from what netviz installs"]


def test_admin_print_renders_for_the_settings_and_rejects_a_bad_subject(tmp_path, capsys):
    from netviz_pipeline import admin

    path = tmp_path / "netviz.yaml"
    path.write_text(yaml.safe_dump(DEFAULTS | {"goflow2": {"namespace": "flows"}}))
    assert admin.main(["print", "--settings", str(path), "--subject", "serviceaccount:ops/netviz"]) == 0
    docs = [d for d in yaml.safe_load_all(capsys.readouterr().out) if d]
    assert {d["metadata"]["name"] for d in docs if d["kind"] == "Namespace"} == {"caretta", "flows", "monitoring"}
    assert all(d["subjects"] == [{"kind": "ServiceAccount", "name": "netviz", "namespace": "ops"}]
               for d in docs if d["kind"] in ("ClusterRoleBinding", "RoleBinding") and d["metadata"]["name"] == install.NAME)
    assert admin.main(["print", "--settings", str(path), "--subject", "root"]) == 2
    assert "user:<name> or serviceaccount:<namespace>/<name>" in capsys.readouterr().err


def test_admission_allows_only_the_capabilities_the_products_pods_add():
    s = _settings()
    assert install.product_capabilities(s) == []  # Caretta is privileged, the rest drop ALL
    policy = _by_key(install.install_objects(s))[("ValidatingAdmissionPolicy", None, install.NAME)]
    messages = [v["message"] for v in policy["spec"]["validations"]]
    for rule in ("capabilities.add: only none", "seccompProfile", "appArmorProfile", "procMount",
                 "seLinuxOptions", "hostProcess", "sysctls", "hostPort"):
        assert any(m.startswith(rule) or rule in m for m in messages), rule


def test_services_get_their_own_policy_bound_to_the_workload_namespaces():
    objs = _by_key(install.install_objects(_settings(goflow2={"namespace": "flows"})))
    policy = objs[("ValidatingAdmissionPolicy", None, install.SERVICES_POLICY)]
    assert policy["spec"]["matchConstraints"]["resourceRules"][0]["resources"] == ["services"]
    assert any("externalIPs" in v["expression"] for v in policy["spec"]["validations"])
    binding = objs[("ValidatingAdmissionPolicyBinding", None, install.SERVICES_POLICY)]
    assert binding["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"][0]["values"] == \
        ["caretta", "flows"]


@pytest.mark.parametrize("section,field,path", [
    ("caretta", {"namespace": "kube-system"}, "caretta.namespace"),
    ("goflow2", {"namespace": "kube-node-lease"}, "goflow2.namespace"),
    ("grafana", {"dashboards_namespace": "kube-public"}, "grafana.dashboards_namespace"),
    ("prometheus", {"url": "http://p:9090", "mode": "chart",
                    "chart": {"configmap_namespace": "kube-system", "configmap_name": "p"}},
     "prometheus.chart.configmap_namespace"),
    ("prometheus", {"url": "http://p:9090", "operator": {"namespace": "kube-system"}}, "prometheus.operator.namespace"),
])
def test_settings_refuse_system_namespaces_naming_the_field(section, field, path):
    with pytest.raises(SettingsError) as exc:
        _settings(**{section: field})
    assert f"{path}: " in str(exc.value) and "system namespace" in str(exc.value), exc.value


def test_settings_keep_caretta_privileged_namespace_to_itself_and_default_unlabelled():
    for section, field, path in (("goflow2", {"namespace": "caretta"}, "goflow2.namespace"),
                                 ("grafana", {"dashboards_namespace": "caretta"}, "grafana.dashboards_namespace"),
                                 ("checks", {"canary_command": ["true"], "canary_source": "198.18.0.1",
                                             "canary_destination": "198.18.0.2",
                                             "canary_pod": {"namespace": "caretta", "label_selector": "a=b"}},
                                  "checks.canary_pod.namespace")):
        with pytest.raises(SettingsError) as exc:
            _settings(**{section: field})
        assert f"{path}: 'caretta' is caretta.namespace" in str(exc.value), exc.value
    with pytest.raises(SettingsError, match="goflow2.namespace: 'default'"):
        _settings(goflow2={"namespace": "default"})
    assert _settings(grafana={"dashboards_namespace": "default"}).grafana.dashboards_namespace == "default"


@pytest.mark.parametrize("sections", [
    {}, {"caretta": {"namespace": "ebpf"}, "goflow2": {"namespace": "flows"}},
    {"prometheus": {"url": "http://p:9090", "mode": "operator", "operator": {"namespace": "mon"}}}])
def test_delete_is_granted_only_on_the_preflight_probe_and_the_other_transports_objects(sections):
    s = _settings(**sections)
    deletes = [(kind, ns, r) for kind, ns, r in _grant_rules(install.install_objects(s))
               if {"delete", "deletecollection", "*"} & set(r["verbs"])]
    assert deletes == [("Role", s.caretta.namespace, {"apiGroups": ["apps"], "resources": ["daemonsets"],
                                                      "resourceNames": ["caretta-preflight"], "verbs": ["delete"]}),
                       ("Role", s.goflow2.namespace, {"apiGroups": ["apps"], "resources": ["deployments"],
                                                      "resourceNames": ["flowagg"], "verbs": ["delete"]}),
                       ("Role", s.goflow2.namespace, {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["delete"],
                                                      "resourceNames": ["flowagg-kafka", "goflow2-flowagg", "goflow2-mapping"]})]
    goflow2 = _by_key(install.install_objects(s))[("Role", s.goflow2.namespace, install.NAME)]
    assert "preflight" not in goflow2["metadata"]["annotations"]["netviz.io/purposes"]
