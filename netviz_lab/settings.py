"""The netviz settings that point the pipeline at this lab (`python -m netviz_lab config`)."""
from __future__ import annotations

import yaml

from .lab import Lab
from .prometheus import URL as PROMETHEUS_URL
from .topology import COLLECTOR_NODE, LINUX_ROUTER, NODEPORT_NETFLOW, PFSENSE_ROUTER, REAL_NODES


def settings(lab: Lab) -> dict:
    ssh = lab.ssh_dir
    return {
        "cluster": {
            "kubeconfig": str(lab.pipeline_kubeconfig),
            # Routers send NetFlow to this real node's address; GoFlow2 is pinned to it, and moves to the
            # other real node if this one is lost (the routers follow: no router collector_address).
            "node_address": COLLECTOR_NODE.ip,
            "standby_node_addresses": [n.ip for n in REAL_NODES if n != COLLECTOR_NODE],
        },
        # This kernel has no kprobes (CONFIG_KPROBES unset): the lab runs a stand-in for Caretta (docs/lab.md: Stand-ins).
        "caretta": {"namespace": "caretta", "preflight": "standin"},
        # Named networks for the flow aggregator's network-pair series (dashboard "Traffic between networks").
        "flows": {"networks": {"lan": [f"{r.lan_host.rsplit('.', 1)[0]}.0/24" for r in (LINUX_ROUTER, PFSENSE_ROUTER)],
                               "wan": [f"{r.wan_host.rsplit('.', 1)[0]}.0/24" for r in (LINUX_ROUTER, PFSENSE_ROUTER)]},
                  # the WAN hosts named as a user would in settings; the LAN hosts by their routers (a DHCP
                  # lease, a static mapping), cluster addresses from the API
                  "names": {"hosts": {r.wan_host: f"{r.name}-wan-host" for r in (LINUX_ROUTER, PFSENSE_ROUTER)}}},
        "goflow2": {"namespace": "goflow2", "netflow_node_port": NODEPORT_NETFLOW},
        "prometheus": {
            "url": PROMETHEUS_URL,
            "mode": "file",
            "file": {
                "config_path": str(lab.prometheus_config),
                # Prometheus runs outside the cluster: Kubernetes discovery through its own kubeconfig
                "discovery": "kubernetes",
                "kubernetes_sd_kubeconfig": str(lab.prometheus_kubeconfig),
            },
        },
        "grafana": {"dashboards_namespace": "monitoring"},
        "routers": [
            {
                "name": "edge-linux",
                "host": r.mgmt_ip,
                "platform": r.platform,
                "user": "root",
                "ssh_key_file": str(ssh / "id_ed25519"),
                "known_hosts_file": str(ssh / "known_hosts"),
                "interface": "lan" if r.platform == "pfsense" else r.lan_if,
            } | ({"name": "edge-pfsense"} if r is PFSENSE_ROUTER else {})
            for r in (LINUX_ROUTER, PFSENSE_ROUTER)
        ],
        "checks": {
            # No cluster DNS or egress here: the canary crosses the linux router from a LAN address
            # that only the canary uses, so the check can tell its flow from the background traffic.
            "canary_command": ["ip", "netns", "exec", LINUX_ROUTER.lan_ns, "curl", "-s", "-m", "5", "-o",
                               "/dev/null", "--interface", LINUX_ROUTER.canary_host,
                               f"http://{LINUX_ROUTER.wan_host}:8080/netviz-canary"],
            "canary_source": LINUX_ROUTER.canary_host,
            "canary_destination": LINUX_ROUTER.wan_host,
        },
    }


def render(lab: Lab) -> str:
    return "# netviz settings for the local lab (python -m netviz_lab config)\n" + yaml.safe_dump(
        settings(lab), sort_keys=False)
