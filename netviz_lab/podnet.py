"""Pod network namespaces, the way a Calico-style CNI plugin wires them (the pod runner is our "CNI").

Each pod gets netns `nvz-pod-<hash>` with eth0 = pod IP/32 and only `198.18.0.0/15 via 169.254.1.1 dev
eth0 onlink` (no default route: lab traffic stays in the lab). The host end `nvzp<hash>` carries
169.254.1.1/32 and the host routes `<podIP>/32 dev nvzp<hash> src 198.18.0.1`, so Prometheus on the
host scrapes podIP:port directly and pods reach each other, the routers and NodePorts through the host.
IPv6 is off in the pod (its link-local chatter would show up as flows).
"""
from __future__ import annotations

from .proc import kill_netns_processes, list_netns, netns_exists, run
from .topology import LAB_RANGE, NODE_IP, POD_GATEWAY, POD_NETNS_PREFIX, POD_VETH_PREFIX


def setup_pod_network(netns: str, veth: str, pod_ip: str) -> None:
    """Idempotent: recreates the namespace if it exists with other wiring."""
    teardown_pod_network(netns, veth, pod_ip)
    run(["ip", "netns", "add", netns])
    for key in ("all", "default"):
        run(["sysctl", "-qw", f"net.ipv6.conf.{key}.disable_ipv6=1"], netns=netns)
    run(["ip", "link", "set", "lo", "up"], netns=netns)
    run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns])
    run(["sysctl", "-qw", f"net.ipv6.conf.{veth}.disable_ipv6=1"])
    run(["ip", "addr", "add", f"{POD_GATEWAY}/32", "dev", veth])
    run(["ip", "link", "set", veth, "up"])
    run(["ip", "addr", "add", f"{pod_ip}/32", "dev", "eth0"], netns=netns)
    run(["ip", "link", "set", "eth0", "up"], netns=netns)
    run(["ip", "route", "add", LAB_RANGE, "via", POD_GATEWAY, "dev", "eth0", "onlink"], netns=netns)
    run(["ip", "route", "replace", f"{pod_ip}/32", "dev", veth, "src", NODE_IP])


def teardown_pod_network(netns: str, veth: str, pod_ip: str | None = None) -> None:
    """Stop what still runs in the namespace, then delete it, its veth and host route (all best effort)."""
    if netns_exists(netns):
        kill_netns_processes(netns)
        run(["ip", "netns", "del", netns], check=False)
    run(["ip", "link", "del", veth], check=False)  # also removes the route through it
    if pod_ip:
        run(["ip", "route", "del", f"{pod_ip}/32", "dev", veth], check=False)


def teardown_all() -> None:
    """State-free cleanup of every pod namespace and pod veth (after a crash too)."""
    for ns in list_netns(POD_NETNS_PREFIX):
        kill_netns_processes(ns)
        run(["ip", "netns", "del", ns], check=False)
    res = run(["ip", "-o", "link", "show"], check=False)
    for line in res.stdout.splitlines():
        parts = line.split(":", 2)
        if len(parts) > 1:
            name = parts[1].strip().split("@", 1)[0]
            if name.startswith(POD_VETH_PREFIX):
                run(["ip", "link", "del", name], check=False)
