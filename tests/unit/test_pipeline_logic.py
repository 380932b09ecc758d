"""Pure parts of the Dagster layer: apply diffing, ownership, sidecar discovery, node lookup."""
from __future__ import annotations

import dagster as dg
import pytest

from netviz_pipeline.targets.grafana import find_sidecar
from netviz_pipeline.resources.kube import comparable, diff_paths, foreign_managers


def test_comparable_ignores_server_maintained_fields_and_status():
    live = {"metadata": {"name": "a", "resourceVersion": "7", "uid": "u", "generation": 3,
                         "managedFields": [{}], "annotations": {"deprecated.daemonset.template.generation": "3"}},
            "spec": {"x": 1}, "status": {"ready": 1}}
    assert comparable(live) == {"metadata": {"name": "a"}, "spec": {"x": 1}}


def test_diff_paths_names_each_changed_leaf():
    old = {"spec": {"replicas": 1, "template": {"image": "a"}}, "data": {"k": "v"}}
    new = {"spec": {"replicas": 1, "template": {"image": "b"}}, "data": {"k": "v", "n": "w"}}
    assert diff_paths(old, new) == ["data.n", "spec.template.image"]
    assert diff_paths(old, old) == []


def test_foreign_managers_excludes_us_and_the_control_plane_but_sees_helm():
    live = {"metadata": {"labels": {"app.kubernetes.io/managed-by": "Helm"}, "managedFields": [
        {"manager": "netviz-pipeline", "operation": "Apply"},
        {"manager": "kube-controller-manager", "operation": "Update"},
        {"manager": "kubectl-edit", "operation": "Update"},
        {"manager": "kwok", "operation": "Update", "subresource": "status"}]}}
    assert foreign_managers(live) == ["helm", "kubectl-edit"]
    assert foreign_managers({"metadata": {"managedFields": [{"manager": "netviz-pipeline",
                                                              "operation": "Apply"}]}}) == []


def _grafana(env: list[dict], ns: str = "monitoring") -> dict:
    return {"metadata": {"name": "grafana", "namespace": ns}, "spec": {"template": {"spec": {"containers": [
        {"name": "grafana", "image": "docker.io/grafana/grafana:11.0.0"},
        {"name": "grafana-sc-dashboard", "image": "quay.io/kiwigrid/k8s-sidecar:1.27.4", "env": env}]}}}}


def test_sidecar_read_from_the_grafana_deployment():
    sc = find_sidecar([{"metadata": {"name": "other"}, "spec": {}},
                       _grafana([{"name": "LABEL", "value": "dash"}, {"name": "LABEL_VALUE", "value": "yes"},
                                 {"name": "NAMESPACE", "value": "ALL"}])])
    assert (sc.label_key, sc.label_value, sc.namespaces) == ("dash", "yes", None)
    assert sc.watches("anything")
    own = find_sidecar([_grafana([{"name": "LABEL", "value": "grafana_dashboard"}], ns="obs")])
    assert own.namespaces == ("obs",) and own.label_value == "1" and not own.watches("monitoring")
    assert find_sidecar([_grafana([])]) is None


def test_definitions_load_and_jobs_select_what_they_say():
    from netviz_pipeline import defs

    dg.Definitions.validate_loadable(defs)
    repo = defs.get_repository_def()
    deploy = repo.get_job("netviz_deploy")
    verify = repo.get_job("netviz_verify")
    assert {k.to_user_string() for k in deploy.asset_layer.executable_asset_keys} >= {
        "caretta", "goflow2", "prometheus_scrape_config", "router_softflowd", "caretta_dashboard",
        "goflow2_dashboard", "end_to_end"}
    assert not verify.asset_layer.executable_asset_keys  # checks only: nothing is materialised
    assert {c.name for c in verify.asset_layer.asset_graph.asset_check_keys} >= {"every_panel_has_data",
                                                                                 "netflow_arriving"}


def test_a_denial_is_retried_once_when_the_server_turns_ready_and_stands_after():
    """The first 403 after an API server restart may predate its readiness: ask a ready server once
    more; a ready server's second denial is the answer. A not-ready server is waited for."""
    from kubernetes.dynamic.exceptions import ForbiddenError

    from netviz_pipeline.resources import kube as kube_mod

    class Fake:
        def __init__(self, answers, ready):
            self.answers, self.ready, self.calls = list(answers), list(ready), 0

        def api_ready(self):
            return self.ready.pop(0) if self.ready else True

        @kube_mod._while_starting
        def call(self):
            self.calls += 1
            answer = self.answers.pop(0)
            if answer == "403":
                raise ForbiddenError(type("E", (Exception,), {"status": 403, "reason": "Forbidden", "body": "",
                                                              "headers": {}})())
            return answer

    assert Fake(["403", "ok"], ready=[True]).call() == "ok"  # stale denial: asked again, allowed
    twice = Fake(["403", "403", "ok"], ready=[True, True])
    with pytest.raises(ForbiddenError):
        twice.call()  # a ready server said no twice: that stands
    assert twice.calls == 2


def test_the_sensor_reaches_real_assets_and_checks_by_name():
    """The sensor names what it heals and records (jobs.py) instead of importing asset modules: each name
    must be an asset of the definitions, and each check one of that asset's checks."""
    from netviz_pipeline import defs, jobs, remediation

    graph = defs.resolve_asset_graph()
    assets = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert set(jobs.HEALABLE) <= assets, set(jobs.HEALABLE) - assets
    checks = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    assert {jobs.NETFLOW_CHECK, jobs.CARETTA_CHECK, jobs.AGGREGATORS_CHECK} <= checks
    # every owner the planner may re-run is healable by the sensor
    owners = {a for assets_ in remediation.OWNER.values() for a in assets_}
    assert owners | {f"{stem}_dashboard" for stem in ("caretta", "goflow2")} <= set(jobs.HEALABLE)


def test_every_job_runs_without_run_config():
    """`dagster job execute` and the sensor launch with no run config: no asset or check may ask for op
    config (a parameter named `config` is op config to Dagster, not a resource)."""
    from dagster._core.system_config.objects import ResolvedRunConfig

    from netviz_pipeline.definitions import defs

    for name in ("netviz_deploy", "netviz_verify"):
        ResolvedRunConfig.build(defs.resolve_job_def(name), {})
