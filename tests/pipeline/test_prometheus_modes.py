"""The same end-to-end proof in every way users run Prometheus inside the cluster: the
prometheus-community chart's server (found by `mode: auto` and adopted, then ownership skip +
extraScrapeConfigs pasted by hand, on that same server) and the real Prometheus Operator. File mode with Kubernetes discovery is
the lab's default Prometheus (test_pipeline.py).

Each proof: `netviz_deploy` green (every check, including every dashboard panel having data, reads that
Prometheus), `netviz_verify` green, and a freshness sensor tick that reads it. The time from the deploy's
start to the first flow series in that Prometheus is printed (docs/prometheus-modes.md reports it per mode)."""
from __future__ import annotations

import os
import time
from pathlib import Path

import dagster as dg
import pytest
import requests
import yaml
from kubernetes.dynamic import DynamicClient
from test_pipeline import materializations, run_job

from netviz_lab import clusterapi
from netviz_lab import incluster_prometheus as icp
from netviz_lab import settings as lab_settings
from netviz_lab.lab import Lab

pytestmark = pytest.mark.lab

FLOW_SERIES = 'count(netviz_flow_bytes_total{job="netviz-flows"})'


@pytest.fixture(scope="module", autouse=True)
def in_cluster_prometheus(lab: Lab):
    """No in-cluster Prometheus before (a Prometheus resource would steer `auto`); the Operator's removed
    afterwards, and the lab's own install restored. The chart's server stays, with the netviz jobs
    these tests proved in it: the in-cluster service (test_service_incluster.py) then finds its config
    converged and has no kubelet sync to wait for (it removes that server when done)."""
    icp.remove(lab)
    icp.wait_gone(lab)
    delete_podmonitors(lab)  # so the Operator test starts from a first deploy
    yield
    icp.remove(lab, modes=("operator",))
    icp.wait_gone(lab, modes=("operator",))
    clusterapi.install(lab)


def delete_podmonitors(lab: Lab) -> None:
    pm = clusterapi.dynamic(lab).resources.get(api_version="monitoring.coreos.com/v1", kind="PodMonitor")
    for item in pm.get().items:
        if item.metadata.name.startswith("netviz-"):
            pm.delete(name=item.metadata.name, namespace=item.metadata.namespace)


def settings_for(lab: Lab, tmp_path: Path, prometheus: dict, **extra) -> Path:
    cfg = lab_settings.settings(lab) | extra
    cfg["prometheus"] = prometheus
    clusterapi.install(lab, cfg)  # the administrator's step for these settings
    path = tmp_path / "netviz.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def first_flow_series_after(url: str, t0: float) -> float | None:
    """Seconds from t0 to the first sample of a flow series in that Prometheus (from its own TSDB)."""
    resp = requests.get(f"{url}/api/v1/query_range", params={"query": FLOW_SERIES, "start": t0,
                                                            "end": time.time(), "step": 1}, timeout=10).json()
    points = [float(ts) for r in resp["data"]["result"] for ts, _ in r["values"]]
    return min(points) - t0 if points else None


def sensor_tick(config: Path):
    from netviz_pipeline.definitions import defs
    from netviz_pipeline.sensors import flow_freshness

    os.environ["NETVIZ_CONFIG"] = str(config)
    try:
        with dg.instance_for_test() as instance, \
                dg.build_sensor_context(instance=instance, resources=dict(defs.resources)) as ctx:
            return flow_freshness(ctx)
    finally:
        os.environ.pop("NETVIZ_CONFIG")


def prove(mode_label: str, url: str, config: Path, tmp_path: Path) -> dict:
    """deploy → verify → sensor, all against the Prometheus at `url`; returns the deploy's metadata."""
    t0 = time.time()
    deploy = run_job("netviz_deploy", config, tmp_path / "deploy")
    out = deploy.stdout + deploy.stderr
    assert deploy.returncode == 0 and "did not pass" not in out, out[-5000:]
    took = time.time() - t0
    first = first_flow_series_after(url, t0)
    assert first is not None and first > 0, f"no flow series in that Prometheus since the deploy ({first})"
    verify = run_job("netviz_verify", config, tmp_path / "verify")
    assert verify.returncode == 0, (verify.stdout + verify.stderr)[-4000:]
    tick = sensor_tick(config)
    evals = {e.check_name: e for e in tick.asset_events}
    assert evals["netflow_arriving"].passed and evals["caretta_links_present"].passed, evals
    assert not tick.run_requests
    print(f"\n{mode_label}: netviz_deploy green in {took:.0f}s, first flow series {first:.0f}s after its start")
    return materializations(tmp_path / "deploy")


def chart_config(dc: DynamicClient) -> dict:
    cm = dc.resources.get(api_version="v1", kind="ConfigMap").get(name=icp.CHART_SERVER, namespace=icp.CHART_NS)
    return cm


def test_auto_mode_finds_the_chart_server_and_adopts_its_configmap(lab: Lab, tmp_path):
    """One deploy proves both: `mode: auto` resolves to the chart's server found in the cluster, and with
    `ownership.on_foreign_manager: adopt` the pipeline writes into Helm's ConfigMap, keeping the chart's
    own jobs and rule files; the kubelet's sync (default period) then brings it into the pod."""
    url = icp.deploy(lab, "chart", empty=True)  # the chart's own config, no data yet
    config = settings_for(lab, tmp_path, {"url": url, "mode": "auto"}, ownership={"on_foreign_manager": "adopt"})
    meta = prove("auto -> chart, adopt", url, config, tmp_path)
    assert meta["prometheus_scrape_config"]["mode"] == "chart"
    cm = chart_config(clusterapi.dynamic(lab))
    live = yaml.safe_load(cm.data["prometheus.yml"])
    assert [j["job_name"] for j in live["scrape_configs"]][0] == "prometheus"  # the chart's own jobs stay
    assert live["rule_files"] == icp.CHART_DEFAULT_CONFIG["rule_files"]
    assert [g["name"] for g in yaml.safe_load(cm.data["alerting_rules.yml"])["groups"]] == ["netviz"]
    assert cm.metadata.labels["app.kubernetes.io/managed-by"] == "Helm"  # still Helm's object


def test_chart_mode_skip_then_extra_scrape_configs_pasted_into_the_values(lab: Lab, tmp_path):
    """Runs after the adopt test, on the same chart server: with `skip` the pipeline writes nothing into
    Helm's ConfigMap and offers its jobs and rules as chart values instead. Pasted as `helm upgrade` would
    render them, they are exactly what the adopt deploy wrote and that Prometheus loaded (all its checks
    green), so Prometheus keeps every netviz target and rule: netviz_verify passes at once, no new
    kubelet sync to wait for."""
    from netviz_pipeline.assets.prometheus import prometheus_scrape_config
    from netviz_pipeline.definitions import defs

    adopted = yaml.safe_load(chart_config(clusterapi.dynamic(lab)).data["prometheus.yml"])
    adopted_rules = yaml.safe_load(chart_config(clusterapi.dynamic(lab)).data["alerting_rules.yml"])
    url = icp.url("chart")
    config = settings_for(lab, tmp_path, {"url": url, "mode": "chart", "chart": {
        "configmap_namespace": icp.CHART_NS, "configmap_name": icp.CHART_SERVER}},
        ownership={"on_foreign_manager": "skip"})
    icp.deploy_chart_config(lab, icp.CHART_DEFAULT_CONFIG)  # `helm upgrade` back to the chart's values
    before = chart_config(clusterapi.dynamic(lab)).data
    os.environ["NETVIZ_CONFIG"] = str(config)
    try:
        res = dg.materialize([prometheus_scrape_config], resources=dict(defs.resources), raise_on_error=False)
    finally:
        os.environ.pop("NETVIZ_CONFIG")
    meta = res.asset_materializations_for_node("prometheus_scrape_config")[0].metadata
    assert meta["skipped"].value == 1
    assert chart_config(clusterapi.dynamic(lab)).data == before, "with skip the pipeline must never write Helm's ConfigMap"
    jobs = yaml.safe_load(_code_block(meta["extraScrapeConfigs"].value))
    values = yaml.safe_load(_code_block(meta["serverFiles"].value))
    # what `helm upgrade --set-file extraScrapeConfigs=... -f values.yaml` renders: the user's jobs, then
    # these; the netviz alert rules as the server's alerting_rules.yml
    cfg = dict(icp.CHART_DEFAULT_CONFIG)
    cfg["scrape_configs"] = icp.CHART_DEFAULT_CONFIG["scrape_configs"] + jobs
    rules = values["serverFiles"]["alerting_rules.yml"]
    assert cfg["scrape_configs"] == adopted["scrape_configs"] and rules == adopted_rules, \
        "the values offered under skip differ from what the adopt deploy proved in this Prometheus"
    icp.deploy_chart_config(lab, cfg, rules)
    verify = run_job("netviz_verify", config, tmp_path / "verify")
    assert verify.returncode == 0, (verify.stdout + verify.stderr)[-4000:]
    live = chart_config(clusterapi.dynamic(lab)).data
    assert yaml.safe_load(live["prometheus.yml"]) == cfg, "with skip the pipeline must never write Helm's ConfigMap"
    assert yaml.safe_load(live["alerting_rules.yml"]) == rules


def _code_block(md: str) -> str:
    return md.split("```yaml\n", 1)[1].split("```", 1)[0]


def test_operator_mode(lab: Lab, tmp_path):
    url = icp.deploy(lab, "operator")
    config = settings_for(lab, tmp_path, {"url": url, "mode": "operator",
                                          "operator": {"labels": icp.MONITOR_LABELS}})
    meta = prove("operator", url, config, tmp_path)
    assert meta["prometheus_scrape_config"]["mode"] == "operator"
    # the Operator turned the PodMonitors into jobs of its Prometheus (named by the relabelling)
    active = requests.get(f"{url}/api/v1/targets", params={"state": "active"}, timeout=5).json()
    jobs = {t["labels"]["job"] for t in active["data"]["activeTargets"]}
    assert {"netviz-caretta", "netviz-goflow2", "netviz-flows"} <= jobs, jobs
    pools = {t["scrapePool"] for t in active["data"]["activeTargets"]}
    assert any(p.startswith("podMonitor/caretta/netviz-caretta/") for p in pools), pools
    # ...and the PrometheusRule into a rule file its Prometheus loaded (alert_rules_loaded passed in prove)
    groups = requests.get(f"{url}/api/v1/rules", params={"type": "alert"}, timeout=5).json()["data"]["groups"]
    assert any(g["name"] == "netviz" for g in groups), [g["name"] for g in groups]


def test_auto_mode_prefers_the_operator_when_a_prometheus_resource_exists(lab: Lab, tmp_path):
    """Runs after the operator test: the chart server still runs, but a Prometheus resource wins."""
    from netviz_pipeline.resources.cluster import ClusterResource
    from netviz_pipeline.resources.config import NetvizConfig

    config = settings_for(lab, tmp_path, {"url": icp.url("operator"), "mode": "auto"})
    cluster = ClusterResource(config=NetvizConfig(config_path=str(config)))
    assert cluster.resolved.prometheus.mode == "operator"
