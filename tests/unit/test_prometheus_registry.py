"""Adding a Prometheus mode is one module plus its registry line: validation, resolution (explicit and
under auto), the asset that writes it, the checks' waits and wording, and the administrator's grant all
read `targets.registry.MODES`. Shown with a made-up mode (a remote-write receiver's ConfigMap), defined
here and registered with one line, and nothing else changed. Also: the mode strings appear only in the
target modules."""
from __future__ import annotations

import ast
import copy
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

import netviz_pipeline
from netviz_pipeline import loading, targets
from netviz_pipeline.render import install
from netviz_pipeline.settings import SettingsError
from netviz_pipeline.targets import registry
from netviz_pipeline.targets.prometheus import Applied, Grant, PrometheusTarget

PKG = Path(netviz_pipeline.__file__).parent


@dataclass(frozen=True)
class ReceiverTarget(PrometheusTarget):
    """The made-up module: scrape jobs in a ConfigMap a receiver reads (claims a cluster that has one)."""

    mode = "receiver"
    sync_seconds = 42

    @classmethod
    def from_settings(cls, s):
        return cls()

    @classmethod
    def claim(cls, s, kube):
        found = kube is not None and any(d["metadata"]["name"] == "receiver"
                                         for d in kube.list("apps/v1", "Deployment"))
        return cls() if found else None

    def scrape_objects(self, s, exporters=None):
        return [{"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": {"name": "receiver-jobs", "namespace": s.goflow2.namespace},
                 "data": {"exporters": ",".join(exporters or [])}}]

    def apply(self, s, cluster, prom, exporters):
        return Applied(outcomes=tuple(cluster.apply(self.scrape_objects(s, exporters))))

    def grants(self, s):
        return [Grant("receiver", "receiver", ({"apiGroups": [""], "resources": ["configmaps"],
                                                "resourceNames": ["receiver-jobs"], "verbs": ["get", "patch"]},))]

    def missing_config(self, s):
        return " (the receiver reads its ConfigMap every 42 s)"


@pytest.fixture
def receiver(monkeypatch):
    monkeypatch.setitem(registry.MODES, ReceiverTarget.mode, ReceiverTarget)  # its registry line


class Cluster:
    def __init__(self, deployments=()):
        self.deployments, self.applied = list(deployments), []
        self.kube = self

    def list(self, api_version, kind, namespace=None, **kw):
        return self.deployments if kind == "Deployment" else []

    def apply(self, objs):
        self.applied += objs
        return []


def _raw(raw, mode):
    data = copy.deepcopy(raw)
    data["prometheus"] = {"url": "http://127.0.0.1:9090", "mode": mode}
    return data


def test_settings_accept_a_registered_mode_and_refuse_others_with_the_choices(receiver, raw):
    assert loading.parse(_raw(raw, "receiver")).prometheus.mode == "receiver"
    with pytest.raises(SettingsError) as e:
        loading.parse(_raw(raw, "pushgateway"))
    assert "prometheus.mode" in str(e.value) and "receiver" in str(e.value) and "operator" in str(e.value)


def test_an_unregistered_mode_is_refused(raw):
    with pytest.raises(SettingsError, match="prometheus.mode: 'receiver' is not a Prometheus mode"):
        loading.parse(_raw(raw, "receiver"))


def test_resolution_finds_it_named_and_under_auto(receiver, raw):
    s = loading.parse(_raw(raw, "receiver"))
    assert isinstance(targets.resolve(s, None).prometheus, ReceiverTarget)
    auto = loading.parse(_raw(raw, "auto"))
    found = targets.resolve(auto, Cluster([{"metadata": {"name": "receiver", "namespace": "r"}}]))
    assert isinstance(found.prometheus, ReceiverTarget)
    assert targets.resolve(auto, Cluster()).prometheus is None  # nothing claims: auto says what to set


def test_the_asset_writes_through_it_and_the_checks_use_its_wait_and_wording(receiver, raw, tmp_path):
    import yaml

    from netviz_pipeline.assets.prometheus import prometheus_scrape_config
    from netviz_pipeline.checks.scrape import scrape_findings
    from netviz_pipeline.resources.cluster import ClusterResource
    from netviz_pipeline.resources.config import NetvizConfig

    fake = Cluster()

    class FakeCluster(ClusterResource):
        @property
        def kube(self):
            return fake

        def apply(self, objs):
            return fake.apply(objs)

    path = tmp_path / "netviz.yaml"
    path.write_text(yaml.safe_dump(_raw(raw, "receiver")))
    cluster = FakeCluster(config=NetvizConfig(config_path=str(path)))
    result = prometheus_scrape_config(dg.build_asset_context(), cluster=cluster, prometheus=None)
    assert result.metadata["mode"].value == "receiver"
    assert [o["metadata"]["name"] for o in fake.applied] == ["receiver-jobs"]
    target = cluster.resolved.prometheus
    assert target.sync_seconds == 42
    s = cluster.resolved.settings
    (scrape, *_) = scrape_findings(s, [], {"netviz-caretta": 2}, None, target)
    assert "not in Prometheus's loaded config yet (the receiver reads its ConfigMap every 42 s)" in scrape.reason


def test_the_administrator_grants_what_it_needs(receiver, raw):
    s = loading.parse(_raw(raw, "receiver"))
    roles = {o["metadata"]["namespace"]: o for o in install.install_objects(s) if o["kind"] == "Role"}
    assert roles["receiver"]["rules"] == [{"apiGroups": [""], "resources": ["configmaps"],
                                           "resourceNames": ["receiver-jobs"], "verbs": ["get", "patch"]}]


MODE_NAMES = {"file", "chart", "operator"}


def _compares_a_mode(node: ast.AST) -> bool:
    if not isinstance(node, ast.Compare):
        return False
    sides = [node.left, *node.comparators]
    consts = [c.value for side in sides for c in ([side] if isinstance(side, ast.Constant) else
                                                  getattr(side, "elts", []) if isinstance(side, (ast.Tuple, ast.Set, ast.List)) else [])
              if isinstance(c, ast.Constant)]
    return bool(MODE_NAMES & set(consts))


def test_the_mode_strings_are_compared_only_in_the_target_modules():
    found = []
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG)
        if rel.parts[0] == "targets":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if _compares_a_mode(node):
                found.append(f"{rel}:{node.lineno}")
    assert found == []
