"""The lab's fixed network plan. Every address lives in 198.18.0.0/15 (RFC 2544 test range).

    host (root netns)
      nvz-mgmt   198.18.0.1/24  <-> nvz-router:mgmt0   198.18.0.2/24   (SSH, NetFlow export)
      nvz-pfmgmt 198.18.5.1/24  <-> nvz-pfsense:mgmt0  198.18.5.2/24
      198.18.0.1 is also every kwok node's InternalIP: NodePorts are DNATed there.
      pod veths nvzp<hash> (169.254.1.1 host side) <-> pod netns eth0 (pod IP from POD_CIDR)
    nvz-lan  eth0 198.18.1.10 <-> nvz-router lan0 198.18.1.1 | wan0 198.18.2.1 <-> nvz-wan eth0 198.18.2.10
    nvz-pflan eth0 198.18.3.10 <-> nvz-pfsense vtnet1 198.18.3.1 | vtnet0 198.18.4.1 <-> nvz-pfwan eth0 198.18.4.10
"""
from __future__ import annotations

from dataclasses import dataclass

LAB_RANGE = "198.18.0.0/15"
NODE_IP = "198.18.0.1"  # host side of the management link; InternalIP of every kwok node
POD_CIDR = "198.19.0.0/17"
SERVICE_CIDR = "198.19.128.0/20"
POD_GATEWAY = "169.254.1.1"  # host side of every pod veth (calico-style point-to-point)

APISERVER_PORT = 6443
ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380
KWOK_SERVER_PORT = 10250
PROMETHEUS_PORT = 9090
NODEPORT_NETFLOW = 32055


@dataclass(frozen=True)
class Router:
    """A router namespace with a management link to the host and a lan/wan pair behind it."""

    name: str  # netns name
    platform: str  # what the pipeline should detect: "linux" or "pfsense"
    host_if: str  # host end of the management veth
    host_ip: str  # host address on the management link
    mgmt_ip: str  # router address on the management link (SSH target, NetFlow source)
    lan_ns: str
    lan_if: str  # router's LAN interface (what softflowd watches)
    lan_gw: str
    lan_host: str
    wan_ns: str
    wan_if: str
    wan_gw: str
    wan_host: str
    canary_host: str  # a second LAN address used only by the pipeline's canary check
    prefix: int = 24


LINUX_ROUTER = Router(
    name="nvz-router", platform="linux", host_if="nvz-mgmt", host_ip=NODE_IP, mgmt_ip="198.18.0.2",
    lan_ns="nvz-lan", lan_if="lan0", lan_gw="198.18.1.1", lan_host="198.18.1.10",
    wan_ns="nvz-wan", wan_if="wan0", wan_gw="198.18.2.1", wan_host="198.18.2.10", canary_host="198.18.1.20",
)
PFSENSE_ROUTER = Router(
    name="nvz-pfsense", platform="pfsense", host_if="nvz-pfmgmt", host_ip="198.18.5.1", mgmt_ip="198.18.5.2",
    lan_ns="nvz-pflan", lan_if="vtnet1", lan_gw="198.18.3.1", lan_host="198.18.3.10",
    wan_ns="nvz-pfwan", wan_if="vtnet0", wan_gw="198.18.4.1", wan_host="198.18.4.10", canary_host="198.18.3.20",
)
ROUTERS = (LINUX_ROUTER, PFSENSE_ROUTER)

# Every network namespace, host interface and nft table the lab may create: `down` removes exactly these
# (plus pod namespaces/veths, which carry the prefixes below), so it works even after a crashed `up`.
NETNS_PREFIX = "nvz-"
POD_NETNS_PREFIX = "nvz-pod-"
POD_VETH_PREFIX = "nvzp"
NFT_TABLE = "netviz_lab"
