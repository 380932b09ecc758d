"""Flows end to end in the lab: real traffic -> real softflowd -> real GoFlow2 -> the flow aggregator
sidecar (in the GoFlow2 pod on a real node) -> Prometheus: the lan host -> wan host pair shows up as a top-talker
series within DEADLINE_S after the traffic ends.

Budget of the deadline: softflowd exports a closed TCP connection within ~2 s (lab timeouts
tcp.fin=1, expint=1), GoFlow2 and the aggregator add milliseconds, Prometheus scrapes every 5 s.
"""
from __future__ import annotations

import json
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


def test_every_router_is_measured_for_loss_and_loses_nothing_here(deployed: Path):
    """Each router's NetFlow v9 sequence numbers (softflowd numbers its export packets) reach the
    aggregator and advance as GoFlow2 counts datagrams: on the lab's links nothing is lost, and the
    loss the check and the alert read stays under their bound."""
    from netviz_pipeline.exporter_health import LOST_MIN_PACKETS

    exporters = {r["host"] for r in yaml.safe_load(deployed.read_text())["routers"]}
    counted_q = 'sum by (router) (increase(goflow2_flow_process_nf_total{job="netviz-goflow2",version="9"}[2m]))'

    def look():
        sent = {r["metric"]["exporter"]: float(r["value"][1]) for r in query(freshness.export_sent_query("2m"))}
        counted = {r["metric"]["router"]: float(r["value"][1]) for r in query(counted_q)}
        lost = {r["metric"]["exporter"]: float(r["value"][1]) for r in query(freshness.export_lost_query("2m"))}
        undelivered = {r["metric"]["exporter"]: float(r["value"][1])
                       for r in query(freshness.records_undelivered_query("2m"))}
        return sent, counted, lost, undelivered

    def steady(sent, counted, lost, undelivered) -> bool:
        """Every router measured, nothing lost before GoFlow2 nor after it (every record it decoded
        counted by the aggregator), and the sequence advance is GoFlow2's datagram count (the same
        unit; a packet or two apart at the window's edges)."""
        return (set(lost) == set(sent) == set(undelivered) == exporters and all(sent[e] > 0 for e in exporters)
                and all(v < LOST_MIN_PACKETS for v in [*lost.values(), *undelivered.values()])
                and all(abs(sent[e] - counted.get(e, 0.0)) <= 0.1 * counted.get(e, 0.0) + 2 for e in exporters))

    # pods the deploy just replaced start their counters inside the 2 min window: increase() then
    # extrapolates each counter its own way, so wait for the window to hold the new pods only
    deadline = time.monotonic() + 200
    while not steady(*(seen := look())):
        assert time.monotonic() < deadline, f"sent, counted, lost, undelivered: {seen}"
        time.sleep(5)


def wait_rows(expr: str, what: str, timeout: float = 180) -> list[dict]:
    deadline = time.monotonic() + timeout
    while not (rows := query(expr)):
        assert time.monotonic() < deadline, f"no series for {what}: {expr}"
        time.sleep(2)
    return rows


def talker_names(src: str, dst: str, timeout: float = 180) -> set[tuple[str, str, str, str]]:
    """(src_name, dst_name, src_kind, dst_kind) of the pair's series, once names are in: the routers'
    names travel router -> ConfigMap -> kubelet (its sync period, up to a minute or two) -> aggregator."""
    q = f'netviz_flow_talker_bytes_total{{job="{FLOWS_JOB}",src="{src}",dst="{dst}",src_name!="{src}"}}'
    rows = wait_rows(q, f"a named top-talker series {src} -> {dst}", timeout)
    return {(r["metric"]["src_name"], r["metric"]["dst_name"], r["metric"]["src_kind"], r["metric"]["dst_kind"])
            for r in rows}


def test_flows_carry_names_from_the_routers_the_settings_and_the_cluster(lab: Lab, deployed: Path):
    """LAN hosts carry the names their routers know (the Linux router's dnsmasq lease, taken by a real
    DHCP client; pfSense's DHCP static mapping), read over SSH by the router step into one ConfigMap per
    router; the WAN hosts the names from `flows.names.hosts`; the aggregator listed and watches the real
    API server as its own ServiceAccount (RBAC, the admission policy and the projected token all let it)."""
    from netviz_lab.clusterapi import dynamic
    from netviz_lab.topology import PFSENSE_ROUTER

    cms = dynamic(lab).resources.get(api_version="v1", kind="ConfigMap")
    for name, r in (("edge-linux", LINUX_ROUTER), ("edge-pfsense", PFSENSE_ROUTER)):
        data = json.loads(cms.get(name=f"goflow2-flowagg-hosts-{name}", namespace="goflow2").data["hosts.json"])
        assert data.get(r.lan_host) == r.lan_host_name, data
    for r in (LINUX_ROUTER, PFSENSE_ROUTER):
        assert talker_names(r.lan_host, r.wan_host) == {(r.lan_host_name, f"{r.name}-wan-host", "host", "host")}
    kinds = ("pods", "services", "nodes", "replicasets", "jobs")
    deadline = time.monotonic() + 120
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
    assert freshness.value(query(f'max(netviz_flow_names_entries{{job="{FLOWS_JOB}",kind="router_hosts"}})')) >= 2


def test_lan_host_to_a_cluster_service_shows_both_names(deployed: Path):
    """Each LAN host's traffic to the demo web Service (its ClusterIP routed to a node, topology.py) is
    seen by its router's softflowd and shows up as host name -> service/demo/web."""
    from netviz_lab.topology import DEMO_WEB_CLUSTER_IP, PFSENSE_ROUTER

    for r in (LINUX_ROUTER, PFSENSE_ROUTER):
        assert talker_names(r.lan_host, DEMO_WEB_CLUSTER_IP) == {(r.lan_host_name, "service/demo/web", "host", "service")}


def test_every_flow_panel_shows_the_labs_names(deployed: Path):
    """What `every_panel_has_data` runs, with the dashboard's variables at their defaults: the top
    talkers and the edge-to-cluster panels carry the lab's host, Service and workload names (the edge
    map joins Caretta's demo/client -> demo/web link to the routers' hops on the same node ids)."""
    from netviz_lab.topology import PFSENSE_ROUTER
    from netviz_pipeline.dashboards import load_dashboard, panel_queries
    from netviz_pipeline.render.dashboards import DASHBOARD_DIR

    talker_names(LINUX_ROUTER.lan_host, "198.19.128.80")  # names are in (the router hosts' ConfigMap synced)
    by_title = {(q.panel_title, q.ref_id): q for q in panel_queries(load_dashboard(DASHBOARD_DIR / "goflow2.json"))}
    hosts = {LINUX_ROUTER.lan_host_name, PFSENSE_ROUTER.lan_host_name}
    # A dashboard range of the last 2 minutes: the routers' names arrived after the first flows (the
    # router step runs after GoFlow2's), so over longer ranges the same pairs also show under their
    # addresses until those series age out of the range.
    window = 120

    def labels(title: str, ref: str, label: str) -> set[str]:
        return {r["metric"].get(label, "") for r in query(by_title[(title, ref)].ready(range_seconds=window))}

    want = hosts | {"service/demo/web", f"{LINUX_ROUTER.name}-wan-host"}
    deadline = time.monotonic() + 150
    while not want <= (top := labels("Top talkers (bytes in range)", "A", "src_name")
                       | labels("Top talkers (bytes in range)", "A", "dst_name")):
        assert time.monotonic() < deadline, f"top talkers lack {want - top}: {top}"
        time.sleep(5)
    assert "service/demo/web" in labels("Edge traffic into the cluster by destination", "A", "dst_name")
    nodes = labels("Edge to cluster map", "nodes", "id")
    assert hosts | {"service/demo/web", "demo/web", "demo/client", f"exporter/{LINUX_ROUTER.mgmt_ip}"} <= nodes, nodes
    edges = {(r["metric"]["source"], r["metric"]["target"]) for r in query(by_title[("Edge to cluster map", "edges")].ready())}
    assert (LINUX_ROUTER.lan_host_name, f"exporter/{LINUX_ROUTER.mgmt_ip}") in edges, edges
    assert (f"exporter/{LINUX_ROUTER.mgmt_ip}", "service/demo/web") in edges, edges
    assert ("demo/client", "demo/web") in edges, edges  # Caretta's link, on the same ids


def test_series_stay_within_the_budget_while_pods_churn(lab: Lab, deployed: Path):
    """A rollout of the demo client (a new pod, a new address; the old one's released) seen by the
    aggregator's watch on the real API server: the index follows it without growing, the budget stays
    what it was and every scrape keeps one talker series per tracked key plus "other"."""
    from netviz_lab.clusterapi import dynamic

    def flows(expr: str) -> float:
        return freshness.value(query(expr.replace("JOB", f'job="{FLOWS_JOB}"')))

    budget = flows("sum(netviz_flow_series_budget{JOB})")
    pods_before = flows('max(netviz_flow_names_entries{JOB,kind="pods"})')
    events_before = flows('max(netviz_flow_names_events_total{JOB,kind="pods"})')
    dc = dynamic(lab)
    deployments = dc.resources.get(api_version="apps/v1", kind="Deployment")
    pods = dc.resources.get(api_version="v1", kind="Pod")
    old = {p.metadata.name for p in pods.get(namespace="demo", label_selector="app=client").items}
    deployments.patch(name="client", namespace="demo", content_type="application/merge-patch+json",
                      body={"spec": {"template": {"metadata": {"annotations": {
                          "netviz.io/restarted-by-test": str(time.time())}}}}})
    deadline = time.monotonic() + 180
    while True:
        now = pods.get(namespace="demo", label_selector="app=client").items
        running = [p for p in now if p.status.phase == "Running" and p.metadata.name not in old]
        if running and not {p.metadata.name for p in now} & old:
            break
        assert time.monotonic() < deadline, f"client rollout did not finish: {[p.metadata.name for p in now]}"
        time.sleep(2)
    # the watch saw the new pod and the old one's deletion: more events, the same number of pods indexed
    while not (flows('max(netviz_flow_names_events_total{JOB,kind="pods"})') >= events_before + 2
               and flows('max(netviz_flow_names_entries{JOB,kind="pods"})') == pods_before):
        assert time.monotonic() < deadline, "the names index did not follow the rollout"
        time.sleep(2)
    for r in query(f'netviz_flow_series{{job="{FLOWS_JOB}"}}'):
        inst = r["metric"]["instance"]
        talkers = flows(f'count(netviz_flow_talker_bytes_total{{JOB,instance="{inst}"}})')
        tracked = flows(f'sum(netviz_flow_tracked_keys{{JOB,instance="{inst}",dimension="talkers"}})')
        assert talkers == tracked + 1, (inst, talkers, tracked)
        assert float(r["value"][1]) <= flows(f'sum(netviz_flow_series_budget{{JOB,instance="{inst}"}})')
    assert flows("sum(netviz_flow_series_budget{JOB})") == budget
