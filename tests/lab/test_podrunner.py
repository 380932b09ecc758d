"""The pod runner against the real lab: kwok pods get real processes, networks, NodePorts, Events."""
from __future__ import annotations

import json
import os
import re
import subprocess
import time
import uuid

import pytest
import requests

from netviz_lab import podrunner, podspec
from netviz_lab.caretta_standin import LINK_LABELS
from netviz_lab.lab import Lab
from netviz_lab.topology import LINUX_ROUTER, NODE_IP, NODEPORT_NETFLOW

pytestmark = pytest.mark.lab

GOFLOW2 = "netsampler/goflow2:v2.2.1"


@pytest.fixture(scope="module")
def k8s(admin_api):
    from kubernetes import client
    from kubernetes.dynamic import DynamicClient

    return client.CoreV1Api(admin_api), DynamicClient(admin_api)


@pytest.fixture(scope="module")
def ns(k8s):
    core, _ = k8s
    name = f"nvz-test-podrunner-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name)


def apply(k8s, doc: dict) -> None:
    _, dc = k8s
    dc.resources.get(api_version=doc["apiVersion"], kind=doc["kind"]).server_side_apply(
        body=doc, field_manager="netviz-lab-test", force_conflicts=True)


def deployment(ns: str, name: str, container: dict, labels: dict | None = None) -> dict:
    labels = labels or {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": ns},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": name, **container}]}}}}


def running_pods(core, ns: str, selector: str, count: int = 1, timeout: float = 60) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        pods = json.loads(core.list_namespaced_pod(ns, label_selector=selector, _preload_content=False).data)["items"]
        pods = [p for p in pods if p["status"].get("phase") == "Running" and p["status"].get("podIP")
                and not p["metadata"].get("deletionTimestamp")]
        if len(pods) >= count:
            return pods
        assert time.monotonic() < deadline, f"no running pod for {selector} in {ns}"
        time.sleep(0.5)


def wait_event(core, ns: str, pod: str, reason: str, timeout: float = 45) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        evs = json.loads(core.list_namespaced_event(
            ns, field_selector=f"involvedObject.name={pod}", _preload_content=False).data)["items"]
        hit = [e for e in evs if e["reason"] == reason]
        if hit:
            return hit[0]
        assert time.monotonic() < deadline, f"no {reason} event for {pod}: {[e['reason'] for e in evs]}"
        time.sleep(0.5)


def exit_count(core, ns: str, pod: str) -> int:
    evs = json.loads(core.list_namespaced_event(
        ns, field_selector=f"involvedObject.name={pod}", _preload_content=False).data)["items"]
    return sum(e.get("count") or 1 for e in evs if e["reason"] == "LabContainerExited")


def until(fn, timeout: float = 45, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            value = fn()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"condition not met in {timeout}s (last error: {last_exc})")


def netns_exes(netns: str) -> list[str]:
    pids = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True).stdout.split()
    out = []
    for pid in pids:
        try:
            out.append(os.readlink(f"/proc/{pid}/exe"))
        except OSError:
            pass
    return out


def test_goflow2_with_valid_args_really_runs(lab: Lab, k8s, ns):
    core, _ = k8s
    apply(k8s, deployment(ns, "goflow2-ok", {
        "image": GOFLOW2, "args": ["-listen", "netflow://:2055", "-transport", "file", "-format", "json"],
        "ports": [{"name": "metrics", "containerPort": 8080}]}))
    pod = running_pods(core, ns, "app=goflow2-ok")[0]
    ip = pod["status"]["podIP"]
    body = until(lambda: (r := requests.get(f"http://{ip}:8080/metrics", timeout=2)).ok and r.text)
    assert "goflow2_" in body or "go_goroutines" in body
    netns = podspec.pod_netns(ns, pod["metadata"]["name"])
    assert str(lab.bin("goflow2")) in netns_exes(netns)
    wait_event(core, ns, pod["metadata"]["name"], "LabContainerStarted")


def test_plan_args_transport_stdout_fail_like_on_a_real_cluster(lab: Lab, k8s, ns):
    core, _ = k8s
    apply(k8s, deployment(ns, "goflow2-plan", {
        "image": GOFLOW2, "args": ["-listen", "netflow://:2055", "-transport", "stdout", "-format", "json"]}))
    pod = running_pods(core, ns, "app=goflow2-plan")[0]
    name = pod["metadata"]["name"]
    ev = wait_event(core, ns, name, "LabContainerExited")
    assert "exited with code 1" in ev["message"]
    assert "transport error stdout not found" in podrunner.read_logs(lab, ns, name, "goflow2-plan")
    # it keeps being restarted with backoff (restartPolicy Always), never "fixed"
    until(lambda: exit_count(core, ns, name) >= 2, timeout=30)


def test_unknown_image_is_reported_not_run(k8s, ns):
    core, _ = k8s
    apply(k8s, deployment(ns, "nginx", {"image": "nginx:1.27"}))
    pod = running_pods(core, ns, "app=nginx")[0]
    ev = wait_event(core, ns, pod["metadata"]["name"], "LabUnknownImage")
    assert "nginx:1.27" in ev["message"]
    assert not os.path.exists(f"/run/netns/{podspec.pod_netns(ns, pod['metadata']['name'])}")


UDP_SINK = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 2055))
while True:
    data, addr = s.recvfrom(65535)
    print(f"datagram {data.decode(errors='replace')} from {addr[0]}:{addr[1]}", flush=True)
"""


def test_nodeport_udp_forwards_from_router_keeping_the_source(lab: Lab, k8s, ns):
    core, _ = k8s
    apply(k8s, deployment(ns, "udp-sink", {
        "image": "python:3.12-alpine", "command": ["python3", "-c", UDP_SINK],
        "ports": [{"name": "netflow", "containerPort": 2055, "protocol": "UDP"}]}))
    apply(k8s, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "udp-sink", "namespace": ns},
                "spec": {"type": "NodePort", "selector": {"app": "udp-sink"},
                         "ports": [{"name": "netflow", "port": 2055, "targetPort": "netflow", "protocol": "UDP",
                                    "nodePort": NODEPORT_NETFLOW}]}})
    pod = running_pods(core, ns, "app=udp-sink")[0]
    name = pod["metadata"]["name"]
    token = uuid.uuid4().hex[:8]
    send = ("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
            f"s.sendto(b'{token}', ('{NODE_IP}', {NODEPORT_NETFLOW}))")

    def delivered() -> bool:
        subprocess.run(["ip", "netns", "exec", LINUX_ROUTER.name, "python3", "-c", send], check=True)
        return token in podrunner.read_logs(lab, ns, name, "udp-sink")

    until(delivered, timeout=45, interval=1)
    line = [ln for ln in podrunner.read_logs(lab, ns, name, "udp-sink").splitlines() if token in ln][0]
    assert f"from {LINUX_ROUTER.mgmt_ip}:" in line  # plain DNAT: the exporter's real address
    rules = subprocess.run(["nft", "list", "chain", "ip", "netviz_lab", "nodeports"], capture_output=True,
                           text=True, check=True).stdout
    assert f"udp dport {NODEPORT_NETFLOW} dnat to {pod['status']['podIP']}:2055" in rules
    core.delete_namespaced_service("udp-sink", ns)  # free the NodePort for the pipeline's own tests


CARETTA_DS = {
    "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "caretta", "labels": {"app": "caretta"}},
    "spec": {"selector": {"matchLabels": {"app": "caretta"}},
             "template": {"metadata": {"labels": {"app": "caretta"}}, "spec": {
                 "tolerations": [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists",
                                  "effect": "NoSchedule"}],
                 "containers": [{
                     "name": "caretta", "image": "quay.io/groundcover/caretta:v0.0.16",
                     "securityContext": {"privileged": True, "readOnlyRootFilesystem": True},
                     "ports": [{"name": "prom-metrics", "containerPort": 7117, "protocol": "TCP"}],
                     "env": [{"name": "RESOLVE_DNS", "value": "true"}, {"name": "PROMETHEUS_PORT", "value": "7117"},
                             {"name": "PROMETHEUS_ENDPOINT", "value": "/metrics"}, {"name": "POLL_INTERVAL", "value": "5"}],
                     "volumeMounts": [{"name": "proc", "mountPath": "/proc"},
                                      {"name": "debugfs", "mountPath": "/sys/kernel/debug"}]}],
                 "volumes": [{"name": "proc", "hostPath": {"path": "/proc"}},
                             {"name": "debugfs", "hostPath": {"path": "/sys/kernel/debug"}}]}}}}

SERIES = re.compile(r'^caretta_links_observed\{(.*)\} (\S+)$', re.M)


def links(text: str) -> list[tuple[dict, float]]:
    return [(dict(re.findall(r'(\w+)="([^"]*)"', m.group(1))), float(m.group(2))) for m in SERIES.finditer(text)]


def test_caretta_standin_serves_caretta_schema_with_real_demo_traffic(lab: Lab, k8s, ns):
    core, _ = k8s
    apply(k8s, {**CARETTA_DS, "metadata": {**CARETTA_DS["metadata"], "namespace": ns}})
    pods = running_pods(core, ns, "app=caretta", count=lab.nodes)
    by_node = {p["spec"]["nodeName"]: f"http://{p['status']['podIP']}:7117/metrics" for p in pods}
    url = by_node[running_pods(core, "demo", "app=web")[0]["spec"]["nodeName"]]
    client_url = by_node[running_pods(core, "demo", "app=client")[0]["spec"]["nodeName"]]

    def demo_link() -> float:
        text = requests.get(url, timeout=3).text
        values = [v for lb, v in links(text) if lb["client_name"] == "client" and lb["server_name"] == "web"
                  and lb["client_namespace"] == "demo" and lb["server_kind"] == "Deployment" and lb["role"] == "2"]
        return values[0] if values and values[0] > 0 else 0

    first = until(demo_link, timeout=60, interval=1)
    text = requests.get(url, timeout=3).text
    assert 'netviz_lab_standin_info{component="caretta"} 1' in text
    for name in ("caretta_polls_made", "caretta_ebpf_connections_map_size", "caretta_connection_deletions",
                 "caretta_failed_deletions", "caretta_current_loopback_connections"):
        assert re.search(rf"^{name} \d+", text, re.M), name
    for labels, _ in links(text):
        assert sorted(labels) == sorted(LINK_LABELS)
    # client side (the client's node): its sockets point at the web Service's ClusterIP, so Caretta
    # names the server by the Service (kind "Service")
    until(lambda: any(lb["client_name"] == "client" and lb["server_name"] == "web" and lb["server_kind"] == "Service"
                      and lb["role"] == "1" for lb, _ in links(requests.get(client_url, timeout=3).text)))
    until(lambda: demo_link() > first, timeout=30, interval=2)
    # every DaemonSet pod answers (only its own node's data)
    for p in pods:
        assert requests.get(f"http://{p['status']['podIP']}:7117/metrics", timeout=3).ok
