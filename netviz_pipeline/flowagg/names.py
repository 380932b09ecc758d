"""Cluster names for flow addresses: pod, Service and node addresses -> a workload name.

Standalone and stdlib-only (Python >= 3.9), like flowagg.py, which imports it from its own directory
(both ship in the same ConfigMap). Two parts:

`ClusterNames`, a pure index fed with Kubernetes watch events (and the items of the LIST that precedes
each watch) for pods, services, nodes, replicasets and jobs; `name(addr)` answers
  * `node/<node>`           an InternalIP or ExternalIP of a node (wins over everything: hostNetwork
                            pods share their node's address, and are not indexed at all);
  * `<namespace>/<workload>` a pod IP, the workload found the way Caretta's resolver does it
                            (pkg/k8s/ipresolver.go): follow the pod's *controller* ownerReference, then
                            the owner's own controller reference: Pod->ReplicaSet->Deployment,
                            Pod->Job->CronJob; Pod->StatefulSet/DaemonSet (or any other controller kind)
                            directly. An owner not (yet) known leaves its own name, as in Caretta
                            (`ns/web-7d9c5b8f4` until the ReplicaSet arrives). A bare pod (or a static
                            pod, owned by its Node) is `<namespace>/<pod>`;
  * `service/<namespace>/<name>` a Service's ClusterIP(s), externalIPs and load-balancer ingress IPs.
                            The namespace is kept: Service names are unique only per namespace
                            (`web`, `api`, `redis` exist in many), pod names carry it too, and the kind
                            prefix keeps the three shapes apart;
  * None                    anything else: the caller shows the address itself.
Priority on a shared address, as in Caretta: node > pod > service. (A namespace called `node` or
`service` would make a pod's name look like the other kinds'; Kubernetes allows it, nobody does it.)

Churn. An address belongs to the objects that claim it, newest claim last; `name` answers with the
newest live claimant, so an address reused by a new pod names the new pod even while the old one is
still Terminating, and the old pod's DELETED releases only the old pod's claim. A pod in phase
Succeeded or Failed (or leaving the server-side selection) releases its addresses. Out-of-order
events never resurrect a mapping: a deleted or finished UID is remembered (bounded) and its later
ADDED/MODIFIED are ignored; an event older (resourceVersion) than the stored one for the same UID is
ignored. A re-LIST replaces a kind's state: objects absent from it are removed.

Memory is bounded: per object only what naming needs (resourceVersion, namespace, owner reference or
name, addresses), shared strings interned in a table of our own (sys.intern strings are immortal on
3.12 and pod names churn), at most `max_objects` objects over all kinds. An object that does not fit
is not indexed: its addresses fall back to the address, `overflow` counts it, and the kind is re-listed
once there is room again (`wants_relist`).

`Watcher` threads (one per resource) keep an index current from the API server with the pod's own
ServiceAccount: paginated LIST, then WATCH from its resourceVersion with bookmarks, re-LIST on 410
Gone, capped exponential backoff with jitter on errors. ReplicaSets and Jobs are read as metadata only
(PartialObjectMetadata): their owner references are all we need. The token file is re-read every
minute (bound tokens rotate) and on 401; it is never logged.
"""
from __future__ import annotations

import http.client
import json
import os
import random
import ssl
import threading
import time
from collections import OrderedDict
from urllib.parse import urlencode

KINDS = ("pods", "services", "nodes", "replicasets", "jobs")
ADDRESS_KINDS = ("nodes", "pods", "services")  # lookup order = priority
OWNER_KINDS = ("replicasets", "jobs")  # a pod's owner that has an owner of its own worth naming
TERMINAL_PHASES = ("Succeeded", "Failed")
NODE_ADDRESS_TYPES = ("InternalIP", "ExternalIP")
MAX_ADDRESSES = 8  # per object (dual stack, a few LB ingress IPs); more is ignored
DEFAULT_MAX_OBJECTS = 50_000  # ~0.35 KiB traced, ~0.7 KiB RSS each (benchmarks/flowagg_names.py)
DEFAULT_TOMBSTONES = 4096

_IP_CHARS = frozenset("0123456789abcdefABCDEF.:")


def _ip(v) -> str | None:
    """A plausible IP literal as Kubernetes writes it (Go's canonical form), else None. Cheap: no parse."""
    if isinstance(v, str) and 2 <= len(v) <= 45 and ("." in v or ":" in v) and _IP_CHARS.issuperset(v):
        return v
    return None


def _rv(v) -> int | None:
    """resourceVersion as an integer when it is one (etcd revisions are; comparable per object), else None."""
    if isinstance(v, str) and v.isdigit() and len(v) < 20:
        return int(v)
    return None


def _controller(meta: dict):
    """The ownerReference with controller: true (metav1.GetControllerOf), else None."""
    refs = meta.get("ownerReferences")
    if isinstance(refs, list):
        for r in refs:
            if isinstance(r, dict) and r.get("controller") is True:
                return r
    return None


class ClusterNames:
    """The address index. Thread-safe: watcher threads `apply`, the metrics handler calls `name`.

    Records (tuples, index 0 = resourceVersion, last = addresses where the kind has any):
      pods        (rv, namespace, ref, owner_uid, addrs)  ref = controller name or pod name; owner_uid
                                                          only when the controller is a ReplicaSet/Job
      services    (rv, namespace, name, addrs)
      nodes       (rv, name, addrs)
      replicasets, jobs  (rv, workload)                   workload = its controller's name, else its own
    """

    def __init__(self, max_objects: int = DEFAULT_MAX_OBJECTS, tombstones: int = DEFAULT_TOMBSTONES):
        if max_objects < 1:
            raise ValueError("max_objects must be >= 1")
        self.max_objects = max_objects
        self.objs: dict[str, dict] = {k: {} for k in KINDS}
        self.addrs: dict[str, dict] = {k: {} for k in ADDRESS_KINDS}  # ip -> uid, or list of uids (newest last)
        self.dead: OrderedDict = OrderedDict()  # recently deleted/finished UIDs
        self.max_dead = tombstones
        self.strs: dict[str, str] = {}  # our intern table (compacted, unlike sys.intern)
        self.live_strs = 0  # its size after the last compaction
        self.lock = threading.Lock()
        self.overflow = 0  # objects not indexed because the index was full
        self.stale = 0  # events ignored: older resourceVersion, or for a deleted UID
        self.bad = 0  # objects ignored: not shaped like the kind they claim to be
        self.events = dict.fromkeys(KINDS, 0)
        self.watch_errors = dict.fromkeys(KINDS, 0)
        self.synced = dict.fromkeys(KINDS, 0)
        self._refused = set()  # kinds with objects refused since their last LIST

    # -- lookups ------------------------------------------------------------------------------------
    def name(self, addr: str) -> str | None:
        with self.lock:
            uid = self._claimant(self.addrs["nodes"], addr)
            if uid is not None:
                return "node/" + self.objs["nodes"][uid][1]
            uid = self._claimant(self.addrs["pods"], addr)
            if uid is not None:
                _, ns, ref, owner_uid, _ = self.objs["pods"][uid]
                if owner_uid is not None:
                    owner = self.objs["replicasets"].get(owner_uid) or self.objs["jobs"].get(owner_uid)
                    if owner is not None:
                        ref = owner[1]
                return ns + "/" + ref
            uid = self._claimant(self.addrs["services"], addr)
            if uid is not None:
                rec = self.objs["services"][uid]
                return "service/" + rec[1] + "/" + rec[2]
            return None

    def entries(self) -> dict[str, int]:
        with self.lock:
            return {k: len(v) for k, v in self.objs.items()}

    def size(self) -> int:
        return sum(len(v) for v in self.objs.values())

    @staticmethod
    def _claimant(index: dict, addr: str):
        c = index.get(addr)
        return c[-1] if isinstance(c, list) else c

    # -- events -------------------------------------------------------------------------------------
    def apply(self, kind: str, etype: str, obj) -> None:
        """One watch event: etype ADDED, MODIFIED, DELETED or BOOKMARK (ERROR is the client's)."""
        if kind not in self.objs or not isinstance(obj, dict):
            return
        with self.lock:
            self.events[kind] += 1
            if etype in ("ADDED", "MODIFIED"):
                self._upsert(kind, obj)
            elif etype == "DELETED":
                uid = _uid(obj)
                if uid is not None:
                    self._remove(kind, uid, tombstone=True)
                    self._compact()

    def list_begin(self, kind: str) -> set:
        """Start replacing `kind` by a LIST (pages follow); returns the set that collects its UIDs."""
        with self.lock:
            self._refused.discard(kind)
        return set()

    def list_page(self, kind: str, items, seen: set) -> None:
        with self.lock:
            for obj in items if isinstance(items, list) else ():
                if isinstance(obj, dict):
                    uid = _uid(obj)
                    if uid is not None:
                        seen.add(uid)
                        self.events[kind] += 1
                        self._upsert(kind, obj)

    def list_end(self, kind: str, seen: set) -> None:
        """Objects of `kind` absent from the LIST were deleted while nobody watched: remove them."""
        with self.lock:
            for uid in [u for u in self.objs[kind] if u not in seen]:
                self._remove(kind, uid, tombstone=True)
            self.synced[kind] = 1
            self._compact()

    def replace(self, kind: str, items) -> None:
        """A whole LIST at once (tests, benchmarks)."""
        seen = self.list_begin(kind)
        self.list_page(kind, items, seen)
        self.list_end(kind, seen)

    def wants_relist(self, kind: str) -> bool:
        """Objects of `kind` were refused (index full) and there is room now: LIST again to index them."""
        with self.lock:
            return kind in self._refused and self.size() < self.max_objects * 0.9

    # -- internals (lock held) ----------------------------------------------------------------------
    def _s(self, s: str) -> str:
        return self.strs.setdefault(s, s)

    def _upsert(self, kind: str, obj: dict) -> None:
        meta = obj.get("metadata")
        if not isinstance(meta, dict):
            return
        uid = meta.get("uid")
        if not isinstance(uid, str) or not uid:
            return
        if uid in self.dead:
            self.stale += 1
            return
        table = self.objs[kind]
        old = table.get(uid)
        rv = _rv(meta.get("resourceVersion"))
        if old is not None and rv is not None and old[0] is not None and rv < old[0]:
            self.stale += 1
            return
        try:
            rec = getattr(self, "_rec_" + kind)(obj, meta, rv)
        except (AttributeError, TypeError, ValueError):  # a malformed object: skip it, never stop the watch
            self.bad += 1
            return
        if rec is None:  # nothing to name it by (any more)
            if old is not None:
                self._remove(kind, uid, tombstone=False)
            status = obj.get("status")
            if kind == "pods" and isinstance(status, dict) and status.get("phase") in TERMINAL_PHASES:
                self._bury(uid)  # finished pods never come back: a late older event must not revive them
            return
        if old is None:
            if self.size() >= self.max_objects:
                self.overflow += 1
                self._refused.add(kind)
                return
            uid = self._s(uid) if kind in OWNER_KINDS else uid  # owner UIDs are shared by the pods' records
        table[uid] = rec
        if kind in self.addrs:
            index = self.addrs[kind]
            before = old[-1] if old is not None else ()
            for a in before:
                if a not in rec[-1]:
                    _release(index, a, uid)
            for a in rec[-1]:
                if a not in before:
                    _claim(index, a, uid)

    def _remove(self, kind: str, uid: str, tombstone: bool) -> None:
        rec = self.objs[kind].pop(uid, None)
        if rec is not None and kind in self.addrs:
            index = self.addrs[kind]
            for a in rec[-1]:
                _release(index, a, uid)
        if tombstone:
            self._bury(uid)

    def _bury(self, uid: str) -> None:
        self.dead[uid] = None
        self.dead.move_to_end(uid)
        while len(self.dead) > self.max_dead:
            self.dead.popitem(last=False)

    def _compact(self) -> None:
        """Rebuild the intern table from live records once it may hold mostly dead strings: it grew
        to twice its live size (+ 4096) since the last rebuild, so rebuilding costs O(1) per string."""
        if len(self.strs) <= 2 * self.live_strs + 4096:
            return
        old, self.strs = self.strs, {}
        for kind, table in self.objs.items():
            for uid, rec in list(table.items()):
                if kind == "pods":
                    rv, ns, ref, owner_uid, addrs = rec
                    table[uid] = (rv, self._s(ns), self._s(ref),
                                  self._s(owner_uid) if owner_uid is not None else None, addrs)
                elif kind == "services":
                    table[uid] = (rec[0], self._s(rec[1]), rec[2], rec[3])
                elif kind in OWNER_KINDS:
                    table[uid] = (rec[0], self._s(rec[1]))
        for kind in OWNER_KINDS:  # keys: the same string objects the pods' records hold
            t = self.objs[kind]
            self.objs[kind] = {self._s(u): r for u, r in t.items()}
        self.live_strs = len(self.strs)
        del old

    def _addrs(self, values) -> tuple:
        out = []
        for v in values:
            ip = _ip(v)
            if ip is not None and ip not in out:
                out.append(ip)
                if len(out) >= MAX_ADDRESSES:
                    break
        return tuple(out)

    def _rec_pods(self, obj: dict, meta: dict, rv):
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        if not isinstance(spec, dict) or not isinstance(status, dict):
            return None
        if spec.get("hostNetwork") is True or status.get("phase") in TERMINAL_PHASES:
            return None  # the node's address (the node names it), or no address any more
        ips = status.get("podIPs")
        values = [p.get("ip") for p in ips if isinstance(p, dict)] if isinstance(ips, list) and ips else \
            [status.get("podIP")]
        addrs = self._addrs(values)
        ns, name = meta.get("namespace"), meta.get("name")
        if not addrs or not isinstance(ns, str) or not isinstance(name, str):
            return None
        ref, owner_uid = self._s(name), None
        ctl = _controller(meta)
        if ctl is not None and isinstance(ctl.get("name"), str) and ctl.get("kind") != "Node":
            ref = self._s(ctl["name"])
            if ctl.get("kind") in ("ReplicaSet", "Job") and isinstance(ctl.get("uid"), str):
                owner_uid = self._s(ctl["uid"])
        return (rv, self._s(ns), ref, owner_uid, addrs)

    def _rec_services(self, obj: dict, meta: dict, rv):
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        if not isinstance(spec, dict) or not isinstance(status, dict):
            return None
        values = list(spec.get("clusterIPs") or [spec.get("clusterIP")])
        values += list(spec.get("externalIPs") or [])
        lb = status.get("loadBalancer") or {}
        values += [i.get("ip") for i in (lb.get("ingress") or []) if isinstance(i, dict)] if isinstance(lb, dict) else []
        addrs = self._addrs(v for v in values if v != "None")
        ns, name = meta.get("namespace"), meta.get("name")
        if not addrs or not isinstance(ns, str) or not isinstance(name, str):
            return None
        return (rv, self._s(ns), name, addrs)

    def _rec_nodes(self, obj: dict, meta: dict, rv):
        status = obj.get("status") or {}
        name = meta.get("name")
        if not isinstance(status, dict) or not isinstance(name, str):
            return None
        addrs = self._addrs(a.get("address") for a in (status.get("addresses") or [])
                            if isinstance(a, dict) and a.get("type") in NODE_ADDRESS_TYPES)
        return (rv, name, addrs) if addrs else None

    def _rec_owner(self, obj: dict, meta: dict, rv):
        ctl = _controller(meta)
        name = ctl.get("name") if ctl is not None else meta.get("name")
        return (rv, self._s(name)) if isinstance(name, str) else None

    _rec_replicasets = _rec_jobs = _rec_owner


def _uid(obj: dict) -> str | None:
    meta = obj.get("metadata")
    uid = meta.get("uid") if isinstance(meta, dict) else None
    return uid if isinstance(uid, str) and uid else None


def _claim(index: dict, addr: str, uid: str) -> None:
    c = index.get(addr)
    if c is None:
        index[addr] = uid
    elif isinstance(c, list):
        if uid in c:
            c.remove(uid)
        c.append(uid)
    elif c != uid:
        index[addr] = [c, uid]


def _release(index: dict, addr: str, uid: str) -> None:
    """Drop `uid`'s claim on `addr`; another object's claim stays (an address reused by a new pod)."""
    c = index.get(addr)
    if c == uid:
        del index[addr]
    elif isinstance(c, list) and uid in c:
        c.remove(uid)
        if len(c) == 1:
            index[addr] = c[0]


class Names:
    """What the aggregator asks: Kubernetes names first, then the static `hosts` map, then the names the
    routers know (`router_hosts_dir`, written by the pipeline's router step), else None.

    Kubernetes first: for a cluster address its current name is authoritative, while a static or
    router-known name for it would be stale. `hosts` names what the cluster does not know (LAN hosts);
    it beats a router's name because a person wrote it for this purpose.

    The router hosts directory holds one JSON {address: name} per router (`<router>.json`), projected
    from optional ConfigMaps: it may be empty (no router step run yet) and changes while the process
    runs (the kubelet swaps the files when a ConfigMap changes, with its sync delay of up to a minute or
    two), so it is re-read when a file's (mtime, size, inode) changes, looked at no more often than every
    `reload_seconds`. A file that does not parse keeps its last good map (and is counted). Files merge in
    name order: the first router naming an address wins."""

    SERIES = 27  # health series `samples` always yields (see flowagg.Aggregator.budget)
    KINDS = ("workload", "service", "node", "host", "address")  # values of the src_kind/dst_kind labels

    def __init__(self, cluster: ClusterNames | None = None, hosts: dict | None = None,
                 router_hosts_dir: str | None = None, reload_seconds: float = 10.0, clock=time.monotonic,
                 max_router_hosts: int = 65536):
        self.cluster = cluster
        self.hosts = {str(k): str(v) for k, v in (hosts or {}).items()}
        self.router_hosts: dict[str, str] = {}
        self.router_hosts_dir = router_hosts_dir
        self.router_hosts_errors = 0
        self.max_router_hosts = max_router_hosts
        self._reload_seconds = reload_seconds
        self._clock = clock
        self._checked = None  # when the directory was last looked at
        self._files: dict[str, tuple] = {}  # file name -> (stamp, its last good map)

    @property
    def enabled(self) -> bool:
        return self.cluster is not None or bool(self.hosts) or self.router_hosts_dir is not None

    def refresh(self) -> None:
        """Re-read the router hosts files that changed (one listdir and a stat per file, at most every
        `reload_seconds`)."""
        if self.router_hosts_dir is None:
            return
        now = self._clock()
        if self._checked is not None and now - self._checked < self._reload_seconds:
            return
        self._checked = now
        try:
            names = sorted(n for n in os.listdir(self.router_hosts_dir) if n.endswith(".json"))
        except OSError:
            names = []
        files: dict[str, tuple] = {}
        for n in names:
            path = os.path.join(self.router_hosts_dir, n)
            try:
                st = os.stat(path)
            except OSError:
                continue
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            old = self._files.get(n)
            if old is not None and old[0] == stamp:
                files[n] = old
                continue
            try:
                with open(path, encoding="utf-8") as f:
                    data = json.load(f)
                if not isinstance(data, dict):
                    raise ValueError("not a JSON object")
                files[n] = (stamp, {str(k): str(v)[:128] for k, v in data.items()})
            except (OSError, ValueError):
                self.router_hosts_errors += 1
                if old is not None:
                    files[n] = (stamp, old[1])  # keep the last good names; retried when the file changes
        if files.keys() != self._files.keys() or any(files[n] is not self._files.get(n) for n in files):
            merged: dict[str, str] = {}
            for _, m in files.values():
                for addr, name in m.items():
                    if len(merged) >= self.max_router_hosts:
                        break
                    merged.setdefault(addr, name)
            self.router_hosts = merged
        self._files = files

    def resolve(self, addr: str) -> tuple[str | None, str]:
        """(name or None, kind): kind is one of KINDS ("address" when nothing names it)."""
        if self.cluster is not None:
            n = self.cluster.name(addr)
            if n is not None:
                kind = "node" if n.startswith("node/") else "service" if n.startswith("service/") else "workload"
                return n, kind
        n = self.hosts.get(addr) or self.router_hosts.get(addr)
        return (n, "host") if n is not None else (None, "address")

    def name(self, addr: str) -> str | None:
        return self.resolve(addr)[0]

    def samples(self) -> list[tuple[str, str, str, list]]:
        """(metric, type, help, [(labels, value)]): exactly SERIES samples, whatever the cluster."""
        c = self.cluster
        entries = c.entries() if c else dict.fromkeys(KINDS, 0)
        zero = dict.fromkeys(KINDS, 0)

        def per_kind(d):
            return [((("kind", k),), d[k]) for k in KINDS]

        return [
            ("netviz_flow_names_entries", "gauge",
             "Objects indexed for address names, by kind (hosts: the settings' map; router_hosts: "
             "names read from the routers).",
             per_kind(entries) + [((("kind", "hosts"),), len(self.hosts)),
                                  ((("kind", "router_hosts"),), len(self.router_hosts))]),
            ("netviz_flow_names_router_hosts_errors_total", "counter",
             "Times a router hosts file could not be read as a JSON object (its last good names are kept).",
             [((), self.router_hosts_errors)]),
            ("netviz_flow_names_max_entries", "gauge", "Most Kubernetes objects the name index holds.",
             [((), c.max_objects if c else 0)]),
            ("netviz_flow_names_overflow_total", "counter",
             "Kubernetes objects not indexed because the index was full (their addresses show as addresses).",
             [((), c.overflow if c else 0)]),
            ("netviz_flow_names_stale_events_total", "counter",
             "Watch events ignored as out of order (older resourceVersion or a deleted UID).",
             [((), c.stale if c else 0)]),
            ("netviz_flow_names_bad_objects_total", "counter",
             "Kubernetes objects ignored because they were not shaped like their kind.", [((), c.bad if c else 0)]),
            ("netviz_flow_names_events_total", "counter", "Watch events and LIST items applied, by kind.",
             per_kind(c.events if c else zero)),
            ("netviz_flow_names_watch_errors_total", "counter",
             "Failed LIST/WATCH requests and broken streams, by kind (403: the ServiceAccount lacks RBAC).",
             per_kind(c.watch_errors if c else zero)),
            ("netviz_flow_names_synced", "gauge",
             "1 once the kind was listed and is being watched, 0 while (re)listing or failing.",
             per_kind(c.synced if c else zero)),
        ]


# ---------------------------------------------------------------------------------- API client
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
# As client-go's metadata client (k8s.io/client-go/metadata): a LIST asks for a PartialObjectMetadataList,
# a WATCH for PartialObjectMetadata (each event's object); JSON only, and plain JSON as the fallback
# (a server without the conversion sends whole objects, of which only `metadata` is read anyway).
META_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
META_WATCH = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json"
# kind -> (collection path, extra query, metadata only)
RESOURCES = {
    # terminal pods leave the selection: the watch sends DELETED for them, and a LIST skips them
    "pods": ("/api/v1/pods", {"fieldSelector": "status.phase!=Succeeded,status.phase!=Failed"}, False),
    "services": ("/api/v1/services", {}, False),
    "nodes": ("/api/v1/nodes", {}, False),
    "replicasets": ("/apis/apps/v1/replicasets", {}, True),
    "jobs": ("/apis/batch/v1/jobs", {}, True),
}
PAGE = 100  # items per LIST page: a pod is ~5-20 KiB of JSON (managedFields...): a page parses to ~10 MiB
MAX_EVENT = 8 << 20  # bytes; etcd caps objects at 1.5 MiB
BACKOFF_MIN, BACKOFF_MAX = 1.0, 60.0


class ApiError(Exception):
    def __init__(self, status: int, reason: str):
        super().__init__(f"HTTP {status}: {reason}")
        self.status = status


class Gone(ApiError):
    """410: the resourceVersion (or a LIST continue token) is too old: LIST again."""


class InCluster:
    """The pod's ServiceAccount: API server address from the environment, CA and token from files."""

    def __init__(self, host: str | None = None, port: str | None = None, sa_dir: str = SA_DIR,
                 token_ttl: float = 60.0):
        host = host or os.environ.get("KUBERNETES_SERVICE_HOST")
        port = port or os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise RuntimeError("not in a cluster: KUBERNETES_SERVICE_HOST is unset")
        self.host, self.port = host, int(port)
        self.token_path = os.path.join(sa_dir, "token")
        self.ctx = ssl.create_default_context(cafile=os.path.join(sa_dir, "ca.crt"))
        self.token_ttl = token_ttl
        self._token, self._read_at = "", -1e9
        self._lock = threading.Lock()

    def token(self, force: bool = False) -> str:
        """The current token; re-read every token_ttl seconds (the kubelet rotates bound tokens)."""
        with self._lock:
            now = time.monotonic()
            if force or now - self._read_at > self.token_ttl:
                with open(self.token_path) as f:
                    self._token = f.read().strip()
                self._read_at = now
            return self._token

    def request(self, path: str, query: dict, accept: str, timeout: float):
        conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=timeout)
        conn.request("GET", path + "?" + urlencode(query),
                     headers={"Authorization": "Bearer " + self.token(), "Accept": accept,
                              "User-Agent": "netviz-flowagg"})
        resp = conn.getresponse()
        if resp.status != 200:
            body = resp.read(4096).decode("utf-8", "replace")
            conn.close()
            try:
                reason = str(json.loads(body).get("message", ""))[:200]
            except (ValueError, AttributeError):
                reason = resp.reason
            if resp.status == 401:
                self.token(force=True)
            raise (Gone if resp.status == 410 else ApiError)(resp.status, reason)
        return conn, resp


class Watcher:
    """One resource kind: LIST, then WATCH from its resourceVersion, for ever (daemon thread)."""

    def __init__(self, api, names: ClusterNames, kind: str, log=None, watch_seconds: int = 300, sleep=time.sleep):
        self.api, self.names, self.kind = api, names, kind
        self.path, self.query, self.meta_only = RESOURCES[kind]
        self.log = log or (lambda msg: None)
        self.watch_seconds = watch_seconds
        self.sleep = sleep
        self.backoff = BACKOFF_MIN
        self._last_error = ""

    def start(self) -> threading.Thread:
        t = threading.Thread(target=self.run, daemon=True, name=f"names-{self.kind}")
        t.start()
        return t

    def run(self, rounds: int | None = None) -> None:
        """Loop for ever (`rounds`: stop after that many LIST-or-WATCH requests; tests).

        A failed or ended WATCH resumes from the last resourceVersion seen; only 410 Gone (or room in
        the index for objects it refused) costs a new LIST."""
        rv = None
        n = 0
        while rounds is None or n < rounds:
            n += 1
            try:
                if rv is None or self.names.wants_relist(self.kind):
                    rv = None
                    rv = self.list()
                    self._last_error = ""
                else:
                    rv = self.watch(rv)
                self.backoff = BACKOFF_MIN
            except Gone as e:
                rv = None
                self._error(f"{e} (resourceVersion or continue token too old): listing again")
                self.sleep(random.uniform(0, 1) + (self.backoff if self.backoff > BACKOFF_MIN else 0))
                self.backoff = min(self.backoff * 2, BACKOFF_MAX)
            except Exception as e:  # noqa: BLE001 - any failure: count, wait, try again
                self._error(f"{type(e).__name__}: {e}")
                self.sleep(self.backoff * random.uniform(0.5, 1.0))
                self.backoff = min(self.backoff * 2, BACKOFF_MAX)

    def _error(self, msg: str) -> None:
        with self.names.lock:
            self.names.watch_errors[self.kind] += 1
            self.names.synced[self.kind] = 0
        if msg != self._last_error:  # the same failure again (403 for hours) is counted, not logged
            self._last_error = msg
            self.log(f"names {self.kind}: {msg}")

    def list(self) -> str:
        """Paginated LIST into the index (replacing this kind); returns its resourceVersion."""
        seen = self.names.list_begin(self.kind)
        query = dict(self.query, limit=str(PAGE))
        accept = META_LIST if self.meta_only else "application/json"
        while True:
            conn, resp = self.api.request(self.path, query, accept, timeout=60)
            try:
                page = json.loads(resp.read())
            finally:
                conn.close()
            self.names.list_page(self.kind, page.get("items"), seen)
            meta = page.get("metadata") or {}
            if not meta.get("continue"):
                self.names.list_end(self.kind, seen)
                return str(meta.get("resourceVersion", ""))
            query["continue"] = meta["continue"]

    def watch(self, rv: str) -> str:
        """One WATCH request from `rv` until the server ends it; returns the last resourceVersion seen."""
        query = dict(self.query, watch="1", resourceVersion=rv, allowWatchBookmarks="true",
                     timeoutSeconds=str(int(self.watch_seconds * random.uniform(1.0, 1.2))))
        accept = META_WATCH if self.meta_only else "application/json"
        conn, resp = self.api.request(self.path, query, accept, timeout=self.watch_seconds * 1.2 + 60)
        with self.names.lock:
            self.names.synced[self.kind] = 1
        try:
            while True:
                line = resp.readline(MAX_EVENT)
                if not line:
                    return rv
                if not line.strip():
                    continue
                ev = json.loads(line)
                etype, obj = ev.get("type"), ev.get("object") or {}
                if etype == "ERROR":
                    code = obj.get("code") if isinstance(obj, dict) else None
                    reason = str(obj.get("message", ""))[:200] if isinstance(obj, dict) else ""
                    raise (Gone if code == 410 else ApiError)(code or 0, reason)
                self.names.apply(self.kind, etype, obj)
                new = (obj.get("metadata") or {}).get("resourceVersion") if isinstance(obj, dict) else None
                if isinstance(new, str) and new:
                    rv = new
        finally:
            conn.close()


def start(names: ClusterNames, log=None, api=None) -> list[threading.Thread]:
    """Start one watcher thread per kind with the pod's ServiceAccount; [] when not in a cluster."""
    try:
        api = api or InCluster()
    except (RuntimeError, OSError, ssl.SSLError) as e:
        if log:
            log(f"kubernetes names off: {e}")
        return []
    return [Watcher(api, names, kind, log).start() for kind in KINDS]
