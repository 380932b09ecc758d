"""Host-side network guard rails for the lab (component: setup/services/teardown).

- `unreachable 198.18.0.0/15` so lab traffic never leaves through the host's default route
  (the more specific routes of the lab's own veths still win);
- IPv4 forwarding on, only between lab addresses (nft table `netviz_lab`, chain `forward`), so
  routers reach the real nodes' NodePorts and nodes reach each other's pods; the previous sysctl
  value is restored by teardown;
- kwok's unauthenticated kubelet port reachable from loopback only; the API server (listening on
  every address so the real nodes reach it) reachable from loopback and the lab's range only.
NodePorts and ClusterIPs are kube-proxy's, inside each real node's namespace (nodes.py).
"""
from __future__ import annotations

from pathlib import Path

from .lab import Lab
from .proc import run
from .topology import APISERVER_PORT, KAFKA_CONTROLLER_PORT, KAFKA_PORT, KWOK_SERVER_PORT, LAB_RANGE, NFT_TABLE

_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")

RULESET = f"""
table ip {NFT_TABLE} {{
    chain input {{
        type filter hook input priority 0; policy accept;
        # kwok's kubelet endpoint runs `kubectl exec` commands as root with no authentication:
        # only the API server (which connects over loopback) may reach it.
        tcp dport {KWOK_SERVER_PORT} iifname != "lo" drop
        tcp dport {APISERVER_PORT} iifname != "lo" ip saddr != {LAB_RANGE} drop
        # the lab's Kafka broker has no authentication (PLAINTEXT, as a lab's is): the lab's pods only
        tcp dport {{ {KAFKA_PORT}, {KAFKA_CONTROLLER_PORT} }} iifname != "lo" ip saddr != {LAB_RANGE} drop
    }}
    chain forward {{
        type filter hook forward priority 0; policy drop;
        ip saddr {LAB_RANGE} ip daddr {LAB_RANGE} accept
    }}
}}
"""


def setup(lab: Lab) -> None:
    lab.root.mkdir(parents=True, exist_ok=True)
    lab.root.chmod(0o755)
    saved = lab.root / "ip_forward.saved"
    if not saved.exists():
        saved.write_text(_FORWARD.read_text())
    run(["ip", "route", "replace", "unreachable", LAB_RANGE])
    run(["nft", "delete", "table", "ip", NFT_TABLE], check=False)
    run(["nft", "-f", "-"], input=RULESET)
    _FORWARD.write_text("1\n")


LOSSY_CHAIN = "lossy"  # in the lab's table: gone with it at teardown


def lose_forwarded_udp(iif: str, port: int, keep_one_in: int) -> None:
    """Drop UDP to `port` arriving on host interface `iif` on its way through the host, all but one in
    `keep_one_in`: a lossy path between a router and the collector. The sender sees nothing (its
    sendto succeeds), as with a congested or policed link."""
    run(["nft", "-f", "-"], input=(
        f"add chain ip {NFT_TABLE} {LOSSY_CHAIN} {{ type filter hook forward priority -10; policy accept; }}\n"
        f"add rule ip {NFT_TABLE} {LOSSY_CHAIN} iifname \"{iif}\" udp dport {port} numgen inc mod {keep_one_in} != 0 drop\n"))


def stop_losing() -> None:
    run(["nft", "flush", "chain", "ip", NFT_TABLE, LOSSY_CHAIN], check=False)
    run(["nft", "delete", "chain", "ip", NFT_TABLE, LOSSY_CHAIN], check=False)


def services(lab: Lab) -> list:
    return []


def teardown(lab: Lab) -> None:
    run(["nft", "delete", "table", "ip", NFT_TABLE], check=False)
    run(["ip", "route", "del", "unreachable", LAB_RANGE], check=False)
    saved = lab.root / "ip_forward.saved"
    if saved.exists():
        _FORWARD.write_text(saved.read_text())
        saved.unlink()
