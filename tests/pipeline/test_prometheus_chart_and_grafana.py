"""Chart-mode Prometheus (a Helm-owned server ConfigMap) and Grafana's sidecar read from its Deployment,
against the lab's API server with the restricted kubeconfig."""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import dagster as dg
import pytest
import yaml
from kubernetes.dynamic import DynamicClient

from netviz_lab import clusterapi
from netviz_lab import settings as lab_settings
from netviz_lab.lab import Lab

pytestmark = pytest.mark.lab

USER_JOBS = {"global": {"scrape_interval": "15s"},
             "scrape_configs": [{"job_name": "node-exporter", "static_configs": [{"targets": ["n:9100"]}]}]}


def materialize(config: Path, asset):
    from netviz_pipeline.definitions import defs

    os.environ["NETVIZ_CONFIG"] = str(config)
    try:
        return dg.materialize([asset], resources=dict(defs.resources), raise_on_error=False)
    finally:
        os.environ.pop("NETVIZ_CONFIG")


def settings_with(lab: Lab, tmp_path: Path, **sections) -> Path:
    """Settings for this test, installed by the lab's administrator first (the pipeline only verifies
    its namespaces and RBAC, and is granted exactly the namespaces these settings name)."""
    cfg = yaml.safe_load(lab_settings.render(lab))
    cfg.update(sections)
    clusterapi.install(lab, cfg)
    path = tmp_path / "netviz.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture
def helm_prometheus_configmap(admin_api):
    """(ConfigMaps API, namespace): a fresh namespace each time (a deleted one stays Terminating)."""
    dc = DynamicClient(admin_api)
    ns = f"prom-chart-{uuid.uuid4().hex[:6]}"
    for kind, body in (("Namespace", {"metadata": {"name": ns}}),
                       ("ConfigMap", {"metadata": {"name": "prometheus-server", "namespace": ns,
                                                   "labels": {"app.kubernetes.io/managed-by": "Helm"}},
                                      "data": {"prometheus.yml": yaml.safe_dump(USER_JOBS)}})):
        dc.resources.get(api_version="v1", kind=kind).server_side_apply(
            body={"apiVersion": "v1", "kind": kind, **body}, field_manager="helm")
    yield dc.resources.get(api_version="v1", kind="ConfigMap"), ns
    dc.resources.get(api_version="v1", kind="Namespace").delete(name=ns)


@pytest.mark.parametrize("policy", ["skip", "adopt"])
def test_chart_mode_respects_helm_ownership(lab: Lab, tmp_path, helm_prometheus_configmap, policy):
    from netviz_pipeline.assets.prometheus import prometheus_scrape_config

    cms, ns = helm_prometheus_configmap
    config = settings_with(lab, tmp_path, ownership={"on_foreign_manager": policy}, prometheus={
        "url": "http://127.0.0.1:9090", "mode": "chart",
        "chart": {"configmap_namespace": ns, "configmap_name": "prometheus-server"}})
    res = materialize(config, prometheus_scrape_config)
    assert res.success
    meta = res.asset_materializations_for_node("prometheus_scrape_config")[0].metadata
    assert meta["mode"].value == "chart"
    assert "extraScrapeConfigs" in meta["extraScrapeConfigs"].value
    live = yaml.safe_load(cms.get(name="prometheus-server", namespace=ns)
                          .data["prometheus.yml"])
    jobs = [j["job_name"] for j in live["scrape_configs"]]
    if policy == "skip":
        assert jobs == ["node-exporter"] and meta["skipped"].value == 1
    else:
        assert jobs[0] == "node-exporter" and {"netviz-caretta", "netviz-goflow2"} <= set(jobs)
        assert live["global"] == USER_JOBS["global"]
        again = materialize(config, prometheus_scrape_config)
        assert again.asset_materializations_for_node("prometheus_scrape_config")[0].metadata["changed"].value == 0


@pytest.fixture
def grafana_deployment(admin_api):
    """A Deployment shaped like the grafana chart's (its images are not run by the lab: only read)."""
    dc = DynamicClient(admin_api)
    dc.resources.get(api_version="v1", kind="Namespace").server_side_apply(
        body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "observability"}}, field_manager="helm")
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "grafana", "namespace": "observability"},
           "spec": {"selector": {"matchLabels": {"app": "grafana"}}, "template": {
               "metadata": {"labels": {"app": "grafana"}}, "spec": {"containers": [
                   {"name": "grafana-sc-dashboard", "image": "quay.io/kiwigrid/k8s-sidecar:1.27.4",
                    "env": [{"name": "LABEL", "value": "grafana_dashboard_custom"},
                            {"name": "LABEL_VALUE", "value": "yes"}]},
                   {"name": "grafana", "image": "docker.io/grafana/grafana:11.0.0"}]}}}}
    dc.resources.get(api_version="apps/v1", kind="Deployment").server_side_apply(body=dep, field_manager="helm")
    yield dc
    dc.resources.get(api_version="v1", kind="Namespace").delete(name="observability")


def test_dashboards_follow_the_grafana_sidecar_found_in_the_cluster(lab: Lab, tmp_path, grafana_deployment):
    from netviz_pipeline.assets.dashboards import caretta_dashboard, caretta_dashboard_discoverable

    # the sidecar's namespace is where dashboards must go: the administrator's step, with the very settings
    # the pipeline reads, finds it through the same resolution (targets.for_install) and grants it
    clusterapi.install(lab, yaml.safe_load(lab_settings.render(lab)))
    role = grafana_deployment.resources.get(api_version="rbac.authorization.k8s.io/v1", kind="Role").get(
        name="netviz-pipeline", namespace="observability")
    assert "dashboards" in role.metadata.annotations["netviz.io/purposes"].split(",")
    config = settings_with(lab, tmp_path)  # settings say namespace monitoring, label grafana_dashboard=1
    from netviz_pipeline.definitions import defs

    os.environ["NETVIZ_CONFIG"] = str(config)
    try:
        res = dg.materialize([caretta_dashboard, caretta_dashboard_discoverable], resources=dict(defs.resources),
                             raise_on_error=False)
    finally:
        os.environ.pop("NETVIZ_CONFIG")
    assert res.success
    cm = grafana_deployment.resources.get(api_version="v1", kind="ConfigMap").get(
        name="netviz-dashboard-caretta", namespace="observability")
    assert cm.metadata.labels["grafana_dashboard_custom"] == "yes"
    assert all(e.passed for e in res.get_asset_check_evaluations())
