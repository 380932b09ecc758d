"""Where the lab keeps its files and binaries. One `Lab` value is passed to every component."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from . import versions

_TOOL_VERSIONS = {
    "kube-apiserver": versions.KUBERNETES,
    "kube-controller-manager": versions.KUBERNETES,
    "kube-scheduler": versions.KUBERNETES,
    "kubectl": versions.KUBERNETES,
    "kubelet": versions.KUBERNETES,
    "kube-proxy": versions.KUBERNETES,
    "etcd": versions.ETCD,
    "kwok": versions.KWOK,
    "goflow2": versions.GOFLOW2,
    "prometheus": versions.PROMETHEUS,
    "promtool": versions.PROMETHEUS,
    "prometheus-operator": versions.PROMETHEUS_OPERATOR,
    "prometheus-config-reloader": versions.PROMETHEUS_OPERATOR,
}


@dataclass(frozen=True)
class Lab:
    # State lives under a root-owned 0755 directory: sshd's StrictModes refuses keys elsewhere.
    root: Path = field(default_factory=lambda: Path(os.environ.get("NETVIZ_LAB_DIR", "/var/lib/netviz-lab")))
    cache: Path = field(default_factory=lambda: Path(os.environ.get("NETVIZ_LAB_CACHE", "/var/cache/netviz-lab")))
    nodes: int = 0  # kwok (simulated) nodes, for scale; the real nodes are topology.REAL_NODES

    # -- files -------------------------------------------------------------------------------------
    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.root / "kubeconfig-admin.yaml"

    @property
    def pipeline_kubeconfig(self) -> Path:
        """Kubeconfig of the RBAC-restricted `netviz-pipeline` user (what the pipeline's tests use)."""
        return self.root / "kubeconfig-pipeline.yaml"

    @property
    def ssh_dir(self) -> Path:
        """Client key (`id_ed25519`) and `known_hosts` for the routers."""
        return self.root / "ssh"

    @property
    def prometheus_dir(self) -> Path:
        return self.root / "prometheus"

    @property
    def prometheus_kubeconfig(self) -> Path:
        """Kubeconfig of the lab Prometheus's own read-only identity, for Kubernetes discovery."""
        return self.root / "kubeconfig-prometheus.yaml"

    @property
    def prometheus_config(self) -> Path:
        """The Prometheus config file the pipeline manages in "file" mode."""
        return self.prometheus_dir / "prometheus.yml"

    @property
    def kafka_dir(self) -> Path:
        """The lab's Kafka broker: server.properties, its log4j2 config, the cluster id and data/ (its log dir)."""
        return self.root / "kafka"

    @property
    def kafka_lib(self) -> Path:
        """Apache Kafka's broker jars at the pinned version, fetched from Maven Central by fetch-kafka.sh."""
        return self.cache / "lib" / f"kafka-{versions.KAFKA}"

    def bin(self, tool: str) -> Path:
        """Path of a Go-built binary in the version-keyed cache (see build-lab-bins.sh)."""
        return self.cache / "bin" / f"{tool}-{_TOOL_VERSIONS[tool]}"

    @property
    def operator_manifests(self) -> Path:
        """The Operator's CRDs (crds/) and example RBAC (rbac-operator/, rbac-prometheus/) at its pinned
        version, copied from its Go module by build-lab-bins.sh."""
        return self.cache / "lib" / f"prometheus-operator-{versions.PROMETHEUS_OPERATOR}"

    def operator_crds(self, kinds: tuple[str, ...]) -> list[Path]:
        """The Prometheus Operator's own CRDs for `kinds` (plural resource names)."""
        d = self.operator_manifests / "crds"
        files = [d / f"monitoring.coreos.com_{kind}.yaml" for kind in kinds]
        if missing := [str(f) for f in files if not f.exists()]:
            raise RuntimeError(f"missing {', '.join(missing)}: run `make lab-deps`")
        return files

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"
