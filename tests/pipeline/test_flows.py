"""Flows end to end in the lab: real traffic -> real softflowd -> real GoFlow2 -> the flow aggregator
sidecar (in the GoFlow2 pod on a real node) -> Prometheus: the lan host -> wan host pair shows up as a top-talker
series within DEADLINE_S after the traffic ends.

Budget of the deadline: softflowd exports a closed TCP connection within ~2 s (lab timeouts
tcp.fin=1, expint=1), GoFlow2 and the aggregator add milliseconds, Prometheus scrapes every 5 s.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

from netviz_lab import settings as lab_settings
from netviz_lab.lab import Lab
from netviz_lab.prometheus import URL as PROM
from netviz_lab.topology import LINUX_ROUTER
from netviz_pipeline import freshness
from netviz_pipeline.render.scrape import FLOWS_JOB

pytestmark = pytest.mark.lab

DEADLINE_S = 20
CANARY_CONNECTIONS = 40
CANARY_REQUEST_BYTES = 1400  # per connection, lan -> wan
DAGSTER = str(Path(sys.executable).with_name("dagster"))


def query(expr: str) -> list[dict]:
    r = requests.get(f"{PROM}/api/v1/query", params={"query": expr}, timeout=10)
    r.raise_for_status()
    return r.json()["data"]["result"]


@pytest.fixture(scope="module")
def deployed(lab: Lab, tmp_path_factory) -> Path:
    """The pipeline's deploy job, through the CLI, with the lab's settings (idempotent)."""
    import os

    d = tmp_path_factory.mktemp("flows")
    config = d / "netviz.yaml"
    config.write_text(lab_settings.render(lab))
    env = {**os.environ, "NETVIZ_CONFIG": str(config), "DAGSTER_HOME": str(d)}
    res = subprocess.run([DAGSTER, "job", "execute", "-m", "netviz_pipeline", "-j", "netviz_deploy"], env=env,
                         capture_output=True, text=True, timeout=900, cwd=Path(__file__).parents[2])
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    return config


def canary_traffic() -> int:
    """CANARY_CONNECTIONS short TCP connections lan host -> wan host:8080 (the lab's traffic server),
    each sending CANARY_REQUEST_BYTES; returns the payload bytes sent."""
    script = (
        "import socket\n"
        f"for _ in range({CANARY_CONNECTIONS}):\n"
        f"    s = socket.create_connection(('{LINUX_ROUTER.wan_host}', 8080), timeout=5)\n"
        f"    s.sendall(b'GET /canary HTTP/1.0\\r\\nX-Pad: ' + b'x' * {CANARY_REQUEST_BYTES - 40} + b'\\r\\n\\r\\n')\n"
        "    while s.recv(4096): pass\n"
        "    s.close()\n")
    subprocess.run(["ip", "netns", "exec", LINUX_ROUTER.lan_ns, sys.executable, "-c", script], check=True, timeout=60)
    return CANARY_CONNECTIONS * CANARY_REQUEST_BYTES


def test_lan_to_wan_traffic_appears_as_top_talker_within_deadline(deployed: Path):
    src, dst = LINUX_ROUTER.lan_host, LINUX_ROUTER.wan_host
    # the pair's byte counter, from every aggregator (the test sees the series appear, then grow)
    q = f'sum(netviz_flow_talker_bytes_total{{job="{FLOWS_JOB}",src="{src}",dst="{dst}"}})'
    # the aggregator is scraped and the pair's counter exists (background lab traffic) before we start
    deadline = time.monotonic() + 120
    while not query(q):
        assert time.monotonic() < deadline, f"no top-talker series for {src} -> {dst}: {q}"
        time.sleep(2)
    time.sleep(6)  # a fresh scrape as the baseline
    before = freshness.value(query(q))
    sent = canary_traffic()
    done = time.monotonic()
    while True:
        grown = freshness.value(query(q)) - before
        if grown >= sent:
            break
        assert time.monotonic() - done < DEADLINE_S, (
            f"{src} -> {dst} grew {grown:.0f} B of the {sent} B sent within {DEADLINE_S}s")
        time.sleep(0.5)
    latency = time.monotonic() - done
    print(f"canary: {sent} B from {src} to {dst} visible in Prometheus {latency:.1f}s after the traffic ended")


def test_per_exporter_freshness_and_bounded_series(deployed: Path):
    cfg = yaml.safe_load(deployed.read_text())
    exporter = cfg["routers"][0]["host"]  # edge-linux: its NetFlow comes from its management address
    ages = {r["metric"]["exporter"]: float(r["value"][1]) for r in query(freshness.flow_record_ages_query())}
    assert exporter in ages and ages[exporter] < 60, ages
    (age,) = query(freshness.flow_record_age_query(exporter))
    assert float(age["value"][1]) < 60
    used = freshness.value(query('sum(netviz_flow_series{job="netviz-flows"})'))
    budget = freshness.value(query('sum(netviz_flow_series_budget{job="netviz-flows"})'))
    assert 0 < used <= budget
    # softflowd does not sample: sampling_rate 0, counted and visible per exporter
    assert query(f'netviz_flow_sampling_rate_zero_total{{job="netviz-flows",exporter="{exporter}"}} > 0')
    # GoFlow2's own health endpoint and metrics still work next to the FIFO transport
    assert freshness.value(query('sum(up{job="netviz-goflow2"})')) >= 1
    assert query('goflow2_flow_process_nf_total{job="netviz-goflow2"}')


def test_flows_carry_names_from_the_settings_and_the_cluster(deployed: Path):
    """The LAN host's pair carries its name from `flows.names.hosts`, an unnamed address stays itself;
    the aggregator listed and watches the real API server as its own ServiceAccount (RBAC, the
    admission policy and the projected token all let it), and indexed the lab's pods."""
    src, dst = LINUX_ROUTER.lan_host, LINUX_ROUTER.wan_host
    q = f'netviz_flow_talker_bytes_total{{job="{FLOWS_JOB}",src="{src}",dst="{dst}"}}'
    deadline = time.monotonic() + 120
    while not (rows := query(q)):
        assert time.monotonic() < deadline, f"no top-talker series for {src} -> {dst}"
        time.sleep(2)
    assert {(r["metric"]["src_name"], r["metric"]["dst_name"]) for r in rows} == {(f"{LINUX_ROUTER.name}-lan-host", dst)}
    kinds = ("pods", "services", "nodes", "replicasets", "jobs")
    while True:
        synced = {r["metric"]["kind"]: float(r["value"][1])
                  for r in query(f'max by (kind) (netviz_flow_names_synced{{job="{FLOWS_JOB}"}})')}
        if synced == dict.fromkeys(kinds, 1.0):
            break
        errors = query(f'sum by (kind) (netviz_flow_names_watch_errors_total{{job="{FLOWS_JOB}"}}) > 0')
        assert time.monotonic() < deadline, f"names not synced from the API server: {synced}; errors: {errors}"
        time.sleep(2)
    pods = freshness.value(query(f'max(netviz_flow_names_entries{{job="{FLOWS_JOB}",kind="pods"}})'))
    assert pods >= 3, f"only {pods:.0f} pods indexed (the lab runs two demo pods and GoFlow2)"
