"""Prometheus for the lab (component): upstream Prometheus v3 (built from its Go module, pinned in
versions.env) on 127.0.0.1 with the lifecycle API on, outside the cluster as a user's own would be.

The config file is the one the pipeline manages in its "file" mode. It starts with a job of the
"user's own" (Prometheus scraping itself) so the pipeline can show it merges without disturbing
other jobs. Prometheus reaches the lab's pods directly (the host routes each real node's pod range to
that node) and finds them by Kubernetes discovery, as its own read-only identity
(`lab.prometheus_kubeconfig`, RBAC in manifests/prometheus-discovery.yaml, like the chart's ClusterRole).
Debian's 2.42 was built without Kubernetes discovery; it is no longer used.
"""
from __future__ import annotations

import shutil

import requests
import yaml

from .lab import Lab
from .supervisor import Service
from .topology import PROMETHEUS_PORT

URL = f"http://127.0.0.1:{PROMETHEUS_PORT}"

INITIAL_CONFIG = {
    "global": {"scrape_interval": "5s", "evaluation_interval": "5s"},
    "scrape_configs": [
        {"job_name": "prometheus", "static_configs": [{"targets": [f"127.0.0.1:{PROMETHEUS_PORT}"]}]},
    ],
}


def binary(lab: Lab) -> str:
    path = lab.bin("prometheus")
    if not path.exists():
        raise RuntimeError(f"{path} is missing: run `make lab-deps`")
    return str(path)


def setup(lab: Lab) -> None:
    lab.prometheus_dir.mkdir(parents=True, exist_ok=True)
    if not lab.prometheus_config.exists():
        lab.prometheus_config.write_text(yaml.safe_dump(INITIAL_CONFIG, sort_keys=False))


def _ready() -> bool:
    return requests.get(f"{URL}/-/ready", timeout=1).status_code == 200


def services(lab: Lab) -> list[Service]:
    return [Service(
        name="prometheus",
        argv=[binary(lab), f"--config.file={lab.prometheus_config}",
              f"--storage.tsdb.path={lab.prometheus_dir / 'data'}",
              f"--web.listen-address=127.0.0.1:{PROMETHEUS_PORT}",
              "--web.enable-lifecycle", "--storage.tsdb.retention.time=1d"],
        ready=_ready, ready_timeout=30)]


def teardown(lab: Lab) -> None:
    shutil.rmtree(lab.prometheus_dir, ignore_errors=True)
