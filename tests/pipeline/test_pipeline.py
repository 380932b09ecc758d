"""The pipeline against the lab: `dagster job execute` deploys, proves itself and converges.

Runs with the lab's settings and its RBAC-restricted kubeconfig (proving the role suffices), through
the same CLI users and CI run.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml

from netviz_lab import clusterapi
from netviz_lab import settings as lab_settings
from netviz_lab.lab import Lab
from netviz_lab.router import router_pids
from netviz_lab.topology import LINUX_ROUTER, ROUTERS

pytestmark = pytest.mark.lab

DAGSTER = str(Path(sys.executable).with_name("dagster"))
OURS = [("v1", "Namespace", None, n) for n in ("caretta", "goflow2", "monitoring")] + [
    ("v1", "ServiceAccount", "caretta", "caretta"), ("rbac.authorization.k8s.io/v1", "ClusterRole", None, "caretta"),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", None, "caretta"),
    ("apps/v1", "DaemonSet", "caretta", "caretta"), ("v1", "Service", "caretta", "caretta"),
    ("apps/v1", "Deployment", "goflow2", "goflow2"), ("v1", "Service", "goflow2", "goflow2"),
    ("v1", "Service", "goflow2", "goflow2-netflow"), ("v1", "ConfigMap", "goflow2", "goflow2-flowagg"),
    ("v1", "ConfigMap", "monitoring", "netviz-dashboard-caretta"),
    ("v1", "ConfigMap", "monitoring", "netviz-dashboard-goflow2")]


def run_job(job: str, config: Path, dagster_home: Path) -> subprocess.CompletedProcess[str]:
    dagster_home.mkdir(exist_ok=True)
    env = {**os.environ, "NETVIZ_CONFIG": str(config), "DAGSTER_HOME": str(dagster_home)}
    return subprocess.run([DAGSTER, "job", "execute", "-m", "netviz_pipeline", "-j", job], env=env,
                          capture_output=True, text=True, timeout=600, cwd=Path(__file__).parents[2])


def snapshot(admin_api) -> dict[str, str | None]:
    from kubernetes.dynamic import DynamicClient
    from kubernetes.dynamic.exceptions import NotFoundError

    dc = DynamicClient(admin_api)
    out = {}
    for api_version, kind, ns, name in OURS:
        try:
            obj = dc.resources.get(api_version=api_version, kind=kind).get(name=name, namespace=ns)
            out[f"{kind}/{ns}/{name}"] = obj.metadata.resourceVersion
        except NotFoundError:
            out[f"{kind}/{ns}/{name}"] = None
    return out


def _is_softflowd(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == "softflowd"
    except OSError:  # exited meanwhile
        return False


def softflowd_pids() -> dict[str, list[int]]:
    return {r.name: sorted(p for p in router_pids(r) if _is_softflowd(p)) for r in ROUTERS}


def materializations(dagster_home: Path) -> dict[str, dict]:
    """Latest materialisation metadata per asset, read from the instance the CLI wrote."""

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        out = {}
        for key in instance.get_asset_keys():
            event = instance.get_latest_materialization_event(key)
            if event and event.asset_materialization:
                out[key.to_user_string()] = {k: v.value for k, v in event.asset_materialization.metadata.items()}
        return out


@pytest.fixture(scope="module")
def config(lab: Lab, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("settings") / "netviz.yaml"
    path.write_text(lab_settings.render(lab))
    return path


def test_deploy_then_converged_rerun_changes_nothing(lab: Lab, config: Path, admin_api, tmp_path):
    first = run_job("netviz_deploy", config, tmp_path / "home1")
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    assert "RUN_SUCCESS" in first.stdout + first.stderr
    assert "did not pass" not in first.stdout + first.stderr, "every check must pass on a deploy"
    before, pids_before = snapshot(admin_api), softflowd_pids()
    prom_mtime = lab.prometheus_config.stat().st_mtime_ns
    assert all(before.values()), f"objects missing after deploy: {before}"
    assert all(pids_before.values()), f"softflowd not running on every router: {pids_before}"

    second = run_job("netviz_deploy", config, tmp_path / "home2")
    assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-4000:]
    assert snapshot(admin_api) == before, "a converged re-run rewrote objects"
    assert softflowd_pids() == pids_before, "a converged re-run restarted softflowd"
    assert lab.prometheus_config.stat().st_mtime_ns == prom_mtime, "a converged re-run rewrote prometheus.yml"
    meta = materializations(tmp_path / "home2")
    for asset in ("caretta", "goflow2", "caretta_dashboard", "goflow2_dashboard", "prometheus_scrape_config",
                  "router_softflowd"):
        assert meta[asset]["changed"] == 0, (asset, meta[asset])
        assert meta[asset]["summary"].startswith("converged"), (asset, meta[asset]["summary"])


def test_every_netviz_pod_runs_on_a_real_node_and_netflow_crosses_the_real_node_port(lab: Lab, admin_api):
    """Runs after the deploy test above. Status is the kubelet's (container IDs from containerd), and
    GoFlow2 counts NetFlow from each router under the router's own address: kube-proxy's NodePort with
    externalTrafficPolicy Local delivered it without SNAT."""
    import requests
    from kubernetes import client

    from netviz_lab.prometheus import URL
    from netviz_lab.topology import COLLECTOR_NODE, REAL_NODES

    core = client.CoreV1Api(admin_api)
    real = {n.name for n in REAL_NODES}
    for ns, app in (("caretta", "caretta"), ("goflow2", "goflow2")):
        pods = core.list_namespaced_pod(ns, label_selector=f"app={app}").items
        assert pods, f"no {app} pods"
        for p in pods:
            assert p.spec.node_name in real, (p.metadata.name, p.spec.node_name)
            assert p.status.phase == "Running" and p.status.container_statuses, p.metadata.name
            for cs in p.status.container_statuses:
                assert cs.ready and cs.container_id.startswith("containerd://"), (p.metadata.name, cs.name)
        if app == "caretta":  # the DaemonSet spans both real nodes
            assert {p.spec.node_name for p in pods} == real
        else:  # pinned to the node the routers send to
            assert {p.spec.node_name for p in pods} == {COLLECTOR_NODE.name}
    q = 'sum by (router) (goflow2_flow_process_nf_total{job="netviz-goflow2"})'
    rows = requests.get(f"{URL}/api/v1/query", params={"query": q}, timeout=5).json()["data"]["result"]
    counted = {r["metric"]["router"] for r in rows if float(r["value"][1]) > 0}
    assert {r.mgmt_ip for r in ROUTERS} <= counted, counted


def test_freshness_sensor_records_check_results_from_prometheus(lab: Lab, config: Path):
    """Runs after the deploy test above: the data paths exist."""
    from netviz_pipeline.definitions import defs
    from netviz_pipeline.sensors import flow_freshness

    os.environ["NETVIZ_CONFIG"] = str(config)
    try:
        with dg.instance_for_test() as instance, \
                dg.build_sensor_context(instance=instance, resources=dict(defs.resources)) as ctx:
            result = flow_freshness(ctx)
    finally:
        os.environ.pop("NETVIZ_CONFIG")
    evals = {e.check_name: e for e in result.asset_events}
    assert set(evals) == {"netflow_arriving", "caretta_links_present"}
    assert evals["netflow_arriving"].passed, evals["netflow_arriving"].metadata
    assert evals["caretta_links_present"].passed, evals["caretta_links_present"].metadata
    assert set(evals["netflow_arriving"].metadata) == {"router:edge-linux", "router:edge-pfsense"}
    assert not result.run_requests, "a healthy system must not trigger remediation runs"


def test_verify_job_runs_checks_only_and_passes(config: Path, admin_api, tmp_path):
    before = snapshot(admin_api)
    res = run_job("netviz_verify", config, tmp_path / "home")
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    assert "ASSET_MATERIALIZATION" not in res.stdout + res.stderr
    assert snapshot(admin_api) == before


def test_bad_settings_fail_before_any_change(lab: Lab, config: Path, admin_api, tmp_path):
    bad = yaml.safe_load(config.read_text())
    bad["routers"][0]["interface"] = "lan0; reboot"
    bad["goflow2"]["netflow_node_port"] = 80
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    before, pids_before = snapshot(admin_api), softflowd_pids()
    res = run_job("netviz_deploy", path, tmp_path / "home")
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert "routers[0].interface" in out and "goflow2.netflow_node_port" in out, out[-3000:]
    assert snapshot(admin_api) == before and softflowd_pids() == pids_before


def test_operator_mode_applies_podmonitors_idempotently(lab: Lab, config: Path, admin_api):

    from netviz_pipeline.assets.prometheus import prometheus_scrape_config
    from netviz_pipeline.definitions import defs

    cfg = yaml.safe_load(config.read_text())
    cfg["prometheus"] = {"url": cfg["prometheus"]["url"], "mode": "operator",
                         "operator": {"labels": {"release": "kube-prometheus-stack"}}}
    clusterapi.install(lab, cfg)  # a new Prometheus mode: the administrator grants PodMonitors
    path = config.with_name("operator.yaml")
    path.write_text(yaml.safe_dump(cfg))
    resources = {k: v for k, v in defs.resources.items()}
    os.environ["NETVIZ_CONFIG"] = str(path)
    try:
        results = [dg.materialize([prometheus_scrape_config], resources=resources) for _ in range(2)]
    finally:
        os.environ.pop("NETVIZ_CONFIG")
    metas = [r.asset_materializations_for_node("prometheus_scrape_config")[0].metadata for r in results]
    assert metas[0]["mode"].value == "operator"
    assert metas[1]["changed"].value == 0, metas[1]
    from kubernetes.dynamic import DynamicClient

    pm = DynamicClient(admin_api).resources.get(api_version="monitoring.coreos.com/v1", kind="PodMonitor")
    caretta_pm = pm.get(name="netviz-caretta", namespace="caretta")
    assert caretta_pm.metadata.labels["release"] == "kube-prometheus-stack"
    assert caretta_pm.spec.podMetricsEndpoints[0].port == "prom-metrics"
    rules = DynamicClient(admin_api).resources.get(api_version="monitoring.coreos.com/v1", kind="PrometheusRule")
    assert rules.get(name="netviz-alerts", namespace="goflow2").metadata.labels["release"] == "kube-prometheus-stack"



def test_canary_through_a_pod_exec_is_seen(lab: Lab, config: Path, tmp_path, admin_api):
    """The pod-exec path of the canary check, through the real kubelet: the demo client pod sends UDP
    to a LAN host, so its datagrams cross the Linux router's LAN interface (pod -> node -> host ->
    router -> lan0) and softflowd exports them with the pod's own address as the source."""
    from kubernetes import client
    from netviz_pipeline.definitions import defs

    pods = client.CoreV1Api(admin_api).list_namespaced_pod("demo", label_selector="app=client").items
    pod_ip = next(p.status.pod_ip for p in pods if p.status.phase == "Running" and p.status.pod_ip)
    send = ("import socket\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            f"for _ in range(5): s.sendto(b'netviz-canary' * 64, ('{LINUX_ROUTER.lan_host}', 9))\n")
    cfg = yaml.safe_load(config.read_text())
    cfg["checks"].update({"canary_pod": {"namespace": "demo", "label_selector": "app=client"},
                          "canary_command": ["python3", "-c", send],
                          "canary_source": pod_ip, "canary_destination": LINUX_ROUTER.lan_host})
    clusterapi.install(lab, cfg)  # the administrator grants exec in the canary pod's namespace (only there)
    path = tmp_path / "netviz.yaml"
    path.write_text(yaml.safe_dump(cfg))
    os.environ["NETVIZ_CONFIG"] = str(path)
    try:
        with dg.instance_for_test() as instance:
            res = defs.resolve_job_def("netviz_verify").execute_in_process(instance=instance, raise_on_error=False)
    finally:
        os.environ.pop("NETVIZ_CONFIG")
    evals = {e.check_name: e for e in res.get_asset_check_evaluations()}
    canary = evals["canary_seen"]
    assert canary.passed, {k: v.value for k, v in canary.metadata.items()}
    assert canary.metadata["sent_from"].value.startswith("pod demo/client-")
    assert canary.metadata["bytes_counted"].value > 0
