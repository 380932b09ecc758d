"""The real nodes' daemon configuration (pure rendering; the lab tests run it for real)."""
from __future__ import annotations

import ipaddress
from pathlib import Path

try:
    import tomllib  # novm
except ModuleNotFoundError:  # Python 3.10: tomli, the same parser (a dagster dependency)
    import tomli as tomllib

from netviz_lab import nodeconfig
from netviz_lab.nodeconfig import NodePaths
from netviz_lab.topology import KWOK_POD_CIDR, LAB_RANGE, POD_CIDR, REAL_NODES, SERVICE_CIDR


def _paths(tmp_path: Path, node) -> NodePaths:
    return NodePaths(tmp_path / node.name)


def test_containerd_config_keeps_everything_under_the_node_dir(tmp_path):
    for node in REAL_NODES:
        p = _paths(tmp_path, node)
        cfg = tomllib.loads(nodeconfig.containerd_config(node, p))
        cri = cfg["plugins"]["io.containerd.grpc.v1.cri"]
        assert cri["restrict_oom_score_adj"] is True  # no CAP_SYS_RESOURCE here: runc fails without it
        assert cri["netns_mounts_under_state_dir"] is True
        assert cri["sandbox_image"] == nodeconfig.PAUSE_IMAGE
        runc = cri["containerd"]["runtimes"]["runc"]["options"]
        for path in (cfg["root"], cfg["state"], cfg["grpc"]["address"], cri["cni"]["conf_dir"], runc["Root"]):
            assert Path(path).is_relative_to(p.dir), path
        assert runc["SystemdCgroup"] is False


def test_two_nodes_share_no_path_cgroup_address_or_pod_range(tmp_path):
    a, b = REAL_NODES
    pa, pb = _paths(tmp_path, a), _paths(tmp_path, b)
    assert not pa.dir.is_relative_to(pb.dir) and not pb.dir.is_relative_to(pa.dir)
    assert nodeconfig.cgroup_root(a) != nodeconfig.cgroup_root(b)
    assert len({a.ip, b.ip, a.host_ip, b.host_ip}) == 4 and a.netns != b.netns and a.host_if != b.host_if
    ranges = [ipaddress.ip_network(n.pod_cidr) for n in REAL_NODES]
    assert not ranges[0].overlaps(ranges[1])
    for r in ranges:  # inside the cluster's pod range, clear of kwok's and of the Service range
        assert r.subnet_of(ipaddress.ip_network(POD_CIDR))
        assert not r.overlaps(ipaddress.ip_network(KWOK_POD_CIDR))
        assert not r.overlaps(ipaddress.ip_network(SERVICE_CIDR))
        assert r.subnet_of(ipaddress.ip_network(LAB_RANGE))


def test_cni_keeps_source_addresses_and_has_its_own_ipam_store(tmp_path):
    node = REAL_NODES[1]
    p = _paths(tmp_path, node)
    conf = nodeconfig.cni_conflist(node, p)
    bridge = conf["plugins"][0]
    assert bridge["type"] == "bridge" and bridge["ipMasq"] is False and bridge["isGateway"] is True
    assert bridge["ipam"]["dataDir"] == str(p.cni_ipam_dir)  # not /var/lib/cni shared by both nodes
    assert bridge["ipam"]["ranges"] == [[{"subnet": node.pod_cidr, "gateway": node.pod_gateway}]]
    assert [pl["type"] for pl in conf["plugins"]] == ["bridge", "portmap"]


def test_kubelet_config(tmp_path):
    node = REAL_NODES[0]
    p = _paths(tmp_path, node)
    cfg = nodeconfig.kubelet_config(node, p, Path("/ca.crt"), Path("/k.crt"), Path("/k.key"))
    assert cfg["cgroupDriver"] == "cgroupfs" and cfg["failCgroupV1"] is False
    assert cfg["cgroupRoot"] == nodeconfig.cgroup_root(node)
    assert cfg["containerRuntimeEndpoint"] == f"unix://{p.containerd_socket}"
    assert cfg["readOnlyPort"] == 0 and cfg["authentication"]["anonymous"]["enabled"] is False
    assert cfg["authorization"]["mode"] == "Webhook"
    assert cfg["address"] == node.ip
    args = nodeconfig.kubelet_args(node, p, Path("/bin/kubelet"))
    assert f"--node-ip={node.ip}" in args and f"--hostname-override={node.name}" in args
    assert f"--root-dir={p.kubelet_root}" in args


def test_kube_proxy_config(tmp_path):
    node = REAL_NODES[0]
    cfg = nodeconfig.kube_proxy_config(node, _paths(tmp_path, node))
    assert cfg["mode"] == "nftables" and cfg["hostnameOverride"] == node.name
    assert cfg["nodePortAddresses"] == [f"{node.ip}/32"] and cfg["clusterCIDR"] == POD_CIDR
    assert cfg["conntrack"]["maxPerCore"] == 0  # nf_conntrack_max is machine-wide: leave it alone
