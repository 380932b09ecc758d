"""Unit-test fixtures: a valid settings dict with real (empty) files under tmp_path."""
from __future__ import annotations

import copy

import pytest

from netviz_pipeline import loading
from netviz_pipeline.settings import Settings


@pytest.fixture
def files(tmp_path):
    names = ("kubeconfig", "id_ed25519", "known_hosts", "prometheus.yml", "token")
    out = {}
    for n in names:
        p = tmp_path / n
        p.write_text("scrape_configs: []\n" if n == "prometheus.yml" else "x\n")
        if n == "id_ed25519":
            p.chmod(0o600)  # a private key others can read is refused, as by OpenSSH
        out[n] = str(p)
    return out


@pytest.fixture
def raw(files) -> dict:
    """Shaped like netviz_lab/settings.py renders it."""
    router = {"host": "198.18.0.2", "user": "root", "ssh_key_file": files["id_ed25519"],
              "known_hosts_file": files["known_hosts"], "collector_address": "198.18.0.1"}
    return {
        "cluster": {"kubeconfig": files["kubeconfig"], "node_address": "198.18.0.1"},
        "caretta": {"namespace": "caretta"},
        "goflow2": {"namespace": "goflow2", "netflow_node_port": 32055},
        "prometheus": {"url": "http://127.0.0.1:9090", "mode": "file",
                       "file": {"config_path": files["prometheus.yml"],
                                "kubernetes_sd_kubeconfig": "/var/lib/netviz-lab/kubeconfig-prometheus.yaml"}},
        "grafana": {"dashboards_namespace": "monitoring"},
        "routers": [router | {"name": "edge-linux", "platform": "linux", "interface": "lan0"},
                    router | {"name": "edge-pfsense", "platform": "pfsense", "interface": "lan",
                              "host": "198.18.5.2"}],
        "checks": {"canary_command": ["ip", "netns", "exec", "nvz-lan", "curl", "-s", "http://198.18.2.10:8080/"],
                   "canary_source": "198.18.1.20", "canary_destination": "198.18.2.10"},
    }


@pytest.fixture
def make(raw):
    """make(**section_overrides) -> Settings; e.g. make(caretta={'preflight': 'warn'})."""
    def _make(**overrides) -> Settings:
        data = copy.deepcopy(raw)
        for k, v in overrides.items():
            data[k] = v
        return loading.parse(data)
    return _make


@pytest.fixture
def settings(make) -> Settings:
    return make()


@pytest.fixture
def promtool() -> str:
    """The lab's promtool (Prometheus v3, built by `make lab-deps`), else one on PATH."""
    import shutil

    from netviz_lab.lab import Lab

    built = Lab().bin("promtool")
    found = str(built) if built.exists() else shutil.which("promtool")
    if not found:
        pytest.skip("promtool not built: run `make lab-deps`")
    return found
