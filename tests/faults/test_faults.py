"""What the deployed system survives. Each fault: inject, let the health sensor detect it and heal
within its bounds, check the expected outcome, record time to detect and to recover."""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import dagster as dg
import pytest
import requests
import yaml

from netviz_lab import router as lab_router
from netviz_lab.lab import Lab
from netviz_lab.prometheus import URL as PROM
from netviz_lab.supervisor import read_state
from netviz_lab.topology import LINUX_ROUTER, PFSENSE_ROUTER

from .conftest import COLLECTOR_DOWN_FOR_S, TICK_S, passed, record

pytestmark = pytest.mark.faults


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:  # exited meanwhile
        return ""


def softflowd_pids(r) -> list[int]:
    return sorted(p for p in lab_router.router_pids(r) if _comm(p) == "softflowd")


def netflow_stale(result) -> bool:
    return not passed(result, "netflow_arriving")


def datagrams(router) -> float:
    q = f'sum(goflow2_flow_process_nf_total{{job="netviz-goflow2",router="{router.mgmt_ip}"}})'
    rows = requests.get(f"{PROM}/api/v1/query", params={"query": q}, timeout=5).json()["data"]["result"]
    return float(rows[0]["value"][1]) if rows else 0.0


def wait_datagrams_after(router, t0: float, timeout: float = 120) -> float:
    """Seconds from t0 until Prometheus has seen NetFlow from the router that was sent after t0:
    the counter must rise twice past its value now (one scrape may still carry older datagrams)."""
    seen = [datagrams(router)]
    while time.monotonic() - t0 < timeout:
        time.sleep(0.5)
        v = datagrams(router)
        if v > seen[-1]:
            seen.append(v)
        if len(seen) >= 3:
            return time.monotonic() - t0
    pytest.fail(f"no new NetFlow from {router.name} within {timeout:.0f}s: {seen}")


def test_softflowd_killed_is_restarted_by_the_sensor(healer):
    before = softflowd_pids(LINUX_ROUTER)
    t0 = time.monotonic()
    for pid in before:
        os.kill(pid, signal.SIGKILL)
    detect = healer.until(netflow_stale, 60, "stale NetFlow from edge-linux")  # this tick also heals
    assert any("router_softflowd" in run["assets"] and run["success"] for run in healer.runs), healer.runs
    assert softflowd_pids(LINUX_ROUTER) and softflowd_pids(LINUX_ROUTER) != before
    recover = wait_datagrams_after(LINUX_ROUTER, t0)
    healer.until(lambda r: passed(r, "netflow_arriving"), 60, "NetFlow fresh again")
    record("softflowd killed", detect_s=detect, recover_s=recover, remedy="sensor re-ran router_softflowd",
           lost="flows active at the kill (softflowd's flow table is in memory) and traffic until the restart")


POWERED_OFF_S = 15  # a real router takes a while to boot; the sensor ticks (every 2 s here) meanwhile


SETTINGS_NAME = {LINUX_ROUTER.name: "edge-linux", PFSENSE_ROUTER.name: "edge-pfsense"}  # netviz_lab/settings.py


def _router_finding(result, router) -> str:
    evaluation = next(e for e in result.asset_events if e.check_name == "netflow_arriving")
    return str(evaluation.metadata[f"router:{SETTINGS_NAME[router.name]}"].value)


@pytest.mark.parametrize("router", [LINUX_ROUTER, PFSENSE_ROUTER], ids=lambda r: r.name)
def test_router_reboot_brings_softflowd_back_from_persisted_config(lab: Lab, healer, router):
    """The sensor ticks all through a reboot that keeps the router off for a while: it tells the router
    is unreachable (not "stale"), requests no run, and once the router is back softflowd runs from its
    persisted config alone, once, and NetFlow is fresh again."""
    before = softflowd_pids(router)
    t0 = time.monotonic()
    failed: list[BaseException] = []

    def reboot():
        try:
            lab_router.reboot_router(lab, router, down_seconds=POWERED_OFF_S)
        except BaseException as exc:  # noqa: BLE001 - raised in the test below
            failed.append(exc)

    rebooting = threading.Thread(target=reboot)
    rebooting.start()
    during = []
    while rebooting.is_alive():
        during.append(_router_finding(healer.tick(), router))
        time.sleep(TICK_S)
    rebooting.join()
    assert not failed, failed
    assert any(f.startswith("router-unreachable") for f in during), during
    assert not healer.runs, f"an unreachable router must not be re-run, nor a rebooted one: {healer.runs}"
    assert len(softflowd_pids(router)) == len(before) and softflowd_pids(router) != before, \
        f"softflowd not back once: {softflowd_pids(router)} (before: {before})"
    recover = wait_datagrams_after(router, t0)
    healer.until(lambda r: passed(r, "netflow_arriving"), 60, f"NetFlow from {router.name} fresh again")
    assert not healer.runs, f"persisted config should suffice, no remediation: {healer.runs}"
    record(f"router rebooted ({router.platform})", detect_s=0.0, recover_s=recover,
           ticks_during=len(during), fresh_after_s=time.monotonic() - t0,
           remedy="none needed: " + ("/etc/softflowd/netviz.conf at boot" if router.platform == "linux"
                                     else "config.xml + package start at boot"),
           lost=f"flows during the reboot ({POWERED_OFF_S} s off)")


LOSS_WINDOW_S = 90  # the fault settings' 12 s holds too few packets to tell loss from scrape phase


def test_netflow_lost_on_the_way_is_counted_per_exporter_and_not_re_run(fault_config: Path, deployed, tmp_path):
    """Three of every four NetFlow datagrams of the Linux router dropped on the path to the collector
    (nft on the host it crosses, as a lossy link would: softflowd's sends succeed). The exporter check,
    over a 90 s window, compares its sequence numbers with GoFlow2's count: `datagrams-lost`, not to be
    re-run; the pfSense router stays flowing; once the path is clean, not losing any more."""
    from netviz_lab import hostnet
    from netviz_lab.topology import NODEPORT_NETFLOW
    from netviz_pipeline import placement
    from netviz_pipeline.checks.exporters import exporter_looks
    from netviz_pipeline.resources.cluster import ClusterResource
    from netviz_pipeline.resources.config import NetvizConfig
    from netviz_pipeline.resources.prometheus import PrometheusResource
    from netviz_pipeline.resources.routers import RoutersResource

    cfg = yaml.safe_load(fault_config.read_text())
    cfg["checks"]["freshness"]["netflow_max_age_seconds"] = LOSS_WINDOW_S
    (tmp_path / "netviz.yaml").write_text(yaml.safe_dump(cfg))
    conf = NetvizConfig(config_path=str(tmp_path / "netviz.yaml"))
    s = placement.for_routers(conf.settings, ClusterResource(config=conf).kube)  # where the routers send now
    prom, routers = PrometheusResource(config=conf), RoutersResource(config=conf)

    def looks() -> dict:
        return {f.details["router"]: f for f in exporter_looks(s, prom, routers, {})[0]}

    def until(pred, what: str) -> tuple[float, dict]:
        t0 = time.monotonic()
        while not pred(seen := looks()):
            assert time.monotonic() - t0 < 2 * LOSS_WINDOW_S + 60, f"{what}: {[f.reason for f in seen.values()]}"
            time.sleep(3)
        return time.monotonic() - t0, seen

    until(lambda f: f["edge-linux"].details["cause"] == "flowing", "not flowing before the fault")
    hostnet.lose_forwarded_udp(LINUX_ROUTER.host_if, NODEPORT_NETFLOW, keep_one_in=4)
    try:
        detect, seen = until(lambda f: f["edge-linux"].details["cause"] == "datagrams-lost", "loss not seen")
    finally:
        hostnet.stop_losing()
    linux = seen["edge-linux"]
    assert not linux.heal and linux.details["lost"] > 0, linux  # told, never re-run
    assert seen["edge-pfsense"].details["cause"] == "flowing", seen["edge-pfsense"].reason
    clean, _ = until(lambda f: f["edge-linux"].details["cause"] == "flowing", "still losing after the path is clean")
    record("NetFlow lost on the way (3 of 4 datagrams dropped on the path; 90 s window)", detect_s=detect,
           recover_s=clean, finding=linux.reason[:200], remedy="none: told, not re-run (datagrams-lost)",
           lost="the dropped datagrams' flows")


def _materialize(instance, *assets: str):
    from netviz_pipeline.definitions import defs

    return defs.resolve_job_def("netviz_deploy").execute_in_process(
        asset_selection=[dg.AssetKey(a) for a in assets], instance=instance, raise_on_error=False)


def _failure_text(res) -> str:
    return " ".join(str(e.event_specific_data) for e in res.all_events if e.is_failure)


def test_ssh_unreachable_fails_clearly_and_the_other_router_still_converges(deployed):
    block = ["ip", "netns", "exec", LINUX_ROUTER.name, "nft", "-f", "-"]
    subprocess.run(block, input="table inet nvz_fault {\n chain block_ssh {\n"
                                "  type filter hook input priority 0;\n  tcp dport 22 drop\n }\n}\n",
                   check=True, text=True)
    try:
        t0 = time.monotonic()
        res = _materialize(deployed, "router_softflowd")
        detect = time.monotonic() - t0
        assert not res.success
        text = _failure_text(res)
        assert "could not converge: edge-linux: " in text and "cannot reach 198.18.0.2:22" in text, text[:2000]
        assert ("'router': 'edge-pfsense', 'platform': 'pfsense', 'changed': False, 'restarted': False, "
                "'actions': 'none (converged)'") in text, "other router not converged"
    finally:
        subprocess.run(["ip", "netns", "exec", LINUX_ROUTER.name, "nft", "delete", "table", "inet", "nvz_fault"],
                       check=True)
    t0 = time.monotonic()
    assert _materialize(deployed, "router_softflowd").success
    record("SSH unreachable", detect_s=detect, recover_s=time.monotonic() - t0,
           remedy="run fails naming the router (connect timeout); others converge; next run converges",
           lost="nothing")


def test_a_quiet_link_raises_no_alarm(lab: Lab, healer):
    """pfSense's LAN goes silent: no NetFlow at all, yet every tick passes, saying "quiet" once the
    freshness window (12 s here) has emptied, and stays quiet for three more ticks; no run is requested.
    (benchmarks/soak.py: one hour.)"""
    lab_router.set_traffic(lab, PFSENSE_ROUTER, paused=True)
    try:
        causes = []
        t0 = time.monotonic()
        while causes[-4:] != ["quiet"] * 4:
            assert time.monotonic() - t0 < 90, f"not quiet within 90 s: {causes}"
            result = healer.tick()
            ev = next(e for e in result.asset_events if e.check_name == "netflow_arriving")
            assert ev.passed, {k: v.value for k, v in ev.metadata.items()}
            causes.append(str(ev.metadata["router:edge-pfsense"].value).split(":", 1)[0])
            time.sleep(2)
        assert not healer.runs, healer.runs
    finally:
        lab_router.set_traffic(lab, PFSENSE_ROUTER, paused=False)


def test_an_unreachable_router_is_told_apart_and_not_re_run(healer):
    """The sensor names the cause (SSH unreachable, not "stale NetFlow") on its next tick and requests
    no run: a re-run could not reach the router either."""
    block = ["ip", "netns", "exec", LINUX_ROUTER.name, "nft", "-f", "-"]
    subprocess.run(block, input="table inet nvz_fault {\n chain block_ssh {\n"
                                "  type filter hook input priority 0;\n  tcp dport 22 drop\n }\n}\n",
                   check=True, text=True)
    try:
        detect = healer.until(netflow_stale, 60, "edge-linux unreachable")
        evaluation = next(e for e in healer.tick().asset_events if e.check_name == "netflow_arriving")
        assert str(evaluation.metadata["router:edge-linux"].value).startswith("router-unreachable"), evaluation
        assert not healer.runs, f"an unreachable router must not be re-run: {healer.runs}"
    finally:
        subprocess.run(["ip", "netns", "exec", LINUX_ROUTER.name, "nft", "delete", "table", "inet", "nvz_fault"],
                       check=True)
    recover = healer.until(lambda r: passed(r, "netflow_arriving"), 60, "reachable again")
    record("router unreachable (sensor)", detect_s=detect, recover_s=recover,
           remedy="diagnosed as router-unreachable, no run requested; healthy again once SSH answers",
           lost="nothing (softflowd kept exporting)")


def test_changed_host_key_is_refused_and_nothing_is_touched(lab: Lab, deployed, fault_config: Path, tmp_path):
    known = (lab.ssh_dir / "known_hosts").read_text().splitlines()
    pf_key = next(line.split(" ", 1)[1] for line in known if line.startswith(PFSENSE_ROUTER.mgmt_ip))
    forged = tmp_path / "known_hosts"
    forged.write_text("\n".join(f"{LINUX_ROUTER.mgmt_ip} {pf_key}" if line.startswith(LINUX_ROUTER.mgmt_ip) else line
                                for line in known) + "\n")
    cfg = yaml.safe_load(fault_config.read_text())
    for r in cfg["routers"]:
        r["known_hosts_file"] = str(forged)
    forged_cfg = tmp_path / "netviz.yaml"
    forged_cfg.write_text(yaml.safe_dump(cfg))
    before = softflowd_pids(LINUX_ROUTER)
    os.environ["NETVIZ_CONFIG"] = str(forged_cfg)
    try:
        t0 = time.monotonic()
        res = _materialize(deployed, "router_softflowd")
    finally:
        os.environ["NETVIZ_CONFIG"] = str(fault_config)
    assert not res.success
    text = _failure_text(res)
    assert "edge-linux" in text and "host key" in text.lower(), text[:2000]
    assert softflowd_pids(LINUX_ROUTER) == before
    record("host key changed", detect_s=time.monotonic() - t0, recover_s=0.0,
           remedy="refused (never accepted); fix known_hosts by hand", lost="nothing")


def goflow2_pid() -> int | None:
    for p in os.listdir("/proc"):
        if p.isdigit():
            if _comm(int(p)).startswith("goflow2"):
                return int(p)
    return None


def goflow2_restarts() -> int:
    """restartCount of the goflow2 container, as the real kubelet reports it."""
    from netviz_lab import clusterapi

    pods = clusterapi.dynamic(Lab()).resources.get(api_version="v1", kind="Pod").get(
        namespace="goflow2", label_selector="app=goflow2").to_dict()["items"]
    return sum(cs["restartCount"] for p in pods for cs in (p.get("status") or {}).get("containerStatuses") or []
               if cs["name"] == "goflow2")


def test_goflow2_killed_relearns_templates_and_flows_resume(healer):
    old = goflow2_pid()
    assert old, "no goflow2 process"
    restarts = goflow2_restarts()
    os.kill(old, signal.SIGKILL)
    t0 = time.monotonic()
    data = 'sum by (router) (increase(goflow2_flow_process_nf_flowset_records_total{job="netviz-goflow2",type="DataFlowSet"}[10s]))'
    while time.monotonic() - t0 < 120:
        rows = requests.get(f"{PROM}/api/v1/query", params={"query": data}, timeout=5).json()["data"]["result"]
        fresh = {r["metric"]["router"] for r in rows if float(r["value"][1]) > 0}
        if goflow2_pid() not in (None, old) and {LINUX_ROUTER.mgmt_ip, PFSENSE_ROUTER.mgmt_ip} <= fresh:
            break
        time.sleep(1)
    else:
        pytest.fail("data flowsets not decoded again within 120s after the collector restart")
    recover = time.monotonic() - t0
    # the kubelet restarted the container (restartPolicy Always); its status report may trail the restart
    deadline = time.monotonic() + 30
    while goflow2_restarts() <= restarts and time.monotonic() < deadline:
        time.sleep(0.5)
    assert goflow2_restarts() > restarts, "the kubelet did not report a restart of the goflow2 container"
    healer.until(lambda r: passed(r, "netflow_arriving"), 60, "fresh")
    record("GoFlow2 killed", detect_s=0.0, recover_s=recover,
           remedy="the kubelet restarted the container; templates re-learned from softflowd's periodic re-send",
           lost="datagrams during the restart and data flowsets before the next template")


def test_prometheus_down_during_deploy_leaves_nothing_half_applied(lab: Lab, deployed):
    cfg = yaml.safe_load(lab.prometheus_config.read_text())
    cfg["scrape_configs"] = [j for j in cfg["scrape_configs"] if not j["job_name"].startswith("netviz-")]
    drifted = yaml.safe_dump(cfg)
    lab.prometheus_config.write_text(drifted)
    pid = read_state(lab)["services"]["prometheus"]
    assert requests.post(f"{PROM}/-/reload", timeout=10).status_code == 200
    os.kill(pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        res = _materialize(deployed, "prometheus_scrape_config")
        detect = time.monotonic() - t0
        assert not res.success
        assert "was restored to its previous content" in _failure_text(res), _failure_text(res)[:2000]
        assert lab.prometheus_config.read_text() == drifted, "a refused reload must leave the old config"
    finally:
        os.kill(pid, signal.SIGCONT)
    t0 = time.monotonic()
    assert _materialize(deployed, "prometheus_scrape_config").success
    assert "netviz-caretta" in lab.prometheus_config.read_text()
    record("Prometheus down during a deploy", detect_s=detect, recover_s=time.monotonic() - t0,
           remedy="run fails, config rolled back; next run converges", lost="nothing")


def test_api_server_restarted_mid_deploy_retries_then_converges(lab: Lab, deployed):
    from kubernetes import config as kconfig
    from kubernetes.dynamic import DynamicClient

    dc = DynamicClient(kconfig.new_client_from_config(config_file=str(lab.admin_kubeconfig)))
    dc.resources.get(api_version="v1", kind="ConfigMap").delete(name="netviz-dashboard-goflow2", namespace="monitoring")
    pid = read_state(lab)["services"]["kube-apiserver"]
    os.kill(pid, signal.SIGKILL)  # the supervisor restarts it; the deploy starts while it is down
    t0 = time.monotonic()
    res = _materialize(deployed, "goflow2_dashboard")
    assert res.success, _failure_text(res)[:2000]
    assert read_state(lab)["services"]["kube-apiserver"] != pid
    record("API server restarted mid-deploy", detect_s=0.0, recover_s=time.monotonic() - t0,
           remedy="client retries with back-off; the run converges", lost="nothing")


def test_scrape_job_removed_by_hand_is_detected_and_restored(lab: Lab, healer):
    cfg = yaml.safe_load(lab.prometheus_config.read_text())
    cfg["scrape_configs"] = [j for j in cfg["scrape_configs"] if j["job_name"] != "netviz-goflow2"]
    lab.prometheus_config.write_text(yaml.safe_dump(cfg))
    assert requests.post(f"{PROM}/-/reload", timeout=10).status_code == 200
    detect = healer.until(lambda r: any("prometheus_scrape_config" in run["assets"] for run in healer.runs), 60,
                          "a remediation run of prometheus_scrape_config")
    recover = healer.until(lambda r: all(e.passed for e in r.asset_events), 120, "healthy again")
    assert "netviz-goflow2" in lab.prometheus_config.read_text()
    record("scrape job removed by hand", detect_s=detect, recover_s=recover,
           remedy="sensor re-ran prometheus_scrape_config", lost="samples while the job was gone")


def test_dashboard_edited_by_hand_is_detected_and_restored(lab: Lab, healer):
    from kubernetes import config as kconfig
    from kubernetes.dynamic import DynamicClient

    dc = DynamicClient(kconfig.new_client_from_config(config_file=str(lab.admin_kubeconfig)))
    cms = dc.resources.get(api_version="v1", kind="ConfigMap")
    original = cms.get(name="netviz-dashboard-caretta", namespace="monitoring").data["caretta.json"]
    cms.patch(name="netviz-dashboard-caretta", namespace="monitoring", field_manager="kubectl-edit",
              content_type="application/merge-patch+json", body={"data": {"caretta.json": "{}"}})
    detect = healer.until(lambda r: any("caretta_dashboard" in run["assets"] for run in healer.runs), 60,
                          "a remediation run of caretta_dashboard")
    assert cms.get(name="netviz-dashboard-caretta", namespace="monitoring").data["caretta.json"] == original
    record("dashboard ConfigMap edited by hand", detect_s=detect, recover_s=detect,
           remedy="sensor re-ran caretta_dashboard (drift restored)", lost="nothing")


# ---------------------------------------------------------------- alerts and bounds, on the real Prometheus
def _prom(path: str, **params) -> dict:
    return requests.get(f"{PROM}/api/v1/{path}", params=params, timeout=5).json()["data"]


def _firing(name: str | None = None) -> list[dict]:
    return [a for a in _prom("alerts")["alerts"] if a["state"] == "firing" and a["labels"]["alertname"].startswith("Netviz")
            and (name is None or a["labels"]["alertname"] == name)]


def test_no_netviz_alert_fires_in_steady_state_and_every_rule_evaluates(healer):
    groups = [g for g in _prom("rules")["groups"] if g["name"] == "netviz"]
    assert groups and groups[0]["rules"], "the netviz rule group is not loaded"
    broken = [(r["name"], r.get("lastError")) for r in groups[0]["rules"] if r.get("health") != "ok"]
    assert not broken, broken
    assert not _firing(), _firing()


def test_collector_down_fires_its_alert_and_the_heal_clears_it(lab: Lab, healer, admin_api):
    """The real fault (GoFlow2 scaled to zero by hand), the real rule, the lab's real Prometheus: the
    alert fires after its `for` (set by `prometheus.alert_for_seconds`, as a user tunes it: the rule
    Prometheus loaded says so) and not before, and clears once the sensor has healed the collector."""
    from kubernetes import client

    rule = next(r for g in _prom("rules")["groups"] if g["name"] == "netviz" for r in g["rules"]
                if r["name"] == "NetvizCollectorDown")
    assert rule["duration"] == COLLECTOR_DOWN_FOR_S, rule  # the setting reached the loaded rule
    apps = client.AppsV1Api(admin_api)
    t0 = time.monotonic()
    apps.patch_namespaced_deployment_scale("goflow2", "goflow2", {"spec": {"replicas": 0}},
                                           field_manager="kubectl-scale")
    try:
        while not _firing("NetvizCollectorDown"):
            assert time.monotonic() - t0 < 300, f"NetvizCollectorDown not firing: {_prom('alerts')['alerts']}"
            time.sleep(2)
        fired = time.monotonic() - t0
        assert fired >= COLLECTOR_DOWN_FOR_S, f"fired {fired:.0f} s after the collector went: before its `for`"
    finally:
        healer.until(lambda r: passed(r, "netflow_arriving"), 180, "the collector healed and NetFlow fresh")
    while _firing("NetvizCollectorDown"):
        assert time.monotonic() - t0 < fired + 240, "NetvizCollectorDown still firing after the heal"
        time.sleep(2)
    assert any("goflow2" in run["assets"] and run["success"] for run in healer.runs), healer.runs
    record("collector scaled to 0 (alert)", detect_s=fired, recover_s=time.monotonic() - t0,
           remedy=f"NetvizCollectorDown fired (for: {COLLECTOR_DOWN_FOR_S} s); the sensor re-ran goflow2; the alert cleared",
           lost="every flow while the collector was gone")


def _spoofed_netflow(src: str, dst: str, port: int, seq: int) -> bytes:
    """One NetFlow v9 datagram (a template and one record) in an IPv4/UDP packet from `src`."""
    import struct

    template = struct.pack("!HHHH", 0, 12, 256, 1) + struct.pack("!HH", 8, 4)  # one field: source address
    data = struct.pack("!HH4s", 256, 8, bytes(map(int, src.split("."))))
    body = struct.pack("!HHIIII", 9, 2, 1000, int(time.time()), seq, 1) + template + data
    udp = struct.pack("!HHHH", 40000, port, 8 + len(body), 0) + body  # checksum 0: none (IPv4)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), seq & 0xFFFF, 0, 64, 17, 0,
                     bytes(map(int, src.split("."))), bytes(map(int, dst.split("."))))
    return ip + udp


def test_a_flood_of_spoofed_senders_cannot_grow_prometheus(lab: Lab, healer):
    """1,000 spoofed NetFlow sources at the collector's NodePort: GoFlow2 makes series for each (its own
    registry), but the scrape keeps only the configured routers', so Prometheus gains none of them,
    the scrape stays under its sample_limit and succeeds, and the routers' series stay."""
    import socket

    from netviz_lab.topology import COLLECTOR_NODE, NODEPORT_NETFLOW

    job = 'job="netviz-goflow2"'
    restarts, pid = goflow2_restarts(), goflow2_pid()

    def kept_now() -> float:
        return float(_prom("query", query=f"max(scrape_samples_post_metric_relabeling{{{job}}})")["result"][0]["value"][1])

    # The baseline once read 48 kept samples against a steady 95 (CI: GoFlow2, restarted by a fault
    # before, was still filling its registry with the routers' series): wait for both routers' series
    # and a count that holds for 20 s.
    deadline, before, since = time.monotonic() + 120, None, time.monotonic()
    while True:
        now = kept_now() if datagrams(LINUX_ROUTER) > 0 and datagrams(PFSENSE_ROUTER) > 0 else None
        if now is None or now != before:
            before, since = now, time.monotonic()
        elif time.monotonic() - since >= 20:
            break
        assert time.monotonic() < deadline, f"GoFlow2's kept samples never settled: {before}"
        time.sleep(2)
    sources = [f"198.18.{200 + i // 250}.{1 + i % 250}" for i in range(1000)]
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW) as raw:
        for rnd in range(3):  # three rounds: each sender's counters exist and have moved
            for i, src in enumerate(sources):
                raw.sendto(_spoofed_netflow(src, COLLECTOR_NODE.ip, NODEPORT_NETFLOW, rnd * 1000 + i),
                           (COLLECTOR_NODE.ip, NODEPORT_NETFLOW))
            time.sleep(1)
    flood = 'router=~"198\\\\.18\\\\.20[0-3]\\\\..+"'
    t0 = time.monotonic()
    while True:  # until a scrape has seen GoFlow2's registry with the flood in it
        scraped = float(_prom("query", query=f"max(scrape_samples_scraped{{{job}}})")["result"][0]["value"][1])
        if scraped > before + 1000:
            break
        assert time.monotonic() - t0 < 60, f"GoFlow2 never exposed the flood's series: {scraped} samples"
        time.sleep(1)
    kept = float(_prom("query", query=f"max(scrape_samples_post_metric_relabeling{{{job}}})")["result"][0]["value"][1])
    limit = next(j for j in yaml.safe_load(lab.prometheus_config.read_text())["scrape_configs"]
                 if j["job_name"] == "netviz-goflow2")["sample_limit"]
    assert kept <= before + 50 and kept < limit, (before, kept, limit, scraped)
    assert float(_prom("query", query=f"min(up{{{job}}})")["result"][0]["value"][1]) == 1.0
    assert not _prom("query", query=f"goflow2_flow_process_nf_total{{{flood}}}")["result"]
    assert not _prom("query", query=f'goflow2_flow_traffic_bytes_total{{remote_ip=~"198\\\\.18\\\\.20[0-3]\\\\..+"}}')["result"]
    # the routers' own series stay, or come back at once (a CI run once found them absent right after
    # the flood: recorded below whether GoFlow2 restarted meanwhile)
    back = healer.until(lambda r: passed(r, "netflow_arriving"), 90, "the routers' NetFlow counted after the flood")
    deadline = time.monotonic() + 60
    while not (datagrams(LINUX_ROUTER) > 0 and datagrams(PFSENSE_ROUTER) > 0):
        assert time.monotonic() < deadline, "the routers' GoFlow2 series did not come back after the flood"
        time.sleep(1)
    record("spoofed NetFlow flood (1,000 sources)", detect_s=0.0, recover_s=back,
           remedy=f"scrape keeps configured senders only: {scraped:.0f} samples exposed, {kept:.0f} kept "
                  f"(before: {before:.0f}; sample_limit {limit})",
           goflow2_restarted=goflow2_restarts() - restarts, goflow2_same_process=goflow2_pid() == pid,
           lost="nothing; GoFlow2's own registry keeps the spoofed series in its memory")
