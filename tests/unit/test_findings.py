"""One result shape (findings.Finding) from the health layer to the edge: plain data inside, Dagster
metadata and check results made only by the check functions and the sensor (issue 13)."""
from __future__ import annotations

import ast
import time
from pathlib import Path

import dagster as dg
import pytest

import netviz_pipeline
from netviz_pipeline import checks
from netviz_pipeline.checks import caretta as caretta_checks
from netviz_pipeline.checks import exporters
from netviz_pipeline.exporter_health import Verdict
from netviz_pipeline.findings import Finding, healthy
from netviz_pipeline.remediation import plan
from netviz_pipeline.resources.cluster import ClusterResource
from netviz_pipeline.resources.config import NetvizConfig
from netviz_pipeline.resources.prometheus import PrometheusError
from netviz_pipeline import loading

PKG = Path(netviz_pipeline.__file__).parent


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names} | {
        n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}


@pytest.mark.parametrize("module", ["findings.py", "remediation.py", *(f"checks/{p.name}" for p in (PKG / "checks").glob("*.py"))])
def test_the_health_layer_is_plain_data(module):
    assert not {m for m in _imports(PKG / module) if m.split(".")[0] == "dagster"}


def test_a_finding_is_hashable_and_its_details_default_empty():
    f = Finding("caretta", False, "no polls")
    assert f.details == {} and f.heal and hash(f) == hash(Finding("caretta", False, "no polls", {"x": 1}))
    assert healthy([Finding("a", True, "ok"), Finding("b", True, "ok")]) and healthy([])
    assert not healthy([Finding("a", True, "ok"), f])


def test_poll_waits_for_a_healthy_finding_or_every_finding_of_a_list():
    answers = iter([Finding("x", False, "not yet"), Finding("x", True, "now")])
    assert checks.poll(lambda: next(answers), timeout=5, interval=0).reason == "now"
    lists = iter([[Finding("a", True, ""), Finding("b", False, "")], [Finding("a", True, ""), Finding("b", True, "")]])
    assert healthy(checks.poll(lambda: next(lists), timeout=5, interval=0))
    t0 = time.monotonic()
    last = checks.poll(lambda: Finding("x", False, "never"), timeout=0.2, interval=0.05)
    assert last.reason == "never" and time.monotonic() - t0 < 2


class CarettaProm:
    def __init__(self, polls: float, link_bytes: float, links: int, error: str = ""):
        self.polls, self.link_bytes, self.links, self.error = polls, link_bytes, links, error

    def query(self, expr: str) -> list[dict]:
        if self.error:
            raise PrometheusError(self.error)
        if expr.startswith("caretta_links_observed"):
            return [{"metric": {}, "value": [0, "1"]}] * self.links
        return [{"metric": {}, "value": [0, str(self.polls if "polls" in expr else self.link_bytes)]}]


def test_caretta_finding_carries_the_figures_as_plain_data(settings):
    f = caretta_checks.caretta_finding(settings, CarettaProm(12, 3400, 2))
    assert f.subject == "caretta" and f.healthy and f.details == {"link_series": 2}
    assert f.reason == f"12 polls and 3400 link bytes in the last {settings.checks.freshness.caretta_max_age_seconds}s " \
                       "over 2 link series"
    assert not caretta_checks.caretta_finding(settings, CarettaProm(12, 0, 2)).healthy
    down = caretta_checks.caretta_finding(settings, CarettaProm(0, 0, 0, error="Prometheus at x unreachable"))
    assert (down.healthy, down.reason, down.details) == (False, "Prometheus at x unreachable", {})


def test_the_sensor_turns_findings_into_a_check_evaluation_with_the_plans_diagnosis():
    from netviz_pipeline.sensors import _evaluation

    seen = [exporters.exporter_finding("a", Verdict(True, "flowing", "12 datagrams"), 12.0, None),
            exporters.exporter_finding("b", Verdict(False, "router-unreachable", "timed out", heal=False), 0.0, None)]
    assert seen[1].subject == "router:b" and not seen[1].heal and seen[1].reason == "router-unreachable: timed out"
    ev = _evaluation(dg.AssetKey("router_softflowd"), "netflow_arriving", seen, plan(seen, {}, now=0))
    assert not ev.passed and set(ev.metadata) == {"router:a", "router:b"}
    assert ev.metadata["router:a"].value == "flowing: 12 datagrams"
    assert ev.metadata["router:b"].value.startswith("router-unreachable: timed out; no re-run can fix this")


def test_the_netflow_check_table_keeps_its_columns():
    from netviz_pipeline.assets.routers import exporters_table

    looks = [exporters.exporter_finding("edge", Verdict(False, "not-received", "sent 3, counted 0: lost"), 0.0, None)]
    (row,) = [r.data for r in exporters_table(looks).value.records]
    assert row == {"router": "edge", "healthy": False, "cause": "not-received", "datagrams": 0,
                   "reason": "sent 3, counted 0: lost"}


@pytest.mark.parametrize("url", ["https://grafana.example/grafana", "https://grafana.example/grafana/"])
def test_dashboard_link_under_a_grafana_sub_path(raw, url):
    from netviz_pipeline.assets.dashboards import dashboard_url

    assert dashboard_url(url, "netviz-flows") == "https://grafana.example/grafana/d/netviz-flows"
    s = loading.parse(raw | {"grafana": {"url": url}})
    assert dashboard_url(s.grafana.url, "netviz-flows") == "https://grafana.example/grafana/d/netviz-flows"
    assert dashboard_url("http://grafana:3000", "x") == "http://grafana:3000/d/x"


class DeploymentsKube:
    def __init__(self, deployments: list[dict]):
        self.deployments, self.listed = deployments, 0

    def list(self, api_version, kind, namespace=None, **selectors):
        assert kind == "Deployment"
        self.listed += 1
        return self.deployments


def test_the_grafana_sidecar_is_read_once_per_run_and_overrides_the_settings(settings):
    grafana = {"metadata": {"name": "grafana", "namespace": "obs"}, "spec": {"template": {"spec": {"containers": [
        {"name": "grafana", "image": "docker.io/grafana/grafana:11.0.0"},
        {"name": "grafana-sc-dashboard", "image": "quay.io/kiwigrid/k8s-sidecar:1.27.4",
         "env": [{"name": "LABEL", "value": "dash"}]}]}}}}
    cluster = ClusterResource(config=NetvizConfig(config_path="/unused.yaml"))
    cluster.config.__dict__["settings"] = settings  # the cached_properties' slots
    kube = cluster.__dict__["kube"] = DeploymentsKube([grafana])
    for _ in range(3):  # both dashboard assets and a check in one run
        r = cluster.resolved
        s, sidecar = r.settings, r.grafana.sidecar
        assert (s.grafana.sidecar_label_key, s.grafana.dashboards_namespace) == ("dash", "obs")
        assert sidecar.deployment == "obs/grafana" and r.grafana.overrides_settings
    assert kube.listed == 1 and cluster.settings is settings


def test_the_caretta_check_keeps_its_metadata_labels(raw, tmp_path):
    import yaml

    from netviz_pipeline.assets.verify import caretta_links_present
    from netviz_pipeline.resources.prometheus import PrometheusResource

    path = tmp_path / "netviz.yaml"
    path.write_text(yaml.safe_dump(raw))
    config = NetvizConfig(config_path=str(path))

    class Prom(PrometheusResource):
        def query(self, expr: str) -> list[dict]:
            return CarettaProm(3, 500, 4).query(expr)

    result = caretta_links_present(cluster=ClusterResource(config=config), prometheus=Prom(config=config))
    assert result.passed and set(result.metadata) == {"link_series", "detail"}
    assert result.metadata["link_series"].value == 4 and "3 polls" in result.metadata["detail"].value
