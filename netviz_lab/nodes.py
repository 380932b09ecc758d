"""Lab component: real Kubernetes nodes (containerd + runc, a kubelet, kube-proxy) beside the kwok nodes.

Each real node (topology.REAL_NODES) is a network namespace joined to the host by a veth, running its
own containerd (root, state, socket, runc root under lab.root/nodes/<name>), its kubelet (own root
directory and cgroup root) and kube-proxy in nftables mode (its rules live in the node's namespace). The
CNI bridge `cni0` with host-local addresses from the node's pod range connects its pods; the host routes
each pod range to its node, so Prometheus on the host scrapes pod addresses and the routers reach the
NodePort on the node address. Every netviz workload runs here; kwok nodes only simulate (scale tests).

Daemons are started with `nsenter --net=...` rather than `ip netns exec`: the latter also gives the
process a private mount namespace, and the kubelet's volume mounts must be visible to containerd.

The kubelet rewrites a few machine-wide kernel settings (vm.overcommit_memory, kernel.panic, ...); their
previous values are saved at setup and restored by teardown.

teardown() needs no state: it kills what runs in the nodes' cgroups and namespaces, unmounts everything
under lab.root/nodes, deletes the namespaces (and with them bridges, veths and kube-proxy's tables),
the cgroup trees and the node objects' leftovers on the host.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import time
import urllib.error
from pathlib import Path

import yaml

from . import cluster, images, nodeconfig
from .lab import Lab
from .nodeconfig import NodePaths
from .proc import kill_netns_processes, netns_exists, pid_cmdline, run
from .supervisor import Service
from .topology import APISERVER_PORT, LAB_RANGE, NODE_IP, REAL_NODES, SERVICE_CIDR, SERVICE_GATEWAY, RealNode

CGROUP_FS = Path("/sys/fs/cgroup")
# Outside the lab root, by containerd's and libcni's design: the runc shims' sockets (named by a hash of
# containerd's address, namespace and task id) and the CNI result cache (named by network and id).
SHIM_SOCKETS = Path("/run/containerd/s")
CNI_CACHE = Path("/var/lib/cni/results")
# What the kubelet sets on start (pkg/kubelet/cm setupKernelTunables) when protectKernelDefaults is off.
KERNEL_TUNABLES = ("vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
                   "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes")
DEMO_DIR = Path(__file__).with_name("demo")


def nodes_dir(lab: Lab) -> Path:
    return lab.root / "nodes"


def paths(lab: Lab, node: RealNode) -> NodePaths:
    return NodePaths(nodes_dir(lab) / node.name)


def nsenter(node: RealNode, argv: list[str]) -> list[str]:
    return ["nsenter", f"--net=/run/netns/{node.netns}", *argv]


def ctr(lab: Lab, node: RealNode, *args: str) -> list[str]:
    return ["ctr", "--address", str(paths(lab, node).containerd_socket), "--namespace", "k8s.io", *args]


# -- setup ----------------------------------------------------------------------------------------------
def setup(lab: Lab) -> None:
    missing = [str(lab.bin(t)) for t in ("kubelet", "kube-proxy") if not lab.bin(t).exists()]
    if missing:
        raise FileNotFoundError(f"missing binaries {missing}: run `make lab-deps`")
    images.ensure_images(lab, build_on_demand=False)  # cached by version: a no-op after `make lab-deps`
    _save_kernel_tunables(lab)
    b = cluster.bundle(lab)
    for node in REAL_NODES:
        _network(node)
        _cgroups(node)
        p = paths(lab, node)
        for d in (p.dir, p.cni_conf_dir, p.cni_ipam_dir, p.kubelet_root, p.pod_logs, p.containerd_root,
                  p.containerd_state):
            d.mkdir(parents=True, exist_ok=True)
        p.dir.chmod(0o700)
        p.containerd_config.write_text(nodeconfig.containerd_config(node, p))
        (p.cni_conf_dir / "10-netviz-lab.conflist").write_text(json.dumps(nodeconfig.cni_conflist(node, p), indent=1))
        serving = b[f"kubelet-{node.name}"]
        _write_yaml(p.kubelet_config, nodeconfig.kubelet_config(node, p, b.ca.cert, serving.cert, serving.key))
        _write_yaml(p.kube_proxy_config, nodeconfig.kube_proxy_config(node, p))
        server = f"https://{NODE_IP}:{APISERVER_PORT}"
        cluster.write_kubeconfig(p.kubelet_kubeconfig, b.ca.cert, b[f"node-{node.name}"], f"system:node:{node.name}",
                                 server=server)
        cluster.write_kubeconfig(p.kube_proxy_kubeconfig, b.ca.cert, b["kube-proxy"], "system:kube-proxy",
                                 server=server)


def _write_yaml(path: Path, doc: dict) -> None:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def _network(node: RealNode) -> None:
    """The node's namespace and its link to the host (idempotent: rebuilt from scratch)."""
    _delete_network(node)
    run(["ip", "netns", "add", node.netns])
    ns = node.netns
    for key in ("all", "default"):
        run(["sysctl", "-qw", f"net.ipv6.conf.{key}.disable_ipv6=1"], netns=ns)
    run(["sysctl", "-qw", "net.ipv4.ip_forward=1"], netns=ns)
    # Pods on one bridge reaching a Service backed by a pod on the same bridge need the bridged
    # reply to pass conntrack (kube-proxy's DNAT); kubeadm requires the same setting.
    run(["sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1"], netns=ns)
    run(["ip", "link", "set", "lo", "up"], netns=ns)
    run(["ip", "link", "add", node.host_if, "type", "veth", "peer", "name", "eth0", "netns", ns])
    run(["sysctl", "-qw", f"net.ipv6.conf.{node.host_if}.disable_ipv6=1"])
    run(["ip", "addr", "add", f"{node.host_ip}/24", "dev", node.host_if])
    run(["ip", "link", "set", node.host_if, "up"])
    run(["ip", "addr", "add", f"{node.ip}/24", "dev", "eth0"], netns=ns)
    run(["ip", "link", "set", "eth0", "up"], netns=ns)
    # Only the lab's range leaves the node: no default route, so nothing reaches the outside.
    run(["ip", "route", "add", LAB_RANGE, "via", node.host_ip, "dev", "eth0"], netns=ns)
    run(["ip", "route", "replace", node.pod_cidr, "via", node.ip, "dev", node.host_if])
    if node == SERVICE_GATEWAY:  # the Service range through one node, as a user's static route (topology.py)
        run(["ip", "route", "replace", SERVICE_CIDR, "via", node.ip, "dev", node.host_if])


def _delete_network(node: RealNode) -> None:
    if netns_exists(node.netns):
        kill_netns_processes(node.netns)
        run(["ip", "netns", "del", node.netns], check=False)
    run(["ip", "link", "del", node.host_if], check=False)  # also removes the pod-range route through it


def cgroup_dirs(node: RealNode) -> list[Path]:
    """The node's cgroup root in every v1 hierarchy (the kubelet refuses a root that is missing in one)."""
    root = nodeconfig.cgroup_root(node).lstrip("/")
    try:
        hierarchies = sorted(p for p in CGROUP_FS.iterdir() if p.is_dir() and p.name != "unified")
    except FileNotFoundError:
        return []
    return [h / root for h in hierarchies if (h / "cgroup.procs").exists()]


def _cgroups(node: RealNode) -> None:
    for d in cgroup_dirs(node):
        d.mkdir(exist_ok=True)
        if d.parent.name == "cpuset":  # a new v1 cpuset is empty: no task may join until it has cpus/mems
            for f in ("cpuset.cpus", "cpuset.mems"):
                if not (d / f).read_text().strip():
                    (d / f).write_text((d.parent / f).read_text())


def _save_kernel_tunables(lab: Lab) -> None:
    saved = lab.root / "kernel-tunables.saved.json"
    if saved.exists():  # an earlier `up` saved the machine's own values: keep those
        return
    values = {}
    for t in KERNEL_TUNABLES:
        try:
            values[t] = (Path("/proc/sys") / t).read_text().strip()
        except OSError:
            pass
    saved.write_text(json.dumps(values))


def _restore_kernel_tunables(lab: Lab) -> None:
    saved = lab.root / "kernel-tunables.saved.json"
    try:
        values = json.loads(saved.read_text())
    except (OSError, ValueError):
        return
    for t, v in values.items():
        try:
            (Path("/proc/sys") / t).write_text(v + "\n")
        except OSError:
            pass
    saved.unlink()


# -- services -------------------------------------------------------------------------------------------
def services(lab: Lab) -> list[Service]:
    out: list[Service] = []
    for node in REAL_NODES:
        out += _node_services(lab, node)
    out[-1].after_ready = _chain(out[-1].after_ready, lambda: _after_nodes(lab))
    return out


def _chain(*fns):
    def run_all() -> None:
        for fn in fns:
            if fn is not None:
                fn()
    return run_all


def _node_services(lab: Lab, node: RealNode) -> list[Service]:
    p = paths(lab, node)

    def containerd_ready() -> bool:
        return p.containerd_socket.exists() and run(ctr(lab, node, "version"), check=False, timeout=5).returncode == 0

    def import_images() -> None:
        wanted = [i for i in images.ensure_images(lab, build_on_demand=False) if not i.on_demand]
        images.import_images(str(p.containerd_socket), wanted)

    def kube_proxy_ready() -> bool:
        body = cluster.http_get(f"http://{node.ip}:{nodeconfig.KUBE_PROXY_HEALTHZ_PORT}/healthz")
        return json.loads(body).get("lastUpdated") is not None

    return [
        Service(name=f"containerd-{node.name}",
                argv=nsenter(node, ["containerd", "--config", str(p.containerd_config), "--log-level", "warn"]),
                ready=containerd_ready, ready_timeout=30, after_ready=import_images),
        Service(name=f"kubelet-{node.name}",
                argv=nsenter(node, nodeconfig.kubelet_args(node, p, lab.bin("kubelet"))),
                ready=lambda: node_ready(lab, node.name), ready_timeout=90),
        Service(name=f"kube-proxy-{node.name}",
                argv=nsenter(node, [str(lab.bin("kube-proxy")), f"--config={p.kube_proxy_config}", "--v=1"]),
                ready=kube_proxy_ready, ready_timeout=60),
    ]


def import_on_demand_images(lab: Lab) -> list[str]:
    """Import the images only some tests need (Prometheus and the Operator) into every real node;
    idempotent. Returns what was imported."""
    wanted = [i for i in images.ensure_images(lab) if i.on_demand]
    return [ref for node in REAL_NODES for ref in images.import_images(str(paths(lab, node).containerd_socket), wanted)]


def node_ready(lab: Lab, name: str) -> bool:
    b = cluster.bundle(lab)
    try:
        node = json.loads(cluster.http_get(f"{cluster.server_url()}/api/v1/nodes/{name}",
                                           cluster.tls_context(b.ca.cert, b["admin"])))
    except urllib.error.HTTPError:
        return False
    conds = (node.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)


def _after_nodes(lab: Lab) -> None:
    """Once every real node is Ready: the demo workload (pod-to-pod TCP for Caretta)."""
    if os.environ.get("NETVIZ_LAB_NO_DEMO") == "1":
        return
    from .clusterapi import apply_file, dynamic

    dc = dynamic(lab)
    for f in sorted(DEMO_DIR.glob("*.yaml")):
        apply_file(dc, f)


# -- faults ---------------------------------------------------------------------------------------------
PARTITION_TABLE = "netviz_partition"  # inside the node's namespace: gone with it at teardown


def node_by_name(name: str) -> RealNode:
    for node in REAL_NODES:
        if node.name == name:
            return node
    raise ValueError(f"no real node {name!r}: one of {', '.join(n.name for n in REAL_NODES)}")


def cut_off(node: RealNode) -> None:
    """The node as the cluster sees a lost one (a pulled cable, a dead switch port): nothing enters or
    leaves its link, so its kubelet stops renewing its Lease and its pods and NodePorts go silent, while
    its daemons and containers keep running inside (they are the node's own, not the cluster's)."""
    run(["nft", "-f", "-"], netns=node.netns, input=(
        f"table inet {PARTITION_TABLE} {{\n"
        f"  chain in {{ type filter hook prerouting priority -400; iifname \"eth0\" drop; }}\n"
        f"  chain out {{ type filter hook postrouting priority 400; oifname \"eth0\" drop; }}\n"
        f"}}\n"))


def reconnect(node: RealNode) -> bool:
    """Undo cut_off; False if the node was not cut off."""
    return run(["nft", "delete", "table", "inet", PARTITION_TABLE], netns=node.netns, check=False).returncode == 0


# -- teardown -------------------------------------------------------------------------------------------
def teardown(lab: Lab) -> None:
    """State-free: works after a crash, with or without the daemons still running."""
    for node in REAL_NODES:
        _kill_node_processes(lab, node)
        for f in runtime_files_outside(lab, node):
            f.unlink(missing_ok=True)
    _unmount_under(nodes_dir(lab))
    for node in REAL_NODES:
        _delete_network(node)
        _remove_cgroups(node)
    _restore_kernel_tunables(lab)
    left = mounts_under(nodes_dir(lab))
    if left:
        raise RuntimeError(f"still mounted under {nodes_dir(lab)}: {left[:5]}")


def task_ids(lab: Lab, node: RealNode) -> list[str]:
    """Ids of every sandbox and container the node's containerd has run (its task bundles)."""
    d = paths(lab, node).containerd_state / "io.containerd.runtime.v2.task" / "k8s.io"
    try:
        return sorted(e.name for e in d.iterdir())
    except OSError:
        return []


def runtime_files_outside(lab: Lab, node: RealNode) -> list[Path]:
    """This node's shim sockets and CNI cache entries (they live outside the lab root)."""
    sock = paths(lab, node).containerd_socket
    out = []
    for task in task_ids(lab, node):
        digest = hashlib.sha256(f"{sock}/k8s.io/{task}".encode()).hexdigest()  # containerd's shim.SocketAddress
        out += [f for f in (SHIM_SOCKETS / digest,) if f.exists()]
        out += [f for f in CNI_CACHE.glob(f"*-{task}-*") if f.is_file()]
    return out


def _kill_node_processes(lab: Lab, node: RealNode) -> None:
    """Daemons in the node's namespace, runc shims started by its containerd, and every container
    process in its cgroups (they live in pod namespaces, not the node's)."""
    if netns_exists(node.netns):
        kill_netns_processes(node.netns)
    marker = str(paths(lab, node).dir) + "/"
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid() and marker in pid_cmdline(int(entry)):
            _kill(int(entry))
    for _ in range(50):
        pids = _cgroup_pids(node)
        if not pids:
            return
        for pid in pids:
            _kill(pid)
        time.sleep(0.1)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _cgroup_pids(node: RealNode) -> set[int]:
    pids: set[int] = set()
    for d in cgroup_dirs(node):
        for procs in d.rglob("cgroup.procs") if d.exists() else ():
            try:
                pids |= {int(x) for x in procs.read_text().split()}
            except OSError:
                pass
    return pids


def _remove_cgroups(node: RealNode) -> None:
    for d in cgroup_dirs(node):
        if not d.exists():
            continue
        for sub in sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            try:
                sub.rmdir()
            except OSError:
                pass
        try:
            d.rmdir()
        except OSError:
            pass


def mounts_under(root: Path) -> list[str]:
    prefix = str(root).rstrip("/") + "/"
    out = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        target = line.split()[1].replace("\\040", " ")
        if target.startswith(prefix) or target == prefix.rstrip("/"):
            out.append(target)
    return out


def _unmount_under(root: Path) -> None:
    """Lazily unmount everything below `root`, deepest first (overlay rootfs, netns, tmpfs volumes)."""
    for _ in range(5):
        targets = mounts_under(root)
        if not targets:
            return
        for t in sorted(set(targets), key=lambda s: s.count("/"), reverse=True):
            run(["umount", "-l", t], check=False)
