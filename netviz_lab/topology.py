"""The lab's fixed network plan. Every address lives in 198.18.0.0/15 (RFC 2544 test range).

    host (root netns)
      nvz-mgmt   198.18.0.1/24  <-> nvz-router:mgmt0   198.18.0.2/24   (SSH, NetFlow export)
      nvz-pfmgmt 198.18.5.1/24  <-> nvz-pfsense:mgmt0  198.18.5.2/24
      198.18.0.1 is also every kwok node's InternalIP (kwok pods run nothing) and where the API server
      is reached from the real nodes and pods (the `kubernetes` Service endpoint).
      nvz-n1     198.18.6.1/24  <-> nvz-node-1:eth0     198.18.6.2/24  real node netviz-node-1, pods 198.19.64.0/24
      nvz-n2     198.18.7.1/24  <-> nvz-node-2:eth0     198.18.7.2/24  real node netviz-node-2, pods 198.19.65.0/24
      (inside each node namespace: containerd, kubelet, kube-proxy; CNI bridge cni0 to its pods)
    nvz-lan  eth0 198.18.1.10 <-> nvz-router lan0 198.18.1.1 | wan0 198.18.2.1 <-> nvz-wan eth0 198.18.2.10
    nvz-pflan eth0 198.18.3.10 <-> nvz-pfsense vtnet1 198.18.3.1 | vtnet0 198.18.4.1 <-> nvz-pfwan eth0 198.18.4.10

Names the routers know for their LAN hosts (what the pipeline reads, routers/hostnames.py): the Linux
router runs dnsmasq as the LAN's DHCP server and its LAN host a real DHCP client (busybox udhcpc, sending
its host name), so dnsmasq's lease file names 198.18.1.10; the pfSense router has a DHCP static mapping
for 198.18.3.10 in config.xml, as a person adds one.

The Service range is routed to real node 1 (the host routes SERVICE_CIDR to it, as a user routes a
cluster's Service range to a node or a BGP speaker announces it), so the LAN hosts reach the demo web
Service's fixed ClusterIP through their router: softflowd sees LAN host -> Service flows, and kube-proxy
on node 1 forwards them (masqueraded: the source is outside clusterCIDR) to the web pod.
"""
from __future__ import annotations

from dataclasses import dataclass

LAB_RANGE = "198.18.0.0/15"
NODE_IP = "198.18.0.1"  # host side of the management link; InternalIP of every kwok node
POD_CIDR = "198.19.0.0/17"  # the cluster's pod range (kube-proxy's clusterCIDR)
KWOK_POD_CIDR = "198.19.0.0/18"  # kwok's simulated pods (addresses only: nothing runs behind them)
SERVICE_CIDR = "198.19.128.0/20"

APISERVER_PORT = 6443
ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380
KWOK_SERVER_PORT = 10250
PROMETHEUS_PORT = 9090
# The lab's Kafka broker (netviz_lab/kafka.py) runs beside the cluster on NODE_IP, where pods on the real
# nodes reach the host (as they reach the API server), like a user's Kafka outside the cluster.
KAFKA_PORT = 9092
KAFKA_CONTROLLER_PORT = 9093
KAFKA_BOOTSTRAP = f"{NODE_IP}:{KAFKA_PORT}"
# Its secured listener, as production brokers run: SASL (SCRAM-SHA-512 or PLAIN) over TLS, with a
# certificate from the broker's own CA (not the cluster's), for user KAFKA_SASL_USER.
KAFKA_SECURE_PORT = 9094
KAFKA_SECURE_BOOTSTRAP = f"{NODE_IP}:{KAFKA_SECURE_PORT}"
KAFKA_SASL_USER = "netviz"
# The lab's PostgreSQL (netviz_lab/postgres.py), beside the cluster like Kafka: Dagster's storage.
POSTGRES_PORT = 5432
NODEPORT_NETFLOW = 32055
DEMO_WEB_CLUSTER_IP = "198.19.128.80"  # netviz_lab/demo/10-web.yaml: fixed, so the LAN hosts' traffic can aim at it
DEMO_WEB_PORT = 8080


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
    lan_host_name: str  # the name the router knows the LAN host by (DHCP lease or static mapping)
    prefix: int = 24


LINUX_ROUTER = Router(
    name="nvz-router", platform="linux", host_if="nvz-mgmt", host_ip=NODE_IP, mgmt_ip="198.18.0.2",
    lan_ns="nvz-lan", lan_if="lan0", lan_gw="198.18.1.1", lan_host="198.18.1.10",
    wan_ns="nvz-wan", wan_if="wan0", wan_gw="198.18.2.1", wan_host="198.18.2.10", canary_host="198.18.1.20",
    lan_host_name="nvz-lan-pc",
)
PFSENSE_ROUTER = Router(
    name="nvz-pfsense", platform="pfsense", host_if="nvz-pfmgmt", host_ip="198.18.5.1", mgmt_ip="198.18.5.2",
    lan_ns="nvz-pflan", lan_if="vtnet1", lan_gw="198.18.3.1", lan_host="198.18.3.10",
    wan_ns="nvz-pfwan", wan_if="vtnet0", wan_gw="198.18.4.1", wan_host="198.18.4.10", canary_host="198.18.3.20",
    lan_host_name="nvz-pflan-nas",
)
ROUTERS = (LINUX_ROUTER, PFSENSE_ROUTER)

@dataclass(frozen=True)
class RealNode:
    """A real Kubernetes node: a network namespace running containerd, a kubelet and kube-proxy.

    Both real nodes share this machine's kernel, cgroups and mounts; each has its own network
    namespace (so its kube-proxy rules, CNI bridge and ports are its own), cgroup root, containerd
    root/state/socket and kubelet root directory."""

    name: str  # Kubernetes node name
    netns: str
    host_if: str  # host end of the node's link
    host_ip: str
    ip: str  # the node's InternalIP: kubelet, NodePorts
    pod_cidr: str

    @property
    def pod_gateway(self) -> str:
        return self.pod_cidr.rsplit(".", 1)[0] + ".1"


REAL_NODES = (
    RealNode("netviz-node-1", "nvz-node-1", "nvz-n1", "198.18.6.1", "198.18.6.2", "198.19.64.0/24"),
    RealNode("netviz-node-2", "nvz-node-2", "nvz-n2", "198.18.7.1", "198.18.7.2", "198.19.65.0/24"),
)
# Routers send NetFlow to this node's NodePort; the GoFlow2 pod is pinned to it (externalTrafficPolicy Local).
COLLECTOR_NODE = REAL_NODES[0]
SERVICE_GATEWAY = REAL_NODES[0]  # where the host routes SERVICE_CIDR (see the module doc)
# Every real node's kubelet registers with it; lab workloads select it (kwok nodes run nothing).
REAL_NODE_LABEL = ("netviz.io/lab-node", "real")

# Every network namespace, host interface and nft table the lab may create: `down` removes exactly these
# (plus pod namespaces/veths, which carry the prefixes below), so it works even after a crashed `up`.
NETNS_PREFIX = "nvz-"
NFT_TABLE = "netviz_lab"
