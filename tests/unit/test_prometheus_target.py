"""Resolving `prometheus.mode: auto` (targets.resolve) and recognising the chart's Prometheus server (pure
logic: the cluster is a fake that lists what a test gives it)."""
from __future__ import annotations

import copy

import pytest

from netviz_pipeline import targets
from netviz_pipeline.render.scrape import intervals
from netviz_pipeline.settings import SettingsError
from netviz_pipeline.targets.prometheus_chart import ChartServer, chart_server, chart_servers

URL = "http://prometheus-server.monitoring"


def chart_deployment(ns="monitoring", name="prometheus-server", cm="prometheus-server", legacy=False,
                     reloader_args=("--watched-dir=/etc/config", "--reload-url=http://127.0.0.1:9090/-/reload")):
    """A Deployment shaped as the prometheus-community chart renders its server (29.x, or <= 20.x)."""
    labels = ({"app": "prometheus", "component": "server", "release": "prometheus"} if legacy else
              {"app.kubernetes.io/name": "prometheus", "app.kubernetes.io/component": "server",
               "app.kubernetes.io/instance": "prometheus"})
    return {"metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"template": {"spec": {
                "containers": [
                    {"name": "prometheus-server-configmap-reload", "args": list(reloader_args),
                     "volumeMounts": [{"name": "config-volume", "mountPath": "/etc/config", "readOnly": True}]},
                    {"name": "prometheus-server", "args": ["--config.file=/etc/config/prometheus.yml"],
                     "volumeMounts": [{"name": "config-volume", "mountPath": "/etc/config"}]}],
                "volumes": [{"name": "config-volume", "configMap": {"name": cm}},
                            {"name": "storage-volume", "emptyDir": {}}]}}}}


def test_chart_server_found_through_its_deployment():
    assert chart_server(chart_deployment()) == ChartServer("monitoring", "prometheus-server", "prometheus-server")


def test_legacy_chart_labels_and_configmap_reload_sidecar_are_recognised():
    d = chart_deployment(legacy=True, reloader_args=("--volume-dir=/etc/config/", "--webhook-url=http://x"))
    assert chart_server(d) == ChartServer("monitoring", "prometheus-server", "prometheus-server")


@pytest.mark.parametrize("spoil", ["labels", "no-config-volume", "no-reloader", "reloader-elsewhere"])
def test_not_chart_shaped(spoil):
    d = chart_deployment()
    pod = d["spec"]["template"]["spec"]
    if spoil == "labels":
        d["metadata"]["labels"]["app.kubernetes.io/name"] = "alertmanager"
    elif spoil == "no-config-volume":
        pod["volumes"] = [{"name": "config", "configMap": {"name": "prometheus-server"}}]
    elif spoil == "no-reloader":
        pod["containers"] = pod["containers"][1:]
    else:
        pod["containers"][0]["args"] = ["--watched-dir=/etc/other"]
    assert chart_server(d) is None


def test_servers_sorted_and_others_ignored():
    found = chart_servers([chart_deployment(ns="b"), {"metadata": {"name": "x", "namespace": "a"}},
                           chart_deployment(ns="a", name="mon-prometheus-server", cm="mon-prometheus-server")])
    assert [(c.namespace, c.configmap) for c in found] == [("a", "mon-prometheus-server"), ("b", "prometheus-server")]


class Cluster:
    """What resolution lists: Prometheus resources and Deployments; records each kind listed."""

    def __init__(self, prometheuses=0, deployments=()):
        self.prometheuses, self.deployments, self.listed = prometheuses, list(deployments), []

    def list(self, api_version, kind, namespace=None, **selectors):
        self.listed.append(kind)
        if kind == "Prometheus":
            return [{"metadata": {"name": f"p{i}"}} for i in range(self.prometheuses)]
        return self.deployments if kind == "Deployment" else []


def resolve(s, prometheuses, charts):
    """The Prometheus target for settings `s` in a cluster with that many Prometheus resources and
    chart-shaped servers."""
    return targets.resolve(s, Cluster(prometheuses, [chart_deployment(c.namespace, c.deployment, c.configmap)
                                                     for c in charts])).require_prometheus()


@pytest.fixture
def auto(raw):
    data = copy.deepcopy(raw)
    data["prometheus"] = {"url": URL, "mode": "auto"}
    return data


def test_auto_prefers_a_prometheus_resource(make, auto):
    s = make(prometheus=auto["prometheus"])
    assert resolve(s, 1, [ChartServer("monitoring", "d", "cm")]).mode == "operator"


def test_auto_uses_the_one_chart_server_found(make, auto):
    s = make(prometheus=auto["prometheus"])
    r = resolve(s, 0, [ChartServer("mon", "prometheus-server", "prometheus-server")])
    assert (r.mode, r.chart.configmap_namespace, r.chart.configmap_name, r.chart.key) == \
        ("chart", "mon", "prometheus-server", "prometheus.yml")
    assert s.prometheus.mode == "auto"  # the loaded settings are not changed


def test_auto_with_a_file_section_is_file_and_its_jobs_follow_its_discovery(make, raw):
    """The scrape jobs used to ignore `file.discovery` unless mode was literally "file"."""
    prom = copy.deepcopy(raw["prometheus"]) | {"mode": "auto"}
    prom["file"]["discovery"] = "file_sd"
    r = resolve(make(prometheus=prom), 0, [ChartServer("mon", "d", "cm")])
    assert r.mode == "file"
    assert all("file_sd_configs" in j for j in r.scrape_objects(make(prometheus=prom)))


def test_auto_settings_sections_win_over_what_is_found(make, raw):
    prom = {"url": URL, "mode": "auto", "chart": {"configmap_namespace": "x", "configmap_name": "y"}}
    r = resolve(make(prometheus=prom), 0, [ChartServer("mon", "d", "cm")])
    assert (r.mode, r.chart.configmap_namespace) == ("chart", "x")


def test_auto_with_several_chart_servers_asks_which(make, auto):
    s = make(prometheus=auto["prometheus"])
    with pytest.raises(SettingsError) as e:
        resolve(s, 0, [ChartServer("a", "d", "cm"), ChartServer("b", "d", "cm")])
    assert "prometheus.chart" in str(e.value) and "a/d" in str(e.value) and "b/d" in str(e.value)


def test_auto_with_nothing_found_says_what_to_set(make, auto):
    with pytest.raises(SettingsError, match="prometheus.file nor a prometheus.chart"):
        resolve(make(prometheus=auto["prometheus"]), 0, [])


def test_unresolved_auto_still_resolves_grafana_and_fails_only_where_prometheus_is_written(make, auto):
    r = targets.resolve(make(prometheus=auto["prometheus"]), Cluster())
    assert r.prometheus is None and "auto found no Prometheus" in r.prometheus_problem
    assert r.grafana.namespace == r.settings.grafana.dashboards_namespace
    with pytest.raises(SettingsError):
        r.require_prometheus()


def test_explicit_modes_ask_the_cluster_nothing_about_prometheus(settings):
    cluster = Cluster(1, [chart_deployment("a", "d", "cm")])
    assert resolve(settings, 1, [ChartServer("a", "d", "cm")]).mode == settings.prometheus.mode == "file"
    r = targets.resolve(settings, cluster)
    assert r.prometheus.mode == "file" and "Prometheus" not in cluster.listed


@pytest.mark.parametrize(("seconds", "want"), [(15, ("15s", "10s")), (5, ("5s", "5s")), (60, ("60s", "10s"))])
def test_job_interval_and_a_timeout_never_above_it(make, raw, seconds, want):
    prom = copy.deepcopy(raw["prometheus"]) | {"scrape_interval_seconds": seconds}
    s = make(prometheus=prom)
    assert intervals(s) == want
    jobs = targets.resolve(s, None).prometheus.scrape_objects(s)
    assert {(j["scrape_interval"], j["scrape_timeout"]) for j in jobs} == {want}
    operator = targets.MODES["operator"].from_settings(s)
    endpoints = [e for m in operator.scrape_objects(s) if m["kind"] == "PodMonitor"
                 for e in m["spec"]["podMetricsEndpoints"]]
    assert {(e["interval"], e["scrapeTimeout"]) for e in endpoints} == {want}


class ListingKube:
    """A cluster with these Deployments and no Prometheus resource; records what was listed."""

    def __init__(self, deployments=()):
        self.deployments, self.listed = list(deployments), []

    def list(self, api_version, kind, namespace=None, **selectors):
        self.listed.append(kind)
        return self.deployments if kind == "Deployment" else []


def cluster_with(s, kube):
    from netviz_pipeline.resources.cluster import ClusterResource
    from netviz_pipeline.resources.config import NetvizConfig

    cluster = ClusterResource(config=NetvizConfig(config_path="/unused.yaml"))
    cluster.config.__dict__["settings"] = s  # the cached_properties' slots
    cluster.__dict__["kube"] = kube
    return cluster


@pytest.mark.parametrize(("discovery", "sd"), [("file_sd", "file_sd_configs"), ("kubernetes", "kubernetes_sd_configs")])
def test_auto_resolved_to_file_renders_the_discovery_the_user_chose(make, raw, discovery, sd):
    """mode auto + a file section: what the scrape config asset and its checks read (the run's resolved
    settings) is file mode, and the jobs use the chosen discovery; kubernetes_sd keeps the kubeconfig an
    out-of-cluster Prometheus needs. Resolved once per run: the cluster is asked once."""
    prom = copy.deepcopy(raw["prometheus"]) | {"mode": "auto"}
    prom["file"]["discovery"] = discovery
    kube = ListingKube([chart_deployment()])  # a chart server too: the settings' file section wins
    cluster = cluster_with(make(prometheus=prom), kube)
    r = cluster.resolved.prometheus
    assert (r.mode, r.file.discovery) == ("file", discovery)
    jobs = r.scrape_objects(cluster.settings)
    assert [[k for k in j if k.endswith("_sd_configs")] for j in jobs] == [[sd]] * len(jobs)
    if discovery == "kubernetes":
        assert {j[sd][0]["kubeconfig_file"] for j in jobs} == {prom["file"]["kubernetes_sd_kubeconfig"]}
    else:
        assert {j[sd][0]["files"][0].rsplit("/", 1)[0] for j in jobs} == {str(r.file.targets_dir)}
    # once per run: Grafana's Deployments and the Prometheus resources, each listed once
    assert cluster.resolved.prometheus is r and sorted(kube.listed) == ["Deployment", "Prometheus"]


def test_auto_with_chart_and_file_sections_renders_in_cluster_discovery(make, raw):
    prom = copy.deepcopy(raw["prometheus"]) | {"mode": "auto",
                                               "chart": {"configmap_namespace": "mon", "configmap_name": "p"}}
    prom["file"]["discovery"] = "file_sd"
    s = make(prometheus=prom)
    r = cluster_with(s, ListingKube()).resolved.prometheus
    assert r.mode == "chart"
    assert all("kubernetes_sd_configs" in j and "kubeconfig_file" not in j["kubernetes_sd_configs"][0]
               for j in r.scrape_objects(s))
