from __future__ import annotations

import subprocess

import pytest
import yaml

from netviz_pipeline import targets
from netviz_pipeline.render.scrape import file_sd_targets, merge_scrape_configs
from netviz_pipeline.render.scrape import monitors as render_monitors


def scrape_jobs(s, exporters=None):
    """The jobs the settings' Prometheus target writes (file or chart mode)."""
    return targets.resolve(s, None).require_prometheus().scrape_objects(s, exporters)


def monitors(s, exporters=None):
    return render_monitors(s, s.prometheus.operator, exporters)

USER_CONFIG = """# the user's own config
global:
  scrape_interval: 5s
rule_files: [rules.yml]
scrape_configs:
- job_name: prometheus
  static_configs:
  - targets: ['127.0.0.1:9090']
- job_name: netviz-old
  static_configs:
  - targets: ['10.0.0.1:1']
- job_name: node
  static_configs:
  - targets: ['10.0.0.2:9100']
"""


def test_caretta_job_discovers_every_pod(settings):
    job = {j["job_name"]: j for j in scrape_jobs(settings)}["netviz-caretta"]
    sd = job["kubernetes_sd_configs"][0]
    assert sd["role"] == "pod" and sd["namespaces"] == {"names": ["caretta"]}
    assert sd["kubeconfig_file"] == "/var/lib/netviz-lab/kubeconfig-prometheus.yaml"
    keeps = {r["source_labels"][0]: r["regex"] for r in job["relabel_configs"] if r.get("action") == "keep"}
    assert keeps == {"__meta_kubernetes_pod_label_app": "caretta",
                     "__meta_kubernetes_pod_container_port_name": "prom-metrics"}
    assert "static_configs" not in job


def test_goflow2_job(settings):
    job = {j["job_name"]: j for j in scrape_jobs(settings)}["netviz-goflow2"]
    keeps = {r["source_labels"][0]: r["regex"] for r in job["relabel_configs"] if r.get("action") == "keep"}
    assert keeps["__meta_kubernetes_pod_container_port_name"] == "metrics"


def test_flows_job_scrapes_the_aggregator_sidecar(settings, make):
    job = {j["job_name"]: j for j in scrape_jobs(settings)}["netviz-flows"]
    keeps = {r["source_labels"][0]: r["regex"] for r in job["relabel_configs"] if r.get("action") == "keep"}
    assert keeps == {"__meta_kubernetes_pod_label_app": "goflow2",
                     "__meta_kubernetes_pod_container_port_name": "flow-metrics"}
    assert "netviz-flows" not in {j["job_name"] for j in scrape_jobs(make(flows={"enabled": False}))}


def test_chart_mode_has_no_kubeconfig(make):
    s = make(prometheus={"url": "http://p:9090", "mode": "chart",
                         "chart": {"configmap_namespace": "monitoring", "configmap_name": "prometheus-server"}})
    assert all("kubeconfig_file" not in j["kubernetes_sd_configs"][0] for j in scrape_jobs(s))


def test_merge_replaces_only_netviz_jobs(settings):
    ours = scrape_jobs(settings)
    text, changed = merge_scrape_configs(USER_CONFIG, ours)
    cfg = yaml.safe_load(text)
    assert changed
    assert [j["job_name"] for j in cfg["scrape_configs"]] == ["prometheus", "netviz-caretta", "netviz-goflow2",
                                                                "netviz-flows", "node"]
    assert cfg["global"] == {"scrape_interval": "5s"} and cfg["rule_files"] == ["rules.yml"]
    assert list(cfg) == ["global", "rule_files", "scrape_configs"]


def test_merging_twice_is_a_no_op(settings):
    ours = scrape_jobs(settings)
    once, _ = merge_scrape_configs(USER_CONFIG, ours)
    twice, changed = merge_scrape_configs(once, ours)
    assert not changed and twice == once


def test_unchanged_config_keeps_comments(settings):
    ours = scrape_jobs(settings)
    once, _ = merge_scrape_configs(USER_CONFIG, ours)
    commented = "# hand-written note\n" + once
    assert merge_scrape_configs(commented, ours) == (commented, False)


def test_merge_appends_when_no_netviz_job_and_handles_empty(settings):
    ours = scrape_jobs(settings)
    text, changed = merge_scrape_configs("global: {scrape_interval: 5s}\n", ours)
    assert changed and [j["job_name"] for j in yaml.safe_load(text)["scrape_configs"]] == ["netviz-caretta", "netviz-goflow2",
                                                                                         "netviz-flows"]
    text, changed = merge_scrape_configs("", ours)
    assert changed and len(yaml.safe_load(text)["scrape_configs"]) == 3


def test_merge_removes_our_jobs_when_given_none():
    text, changed = merge_scrape_configs(USER_CONFIG, [])
    assert changed and [j["job_name"] for j in yaml.safe_load(text)["scrape_configs"]] == ["prometheus", "node"]


def test_merge_refuses_foreign_job_names(settings):
    with pytest.raises(ValueError, match="netviz-"):
        merge_scrape_configs(USER_CONFIG, [{"job_name": "caretta"}])
    with pytest.raises(ValueError):
        merge_scrape_configs("- a\n- b\n", scrape_jobs(settings))


def test_merge_does_not_alias_our_input(settings):
    ours = scrape_jobs(settings)
    text, _ = merge_scrape_configs(USER_CONFIG, ours)
    ours[0]["job_name"] = "netviz-mutated"
    assert "netviz-mutated" not in text


def _promtool_check(promtool: str, text: str, tmp_path) -> subprocess.CompletedProcess:
    p = tmp_path / "prometheus.yml"
    p.write_text(text)
    return subprocess.run([promtool, "check", "config", "--syntax-only", str(p)], capture_output=True, text=True)


def test_merged_file_sd_config_passes_promtool(raw, make, tmp_path, promtool):
    raw["prometheus"]["file"]["discovery"] = "file_sd"
    s = make(prometheus=raw["prometheus"])
    text, _ = merge_scrape_configs(USER_CONFIG.replace("rule_files: [rules.yml]\n", ""), scrape_jobs(s))
    r = _promtool_check(promtool, text, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr


def test_merged_kubernetes_sd_config_passes_promtool(settings, tmp_path, promtool):
    kc = tmp_path / "kc.yaml"
    kc.write_text("")
    text, _ = merge_scrape_configs(USER_CONFIG.replace("rule_files: [rules.yml]\n", ""), scrape_jobs(settings))
    r = _promtool_check(promtool, text.replace("/var/lib/netviz-lab/kubeconfig-prometheus.yaml", str(kc)), tmp_path)
    if "kubernetes_sd_configs not found" in r.stdout + r.stderr:
        pytest.skip("this promtool is built without Kubernetes SD (Debian's 2.42.0+ds): use discovery file_sd")
    assert r.returncode == 0, r.stdout + r.stderr


def test_file_sd_jobs_and_targets(raw, make):
    raw["prometheus"]["file"]["discovery"] = "file_sd"
    s = make(prometheus=raw["prometheus"])
    jobs = {j["job_name"]: j for j in scrape_jobs(s)}
    d = s.prometheus.file.config_path.parent / "netviz-targets"
    assert jobs["netviz-caretta"]["file_sd_configs"][0]["files"] == [f"{d}/netviz-caretta.json"]
    assert "kubernetes_sd_configs" not in jobs["netviz-caretta"]

    def pod(name, phase="Running", ip="198.19.0.5", app="caretta"):
        return {"metadata": {"name": name, "namespace": "caretta", "labels": {"app": app}},
                "spec": {"nodeName": "n1", "containers": [{"ports": [{"name": "prom-metrics", "containerPort": 7117}]}]},
                "status": {"phase": phase, "podIP": ip}}
    pods = [pod("caretta-b"), pod("caretta-a", ip="198.19.0.4"), pod("pending", phase="Pending"),
            pod("other", app="web"), pod("noip", ip=None)]
    assert file_sd_targets(pods, "caretta", "prom-metrics") == [
        {"targets": ["198.19.0.4:7117"], "labels": {"namespace": "caretta", "pod": "caretta-a", "node": "n1"}},
        {"targets": ["198.19.0.5:7117"], "labels": {"namespace": "caretta", "pod": "caretta-b", "node": "n1"}}]


def test_operator_monitors(make):
    s = make(prometheus={"url": "http://p:9090", "mode": "operator",
                         "operator": {"namespace": "monitoring", "labels": {"release": "kube-prometheus-stack"}}})
    mons = {m["metadata"]["name"]: m for m in monitors(s)}
    pm = mons["netviz-caretta"]
    assert pm["kind"] == "PodMonitor" and pm["metadata"]["namespace"] == "monitoring"
    assert pm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert pm["spec"]["selector"] == {"matchLabels": {"app": "caretta"}}
    assert pm["spec"]["namespaceSelector"] == {"matchNames": ["caretta"]}
    ep = pm["spec"]["podMetricsEndpoints"][0]
    assert ep["port"] == "prom-metrics"
    assert {"targetLabel": "job", "replacement": "netviz-caretta", "action": "replace"} in ep["relabelings"]
    assert mons["netviz-goflow2"]["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    flows = mons["netviz-flows"]["spec"]
    assert flows["podMetricsEndpoints"][0]["port"] == "flow-metrics"
    assert flows["selector"] == {"matchLabels": {"app": "goflow2"}}


def test_file_sd_targets_for_the_flows_port():
    pod = {"metadata": {"name": "goflow2-x", "namespace": "goflow2", "labels": {"app": "goflow2"}},
           "spec": {"nodeName": "n1", "containers": [
               {"ports": [{"name": "netflow", "containerPort": 2055}, {"name": "metrics", "containerPort": 8080}]},
               {"ports": [{"name": "flow-metrics", "containerPort": 9102}]}]},
           "status": {"phase": "Running", "podIP": "198.19.0.9"}}
    assert file_sd_targets([pod], "goflow2", "flow-metrics")[0]["targets"] == ["198.19.0.9:9102"]
    assert file_sd_targets([pod], "goflow2", "metrics")[0]["targets"] == ["198.19.0.9:8080"]


def _kept(rule: dict, labels: dict[str, str]) -> bool:
    """A `keep` relabelling as Prometheus applies it: source labels joined, the regex anchored."""
    import re
    return re.fullmatch(rule["regex"], rule["separator"].join(labels.get(k, "") for k in rule["source_labels"])) \
        is not None


def test_goflow2_series_are_kept_only_for_the_configured_senders(settings):
    from netviz_pipeline.render.scrape import sender_filter, senders
    job = {j["job_name"]: j for j in scrape_jobs(settings)}["netviz-goflow2"]
    (rule,) = job["metric_relabel_configs"]
    assert rule == sender_filter(senders(settings)) and rule["action"] == "keep"
    known = senders(settings)
    assert known and all(_kept(rule, {"router": a}) and _kept(rule, {"remote_ip": a}) for a in known)
    assert _kept(rule, {"__name__": "go_goroutines"})  # series without a sender stay
    # GoFlow2's template counts name the sender with its source port, IPv4 mapped into IPv6
    assert _kept(rule, {"router": f"[::ffff:{known[0]}]:48159"}) and _kept(rule, {"router": f"[{known[0]}]:2055"})
    assert not _kept(rule, {"router": "[::ffff:198.51.100.7]:48159"})
    for spoofed in ("198.51.100.7", "198.18.0.20", known[0] + "0", "x" + known[0]):
        assert not _kept(rule, {"router": spoofed}) and not _kept(rule, {"remote_ip": spoofed}), spoofed
    assert not _kept(rule, {"router": known[0], "agent": "203.0.113.1"})
    # an exporter given by host name is kept by the address the pipeline resolved for it
    by_name = {j["job_name"]: j for j in scrape_jobs(settings, ["203.0.113.9"])}["netviz-goflow2"]
    assert _kept(by_name["metric_relabel_configs"][0], {"router": "203.0.113.9"})


def test_every_netviz_job_is_bounded_in_samples_and_labels(settings, make):
    """sample_limit from the aggregator's own budget (the series it can ever export), from the routers
    for GoFlow2; the same bounds on the operator's PodMonitors."""
    from netviz_pipeline.flowagg.flowagg import Aggregator
    from netviz_pipeline.render.scrape import GOFLOW2_FIXED_SERIES, GOFLOW2_SERIES_PER_SENDER, LABEL_LIMIT
    jobs = {j["job_name"]: j for j in scrape_jobs(settings)}
    assert all(j["sample_limit"] > 0 and j["label_limit"] == LABEL_LIMIT for j in jobs.values())
    s = settings
    agg = Aggregator(s.flows.top_k.model_dump(), dict(s.flows.networks), names=object())
    assert agg.budget() <= jobs["netviz-flows"]["sample_limit"] <= agg.budget() * 1.2
    assert jobs["netviz-goflow2"]["sample_limit"] == GOFLOW2_FIXED_SERIES + GOFLOW2_SERIES_PER_SENDER * len(s.routers)
    wider = make(flows={"top_k": {"talkers": 1000}})
    assert {j["job_name"]: j for j in scrape_jobs(wider)}["netviz-flows"]["sample_limit"] > \
        jobs["netviz-flows"]["sample_limit"] + 2700  # 900 more talkers x bytes, packets, flows
    for m in monitors(s):
        job = m["metadata"]["name"]
        assert (m["spec"]["sampleLimit"], m["spec"]["labelLimit"]) == (jobs[job]["sample_limit"], LABEL_LIMIT)
        relabel = m["spec"]["podMetricsEndpoints"][0].get("metricRelabelings")
        assert (relabel is not None) == (job == "netviz-goflow2")
