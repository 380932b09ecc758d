"""Caretta stand-in: Caretta v0.0.16's metrics schema, fed by the lab's real TCP sockets.

Caretta cannot run here (its probe is a kprobe; this kernel has none), yet the pipeline, its dashboards
and tests need a `:7117/metrics` that behaves like Caretta's. The pod runner runs this module for
`quay.io/groundcover/caretta:*` containers. It is NOT Caretta: it says so in
`netviz_lab_standin_info{component="caretta"} 1`.

Like each Caretta DaemonSet pod it serves only its own node's data. Every POLL_INTERVAL seconds it
reads the TCP sockets (with tcp_info byte counters: `ss -tainH`) of the pod namespaces of the pods on
its node (plus the host namespace on one designated node: the kwok nodes *are* this host), and a
long-running `ss -tinEH` per namespace reports each socket's final counters as it is destroyed, so
closed connections keep the bytes already sent (Caretta moves closed connections into `pastLinks`).
IPs are resolved like Caretta's `pkg/k8s/ipresolver.go`: Service ClusterIPs, then pods (owner chain
up to e.g. the Deployment, kind "Deployment"; no owner -> kind "pod"), then node addresses (kind and
namespace "node", never overridden); anything else is namespace/kind "external" named by its IP (no
DNS in the lab). The IP map is never pruned, as in Caretta. Values per link: sum of `bytes_sent` of the
link's sockets, cumulative since start; ids are fnv32a as decimal strings (`pkg/caretta/caretta.go`):
link_id = uint32(fnv(client_name+client_ns+server_name+server_ns) + role).

The process lives in its pod's network namespace (so Prometheus scrapes podIP:7117), but the API server
listens on the host's loopback: one thread switches itself (setns is per thread) into the host network
namespace and does all API reads there, read-only, with the admin kubeconfig the runner passes.
"""
from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LINK_LABELS = ("link_id", "client_id", "client_name", "client_namespace", "client_kind", "server_id",
               "server_name", "server_namespace", "server_kind", "server_port", "role")
CLIENT, SERVER = 1, 2
SKIP_STATES = {"LISTEN", "TIME-WAIT", "SYN-SENT", "SYN-RECV", "UNCONN", "CLOSED"}


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
    """Update `ips` in Caretta's order: services -> pods -> nodes; a node entry is never overridden."""

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
    # Every kwok node shares one InternalIP; let the designated node (whose data includes the host's
    # sockets) win, deterministically.
    for node in sorted(nodes, key=lambda n: (n["metadata"]["name"] == preferred_node, n["metadata"]["name"])):
        for a in node.get("status", {}).get("addresses") or []:
            store(a["address"], Workload(node["metadata"]["name"], "node", "node"))
    return ips


def resolve(ips: dict[str, Workload], ip: str) -> Workload:
    return ips.get(ip) or Workload(ip, "external", "external")


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
            for k in set(self.roles) - set(current):  # vanished without a destroy event (e.g. netns gone)
                if k in self.current:
                    key, role, sent = self.current[k]
                    link = self.reduce(key, role, ips)
                    self.past[link] = self.past.get(link, 0) + sent
                    self.deletions += 1
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
_HOST_FD: int | None = None


def host_netns_fd() -> int:
    """An fd on the host's network namespace, opened once at start and inherited by `nsenter`s.

    The runner passes NETVIZ_LAB_HOST_NETNS=/proc/<runner pid>/ns/net (PID 1 here refuses access to
    its /proc/1/ns); holding an fd keeps it valid even if that process goes away.
    """
    global _HOST_FD
    if _HOST_FD is None:
        _HOST_FD = os.open(os.environ.get("NETVIZ_LAB_HOST_NETNS", "/proc/1/ns/net"), os.O_RDONLY)
        os.set_inheritable(_HOST_FD, True)
    return _HOST_FD


def ns_path(ns: str) -> str:
    return f"/proc/self/fd/{host_netns_fd()}" if ns == "@host" else f"/run/netns/{ns}"


def _die_with_parent() -> None:
    """Children (ss in other namespaces, the host's too) must not outlive the stand-in."""
    ctypes.CDLL(None).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL


def read_sockets(ns: str) -> list[Sock]:
    res = subprocess.run(["nsenter", f"--net={ns_path(ns)}", "ss", "-tainH"], capture_output=True, text=True,
                         timeout=10, preexec_fn=_die_with_parent, pass_fds=(host_netns_fd(),))
    return parse_ss(res.stdout) if res.returncode == 0 else []


class DestroyWatcher(threading.Thread):
    """`ss -tinEH` in one namespace: destroyed sockets with their final byte counters."""

    def __init__(self, ns: str, on_closed):
        super().__init__(daemon=True, name=f"destroy-{ns}")
        self.ns, self.on_closed, self.proc = ns, on_closed, None

    def run(self) -> None:
        self.proc = subprocess.Popen(["nsenter", f"--net={ns_path(self.ns)}", "stdbuf", "-oL", "ss", "-tinEH"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     preexec_fn=_die_with_parent, pass_fds=(host_netns_fd(),))
        pending: list[str] = []
        for line in self.proc.stdout:  # a socket line then its tab-indented info line
            if line[:1] in (" ", "\t"):
                pending.append(line)
                for s in parse_ss("".join(pending)):
                    self.on_closed(self.ns, s)
                pending = []
            else:
                pending = [line]

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def enter_host_netns() -> None:
    """setns(2) affects only the calling thread: this thread talks to the host's API server."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(host_netns_fd(), 0x40000000) != 0:  # CLONE_NEWNET
        raise OSError(ctypes.get_errno(), "setns(host netns) failed")


class StandIn:
    def __init__(self) -> None:
        self.node = os.environ.get("NETVIZ_LAB_NODE_NAME", "")
        self.interval = float(os.environ.get("POLL_INTERVAL", "5"))
        self.tracker = Tracker()
        self.ips: dict[str, Workload] = {}
        self.listen: dict[str, set[int]] = {}
        self.watchers: dict[str, DestroyWatcher] = {}
        self.my_namespaces: list[str] = []
        self.ready = threading.Event()

    def on_closed(self, ns: str, sock: Sock) -> None:
        self.tracker.closed(ns, sock, self.listen.get(ns, set()), self.ips)

    def api_loop(self) -> None:
        """Host-netns thread: refresh the IP map and this node's namespaces from the API server."""
        enter_host_netns()
        from kubernetes import client, config

        api = config.new_client_from_config(config_file=os.environ.get("NETVIZ_LAB_KUBECONFIG"))
        core, apps, batch = client.CoreV1Api(api), client.AppsV1Api(api), client.BatchV1Api(api)

        def items(fn) -> list[dict]:
            return json.loads(fn(_preload_content=False, _request_timeout=20).data)["items"]

        from .podspec import pod_netns

        while True:
            try:
                pods = items(core.list_pod_for_all_namespaces)
                nodes = items(core.list_node)
                owners = {}
                for fn in (apps.list_replica_set_for_all_namespaces, apps.list_deployment_for_all_namespaces,
                           apps.list_daemon_set_for_all_namespaces, apps.list_stateful_set_for_all_namespaces,
                           batch.list_job_for_all_namespaces, batch.list_cron_job_for_all_namespaces):
                    owners |= {o["metadata"]["uid"]: o for o in items(fn)}
                svcs = items(core.list_service_for_all_namespaces)
                if not self.node:
                    self.node = self._discover_node(pods)
                host_node = min((n["metadata"]["name"] for n in nodes), default=None)
                self.ips = build_ip_map(svcs, pods, nodes, owners, dict(self.ips), host_node)
                mine = [pod_netns(p["metadata"]["namespace"], p["metadata"]["name"]) for p in pods
                        if p.get("spec", {}).get("nodeName") == self.node and p.get("status", {}).get("podIP")
                        and not p["spec"].get("hostNetwork")]
                mine = [n for n in mine if os.path.exists(f"/run/netns/{n}")]
                if self.node and self.node == host_node and os.environ.get("NETVIZ_LAB_HOST_SOCKETS", "1") == "1":
                    mine.append("@host")
                self.my_namespaces = mine
                self.ready.set()
            except Exception as exc:  # noqa: BLE001 - API server restarting: keep the last map
                print(f"resolver: {exc.__class__.__name__}: {str(exc)[:200]}", file=sys.stderr, flush=True)
            time.sleep(self.interval)

    def _discover_node(self, pods: list[dict]) -> str:
        """Without NETVIZ_LAB_NODE_NAME: find our own pod by the IP on eth0."""
        try:
            out = subprocess.run(["ip", "-4", "-o", "addr", "show", "dev", "eth0"], capture_output=True,
                                 text=True).stdout
            my_ip = out.split()[3].split("/")[0]
        except (IndexError, OSError):
            return ""
        for p in pods:
            if p.get("status", {}).get("podIP") == my_ip:
                return p["spec"].get("nodeName", "")
        return ""

    def poll_loop(self) -> None:
        self.ready.wait()
        while True:
            namespaces = list(self.my_namespaces)
            for ns in namespaces:
                if ns not in self.watchers or not self.watchers[ns].is_alive():
                    self.watchers[ns] = DestroyWatcher(ns, self.on_closed)
                    self.watchers[ns].start()
            for ns in set(self.watchers) - set(namespaces):
                self.watchers.pop(ns).stop()
            snapshot = {}
            for ns in namespaces:
                try:
                    snapshot[ns] = read_sockets(ns)
                except (OSError, subprocess.SubprocessError):
                    snapshot[ns] = []
                self.listen[ns] = {s.sport for s in snapshot[ns] if s.state == "LISTEN"}
            self.tracker.poll(snapshot, self.ips)
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


def main() -> int:
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # run the finally below: stop the ss watchers
    host_netns_fd()  # fail early and clearly if the host namespace is not reachable
    standin = StandIn()
    server = serve(standin)
    print(f"netviz-lab Caretta stand-in (not Caretta) node={standin.node or '?'} "
          f"serving {os.environ.get('PROMETHEUS_ENDPOINT', '/metrics')} on :{server.server_port}", flush=True)
    threading.Thread(target=standin.api_loop, daemon=True, name="api").start()
    threading.Thread(target=standin.poll_loop, daemon=True, name="poll").start()
    try:
        server.serve_forever()
    finally:
        for w in standin.watchers.values():
            w.stop()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
