"""Lab component: a real Kubernetes control plane (etcd, kube-apiserver, controller-manager, scheduler),
real nodes beside it (nodes.py) and kwok simulating as many more nodes as scale tests want.

Why it looks like this:
- etcd, the controller-manager and the scheduler listen on 127.0.0.1. The API server listens on every
  address because the real nodes and their pods reach it at NODE_IP (it advertises NODE_IP: the
  `kubernetes` Service endpoint); hostnet's input chain admits only loopback and the lab's range.
- kwok's kubelet endpoint must be on the kwok nodes' InternalIP (topology.NODE_IP, on the router
  component's nvz-mgmt interface) because the API server reaches a node's "kubelet" there for exec/logs.
- Certificates come from pki.py (one CA); clients authenticate with certs only. The pipeline gets its
  own user `netviz-pipeline`, restricted by manifests/rbac/netviz-pipeline.yaml; kubelets are
  `system:node:<name>` (Node authorizer), kube-proxy is `system:kube-proxy`.
- etcd runs with --unsafe-no-fsync (a throwaway lab; speed matters more than crash safety).
- Single instances, so --leader-elect=false (saves the lease round-trips at start).
- kwok's kubelet server has NO authentication and maps `kubectl exec` to commands run locally as root
  (ClusterExec in the kwok config). It only listens on NODE_IP, which only the host and the lab's
  namespaces can reach, and hostnet drops it from anything but loopback.

teardown() also kills leftovers of a crashed run: processes whose executable is one of our binaries
AND whose command line mentions this lab's root directory, nothing else.
"""
from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import ssl
import time
import urllib.request
from pathlib import Path

import yaml

from . import pki, topology
from .clusterapi import KWOK_ANNOTATION, apply_base_objects, ensure_nodes  # noqa: F401 - re-exported
from .lab import Lab
from .proc import pid_alive, pid_cmdline
from .supervisor import Service

TOOLS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
CM_PORT, SCHEDULER_PORT = 10257, 10259


def _dir(lab: Lab) -> Path:
    """Kubeconfigs of the control-plane components, kwok's config, discovery caches."""
    return lab.root / "cluster"


def _etcd_dir(lab: Lab) -> Path:
    return lab.root / "etcd"


def apiserver_ip() -> str:
    """First address of the service range: the ClusterIP of the `kubernetes` Service."""
    return str(next(ipaddress.ip_network(topology.SERVICE_CIDR).hosts()))


def cert_specs() -> list[pki.CertSpec]:
    S = pki.CertSpec
    return [
        S("apiserver", "kube-apiserver", server=True,
          dns=("kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local",
               "localhost"),
          ips=("127.0.0.1", topology.NODE_IP, apiserver_ip())),
        S("apiserver-kubelet-client", "kube-apiserver-kubelet-client", client=True),
        S("admin", "netviz-lab-admin", orgs=("system:masters",), client=True),
        S("kwok", "kwok-controller", orgs=("system:masters",), client=True),
        S("kube-controller-manager", "system:kube-controller-manager", client=True),
        S("kube-scheduler", "system:kube-scheduler", client=True),
        S("netviz-pipeline", "netviz-pipeline", client=True),
        # real nodes: kubelet identities (Node authorizer), their serving certs, kube-proxy
        *(S(f"node-{n.name}", f"system:node:{n.name}", orgs=("system:nodes",), client=True) for n in topology.REAL_NODES),
        *(S(f"kubelet-{n.name}", f"system:node:{n.name}", server=True, dns=(n.name,), ips=(n.ip,))
          for n in topology.REAL_NODES),
        S("kube-proxy", "system:kube-proxy", client=True),
        S("prometheus", "netviz-lab-prometheus", client=True),  # Kubernetes discovery, read-only
        # serving certs, so clients (readiness checks, Prometheus) can verify with the lab CA
        S("kwok-serving", "kwok-kubelet", server=True, dns=("localhost",), ips=(topology.NODE_IP, "127.0.0.1")),
        S("kube-controller-manager-serving", "kube-controller-manager", server=True, dns=("localhost",),
          ips=("127.0.0.1",)),
        S("kube-scheduler-serving", "kube-scheduler", server=True, dns=("localhost",), ips=("127.0.0.1",)),
    ]


def bundle(lab: Lab) -> pki.Bundle:
    return pki.ensure_all(lab.pki, cert_specs())


def server_url() -> str:
    return f"https://127.0.0.1:{topology.APISERVER_PORT}"


def write_kubeconfig(path: Path, ca: Path, pair: pki.Pair, user: str, server: str | None = None) -> None:
    """Self-contained kubeconfig (CA and client cert embedded), mode 0600."""
    import base64

    b64 = lambda p: base64.b64encode(p.read_bytes()).decode()  # noqa: E731
    cfg = {
        "apiVersion": "v1", "kind": "Config", "current-context": "netviz-lab",
        "clusters": [{"name": "netviz-lab", "cluster": {"server": server or server_url(),
                                                        "certificate-authority-data": b64(ca)}}],
        "users": [{"name": user, "user": {"client-certificate-data": b64(pair.cert),
                                          "client-key-data": b64(pair.key)}}],
        "contexts": [{"name": "netviz-lab", "context": {"cluster": "netviz-lab", "user": user}}],
    }
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
    os.replace(tmp, path)


def kubeconfig(lab: Lab, who: str) -> Path:
    return _dir(lab) / f"{who}.kubeconfig"


def kwok_config() -> list[dict]:
    """kwok --config documents: map `kubectl exec` in any kwok pod to a local command on the host."""
    return [{
        "apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "ClusterExec",
        "metadata": {"name": "netviz-lab-local"},
        "spec": {"execs": [{"local": {"workDir": "/"}}]},
    }]


# -- component contract ------------------------------------------------------------------------------
def setup(lab: Lab) -> None:
    missing = [str(lab.bin(t)) for t in (*TOOLS, "kubectl") if not lab.bin(t).exists()]
    if missing:
        raise FileNotFoundError(f"missing binaries {missing}: run netviz_lab/build-lab-bins.sh")
    d = _dir(lab)
    d.mkdir(parents=True, exist_ok=True)
    d.chmod(0o700)
    _etcd_dir(lab).mkdir(parents=True, exist_ok=True)
    _etcd_dir(lab).chmod(0o700)
    lab.logs.mkdir(parents=True, exist_ok=True)
    b = bundle(lab)
    write_kubeconfig(lab.admin_kubeconfig, b.ca.cert, b["admin"], "netviz-lab-admin")
    write_kubeconfig(lab.pipeline_kubeconfig, b.ca.cert, b["netviz-pipeline"], "netviz-pipeline")
    write_kubeconfig(lab.prometheus_kubeconfig, b.ca.cert, b["prometheus"], "netviz-lab-prometheus")
    for who in ("kube-controller-manager", "kube-scheduler", "kwok"):
        write_kubeconfig(kubeconfig(lab, who), b.ca.cert, b[who], who)
    (d / "kwok.yaml").write_text(yaml.safe_dump_all(kwok_config(), sort_keys=False))


def services(lab: Lab) -> list[Service]:
    b = bundle(lab)  # reuses setup's files; gives the paths
    ca = str(b.ca.cert)
    admin_ctx = tls_context(b.ca.cert, b["admin"])
    anon_ctx = tls_context(b.ca.cert)
    etcd_url = f"http://127.0.0.1:{topology.ETCD_CLIENT_PORT}"
    peer_url = f"http://127.0.0.1:{topology.ETCD_PEER_PORT}"
    pool = ipaddress.ip_network(topology.KWOK_POD_CIDR)
    # kwok allocates from the CIDR's address upwards: start at .1, not the network address.
    kwok_cidr = f"{pool.network_address + 1}/{pool.prefixlen}"

    def tls(name: str) -> list[str]:
        return [f"--tls-cert-file={b[name].cert}", f"--tls-private-key-file={b[name].key}"]

    def delegated(who: str) -> list[str]:
        kc = kubeconfig(lab, who)
        return [f"--kubeconfig={kc}", f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
                f"--client-ca-file={ca}", "--bind-address=127.0.0.1", "--leader-elect=false",
                "--kube-api-qps=100", "--kube-api-burst=200", "--profiling=false"]

    etcd = Service(
        name="etcd",
        argv=[str(lab.bin("etcd")), "--name=netviz-lab", f"--data-dir={_etcd_dir(lab)}",
              f"--listen-client-urls={etcd_url}", f"--advertise-client-urls={etcd_url}",
              f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
              f"--initial-cluster=netviz-lab={peer_url}", "--initial-cluster-state=new",
              "--unsafe-no-fsync", "--log-level=warn", "--quota-backend-bytes=4294967296"],
        ready=lambda: json.loads(http_get(f"{etcd_url}/health")).get("health") == "true",
        ready_timeout=30,
    )
    apiserver = Service(
        name="kube-apiserver",
        argv=[str(lab.bin("kube-apiserver")), f"--etcd-servers={etcd_url}",
              # All addresses: the real nodes and their pods reach it at NODE_IP (the `kubernetes`
              # Service endpoint); hostnet's input chain admits only loopback and the lab's range.
              "--bind-address=0.0.0.0", f"--secure-port={topology.APISERVER_PORT}",
              f"--advertise-address={topology.NODE_IP}", *tls("apiserver"), f"--client-ca-file={ca}",
              "--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
              f"--service-cluster-ip-range={topology.SERVICE_CIDR}",
              f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
              f"--service-account-key-file={b.sa_pub}", f"--service-account-signing-key-file={b.sa_key}",
              f"--kubelet-client-certificate={b['apiserver-kubelet-client'].cert}",
              f"--kubelet-client-key={b['apiserver-kubelet-client'].key}",
              f"--kubelet-certificate-authority={ca}", "--kubelet-preferred-address-types=InternalIP,Hostname",
              "--allow-privileged=true", "--profiling=false", "--event-ttl=1h"],
        ready=lambda: http_get(f"{server_url()}/readyz", admin_ctx) == "ok",
        ready_timeout=90,
        after_ready=lambda: _after_apiserver(lab),
    )
    cm = Service(
        name="kube-controller-manager",
        argv=[str(lab.bin("kube-controller-manager")), *delegated("kube-controller-manager"),
              f"--secure-port={CM_PORT}", *tls("kube-controller-manager-serving"),
              "--use-service-account-credentials=true", f"--root-ca-file={ca}",
              f"--service-account-private-key-file={b.sa_key}",
              f"--cluster-signing-cert-file={ca}", f"--cluster-signing-key-file={b.ca.key}",
              "--controllers=*", f"--service-cluster-ip-range={topology.SERVICE_CIDR}",
              "--cluster-name=netviz-lab"],
        ready=lambda: http_get(f"https://127.0.0.1:{CM_PORT}/healthz", anon_ctx) == "ok",
    )
    scheduler = Service(
        name="kube-scheduler",
        argv=[str(lab.bin("kube-scheduler")), *delegated("kube-scheduler"),
              f"--secure-port={SCHEDULER_PORT}", *tls("kube-scheduler-serving")],
        ready=lambda: http_get(f"https://127.0.0.1:{SCHEDULER_PORT}/healthz", anon_ctx) == "ok",
    )
    kwok = Service(
        name="kwok",
        argv=[str(lab.bin("kwok")), f"--config={_dir(lab) / 'kwok.yaml'}",
              f"--kubeconfig={kubeconfig(lab, 'kwok')}",
              f"--manage-nodes-with-annotation-selector={KWOK_ANNOTATION[0]}={KWOK_ANNOTATION[1]}",
              f"--cidr={kwok_cidr}", f"--node-ip={topology.NODE_IP}",
              f"--node-port={topology.KWOK_SERVER_PORT}",
              # Heartbeat through Leases, as kubelets do: kwok's status-only heartbeat is slower than
              # the node monitor's grace period, so nodes flapped NotReady every ~55 s and the node
              # lifecycle controller marked every pod NotReady (rollouts then never complete).
              "--node-lease-duration-seconds=40",
              f"--server-address={topology.NODE_IP}:{topology.KWOK_SERVER_PORT}",
              *tls("kwok-serving")],
        env={"HOME": str(_dir(lab))},  # nothing from ~/.kwok or ~/.kube leaks in
        ready=lambda: http_get(f"https://{topology.NODE_IP}:{topology.KWOK_SERVER_PORT}/healthz", anon_ctx) == "ok",
        after_ready=lambda: ensure_nodes(lab, lab.nodes),  # waits until every node is Ready
        ready_timeout=60,
    )
    return [etcd, apiserver, cm, scheduler, kwok]


def _after_apiserver(lab: Lab) -> None:
    apply_base_objects(lab)  # RBAC + CRDs
    ensure_nodes(lab, lab.nodes, wait=False)  # kwok (started later) makes them Ready


def teardown(lab: Lab) -> None:
    kill_leftovers(lab)
    for p in (_etcd_dir(lab), _dir(lab), lab.pki):
        shutil.rmtree(p, ignore_errors=True)
    for f in (lab.admin_kubeconfig, lab.pipeline_kubeconfig, lab.prometheus_kubeconfig):
        f.unlink(missing_ok=True)


def kill_leftovers(lab: Lab, grace: float = 5.0) -> list[int]:
    """SIGTERM (then SIGKILL) processes running one of our binaries with this lab's root in argv."""
    exes = {str(lab.bin(t)) for t in TOOLS}
    marker = str(lab.root).rstrip("/") + "/"
    victims = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            exe = os.readlink(f"/proc/{entry}/exe").removesuffix(" (deleted)")
        except OSError:
            continue
        if exe in exes and marker in pid_cmdline(int(entry)):
            victims.append(int(entry))
    for pid in victims:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(pid_alive(p) for p in victims) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in victims:
        if pid_alive(pid):
            _signal(pid, signal.SIGKILL)
    return victims


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


# -- readiness helpers (also used by nodes.py) ---------------------------------------------------------
def tls_context(ca: Path, client: pki.Pair | None = None) -> ssl.SSLContext:
    """Verify servers with the lab CA `ca`; present `client` (cert, key) when given."""
    ctx = ssl.create_default_context(cafile=str(ca))
    if client:
        ctx.load_cert_chain(str(client.cert), str(client.key))
    return ctx


def http_get(url: str, ctx: ssl.SSLContext | None = None, timeout: float = 2.0) -> str:
    """GET a local endpoint, never through a proxy; body as text (raises on HTTP errors)."""
    handlers = [urllib.request.ProxyHandler({})]
    if ctx is not None:
        handlers.append(urllib.request.HTTPSHandler(context=ctx))
    with urllib.request.build_opener(*handlers).open(url, timeout=timeout) as r:
        return r.read().decode().strip()
