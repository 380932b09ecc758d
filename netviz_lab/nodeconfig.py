"""What each real node's daemons are given: containerd's config, the CNI network, the kubelet's and
kube-proxy's configuration. Pure functions of (node, paths), so they are unit-tested without root.

Why the non-default lines (see ../shared/facts/real-node.md):
- containerd `restrict_oom_score_adj`: root here lacks CAP_SYS_RESOURCE, so the pause container's
  oom_score_adj -998 cannot be written; without it runc fails with "can't get final child's PID".
- containerd `netns_mounts_under_state_dir` and its own root/state/socket/runc root: nothing of a node
  lives outside the lab's directory, so `down` can remove it all without guessing what is ours.
- kubelet `cgroupRoot` per node: two kubelets on one machine must not share a pod cgroup tree.
- kubelet `failCgroupV1: false`: this machine is cgroup v1 hybrid (1.34 still supports it with this).
- kube-proxy `conntrack.maxPerCore: 0`: nf_conntrack_max is machine-wide; leave it alone.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .topology import POD_CIDR, REAL_NODE_LABEL, RealNode

PAUSE_IMAGE = "registry.k8s.io/pause:3.10"
CNI_BIN_DIR = "/usr/lib/cni"  # Debian's containernetworking-plugins
CLUSTER_DOMAIN = "cluster.local"
KUBE_PROXY_HEALTHZ_PORT = 10256
KUBELET_HEALTHZ_PORT = 10248


@dataclass(frozen=True)
class NodePaths:
    """Where one node keeps its files (all under the lab root)."""

    dir: Path

    @property
    def containerd_root(self) -> Path:
        return self.dir / "containerd" / "root"

    @property
    def containerd_state(self) -> Path:
        return self.dir / "containerd" / "state"

    @property
    def containerd_socket(self) -> Path:
        return self.dir / "containerd" / "containerd.sock"

    @property
    def containerd_config(self) -> Path:
        return self.dir / "containerd" / "config.toml"

    @property
    def cni_conf_dir(self) -> Path:
        return self.dir / "cni" / "net.d"

    @property
    def cni_ipam_dir(self) -> Path:
        return self.dir / "cni" / "ipam"

    @property
    def kubelet_root(self) -> Path:
        return self.dir / "kubelet"

    @property
    def kubelet_config(self) -> Path:
        return self.dir / "kubelet-config.yaml"

    @property
    def kubelet_kubeconfig(self) -> Path:
        return self.dir / "kubelet.kubeconfig"

    @property
    def kube_proxy_config(self) -> Path:
        return self.dir / "kube-proxy-config.yaml"

    @property
    def kube_proxy_kubeconfig(self) -> Path:
        return self.dir / "kube-proxy.kubeconfig"

    @property
    def pod_logs(self) -> Path:
        return self.dir / "pod-logs"


def cgroup_root(node: RealNode) -> str:
    """The node's own cgroup parent in every v1 hierarchy (kubelet requires it to exist)."""
    return f"/netviz-lab-{node.name}"


def containerd_config(node: RealNode, p: NodePaths) -> str:
    """containerd 1.6 config (version 2), TOML written by hand: the file is small and fixed."""
    q = json.dumps  # TOML basic strings accept JSON string escapes
    return f"""version = 2
root = {q(str(p.containerd_root))}
state = {q(str(p.containerd_state))}
oom_score = 0
# Only what the CRI needs: no tracing, no other snapshotters to probe.
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = {q(str(p.containerd_socket))}

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = {q(PAUSE_IMAGE)}
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_unprivileged_ports = false
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = {q(CNI_BIN_DIR)}
    conf_dir = {q(str(p.cni_conf_dir))}
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = {q(str(p.containerd_state / "runc"))}
  # No registry is reachable: images are imported locally (netviz_lab/images/); a pull of anything
  # else fails fast with ErrImagePull, as on a cluster that cannot reach its registry.
"""


def cni_conflist(node: RealNode, p: NodePaths) -> dict:
    """bridge + host-local + portmap on the node's pod range; no masquerade (source addresses are kept)."""
    return {
        "cniVersion": "1.0.0",
        "name": "netviz-lab",
        "plugins": [
            {"type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": False, "hairpinMode": True,
             "ipam": {"type": "host-local", "dataDir": str(p.cni_ipam_dir),
                      "ranges": [[{"subnet": node.pod_cidr, "gateway": node.pod_gateway}]],
                      "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def kubelet_config(node: RealNode, p: NodePaths, ca: Path, serving_cert: Path, serving_key: Path) -> dict:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": node.ip,
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": node.ip,
        "healthzPort": KUBELET_HEALTHZ_PORT,
        "tlsCertFile": str(serving_cert),
        "tlsPrivateKeyFile": str(serving_key),
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(ca)}},
        "authorization": {"mode": "Webhook"},
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": cgroup_root(node),
        "failCgroupV1": False,
        "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{p.containerd_socket}",
        "enforceNodeAllocatable": [],
        "resolvConf": "",  # no cluster DNS in the lab; pods get no resolv.conf entries from the host
        "clusterDomain": CLUSTER_DOMAIN,
        "podLogsDir": str(p.pod_logs),
        "serializeImagePulls": False,
        "imageGCHighThresholdPercent": 100,  # images cannot be pulled back: never collect them
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "2%", "imagefs.available": "2%"},
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        "registerNode": True,
        "nodeStatusReportFrequency": "10s",
        "shutdownGracePeriod": "0s",
        "localStorageCapacityIsolation": True,
    }


def kube_proxy_config(node: RealNode, p: NodePaths) -> dict:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "nftables",
        "clientConnection": {"kubeconfig": str(p.kube_proxy_kubeconfig)},
        "hostnameOverride": node.name,
        "bindAddress": node.ip,
        "healthzBindAddress": f"{node.ip}:{KUBE_PROXY_HEALTHZ_PORT}",
        "metricsBindAddress": "127.0.0.1:10249",
        "clusterCIDR": POD_CIDR,
        "nodePortAddresses": [f"{node.ip}/32"],
        "conntrack": {"maxPerCore": 0},
    }


def kubelet_args(node: RealNode, p: NodePaths, kubelet_bin: Path) -> list[str]:
    return [str(kubelet_bin), f"--config={p.kubelet_config}", f"--kubeconfig={p.kubelet_kubeconfig}",
            f"--hostname-override={node.name}", f"--node-ip={node.ip}", f"--root-dir={p.kubelet_root}",
            f"--cert-dir={p.dir / 'kubelet-pki'}", f"--node-labels={REAL_NODE_LABEL[0]}={REAL_NODE_LABEL[1]}", "--v=1"]
