"""netviz's own Dagster in the cluster, as the in-cluster recipe (docs/operating.md) runs it (`python -m
netviz_pipeline.service k8s`, Dagster's Helm chart's shape): code server, webserver and daemon as
Deployments on the real lab nodes from the locally built image (images.pipeline_image_ref), each run a
Kubernetes Job there as the pipeline's ServiceAccount, storage in the lab's PostgreSQL (a database of its
own, `DATABASE`, new at each deploy), settings from a ConfigMap, the router key and the Postgres password
from Secrets. A pod cannot edit the lab's Prometheus config file, so this needs the in-cluster
chart-shaped Prometheus (incluster_prometheus), found by `mode: auto`.

Applied as an administrator would: the Secrets first, then `python -m netviz_pipeline.admin apply
--service-image …`, which grants the runs' ServiceAccount instead of the lab's pipeline user (the grant
has one subject) and applies netviz's own objects; `remove` gives the grant back.
"""
from __future__ import annotations

import time

import requests
import yaml
from kubernetes.client.exceptions import ApiException

from . import clusterapi, images, nodes, postgres
from . import incluster_prometheus as icp
from . import settings as lab_settings
from .lab import Lab
from .topology import COLLECTOR_NODE, NODE_IP, POSTGRES_PORT, REAL_NODE_LABEL

NAMESPACE = "netviz"
DATABASE = "netviz_incluster"
NODE_PORT = 30300
RUN_START_TIMEOUT = 60


def url() -> str:
    return f"http://{COLLECTOR_NODE.ip}:{NODE_PORT}"


def pod_settings(lab: Lab, prometheus_url: str) -> dict:
    """The lab's settings as the pod reads them: in-cluster credentials, Prometheus found in the cluster,
    router keys from the Secret's mount. The canary runs `ip netns exec` on the lab host: not here."""
    from netviz_pipeline.render import service_k8s

    cfg = yaml.safe_load(lab_settings.render(lab))
    cfg["cluster"] = {"in_cluster": True, "node_address": cfg["cluster"]["node_address"]}
    cfg["prometheus"] = {"url": prometheus_url, "mode": "auto"}
    for r in cfg["routers"]:
        r["ssh_key_file"] = f"{service_k8s.SSH_DIR}/id_ed25519"
        r["known_hosts_file"] = f"{service_k8s.SSH_DIR}/known_hosts"
    cfg["checks"] = {}
    # the chart Prometheus's ConfigMap is Helm's: adopt it (the other choice, pasting the printed
    # extraScrapeConfigs into the chart's values, is proven by tests/pipeline/test_prometheus_modes.py)
    cfg["ownership"] = {**cfg.get("ownership", {}), "on_foreign_manager": "adopt"}
    # a short back-off, so a retry after a killed run Job comes within the test's minutes (the single-host
    # service proves the defaults); the bound stays the default 3 attempts per incident
    cfg["healing"] = {"backoff_seconds": 15, "backoff_max_seconds": 60}
    return cfg


def admin_args(lab: Lab, image: str) -> list[str]:
    """`admin` options for the recipe as the lab runs it (after the action): what an administrator types."""
    return ["--settings", str(settings_file(lab)), "--kubeconfig", str(lab.admin_kubeconfig),
            "--service-image", image, "--namespace", NAMESPACE, "--node-port", str(NODE_PORT),
            "--node-selector", "=".join(REAL_NODE_LABEL), "--postgres-host", NODE_IP,
            "--postgres-port", str(POSTGRES_PORT), "--postgres-user", postgres.ROLE, "--postgres-db", DATABASE,
            # images are on the nodes already: a run not started in a minute will not start (the test of
            # a run no node can take waits this long)
            "--run-start-timeout", str(RUN_START_TIMEOUT)]


def settings_file(lab: Lab):
    return lab.root / "incluster-settings.yaml"


def deploy(lab: Lab, timeout: float = 240) -> tuple[str, list[str]]:
    """The Secrets (the user's), then everything else as an administrator applies it (`admin apply
    --service-image …`: the grant to the runs' ServiceAccount and netviz's own objects), then wait until
    the webserver answers. Returns its URL and the admin options used."""
    from netviz_pipeline import admin
    from netviz_pipeline.render import service_k8s

    icp.deploy(lab, "chart")
    nodes.import_on_demand_images(lab)
    dc = clusterapi.dynamic(lab)
    svc = dc.resources.get(api_version="v1", kind="Service").get(name=icp.CHART_SERVER, namespace=icp.CHART_NS)
    settings_file(lab).write_text(yaml.safe_dump(pod_settings(lab, f"http://{svc.spec.clusterIP}:{svc.spec.ports[0].port}"),
                                                 sort_keys=False))
    postgres.fresh_database(lab, DATABASE)
    secrets = [{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NAMESPACE},
                "stringData": data} for name, data in (
        (service_k8s.SSH_SECRET, {"id_ed25519": (lab.ssh_dir / "id_ed25519").read_text(),
                                  "known_hosts": (lab.ssh_dir / "known_hosts").read_text()}),
        (service_k8s.POSTGRES_SECRET, {service_k8s.POSTGRES_PASSWORD_KEY: postgres.password(lab)}))]
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
    clusterapi.apply_objects(dc, [namespace, *secrets], "kubectl")  # before the pods mount them
    args = admin_args(lab, images.pipeline_image_ref(lab))
    if admin.main(["apply", *args]) != 0:
        raise RuntimeError(f"admin apply {' '.join(args)} failed")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url()}/server_info", timeout=2).ok:
                return url(), args
        except requests.RequestException:
            pass
        time.sleep(1)
    raise TimeoutError(f"netviz webserver not answering at {url()} within {timeout:.0f}s")


def remove(lab: Lab, timeout: float = 120) -> None:
    """Delete the namespace, give the grant back to the lab's pipeline user, remove the chart Prometheus."""
    dc = clusterapi.dynamic(lab)
    ns = dc.resources.get(api_version="v1", kind="Namespace")
    try:
        ns.delete(name=NAMESPACE)
    except ApiException as exc:
        if exc.status != 404:
            raise
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            ns.get(name=NAMESPACE)
        except ApiException as exc:
            if exc.status == 404:
                break
            raise
        time.sleep(1)
    clusterapi.install(lab)
    icp.remove(lab)
    icp.wait_gone(lab)
