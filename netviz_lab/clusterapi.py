"""API-side set-up of the lab cluster: manifests (server-side apply), CRDs, and the kwok Node objects.

Kept apart from cluster.py (process management) because tests and benchmarks call these on a running
lab, e.g. `ensure_nodes(lab, 500)`.

Nodes are plain API objects that kwok animates (heartbeats/leases, pod status) because they carry the
annotation kwok is told to manage. They are created with their `status` (allowed on create), so the
nodeInfo we want is there from the start; kwok's default node-initialize stage writes nodeInfo back as
`or .status.nodeInfo.X <kwok default>`, i.e. it keeps the values we set (verified by the lab tests).
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable

import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError

from . import topology, versions
from .lab import Lab

FIELD_MANAGER = "netviz-lab"
KWOK_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
NODE_PREFIX = "kwok-node-"
NODE_LABEL = ("type", "kwok")
DEFAULT_KERNEL = "6.1.0-28-amd64"  # Debian 12 (bookworm) stock kernel
REPO = Path(__file__).resolve().parent.parent
KUBELET_CLIENT_MANIFEST = Path(__file__).resolve().parent / "manifests" / "apiserver-kubelet-client.yaml"
# The Operator's CRDs the lab serves from `up` on: what the pipeline writes in operator mode and what
# the Operator's Prometheus controller watches besides Prometheus itself.
MONITOR_CRDS = ("podmonitors", "servicemonitors", "probes", "prometheusrules")
PROMETHEUS_RBAC_MANIFEST = Path(__file__).resolve().parent / "manifests" / "prometheus-discovery.yaml"


def api_client(kubeconfig: Path, pool: int = 16) -> k8s.ApiClient:
    """ApiClient for a kubeconfig, with a connection pool large enough for parallel node creation."""
    cfg = k8s.Configuration()
    k8s_config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    cfg.connection_pool_maxsize = pool
    return k8s.ApiClient(cfg)


def dynamic(lab: Lab, kubeconfig: Path | None = None) -> DynamicClient:
    # Discovery cache inside the lab root: the default (/tmp/osrcp-<host>.json) is shared by every
    # lab on https://127.0.0.1:6443 and could describe a previous cluster.
    cache = lab.root / "cluster" / f"discovery-{(kubeconfig or lab.admin_kubeconfig).stem}.json"
    return DynamicClient(api_client(kubeconfig or lab.admin_kubeconfig), cache_file=str(cache))


class _Loader(yaml.SafeLoader):
    """YAML 1.2 reading of a bare `=` (a plain string; PyYAML's 1.1 resolver calls it a "value" tag and
    fails): the Operator's CRDs have `=` as an enum value."""


_Loader.add_constructor("tag:yaml.org,2002:value", yaml.SafeLoader.construct_yaml_str)


def apply_objects(dc: DynamicClient, docs: Iterable[dict | None], manager: str = FIELD_MANAGER) -> list[str]:
    """Server-side apply `docs` in order (empty ones skipped), as field manager `manager`, conflicts
    forced. Returns the kind/name list."""
    done = []
    for doc in docs:
        if not doc:
            continue
        res = dc.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
        ns = doc["metadata"].get("namespace") if res.namespaced else None
        res.server_side_apply(body=doc, name=doc["metadata"]["name"], namespace=ns,
                              field_manager=manager, force_conflicts=True)
        done.append(f"{doc['kind']}/{doc['metadata']['name']}")
    return done


def apply_file(dc: DynamicClient, path: Path) -> list[str]:
    """Server-side apply every document of a YAML file (field manager netviz-lab). Returns kind/name list."""
    return apply_objects(dc, yaml.load_all(path.read_text(), Loader=_Loader))


def wait_crds_established(dc: DynamicClient, names: list[str], timeout: float = 30) -> None:
    crds = dc.resources.get(api_version="apiextensions.k8s.io/v1", kind="CustomResourceDefinition")
    deadline = time.monotonic() + timeout
    pending = set(names)
    while pending:
        for name in list(pending):
            conds = (crds.get(name=name).to_dict().get("status") or {}).get("conditions") or []
            if any(c["type"] == "Established" and c["status"] == "True" for c in conds):
                pending.discard(name)
        if not pending:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"CRDs not Established after {timeout}s: {sorted(pending)}")
        time.sleep(0.2)
    dc.resources.invalidate_cache()  # make the new kinds resolvable through this client


def install(lab: Lab, settings: dict | None = None) -> list[str]:
    """What the lab's administrator does once: the product's install objects (namespaces, Caretta's
    cluster RBAC, the pipeline user's grant) for `settings` (default: the lab's), with admin credentials."""
    from netviz_pipeline import admin
    from netviz_pipeline.render.install import install_objects
    from netviz_pipeline.targets import for_install
    from netviz_pipeline.resources.kube import Kube
    from netviz_pipeline import loading

    from . import settings as lab_settings

    s = loading.parse(settings if settings is not None else lab_settings.settings(lab), check_host=False)
    kube = Kube(str(lab.admin_kubeconfig))
    return admin.apply(kube, install_objects(for_install(s, kube)))


def apply_base_objects(lab: Lab) -> None:
    """The API server's RBAC at the kubelets, the lab Prometheus's discovery RBAC, the monitor CRDs
    (PodMonitor & co., so operator-mode objects can be written), and the product's install objects
    for the lab's settings. The Prometheus CRD itself (800 kB, 8 s of API server time) comes with the
    lab's Operator (`netviz_lab prometheus operator`), as on a cluster where the Operator is installed."""
    dc = dynamic(lab)
    apply_file(dc, KUBELET_CLIENT_MANIFEST)
    apply_file(dc, PROMETHEUS_RBAC_MANIFEST)
    apply_operator_crds(lab, lab.operator_crds(MONITOR_CRDS))
    install(lab)


def apply_operator_crds(lab: Lab, paths: list[Path]) -> None:
    """Some of the Prometheus Operator's own CRDs, waited until Established."""
    dc = dynamic(lab)
    crds = [n.split("/", 1)[1] for path in paths for n in apply_file(dc, path)]
    wait_crds_established(dc, crds)


# -- nodes ------------------------------------------------------------------------------------------
def node_name(i: int) -> str:
    return f"{NODE_PREFIX}{i}"


def node_body(name: str, kernel: str = DEFAULT_KERNEL) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {KWOK_ANNOTATION[0]: KWOK_ANNOTATION[1], "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                NODE_LABEL[0]: NODE_LABEL[1],
            },
        },
        "spec": {},
        "status": {
            "addresses": [{"type": "InternalIP", "address": topology.NODE_IP},
                          {"type": "Hostname", "address": name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": topology.KWOK_SERVER_PORT}},
            "capacity": {"cpu": "8", "memory": "32Gi", "pods": "110", "ephemeral-storage": "100Gi"},
            "allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110", "ephemeral-storage": "100Gi"},
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "osImage": "Debian GNU/Linux 12 (bookworm)",
                "kernelVersion": kernel,
                "kubeletVersion": versions.KUBERNETES,
                "kubeProxyVersion": versions.KUBERNETES,
                "containerRuntimeVersion": "containerd://1.6.20",
                "machineID": "", "systemUUID": "", "bootID": "",
            },
        },
    }


def _ready(node: dict) -> bool:
    """Ready, and the node lifecycle controller has lifted its not-ready taint (it does so a moment
    after the condition turns; until then nothing without a toleration is scheduled there)."""
    conds = (node.get("status") or {}).get("conditions") or []
    taints = (node.get("spec") or {}).get("taints") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conds) and \
        not any(t.get("key", "").startswith("node.kubernetes.io/") for t in taints)


def ensure_nodes(lab: Lab, n: int, *, kernels: dict[str, str] | None = None, wait: bool = True,
                 timeout: float | None = None) -> list[str]:
    """Make exactly kwok-node-0..n-1 exist (create missing, delete extra), kernels[name] or the Debian 12
    default as status.nodeInfo.kernelVersion; with `wait`, until all are Ready and extras are gone.
    Returns the node names."""
    kernels = kernels or {}
    api = api_client(lab.admin_kubeconfig, pool=32)
    dc = DynamicClient(api, cache_file=str(lab.root / "cluster" / "discovery-nodes.json"))
    nodes = dc.resources.get(api_version="v1", kind="Node")
    want = {node_name(i) for i in range(n)}
    have = {o["metadata"]["name"]: o for o in
            nodes.get(label_selector=f"{NODE_LABEL[0]}={NODE_LABEL[1]}").to_dict()["items"]
            if o["metadata"]["name"].startswith(NODE_PREFIX)}

    def create(name: str) -> None:
        nodes.create(body=node_body(name, kernels.get(name, DEFAULT_KERNEL)))

    def fix_kernel(name: str) -> None:
        nodes.status.patch(name=name, content_type="application/merge-patch+json",
                           body={"status": {"nodeInfo": {"kernelVersion": kernels.get(name, DEFAULT_KERNEL)}}})

    def delete(name: str) -> None:
        try:
            nodes.delete(name=name)
        except NotFoundError:
            pass

    stale = [m for m, o in have.items() if m in want and
             ((o.get("status") or {}).get("nodeInfo") or {}).get("kernelVersion") != kernels.get(m, DEFAULT_KERNEL)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(create, sorted(want - have.keys())))
        list(pool.map(delete, sorted(have.keys() - want)))
        list(pool.map(fix_kernel, stale))  # e.g. kernels changed on a running lab
    if wait:
        _wait_nodes(nodes, want, timeout if timeout is not None else 60 + n * 0.2)
    return sorted(want, key=lambda s: int(s[len(NODE_PREFIX):]))


def _wait_nodes(nodes, want: set[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        items = nodes.get(label_selector=f"{NODE_LABEL[0]}={NODE_LABEL[1]}").to_dict()["items"]
        names = {o["metadata"]["name"] for o in items if o["metadata"]["name"].startswith(NODE_PREFIX)}
        ready = {o["metadata"]["name"] for o in items if _ready(o)}
        if names == want and want <= ready:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"nodes not settled after {timeout:.0f}s: missing/not ready "
                               f"{sorted(want - ready)[:10]}, extra {sorted(names - want)[:10]}")
        time.sleep(0.25)
