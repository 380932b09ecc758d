"""Fast tests of the Caretta stand-in's pure logic (no root, no cluster)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from netviz_lab.shipped import caretta_standin as cs

SOURCE = Path(cs.__file__)


# -- schema ------------------------------------------------------------------------------------------
def test_fnv32a_vectors():
    assert cs.fnv32a("") == 0x811C9DC5
    assert cs.fnv32a("a") == 0xE40C292C
    assert cs.fnv32a("foobar") == 0xBF9CF968


def test_link_labels_schema_and_ids():
    link = cs.Link(cs.Workload("client", "demo", "Deployment"), cs.Workload("web", "demo", "Deployment"), 8080, 2)
    labels = cs.link_labels(link)
    assert tuple(labels) == cs.LINK_LABELS
    assert labels["link_id"] == str((cs.fnv32a("clientdemowebdemo") + 2) & 0xFFFFFFFF)
    assert labels["client_id"] == str(cs.fnv32a("clientdemo"))
    assert labels["server_port"] == "8080" and labels["role"] == "2"


# -- IP resolution --------------------------------------------------------------------------------------
def _owned(kind, name, uid):
    return {"kind": kind, "name": name, "uid": uid, "controller": True}


def test_ip_map_follows_caretta_precedence():
    rs = {"metadata": {"uid": "rs1", "ownerReferences": [_owned("Deployment", "web", "d1")]}}
    pod = {"metadata": {"name": "web-abc", "namespace": "demo", "ownerReferences": [_owned("ReplicaSet", "web-5f", "rs1")]},
           "status": {"podIPs": [{"ip": "198.19.0.5"}]}}
    bare = {"metadata": {"name": "solo", "namespace": "demo"}, "status": {"podIPs": [{"ip": "198.18.0.1"}]}}
    nodes = [{"metadata": {"name": f"kwok-node-{i}"}, "status": {"addresses": [{"address": "198.18.0.1"}]}}
             for i in (2, 0, 1)]
    svc = {"metadata": {"name": "web", "namespace": "demo"}, "spec": {"clusterIPs": ["198.19.128.20"]}}
    ips = cs.build_ip_map([svc], [pod, bare], nodes, {"rs1": rs}, {}, preferred_node="kwok-node-0")
    assert ips["198.19.0.5"] == cs.Workload("web", "demo", "Deployment")
    assert ips["198.19.128.20"] == cs.Workload("web", "demo", "Service")
    assert ips["198.18.0.1"] == cs.Workload("kwok-node-0", "node", "node")
    assert cs.resolve(ips, "198.18.0.2") == cs.Workload("198.18.0.2", "external", "external")
    # nodes are never overridden by a later pod with the same address
    assert cs.build_ip_map([], [bare], [], {}, ips)["198.18.0.1"].kind == "node"


def test_shared_node_address_resolves_deterministically():
    kwok = [{"metadata": {"name": f"kwok-node-{i}"}, "status": {"addresses": [{"address": "198.18.0.1"}]}}
            for i in (2, 0, 1)]
    real = {"metadata": {"name": "real-1"}, "status": {"addresses": [{"type": "InternalIP", "address": "198.18.6.2"}]}}
    for order in (kwok + [real], [real] + kwok[::-1]):
        for preferred in (None, "real-1"):  # a real node's stand-in prefers itself: it shares no address
            ips = cs.build_ip_map([], [], order, {}, {}, preferred)
            assert ips["198.18.0.1"].name == "kwok-node-0"  # lowest name, the same in every stand-in
            assert ips["198.18.6.2"] == cs.Workload("real-1", "node", "node")
    assert cs.build_ip_map([], [], kwok, {}, {}, "kwok-node-2")["198.18.0.1"].name == "kwok-node-2"


# -- sockets and the tracker ----------------------------------------------------------------------------
SS = """LISTEN 0      5            0.0.0.0:8080        0.0.0.0:*
\t cubic rto:1000 mss:536 cwnd:10
ESTAB  0      0         198.19.0.5:8080     198.19.0.6:41000
\t cubic wscale:7,7 rto:204 bytes_sent:1500 bytes_acked:1501 bytes_received:80 segs_out:5
ESTAB  0      0    [::ffff:198.19.0.5]:8080 [::ffff:198.19.0.6]:41002
\t cubic bytes_sent:700 bytes_received:80
ESTAB  0      0          127.0.0.1:5000      127.0.0.1:5001
\t cubic bytes_sent:3
"""


def test_parse_ss_and_tracker_keeps_closed_bytes():
    socks = cs.parse_ss(SS)
    assert [(s.state, s.src, s.sport, s.dst, s.dport, s.bytes_sent) for s in socks][1:3] == [
        ("ESTAB", "198.19.0.5", 8080, "198.19.0.6", 41000, 1500),
        ("ESTAB", "198.19.0.5", 8080, "198.19.0.6", 41002, 700)]
    ips = {"198.19.0.5": cs.Workload("web", "demo", "Deployment"),
           "198.19.0.6": cs.Workload("client", "demo", "Deployment")}
    t = cs.Tracker()
    t.poll({"ns-web": socks}, ips)
    link = cs.Link(ips["198.19.0.6"], ips["198.19.0.5"], 8080, cs.SERVER)
    assert t.links == {link: 2200} and t.loopback == 1 and t.polls == 1
    # one connection closes with more bytes sent since the poll: nothing already counted is lost
    t.closed("ns-web", cs.Sock("UNCONN", "198.19.0.5", 8080, "198.19.0.6", 41000, 1800), {8080}, ips)
    t.poll({"ns-web": socks[2:]}, ips)
    assert t.links[link] == 2500 and t.deletions == 1
    # a short connection never seen by a poll still counts, with its role from the listening port
    t.closed("ns-web", cs.Sock("UNCONN", "198.19.0.5", 8080, "198.19.0.6", 41010, 100), {8080}, ips)
    t.poll({"ns-web": socks[2:]}, ips)
    assert t.links[link] == 2600
    text = t.exposition()
    assert 'netviz_lab_standin_info{component="caretta"} 1' in text
    assert "caretta_polls_made 3" in text and "# TYPE caretta_links_observed gauge" in text


def test_destroy_event_after_the_poll_saw_the_socket_vanish_is_not_counted_twice():
    socks = cs.parse_ss(SS)
    ips = {"198.19.0.5": cs.Workload("web", "demo", "Deployment"),
           "198.19.0.6": cs.Workload("client", "demo", "Deployment")}
    link = cs.Link(ips["198.19.0.6"], ips["198.19.0.5"], 8080, cs.SERVER)
    t = cs.Tracker()
    t.poll({"ns": socks}, ips)
    t.poll({"ns": socks[2:]}, ips)  # :41000 is gone; its 1500 bytes move to the past
    assert t.links[link] == 2200 and t.deletions == 1
    t.closed("ns", cs.Sock("UNCONN", "198.19.0.5", 8080, "198.19.0.6", 41000, 1600), {8080}, ips)  # late event
    t.poll({"ns": socks[2:]}, ips)
    assert t.links[link] == 2300 and t.deletions == 1


# -- own node and this node's namespaces ---------------------------------------------------------------
def _pod(ns, name, node, ip, host_network=False):
    return {"metadata": {"name": name, "namespace": ns},
            "spec": {"nodeName": node, "hostNetwork": host_network},
            "status": {"podIP": ip, "podIPs": [{"ip": ip}] if ip else []}}


NODES = [{"metadata": {"name": n}, "status": {"addresses": [{"type": "InternalIP", "address": ip},
                                                            {"type": "Hostname", "address": n}]}}
         for n, ip in (("real-1", "198.18.6.2"), ("real-2", "198.18.6.6"), ("kwok-node-0", "198.18.0.1"))]
PODS = [_pod("caretta", "caretta-abcde", "real-1", "198.19.16.3"),
        _pod("caretta", "caretta-fghij", "real-2", "198.19.32.3"),
        _pod("demo", "web-1", "real-1", "198.19.16.4"),
        _pod("demo", "client-1", "real-2", "198.19.32.4"),
        _pod("kube-system", "kube-proxy-x", "real-1", "198.18.6.2", host_network=True),
        _pod("demo", "pending", "", None),
        _pod("scale", "sim-1", "kwok-node-0", "198.19.0.9")]


def test_own_node_by_pod_name_then_by_own_ip():
    assert cs.own_node(PODS, "caretta-fghij", "caretta") == "real-2"
    assert cs.own_node(PODS, "caretta-fghij", "other-ns") == ""
    assert cs.own_node(PODS, "renamed-host", "caretta", {"198.19.16.3"}) == "real-1"
    # a hostNetwork pod's IP is the node's: it never identifies us
    assert cs.own_node(PODS, "renamed-host", "caretta", {"198.18.6.2"}) == ""
    assert cs.own_node(PODS, "nope", "caretta") == ""


def test_node_internal_ips():
    assert cs.node_internal_ips(NODES, "real-2") == {"198.18.6.6"}
    assert cs.node_internal_ips(NODES, "missing") == set()


def test_select_namespaces_keeps_this_nodes_pods_and_the_node_namespace():
    ns_ips = {
        4026531840: {"198.18.0.1", "192.0.2.2"},          # the machine's own namespace (kwok address)
        4026532001: {"198.18.6.2", "198.19.16.1"},        # node real-1: InternalIP + cni0 gateway
        4026532002: {"198.18.6.6", "198.19.32.1"},        # node real-2
        4026532101: {"198.19.16.3"},                      # caretta pod on real-1 (us)
        4026532102: {"198.19.16.4"},                      # web on real-1
        4026532201: {"198.19.32.4"},                      # client on real-2
        4026532300: set(),                                # a namespace with only loopback
        4026532400: {"198.18.250.1"},                     # someone else's namespace
    }
    sel = cs.select_namespaces(ns_ips, PODS, NODES, "real-1")
    assert sel == {4026532001: "node real-1", 4026532101: "pod caretta/caretta-abcde",
                   4026532102: "pod demo/web-1"}
    assert set(cs.select_namespaces(ns_ips, PODS, NODES, "real-2")) == {4026532002, 4026532201}
    # no node known yet: nothing (a pending pod has no nodeName; never match it)
    assert cs.select_namespaces(ns_ips, PODS, NODES, "") == {}
    # kwok nodes run nothing: the kwok pod's IP is nowhere, only the shared address matches
    assert cs.select_namespaces(ns_ips, PODS, NODES, "kwok-node-0") == {4026531840: "node kwok-node-0"}


FIB_TRIE = """Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
        |-- 127.255.255.255
           /32 link BROADCAST
     +-- 198.19.16.0/24 2 0 2
        +-- 198.19.16.0/29 2 0 2
           |-- 198.19.16.0
              /24 link UNICAST
           |-- 198.19.16.4
              /32 host LOCAL
        |-- 198.19.16.255
           /32 link BROADCAST
Local:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
        |-- 127.255.255.255
           /32 link BROADCAST
     +-- 198.19.16.0/24 2 0 2
        +-- 198.19.16.0/29 2 0 2
           |-- 198.19.16.0
              /24 link UNICAST
           |-- 198.19.16.4
              /32 host LOCAL
        |-- 198.19.16.255
           /32 link BROADCAST
"""
IF_INET6 = """00000000000000000000000000000001 01 80 10 80       lo
fe8000000000000000fc00fffe000001 04 40 20 80     eth0
fd000000000000000000000000000002 04 40 00 82     eth0
"""


def test_parse_fib_trie_and_if_inet6():
    assert cs.parse_fib_trie(FIB_TRIE) == {"198.19.16.4"}
    assert cs.parse_fib_trie("") == set()
    assert cs.parse_if_inet6(IF_INET6) == {"fd00::2"}


def _fake_proc(tmp_path: Path) -> Path:
    """A /proc with three processes in two namespaces; pid 30 is a child of ours (pid 1)."""
    proc = tmp_path / "proc"
    for pid, inode, ppid, trie in ((10, 111, 0, FIB_TRIE), (20, 111, 1, FIB_TRIE), (30, 222, 1, FIB_TRIE),
                                   (40, 333, 0, None)):
        d = proc / str(pid)
        (d / "ns").mkdir(parents=True)
        (d / "net").mkdir()
        os.symlink(f"net:[{inode}]", d / "ns" / "net")
        (d / "stat").write_text(f"{pid} (a (b) c) S {ppid} 1 1 0 -1\n")
        if trie is not None:  # pid 40: its net files are gone (exited between listdir and read)
            (d / "net" / "fib_trie").write_text(trie)
    (proc / "self").symlink_to("1")
    (proc / "sys").mkdir()
    return proc


def test_discover_namespaces_tolerates_vanished_processes_and_skips_our_children(tmp_path):
    proc = _fake_proc(tmp_path)
    assert cs.netns_pids(str(proc)) == {111: [10, 20], 222: [30], 333: [40]}
    assert cs.ppid(str(proc), 10) == 0 and cs.ppid(str(proc), 99) is None
    assert cs.my_host_pid(str(proc)) == 1
    assert cs.discover_namespaces(str(proc), exclude_ppid=1) == {111: (10, {"198.19.16.4"})}
    assert set(cs.discover_namespaces(str(proc))) == {111, 222}
    assert cs.netns_inode(str(proc), 99) is None and cs.netns_ips(str(proc), 99) is None
    assert cs.discover_namespaces(str(tmp_path / "nothing")) == {}


def test_discover_namespaces_on_this_machine():
    """The real /proc: at least our own namespace, with our own pid or a lower one."""
    found = cs.discover_namespaces("/proc")
    mine = os.stat("/proc/self/ns/net").st_ino
    assert mine in found and found[mine][0] <= os.getpid()


# -- in-cluster API client ------------------------------------------------------------------------------
class _Api(BaseHTTPRequestHandler):
    seen: list[tuple[str, str | None]] = []
    forbidden = {"/apis/apps/v1/replicasets"}
    reject_tokens = {"old-token"}

    def do_GET(self):  # noqa: N802
        auth = self.headers.get("Authorization")
        self.seen.append((self.path, auth))
        if auth in {f"Bearer {t}" for t in self.reject_tokens}:
            self._json(401, {"kind": "Status", "message": "Unauthorized"})
        elif self.path in self.forbidden:
            self._json(403, {"kind": "Status", "message": 'replicasets.apps is forbidden: User '
                             '"system:serviceaccount:caretta:caretta" cannot list resource "replicasets"'})
        else:
            self._json(200, {"kind": "List", "items": [{"metadata": {"name": "x", "namespace": "y", "uid": self.path}}]})

    def _json(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_a):
        pass


@pytest.fixture
def api_server():
    _Api.seen = []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Api)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def sa_dir(tmp_path):
    d = tmp_path / "sa"
    d.mkdir()
    (d / "token").write_text("tok-1\n")
    (d / "namespace").write_text("caretta")
    (d / "ca.crt").write_text("not used over http\n")
    return d


def test_client_from_env_and_request_building(sa_dir, monkeypatch):
    c = cs.InClusterClient.from_env({"KUBERNETES_SERVICE_HOST": "198.19.128.1", "KUBERNETES_SERVICE_PORT": "443",
                                     cs.SA_DIR_ENV: str(sa_dir)})
    assert c.server == "https://198.19.128.1:443"
    assert c.ca_path == str(sa_dir / "ca.crt") and c.namespace() == "caretta"
    req = c.request(cs.RESOURCES["deployments"])
    assert req.full_url == "https://198.19.128.1:443/apis/apps/v1/deployments" and req.get_method() == "GET"
    assert req.get_header("Authorization") == "Bearer tok-1"
    (sa_dir / "token").write_text("tok-2")  # rotated by the kubelet: the next request carries it
    assert c.request("/api/v1/pods").get_header("Authorization") == "Bearer tok-2"
    assert cs.InClusterClient.from_env({"KUBERNETES_SERVICE_HOST": "fd00::1"}).server == "https://[fd00::1]:443"
    assert cs.InClusterClient.from_env({"KUBERNETES_SERVICE_HOST": "h"}).sa_dir == cs.SA_DIR
    with pytest.raises(RuntimeError):
        cs.InClusterClient.from_env({})


def test_resources_are_exactly_the_narrowed_cluster_role():
    from netviz_pipeline.render.caretta import WATCHED

    granted = {(g, r) for g, rs in WATCHED for r in rs}
    used = set()
    for res, path in cs.RESOURCES.items():
        parts = path.strip("/").split("/")
        group = "" if parts[0] == "api" else parts[1]
        assert parts[-1] == res
        used.add((group, res))
    assert used == granted


def test_client_lists_with_token_and_retries_a_rotated_token(api_server, sa_dir):
    c = cs.InClusterClient(api_server, str(sa_dir))
    assert c.list("pods") == [{"metadata": {"name": "x", "namespace": "y", "uid": "/api/v1/pods"}}]
    assert _Api.seen == [("/api/v1/pods", "Bearer tok-1")]
    (sa_dir / "token").write_text("old-token")

    def rotate_after_first_read(real=c.token, n=[0]):
        n[0] += 1
        if n[0] == 2:
            (sa_dir / "token").write_text("tok-3")
        return real()

    c.token = rotate_after_first_read
    assert c.list("nodes")
    assert _Api.seen[1:] == [("/api/v1/nodes", "Bearer old-token"), ("/api/v1/nodes", "Bearer tok-3")]


def test_forbidden_list_is_logged_by_resource_and_never_the_token(api_server, sa_dir, capsys, monkeypatch):
    monkeypatch.setenv("NODE_NAME", "real-1")
    standin = cs.StandIn(cs.InClusterClient(api_server, str(sa_dir)), proc="/proc")
    standin.refresh()
    err = capsys.readouterr().err
    assert "FORBIDDEN (403) to list replicasets" in err and 'cannot list resource "replicasets"' in err
    assert "tok-1" not in err
    assert set(standin.cache) == set(cs.RESOURCES) - {"replicasets"}
    assert standin.ready.is_set()  # pods, nodes, services listed: the IP map is built
    assert sorted(p for p, _ in _Api.seen) == sorted(cs.RESOURCES.values())  # GETs of exactly these
    standin.refresh()  # the same denial again: not repeated in the log
    assert "FORBIDDEN" not in capsys.readouterr().err


def test_unreachable_api_server_is_not_fatal(sa_dir, capsys):
    standin = cs.StandIn(cs.InClusterClient("http://127.0.0.1:9", str(sa_dir), timeout=2), proc="/proc")
    standin.refresh()
    assert "resolver: API server http://127.0.0.1:9" in capsys.readouterr().err
    assert not standin.ready.is_set() and standin.cache == {}


# -- the file runs alone in the image -----------------------------------------------------------------
def test_help_is_a_one_line_smoke_test_without_site_packages():
    res = subprocess.run([sys.executable, "-I", "-S", str(SOURCE), "--help"], capture_output=True, text=True,
                         env={"PATH": os.environ.get("PATH", ""), "COLUMNS": "80"}, timeout=30)
    assert res.returncode == 0, res.stderr
    assert cs.DESCRIPTION in res.stdout


def test_stdlib_only_and_no_lab_imports():
    text = SOURCE.read_text()
    assert "netviz_lab" not in text.replace("netviz_lab_standin_info", "")
    assert "kubernetes import" not in text and "import kubernetes" not in text
    assert "NETVIZ_LAB_" not in text


def test_missing_in_cluster_identity_exits_clearly(tmp_path):
    env = {"PATH": os.environ.get("PATH", ""), "KUBERNETES_SERVICE_HOST": "127.0.0.1",
           cs.SA_DIR_ENV: str(tmp_path / "none"), "PROMETHEUS_PORT": "0"}
    res = subprocess.run([sys.executable, "-I", str(SOURCE)], capture_output=True, text=True, env=env, timeout=30)
    assert res.returncode == 2 and "no in-cluster API access" in res.stderr
