"""Caretta stand-in: Caretta v0.0.16's metrics schema, fed by this node's real TCP sockets.

Caretta cannot run in the lab (its probe is a kprobe; this kernel has none), yet the pipeline, its
dashboards and tests need a `:7117/metrics` that behaves like Caretta's. This file is packaged as the
image `quay.io/groundcover/caretta:v0.0.16` (python3 stdlib only, plus `nsenter`, `ss`, `stdbuf`) and
deployed unchanged by the product's own Caretta DaemonSet: privileged, the host's /proc mounted at
/proc, the ServiceAccount bound to the narrowed ClusterRole, pod network (Prometheus scrapes
podIP:7117). It is NOT Caretta and says so: `netviz_lab_standin_info{component="caretta"} 1`.

Like each Caretta pod it serves only its own node's data. Its node is `spec.nodeName` of its own pod
($HOSTNAME in the ServiceAccount's namespace; NODE_NAME overrides). The lab's real nodes share one
kernel, so the host's /proc lists every process of the machine: processes are grouped by network
namespace and the namespaces kept are those holding the IP of a (non-hostNetwork) pod of this node, plus
the one holding the node's InternalIP (the node's own namespace: what real Caretta sees of host-network
sockets). Every POLL_INTERVAL seconds it reads their TCP sockets with tcp_info byte counters
(`nsenter --net=... ss -tainH`), and a long-running `ss -tinEH` per namespace reports each socket's final
counters as it is destroyed, so closed connections keep the bytes already sent (Caretta's `pastLinks`).

IPs are resolved like Caretta's `pkg/k8s/ipresolver.go`, from read-only lists (in-cluster API client:
ServiceAccount token and CA) of exactly the kinds it watches: Service ClusterIPs, then pods (owner chain
up to e.g. the Deployment, kind "Deployment"; no owner -> kind "pod"), then node addresses (kind and
namespace "node", never overridden); anything else is namespace/kind "external" named by its IP (no
DNS in the lab: RESOLVE_DNS is ignored). The IP map is never pruned, as in Caretta. Values per link: sum
of `bytes_sent` of the link's sockets, cumulative since start; ids are fnv32a as decimal strings
(`pkg/caretta/caretta.go`): link_id = uint32(fnv(client_name+client_ns+server_name+server_ns) + role).
"""
from __future__ import annotations

import argparse
import ctypes
import http.client
import ipaddress
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DESCRIPTION = "netviz lab's Caretta v0.0.16 stand-in (not Caretta), fed by real TCP sockets."
LINK_LABELS = ("link_id", "client_id", "client_name", "client_namespace", "client_kind", "server_id",
               "server_name", "server_namespace", "server_kind", "server_port", "role")
CLIENT, SERVER = 1, 2
SKIP_STATES = {"LISTEN", "TIME-WAIT", "SYN-SENT", "SYN-RECV", "UNCONN", "CLOSED"}
PROC = "/proc"  # the host's /proc, mounted there by the DaemonSet
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
SA_DIR_ENV = "CARETTA_STANDIN_SA_DIR"  # tests only
# Exactly the kinds Caretta's resolver watches (netviz_pipeline/render/caretta.py WATCHED), cluster-wide lists.
RESOURCES = {
    "pods": "/api/v1/pods", "nodes": "/api/v1/nodes", "services": "/api/v1/services",
    "replicasets": "/apis/apps/v1/replicasets", "daemonsets": "/apis/apps/v1/daemonsets",
    "statefulsets": "/apis/apps/v1/statefulsets", "deployments": "/apis/apps/v1/deployments",
    "jobs": "/apis/batch/v1/jobs", "cronjobs": "/apis/batch/v1/cronjobs",
}
OWNER_KINDS = ("replicasets", "daemonsets", "statefulsets", "deployments", "jobs", "cronjobs")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class RateLimitedLog:
    """One line per key when its message changes, else at most every `every` seconds; a recovery line."""

    def __init__(self, every: float = 300.0) -> None:
        self.every, self.last, self.lock = every, {}, threading.Lock()

    def __call__(self, key: str, msg: str) -> None:
        now = time.monotonic()
        with self.lock:
            prev = self.last.get(key)
            if prev is not None and prev[0] == msg and now - prev[1] < self.every:
                return
            self.last[key] = (msg, now)
        log(msg)

    def ok(self, key: str, msg: str) -> None:
        with self.lock:
            failing = self.last.pop(key, None) is not None
        if failing:
            log(msg)


def fnv32a(s: str) -> int:
    h = 0x811C9DC5
    for b in s.encode():
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


@dataclass(frozen=True)
class Workload:
    name: str
    namespace: str
    kind: str


@dataclass(frozen=True)
class Link:
    client: Workload
    server: Workload
    server_port: int
    role: int


def link_labels(link: Link) -> dict[str, str]:
    c, s = link.client, link.server
    return {
        "link_id": str((fnv32a(c.name + c.namespace + s.name + s.namespace) + link.role) & 0xFFFFFFFF),
        "client_id": str(fnv32a(c.name + c.namespace)), "client_name": c.name,
        "client_namespace": c.namespace, "client_kind": c.kind,
        "server_id": str(fnv32a(s.name + s.namespace)), "server_name": s.name,
        "server_namespace": s.namespace, "server_kind": s.kind,
        "server_port": str(link.server_port), "role": str(link.role),
    }


# -- in-cluster API client (read-only) -----------------------------------------------------------------
class ApiError(Exception):
    def __init__(self, resource: str, status: int, message: str) -> None:
        super().__init__(f"{status} listing {resource}: {message}")
        self.resource, self.status, self.message = resource, status, message


class InClusterClient:
    """GETs with the pod's ServiceAccount token, re-read on every request (the kubelet rotates it)."""

    def __init__(self, server: str, sa_dir: str = SA_DIR, timeout: float = 20.0) -> None:
        self.server, self.sa_dir, self.timeout = server.rstrip("/"), sa_dir, timeout

    @classmethod
    def from_env(cls, env=None) -> InClusterClient:
        env = os.environ if env is None else env
        host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT") or "443"
        if not host:
            raise RuntimeError("KUBERNETES_SERVICE_HOST is not set: not running in a pod")
        if ":" in host:
            host = f"[{host}]"
        return cls(f"https://{host}:{port}", env.get(SA_DIR_ENV) or SA_DIR)

    @property
    def token_path(self) -> str:
        return os.path.join(self.sa_dir, "token")

    @property
    def ca_path(self) -> str:
        return os.path.join(self.sa_dir, "ca.crt")

    def namespace(self) -> str:
        with open(os.path.join(self.sa_dir, "namespace")) as f:
            return f.read().strip()

    def token(self) -> str:
        with open(self.token_path) as f:
            return f.read().strip()

    def request(self, path: str) -> urllib.request.Request:
        return urllib.request.Request(self.server + path, method="GET", headers={
            "Authorization": f"Bearer {self.token()}", "Accept": "application/json",
            "User-Agent": "netviz-lab-caretta-standin"})

    def opener(self) -> urllib.request.OpenerDirector:
        handlers: list = [urllib.request.ProxyHandler({})]  # never through an HTTP(S)_PROXY of the environment
        if self.server.startswith("https:"):
            handlers.append(urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=self.ca_path)))
        return urllib.request.build_opener(*handlers)

    def get(self, path: str, resource: str = "") -> dict:
        for attempt in (1, 2):
            try:
                with self.opener().open(self.request(path), timeout=self.timeout) as resp:
                    return json.loads(resp.read())
            except urllib.error.HTTPError as exc:
                if exc.code == 401 and attempt == 1:
                    continue  # a token rotated between read and use: read it again, once
                raise ApiError(resource or path, exc.code, _status_message(exc)) from None
        raise AssertionError("unreachable")

    def list(self, resource: str) -> list[dict]:
        return self.get(RESOURCES[resource], resource).get("items") or []


def _status_message(exc: urllib.error.HTTPError) -> str:
    try:
        body = exc.read()
        return str(json.loads(body).get("message") or exc.reason)[:400]
    except (OSError, ValueError, AttributeError):
        return str(exc.reason)[:400]


# -- IP resolution (pkg/k8s/ipresolver.go) ---------------------------------------------------------
def _controller(obj: dict) -> dict | None:
    for ref in obj.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return ref
    return None


def pod_workload(pod: dict, owners: dict[str, dict]) -> Workload:
    """Walk controller owner references (ReplicaSet -> Deployment, Job -> CronJob, ...) by UID."""
    name, kind = pod["metadata"]["name"], "pod"
    owner = _controller(pod)
    seen = 0
    while owner is not None and seen < 10:
        name, kind = owner["name"], owner["kind"]
        parent = owners.get(owner.get("uid", ""))
        owner = _controller(parent) if parent else None
        seen += 1
    return Workload(name, pod["metadata"]["namespace"], kind)


def build_ip_map(services: list[dict], pods: list[dict], nodes: list[dict], owners: dict[str, dict],
                 ips: dict[str, Workload], preferred_node: str | None = None) -> dict[str, Workload]:
    """Update `ips` in Caretta's order: services -> pods -> nodes; a node entry is never overridden.

    Real nodes have distinct addresses, kwok nodes share one: of nodes sharing an address, this
    stand-in's own node (`preferred_node`) wins, else the lowest name, so every stand-in agrees.
    """

    def store(ip: str, w: Workload) -> None:
        cur = ips.get(ip)
        if cur is not None and cur.kind == "node" and w.kind != "node":
            return
        ips[ip] = w

    for svc in services:
        for ip in svc.get("spec", {}).get("clusterIPs") or []:
            if ip != "None":
                store(ip, Workload(svc["metadata"]["name"], svc["metadata"]["namespace"], "Service"))
    for pod in pods:
        w = pod_workload(pod, owners)
        for p in pod.get("status", {}).get("podIPs") or []:
            store(p["ip"], w)
    # written last wins: the preferred node last, before it the lowest name
    order = sorted(nodes, key=lambda n: n["metadata"]["name"], reverse=True)
    for node in sorted(order, key=lambda n: n["metadata"]["name"] == preferred_node):
        for a in node.get("status", {}).get("addresses") or []:
            store(a["address"], Workload(node["metadata"]["name"], "node", "node"))
    return ips


def resolve(ips: dict[str, Workload], ip: str) -> Workload:
    return ips.get(ip) or Workload(ip, "external", "external")


# -- own node, and which network namespaces are this node's ---------------------------------------------
def pod_ips(pod: dict) -> set[str]:
    status = pod.get("status") or {}
    out = {p["ip"] for p in status.get("podIPs") or [] if p.get("ip")}
    if status.get("podIP"):
        out.add(status["podIP"])
    return out


def own_node(pods: list[dict], pod_name: str, namespace: str, my_ips: set[str] = frozenset()) -> str:
    """Our own pod's spec.nodeName: by name (HOSTNAME) and namespace, else by our own pod IP."""
    for p in pods:
        md = p.get("metadata") or {}
        if md.get("name") == pod_name and md.get("namespace") == namespace:
            return (p.get("spec") or {}).get("nodeName") or ""
    for p in pods:
        if not (p.get("spec") or {}).get("hostNetwork") and pod_ips(p) & my_ips:
            return p["spec"].get("nodeName") or ""
    return ""


def node_internal_ips(nodes: list[dict], node: str) -> set[str]:
    for n in nodes:
        if n["metadata"]["name"] == node:
            return {a["address"] for a in (n.get("status") or {}).get("addresses") or []
                    if a.get("type") == "InternalIP" and a.get("address")}
    return set()


def select_namespaces(ns_ips: dict[int, set[str]], pods: list[dict], nodes: list[dict], node: str) -> dict[int, str]:
    """Network namespaces (inode -> description) of this node: those holding the IP of a non-hostNetwork
    pod of the node, and the one holding the node's InternalIP (its host-network sockets)."""
    if not node:
        return {}
    want: dict[str, str] = {}
    for p in pods:
        spec = p.get("spec") or {}
        if spec.get("nodeName") != node or spec.get("hostNetwork"):
            continue
        for ip in pod_ips(p):
            want.setdefault(ip, f"pod {p['metadata'].get('namespace')}/{p['metadata'].get('name')}")
    for ip in node_internal_ips(nodes, node):
        want[ip] = f"node {node}"
    out: dict[int, str] = {}
    for inode in sorted(ns_ips):
        hits = sorted(want[ip] for ip in ns_ips[inode] if ip in want)
        if hits:
            out[inode] = next((h for h in hits if h.startswith("node ")), hits[0])
    return out


# -- the host's /proc: processes vanish at any moment, every read tolerates it --------------------------
def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:  # ENOENT, ESRCH, EACCES, EINVAL: the process is gone or not ours to see
        return None


def netns_inode(proc: str, pid: int) -> int | None:
    try:
        link = os.readlink(f"{proc}/{pid}/ns/net")  # "net:[4026531840]"
    except OSError:
        return None
    if not link.startswith("net:["):
        return None
    return int(link[5:-1])


def parse_fib_trie(text: str) -> set[str]:
    """Local IPv4 addresses from /proc/<pid>/net/fib_trie: leaves followed by "/32 host LOCAL" (no 127/8)."""
    out, leaf = set(), None
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("|-- "):
            leaf = s[4:].strip()
        elif leaf and s.split()[:3] == ["/32", "host", "LOCAL"] and not leaf.startswith("127."):
            out.add(leaf)
    return out


def parse_if_inet6(text: str) -> set[str]:
    """Global IPv6 addresses from /proc/<pid>/net/if_inet6 (scope 00; no ::1, no link-local)."""
    out = set()
    for line in text.splitlines():
        f = line.split()
        if len(f) >= 4 and len(f[0]) == 32 and f[3] == "00":
            try:
                out.add(ipaddress.IPv6Address(bytes.fromhex(f[0])).compressed)
            except ValueError:
                continue
    return out


def netns_ips(proc: str, pid: int | str) -> set[str] | None:
    """The local addresses of `pid`'s network namespace; None if the process went away."""
    trie = _read(f"{proc}/{pid}/net/fib_trie")
    if trie is None:
        return None
    return parse_fib_trie(trie) | parse_if_inet6(_read(f"{proc}/{pid}/net/if_inet6") or "")


def ppid(proc: str, pid: int) -> int | None:
    stat = _read(f"{proc}/{pid}/stat")  # "pid (comm) state ppid ..."; comm may hold spaces and ')'
    try:
        return int(stat.rpartition(")")[2].split()[1]) if stat else None
    except (IndexError, ValueError):
        return None


def netns_pids(proc: str = PROC) -> dict[int, list[int]]:
    """Every process of the machine grouped by network namespace inode (pids ascending)."""
    groups: dict[int, list[int]] = {}
    try:
        names = os.listdir(proc)
    except OSError:
        return groups
    for name in names:
        if name.isdigit():
            inode = netns_inode(proc, int(name))
            if inode is not None:
                groups.setdefault(inode, []).append(int(name))
    for pids in groups.values():
        pids.sort()
    return groups


def discover_namespaces(proc: str = PROC, exclude_ppid: int | None = None) -> dict[int, tuple[int, set[str]]]:
    """inode -> (one live pid in it, its local IPs). Our own children (`ss` in a namespace) never
    represent a namespace: a namespace they alone keep alive is a dead pod's."""
    out: dict[int, tuple[int, set[str]]] = {}
    for inode, pids in netns_pids(proc).items():
        for pid in pids:  # the lowest pid first: usually the oldest (a pod's pause, a node's daemons)
            if exclude_ppid is not None and ppid(proc, pid) in (exclude_ppid, None):
                continue
            ips = netns_ips(proc, pid)
            if ips is not None and netns_inode(proc, pid) == inode:
                out[inode] = (pid, ips)
                break
    return out


def open_netns(proc: str, pid: int, inode: int) -> int | None:
    """An fd pinning the namespace (inherited by `nsenter`), or None if `pid` left it or died."""
    try:
        fd = os.open(f"{proc}/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    if os.fstat(fd).st_ino != inode:  # the pid was reused by a process elsewhere
        os.close(fd)
        return None
    return fd


def my_host_pid(proc: str = PROC) -> int | None:
    """Our pid in the host's pid namespace (/proc is the host's: its `self` resolves there)."""
    try:
        return int(os.readlink(f"{proc}/self"))
    except (OSError, ValueError):
        return None


# -- sockets ---------------------------------------------------------------------------------------
def parse_addr(s: str) -> tuple[str, int]:
    host, _, port = s.rpartition(":")
    host = host.strip("[]").split("%", 1)[0]
    if host.startswith("::ffff:"):
        host = host[7:]
    return host, int(port) if port.isdigit() else 0


@dataclass(frozen=True)
class Sock:
    state: str
    src: str
    sport: int
    dst: str
    dport: int
    bytes_sent: int

    @property
    def key(self) -> tuple[str, int, str, int]:
        return (self.src, self.sport, self.dst, self.dport)


def parse_ss(text: str) -> list[Sock]:
    """Parse `ss -tainH` / `ss -tinEH` output: a socket line, optionally followed by a tab-indented info line."""
    socks: list[Sock] = []
    cur: list[str] | None = None
    info = ""

    def flush() -> None:
        if cur is None or len(cur) < 5:
            return
        src, sport = parse_addr(cur[3])
        dst, dport = parse_addr(cur[4])
        sent = 0
        for tok in info.split():
            if tok.startswith("bytes_sent:"):
                sent = int(tok.split(":", 1)[1])
        socks.append(Sock(cur[0], src, sport, dst, dport, sent))

    for line in text.splitlines():
        if not line.strip():
            continue
        if line[0] in " \t":
            info += " " + line
            continue
        flush()
        cur, info = line.split(), ""
    flush()
    return socks


def is_loopback(ip: str) -> bool:
    return ip.startswith("127.") or ip == "::1"


class Tracker:
    """Caretta's polling iteration over one node's sockets; closed sockets keep their bytes (`past`)."""

    def __init__(self) -> None:
        self.current: dict[tuple, tuple[tuple, int, int]] = {}  # (ns, key) -> (key, role, bytes)
        self.roles: dict[tuple, int] = {}
        self.past: dict[Link, int] = {}
        self.destroyed: dict[tuple, float] = {}
        self.vanished: dict[tuple, tuple[Link, int, float]] = {}  # counted by a poll, no destroy event yet
        self.links: dict[Link, int] = {}
        self.polls = self.deletions = self.failed = self.loopback = self.map_size = 0
        self.lock = threading.Lock()

    @staticmethod
    def reduce(key: tuple, role: int, ips: dict[str, Workload]) -> Link:
        src, sport, dst, dport = key
        if role == CLIENT:
            return Link(resolve(ips, src), resolve(ips, dst), dport, CLIENT)
        return Link(resolve(ips, dst), resolve(ips, src), sport, SERVER)

    def closed(self, ns: str, sock: Sock, listen_ports: set[int], ips: dict[str, Workload]) -> None:
        """A socket was destroyed with final counters: move its bytes to the past links."""
        if sock.dport == 0:  # a listener going away
            return
        with self.lock:
            k = (ns, sock.key)
            gone = self.vanished.pop(k, None)
            if gone is not None:  # a poll already moved its bytes to the past: add only what it sent since
                link, counted, _ = gone
                if sock.bytes_sent > counted:
                    self.past[link] = self.past.get(link, 0) + sock.bytes_sent - counted
                self.destroyed[k] = time.monotonic()
                return
            if k not in self.current and sock.bytes_sent == 0:
                return  # never carried data: Caretta's map only holds sockets that received data
            role = self.roles.pop(k, None) or (SERVER if sock.sport in listen_ports else CLIENT)
            self.current.pop(k, None)
            self.destroyed[k] = time.monotonic()
            if sock.src == sock.dst and is_loopback(sock.dst):
                return
            link = self.reduce(sock.key, role, ips)
            self.past[link] = self.past.get(link, 0) + sock.bytes_sent
            self.deletions += 1

    def poll(self, snapshot: dict[str, list[Sock]], ips: dict[str, Workload]) -> None:
        """One iteration: `snapshot` maps namespace -> its sockets (`ss -tainH`)."""
        with self.lock:
            now = time.monotonic()
            self.destroyed = {k: t for k, t in self.destroyed.items() if now - t < 60}
            self.vanished = {k: v for k, v in self.vanished.items() if now - v[2] < 60}
            current: dict[tuple, tuple[tuple, int, int]] = {}
            loopback = 0
            for ns, socks in snapshot.items():
                listen = {s.sport for s in socks if s.state == "LISTEN"}
                for s in socks:
                    if s.state in SKIP_STATES:
                        continue
                    k = (ns, s.key)
                    if k in self.destroyed:
                        continue
                    if s.src == s.dst and is_loopback(s.dst):
                        loopback += 1
                        continue
                    role = self.roles.setdefault(k, SERVER if s.sport in listen else CLIENT)
                    current[k] = (s.key, role, s.bytes_sent)
            for k in set(self.roles) - set(current):  # vanished without a destroy event (yet)
                if k in self.current:
                    key, role, sent = self.current[k]
                    link = self.reduce(key, role, ips)
                    self.past[link] = self.past.get(link, 0) + sent
                    self.deletions += 1
                    self.vanished[k] = (link, sent, now)
                self.roles.pop(k, None)
            self.current = current
            links = dict(self.past)
            for key, role, sent in current.values():
                link = self.reduce(key, role, ips)
                links[link] = links.get(link, 0) + sent
            # Series are never pruned (Caretta keeps every label set it ever set).
            for link, value in links.items():
                self.links[link] = value
            self.polls += 1
            self.loopback = loopback
            self.map_size = len(current) + loopback

    def exposition(self) -> str:
        with self.lock:
            out = ["# HELP caretta_links_observed total bytes_sent value of links observed by caretta since its launch",
                   "# TYPE caretta_links_observed gauge"]
            for link, value in sorted(self.links.items(), key=lambda kv: sorted(link_labels(kv[0]).items())):
                labels = ",".join(f'{k}="{_esc(v)}"' for k, v in sorted(link_labels(link).items()))
                out.append(f"caretta_links_observed{{{labels}}} {value}")
            for name, typ, help_, value in (
                ("caretta_connection_deletions", "counter", "total number of deletions from the map done by the userspace", self.deletions),
                ("caretta_current_loopback_connections", "gauge", "Number of loopback connections observed in the last iteration", self.loopback),
                ("caretta_ebpf_connections_map_size", "gauge", "number of items in the connections map iterated from user space per iteration", self.map_size),
                ("caretta_failed_deletions", "counter", "Counter of failed deletion of closed connection from map", self.failed),
                ("caretta_polls_made", "counter", "Counter of polls made by caretta", self.polls),
            ):
                out += [f"# HELP {name} {help_}", f"# TYPE {name} {typ}", f"{name} {value}"]
            out += ["# HELP netviz_lab_standin_info This is the netviz lab's Caretta stand-in, not Caretta.",
                    "# TYPE netviz_lab_standin_info gauge", 'netviz_lab_standin_info{component="caretta"} 1']
            return "\n".join(out) + "\n"


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


# -- processes ------------------------------------------------------------------------------------
def _die_with_parent() -> None:
    """Children (ss in other namespaces) must not outlive the stand-in."""
    ctypes.CDLL(None).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL


def in_netns(fd: int, argv: list[str]) -> list[str]:
    # the child's own fd: /proc/self resolves to the child in the host's /proc too
    return ["nsenter", f"--net=/proc/self/fd/{fd}", *argv]


def read_sockets(fd: int) -> list[Sock] | None:
    """The TCP sockets of the namespace pinned by `fd`; None if `ss` could not run."""
    try:
        res = subprocess.run(in_netns(fd, ["ss", "-tainH"]), capture_output=True, text=True, timeout=10,
                             preexec_fn=_die_with_parent, pass_fds=(fd,))
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_ss(res.stdout) if res.returncode == 0 else None


class DestroyWatcher(threading.Thread):
    """`ss -tinEH` in one namespace: destroyed sockets with their final byte counters.

    Once started, `ss` is itself in the namespace: the process it was found through may exit."""

    def __init__(self, ns: str, label: str, fd: int, on_closed, warn) -> None:
        super().__init__(daemon=True, name=f"destroy-{ns}")
        self.ns, self.label, self.on_closed, self.warn = ns, label, on_closed, warn
        # started here, synchronously: the caller closes `fd` right after
        self.proc = subprocess.Popen(in_netns(fd, ["stdbuf", "-oL", "ss", "-tinEH"]), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, preexec_fn=_die_with_parent,
                                     pass_fds=(fd,))
        self.stopping = False

    def run(self) -> None:
        pending: list[str] = []
        for line in self.proc.stdout:  # a socket line then its tab-indented info line
            if line[:1] in (" ", "\t"):
                pending.append(line)
                for s in parse_ss("".join(pending)):
                    self.on_closed(self.ns, s)
                pending = []
            else:
                pending = [line]
        rc = self.proc.wait()
        if not self.stopping:
            err = (self.proc.stderr.read() or "").strip().replace("\n", " | ")[:300]
            self.warn(f"watch:{self.ns}", f"destroy watcher for {self.ns} ({self.label}) exited {rc}: {err or '-'}")

    def stop(self) -> None:
        self.stopping = True
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# -- the stand-in ---------------------------------------------------------------------------------------
class StandIn:
    def __init__(self, api: InClusterClient, proc: str = PROC) -> None:
        self.api, self.proc = api, proc
        self.node = os.environ.get("NODE_NAME", "")
        self.pod_name = os.environ.get("HOSTNAME") or socket.gethostname()
        self.interval = float(os.environ.get("POLL_INTERVAL", "5"))
        self.tracker = Tracker()
        self.warn = RateLimitedLog()
        self.cache: dict[str, list[dict]] = {}  # resource -> last successful list
        self.ips: dict[str, Workload] = {}
        self.listen: dict[str, set[int]] = {}
        self.last: dict[str, list[Sock]] = {}
        self.watchers: dict[int, DestroyWatcher] = {}
        self.labels: dict[int, str] = {}
        self.my_pid = my_host_pid(proc)
        self.ready = threading.Event()

    def on_closed(self, ns: str, sock: Sock) -> None:
        self.tracker.closed(ns, sock, self.listen.get(ns, set()), self.ips)

    # API side
    def refresh(self) -> None:
        for res in RESOURCES:
            try:
                self.cache[res] = self.api.list(res)
                self.warn.ok(f"api:{res}", f"resolver: listing {res} works again")
            except ApiError as exc:
                if exc.status == 403:
                    self.warn(f"api:{res}", f"resolver: FORBIDDEN (403) to list {res} cluster-wide: {exc.message} "
                              f"-- the ClusterRole bound to this ServiceAccount must allow list on {res}; "
                              f"using the last {res} list ({len(self.cache.get(res, []))} items)")
                else:
                    self.warn(f"api:{res}", f"resolver: HTTP {exc.status} listing {res}: {exc.message}")
            except (OSError, ValueError, http.client.HTTPException) as exc:  # unreachable/restarting: keep the last lists
                self.warn("api", f"resolver: API server {self.api.server}: {exc.__class__.__name__}: {str(exc)[:200]}")
                return
        self.warn.ok("api", f"resolver: API server {self.api.server} reachable again")
        if not all(r in self.cache for r in ("pods", "nodes", "services")):
            return  # never poll with an empty IP map: its "external" series would stay forever
        pods, nodes = self.cache["pods"], self.cache["nodes"]
        if not self.node:
            try:
                namespace = self.api.namespace()
            except OSError:
                namespace = ""
            self.node = own_node(pods, self.pod_name, namespace, netns_ips(self.proc, "self") or set())
            if self.node:
                log(f"own node {self.node} (pod {namespace}/{self.pod_name}), "
                    f"InternalIP {sorted(node_internal_ips(nodes, self.node))}")
            else:
                self.warn("node", f"cannot find own pod {namespace}/{self.pod_name} in the pods list: set NODE_NAME")
        owners = {o["metadata"]["uid"]: o for res in OWNER_KINDS for o in self.cache.get(res, [])}
        self.ips = build_ip_map(self.cache["services"], pods, nodes, owners, dict(self.ips), self.node or None)
        self.ready.set()

    def api_loop(self) -> None:
        while True:
            try:
                self.refresh()
            except Exception as exc:  # noqa: BLE001 - a malformed object must not stop the resolver
                self.warn("api:unexpected", f"resolver: {exc.__class__.__name__}: {str(exc)[:200]}")
            time.sleep(self.interval)

    # socket side
    def poll_once(self) -> None:
        found = discover_namespaces(self.proc, self.my_pid)
        selected = select_namespaces({i: ips for i, (_, ips) in found.items()}, self.cache.get("pods", []),
                                     self.cache.get("nodes", []), self.node)
        snapshot: dict[str, list[Sock]] = {}
        for inode, label in selected.items():
            ns = f"netns:{inode}"
            if self.labels.get(inode) != label:
                log(f"watching {ns} ({label}) through pid {found[inode][0]}")
                self.labels[inode] = label
            fd = open_netns(self.proc, found[inode][0], inode)
            socks = None
            if fd is not None:
                try:
                    w = self.watchers.get(inode)
                    if w is None or not w.is_alive():
                        try:
                            self.watchers[inode] = DestroyWatcher(ns, label, fd, self.on_closed, self.warn)
                            self.watchers[inode].start()
                        except OSError as exc:
                            self.warn(f"watch:{ns}", f"cannot start the destroy watcher for {ns}: {exc}")
                    socks = read_sockets(fd)
                finally:
                    os.close(fd)
            # unreadable just now (its pid exited): keep the last view rather than counting every socket
            # as closed and then new again
            snapshot[ns] = socks if socks is not None else self.last.get(ns, [])
            self.last[ns] = snapshot[ns]
            self.listen[ns] = {s.sport for s in snapshot[ns] if s.state == "LISTEN"}
        for inode in set(self.watchers) - set(selected):
            self.watchers.pop(inode).stop()
        for inode in set(self.labels) - set(selected):
            log(f"no longer watching netns:{inode} ({self.labels.pop(inode)})")
            self.last.pop(f"netns:{inode}", None)
            self.listen.pop(f"netns:{inode}", None)
        self.tracker.poll(snapshot, self.ips)

    def poll_loop(self) -> None:
        self.ready.wait()
        while True:
            try:
                self.poll_once()
            except Exception as exc:  # noqa: BLE001 - keep serving; the next poll retries
                self.warn("poll", f"poll: {exc.__class__.__name__}: {str(exc)[:200]}")
            time.sleep(self.interval)


def serve(standin: StandIn) -> ThreadingHTTPServer:
    endpoint = os.environ.get("PROMETHEUS_ENDPOINT", "/metrics")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server API
            if self.path.split("?", 1)[0] != endpoint:
                self.send_error(404)
                return
            body = standin.tracker.exposition().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args) -> None:
            pass

    server = ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PROMETHEUS_PORT", "7117"))), Handler)
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog="caretta_standin.py", description=DESCRIPTION).parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # PID 1 in its container; run the finally below
    try:
        api = InClusterClient.from_env()
        api.token()  # fail early and clearly without a ServiceAccount token (its content is never logged)
    except (RuntimeError, OSError) as exc:
        log(f"caretta stand-in: no in-cluster API access: {exc}")
        return 2
    standin = StandIn(api)
    server = serve(standin)
    log(f"netviz-lab Caretta stand-in (not Caretta) pod={standin.pod_name} node={standin.node or '?'} "
        f"api={api.server} serving {os.environ.get('PROMETHEUS_ENDPOINT', '/metrics')} on :{server.server_port}")
    threading.Thread(target=standin.api_loop, daemon=True, name="api").start()
    threading.Thread(target=standin.poll_loop, daemon=True, name="poll").start()
    try:
        server.serve_forever()
    finally:
        for w in list(standin.watchers.values()):
            w.stop()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
