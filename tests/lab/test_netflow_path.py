"""Real softflowd in the router namespace -> real goflow2 -> real Prometheus."""
from __future__ import annotations

import signal
import subprocess
import time

import pytest
import requests
import yaml

from netviz_lab.lab import Lab
from netviz_lab.prometheus import URL
from netviz_lab.topology import LINUX_ROUTER, NODE_IP

pytestmark = pytest.mark.lab

NETFLOW_PORT = 32999  # not the NodePort: this goflow2 runs on the host, outside the cluster
METRICS_PORT = 18099


def _query(expr: str) -> list[dict]:
    body = requests.get(f"{URL}/api/v1/query", params={"query": expr}, timeout=5).json()
    assert body["status"] == "success", body
    return body["data"]["result"]


@pytest.fixture
def extra_scrape_job(lab: Lab):
    original = lab.prometheus_config.read_text()
    cfg = yaml.safe_load(original)
    cfg["scrape_configs"].append({"job_name": "lab-test-goflow2", "scrape_interval": "1s",
                                  "static_configs": [{"targets": [f"127.0.0.1:{METRICS_PORT}"]}]})
    lab.prometheus_config.write_text(yaml.safe_dump(cfg))
    assert requests.post(f"{URL}/-/reload", timeout=10).status_code == 200
    yield
    lab.prometheus_config.write_text(original)
    requests.post(f"{URL}/-/reload", timeout=10)


def test_softflowd_by_hand_reaches_goflow2_and_prometheus(lab: Lab, tmp_path, extra_scrape_job):
    shim = lab.cache / "lib" / "libpcap-immediate.so"
    goflow2 = subprocess.Popen(
        [str(lab.bin("goflow2")), "-listen", f"netflow://{NODE_IP}:{NETFLOW_PORT}", "-transport", "file",
         "-transport.file", str(tmp_path / "flows.json"), "-addr", f"127.0.0.1:{METRICS_PORT}"],
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "goflow2.log", "wb"))
    softflowd = subprocess.Popen(
        ["ip", "netns", "exec", LINUX_ROUTER.name, "env", f"LD_PRELOAD={shim}", "softflowd", "-d",
         "-i", LINUX_ROUTER.lan_if, "-n", f"{NODE_IP}:{NETFLOW_PORT}", "-v", "9",
         "-t", "maxlife=2", "-t", "expint=1", "-t", "tcp.fin=1", "-t", "udp=2", "-t", "icmp=2",
         "-c", str(tmp_path / "ctl")],
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "softflowd.log", "wb"))
    try:
        expr = f'goflow2_flow_process_nf_total{{router="{LINUX_ROUTER.mgmt_ip}",job="lab-test-goflow2"}}'
        seen: list[float] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (len(seen) >= 2 and seen[-1] > seen[0] > 0):
            result = _query(expr)
            if result:
                value = float(result[0]["value"][1])
                if not seen or value != seen[-1]:
                    seen.append(value)
            time.sleep(1)
        assert len(seen) >= 2 and seen[-1] > seen[0] > 0, (
            f"NetFlow from {LINUX_ROUTER.mgmt_ip} not counted rising by goflow2 in Prometheus: {seen}; "
            f"softflowd: {(tmp_path / 'softflowd.log').read_text()[-500:]}")
        # The records themselves are the lab's traffic between the LAN and WAN hosts.
        flows = (tmp_path / "flows.json").read_text()
        assert LINUX_ROUTER.lan_host in flows and LINUX_ROUTER.wan_host in flows
    finally:
        for proc in (softflowd, goflow2):
            proc.send_signal(signal.SIGTERM)
        for proc in (softflowd, goflow2):
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
