"""The netviz alert rules: valid for Prometheus (promtool check rules), firing when they should and
not otherwise (promtool test rules on synthetic series), and merged into users' files without
disturbing them."""
from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from netviz_pipeline.render import alerts
from netviz_pipeline.settings import SettingsError

G, F, C = 'job="netviz-goflow2"', 'job="netviz-flows"', 'job="netviz-caretta"'


def _run(promtool: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([promtool, *args], capture_output=True, text=True)


def test_rule_file_passes_promtool_check(settings, tmp_path, promtool):
    path = tmp_path / alerts.RULES_FILE_NAME
    path.write_text(alerts.rule_file_text(settings))
    r = _run(promtool, "check", "rules", str(path))
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_alert_is_named_timed_and_explained(settings):
    (group,) = alerts.rule_groups(settings)["groups"]
    assert group["name"] == "netviz"
    for rule in group["rules"]:
        assert rule["alert"].startswith("Netviz") and rule["for"]
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"] and len(rule["annotations"]["description"]) > 80
    assert {"NetvizCollectorDown", "NetvizExporterSilent", "NetvizFlowDrops", "NetvizFlowDecodeErrors",
            "NetvizAggregatorInputDisconnected", "NetvizAggregatorOverBudget", "NetvizCarettaStale"} <= set(
        alerts.alert_names(settings))
    silent = next(r for r in group["rules"] if r["alert"] == "NetvizExporterSilent")
    assert "quiet LAN" in silent["annotations"]["description"]
    assert "flow_freshness" in silent["annotations"]["description"]


def test_no_aggregator_alerts_without_the_aggregator(make):
    names = alerts.alert_names(make(flows={"enabled": False}))
    assert "NetvizCollectorDown" in names and not [n for n in names if n.startswith("NetvizAggregator")]


def _for(s, name: str) -> str:
    return next(r["for"] for r in alerts.rule_groups(s)["groups"][0]["rules"] if r["alert"] == name)


def test_an_alerts_for_can_be_set_by_name_but_not_below_two_scrapes(make, raw):
    default = make()
    assert _for(default, "NetvizCollectorDown") == "2m" and _for(default, "NetvizExporterSilent") == "5m"
    s = make(prometheus=raw["prometheus"] | {"alert_for_seconds": {"NetvizCollectorDown": 20,
                                                                    "NetvizExporterSilent": 1}})
    assert _for(s, "NetvizCollectorDown") == "30s"  # two 15 s scrapes: one failed scrape must not page
    assert _for(s, "NetvizExporterSilent") == "30s"
    assert _for(s, "NetvizFlowDrops") == _for(default, "NetvizFlowDrops")  # the others keep theirs


def test_an_unknown_alert_name_is_refused_with_the_names_that_exist(make, raw):
    with pytest.raises(SettingsError) as e:
        make(prometheus=raw["prometheus"] | {"alert_for_seconds": {"NetvizCollectorGone": 60}})
    assert "prometheus.alert_for_seconds" in str(e.value) and "'NetvizCollectorGone'" in str(e.value)
    assert "NetvizCollectorDown" in str(e.value)
    # an aggregator alert may be tuned while the aggregator is off: turning it on must not break the file
    make(prometheus=raw["prometheus"] | {"alert_for_seconds": {"NetvizAggregatorDown": 60}},
         flows={"enabled": False})
    with pytest.raises(SettingsError, match="alert_for_seconds"):
        make(prometheus=raw["prometheus"] | {"alert_for_seconds": {"NetvizCollectorDown": -1}})


def test_windows_hold_several_scrapes_of_a_slow_interval(make, raw):
    s = make(prometheus=raw["prometheus"] | {"scrape_interval_seconds": 90},
             checks=raw["checks"] | {"freshness": {"caretta_max_age_seconds": 180}})
    rules = {r["alert"]: r for r in alerts.rule_groups(s)["groups"][0]["rules"]}
    assert "[6m]" in rules["NetvizCarettaStale"]["expr"] and rules["NetvizCollectorDown"]["for"] == "3m"
    assert "[15m]" in rules["NetvizExporterSilent"]["expr"]  # already longer than four scrapes


# -- promtool test rules: fire / do not fire ------------------------------------------------------------
def _expand(text: str, labels: dict) -> str:
    """The annotations' templates use only {{ $labels.x }}."""
    return re.sub(r"\{\{\s*\$labels\.(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), text)


def _alert(rules: dict, name: str, **labels: str) -> dict:
    rule = rules[name]
    exp = {**labels, **rule["labels"]}
    return {"exp_labels": exp, "exp_annotations": {k: _expand(v, exp) for k, v in rule["annotations"].items()}}


def _promtool_test(promtool, tmp_path, settings, input_series, checks, interval="1m"):
    """checks: (alert name, eval time, [expected alert label sets])."""
    rules_path = tmp_path / "rules.yml"
    rules_path.write_text(alerts.rule_file_text(settings))
    rules = {r["alert"]: r for r in alerts.rule_groups(settings)["groups"][0]["rules"]}
    test = {"rule_files": [str(rules_path)], "evaluation_interval": "1m", "tests": [{
        "interval": interval,
        "input_series": [{"series": k, "values": v} for k, v in input_series.items()],
        "alert_rule_test": [{"alertname": name, "eval_time": at, "exp_alerts": [_alert(rules, name, **e) for e in exp]}
                            for name, at, exp in checks]}]}
    (tmp_path / "test.yml").write_text(yaml.safe_dump(test, sort_keys=False))
    r = _run(promtool, "test", "rules", str(tmp_path / "test.yml"))
    assert r.returncode == 0, r.stdout + r.stderr


def test_collector_down_fires_after_for(settings, tmp_path, promtool):
    inst = {"job": "netviz-goflow2", "instance": "10.0.0.5:8080"}
    _promtool_test(promtool, tmp_path, settings,
                   {f'up{{{G},instance="10.0.0.5:8080"}}': "1 1 1 0x10"},
                   [("NetvizCollectorDown", "2m", []),
                    ("NetvizCollectorDown", "4m", []),  # down since 3m: pending for 2m
                    ("NetvizCollectorDown", "6m", [inst])])


def test_collector_never_scraped_fires(settings, tmp_path, promtool):
    _promtool_test(promtool, tmp_path, settings, {'up{job="prometheus"}': "1x10"},
                   [("NetvizCollectorDown", "1m", []),
                    ("NetvizCollectorDown", "5m", [{"job": "netviz-goflow2"}])])


def test_exporter_silent_fires_for_one_that_sent_then_stopped_only(settings, tmp_path, promtool):
    _promtool_test(promtool, tmp_path, settings, {
        f'up{{{G},instance="gf"}}': "1x120",
        # sends for an hour, then nothing
        f'goflow2_flow_process_nf_total{{{G},instance="gf",router="198.18.0.2",version="9"}}': "0+10x60 600x60",
        # known to GoFlow2 but never sent again since (a counter that never grows)
        f'goflow2_flow_process_nf_total{{{G},instance="gf",router="198.18.5.2",version="9"}}': "5x120",
        # sends all along
        f'goflow2_flow_process_nf_total{{{G},instance="gf",router="198.18.6.2",version="9"}}': "0+3x120",
    }, [("NetvizExporterSilent", "70m", []),
        ("NetvizExporterSilent", "100m", [{"router": "198.18.0.2"}])])


def test_exporter_silent_leaves_a_down_collector_to_collector_down(settings, tmp_path, promtool):
    _promtool_test(promtool, tmp_path, settings, {
        f'up{{{G},instance="gf"}}': "1x60 0x60",
        f'goflow2_flow_process_nf_total{{{G},instance="gf",router="198.18.0.2",version="9"}}': "0+10x60",
    }, [("NetvizExporterSilent", "100m", []),
        ("NetvizCollectorDown", "100m", [{"job": "netviz-goflow2", "instance": "gf"}])])


def test_drops_and_decode_errors(settings, tmp_path, promtool):
    _promtool_test(promtool, tmp_path, settings, {
        f'goflow2_flow_dropped_packets_total{{{G},instance="gf",remote_ip="198.18.0.2",local_ip="0.0.0.0",local_port="2055"}}': "0+5x40",
        f'goflow2_flow_dropped_packets_total{{{G},instance="gf",remote_ip="198.18.5.2",local_ip="0.0.0.0",local_port="2055"}}': "3x40",
        # 198.18.0.2: undecodable datagrams; 198.18.5.2: only templates not known yet (normal after a restart)
        f'goflow2_flow_decoder_error_total{{{G},instance="gf",router="198.18.0.2",name="netflow"}}': "0+2x40",
        f'goflow2_flow_decoder_error_total{{{G},instance="gf",router="198.18.5.2",name="netflow"}}': "0+2x40",
        f'goflow2_flow_process_nf_errors_total{{{G},instance="gf",router="198.18.5.2",error="template_not_found"}}': "0+2x40",
    }, [("NetvizFlowDrops", "5m", []),
        ("NetvizFlowDrops", "30m", [{"instance": "gf", "remote_ip": "198.18.0.2"}]),
        ("NetvizFlowDecodeErrors", "30m", [{"router": "198.18.0.2"}])])


def test_aggregator_alerts(settings, tmp_path, promtool):
    _promtool_test(promtool, tmp_path, settings, {
        f'up{{{F},instance="a"}}': "1x30",
        f'up{{{F},instance="b"}}': "1x30",
        f'netviz_flow_input_connected{{{F},instance="a"}}': "1x5 0x25",
        f'netviz_flow_input_connected{{{F},instance="b"}}': "1x30",
        f'netviz_flow_series{{{F},instance="a"}}': "100 300x29",
        f'netviz_flow_series_budget{{{F},instance="a"}}': "250x30",
        f'netviz_flow_series{{{F},instance="b"}}': "249x30",  # at most the budget: fine
        f'netviz_flow_series_budget{{{F},instance="b"}}': "250x30",
        f'netviz_flow_malformed_lines_total{{{F},instance="a",reason="json"}}': "0+4x30",
        f'netviz_flow_malformed_lines_total{{{F},instance="b",reason="json"}}': "7x30",
    }, [("NetvizAggregatorDown", "10m", []),
        ("NetvizAggregatorInputDisconnected", "6m", []),
        ("NetvizAggregatorInputDisconnected", "10m", [{"job": "netviz-flows", "instance": "a"}]),
        ("NetvizAggregatorOverBudget", "5m", [{"job": "netviz-flows", "instance": "a"}]),
        ("NetvizAggregatorMalformedInput", "25m", [{"instance": "a", "reason": "json"}])])


def test_caretta_stale_fires_per_node_and_when_absent(settings, tmp_path, promtool):
    _promtool_test(promtool, tmp_path, settings, {
        f'up{{{C},instance="c1",node="n1"}}': "1x40",
        f'up{{{C},instance="c2",node="n2"}}': "1x40",
        f'caretta_polls_made{{{C},instance="c1",node="n1"}}': "0+12x10 120x30",  # stops polling at 10m
        f'caretta_polls_made{{{C},instance="c2",node="n2"}}': "0+12x40",
    }, [("NetvizCarettaStale", "8m", []),
        ("NetvizCarettaStale", "25m", [{"node": "n1"}])])
    _promtool_test(promtool, tmp_path, settings, {'up{job="prometheus"}': "1x10"},
                   [("NetvizCarettaStale", "7m", [{"job": "netviz-caretta"}])])


# -- merges into users' files ---------------------------------------------------------------------------
USER_CONFIG = """# the user's own config
global:
  evaluation_interval: 30s
rule_files: [/etc/prometheus/rules/own.yml]
scrape_configs:
- job_name: prometheus
  static_configs:
  - targets: ['127.0.0.1:9090']
"""


def test_rule_file_is_listed_once_and_every_key_kept():
    path = "/etc/prometheus/netviz-alerts.yml"
    text, changed = alerts.merge_rule_files(USER_CONFIG, path)
    cfg = yaml.safe_load(text)
    assert changed and cfg["rule_files"] == ["/etc/prometheus/rules/own.yml", path]
    assert cfg["global"] == {"evaluation_interval": "30s"} and cfg["scrape_configs"][0]["job_name"] == "prometheus"
    assert list(cfg) == ["global", "rule_files", "scrape_configs"]
    assert alerts.merge_rule_files(text, path) == (text, False)


def test_rule_files_added_to_a_config_without_any_and_globs_respected():
    text, changed = alerts.merge_rule_files("global: {}\n", "/p/netviz-alerts.yml")
    assert changed and yaml.safe_load(text)["rule_files"] == ["/p/netviz-alerts.yml"]
    globbed = "rule_files: ['/p/*.yml']\n"
    assert alerts.merge_rule_files(globbed, "/p/netviz-alerts.yml") == (globbed, False)
    # Go's filepath.Match: `*` does not cross a directory
    assert alerts.merge_rule_files("rule_files: ['/*.yml']\n", "/p/netviz-alerts.yml")[1]
    with pytest.raises(ValueError, match="rule_files"):
        alerts.merge_rule_files("rule_files: /p/x.yml\n", "/p/netviz-alerts.yml")


def test_chart_alerting_rules_from_the_chart_default(settings):
    text, changed = alerts.merge_chart_alerting_rules("{}\n", settings)
    assert changed and yaml.safe_load(text) == alerts.rule_groups(settings)
    assert alerts.merge_chart_alerting_rules(text, settings) == (text, False)
    assert alerts.merge_chart_alerting_rules("", settings)[1]


def test_chart_alerting_rules_keep_the_users_groups_and_replace_ours(settings):
    user = yaml.safe_dump({"groups": [
        {"name": "mine", "rules": [{"alert": "Mine", "expr": "vector(1)"}]},
        {"name": "netviz", "rules": [{"alert": "NetvizOld", "expr": "vector(1)"}]},
        {"name": "netviz-extra", "rules": []},
        {"name": "later", "rules": []}]})
    text, changed = alerts.merge_chart_alerting_rules(user, settings)
    groups = yaml.safe_load(text)["groups"]
    assert changed and [g["name"] for g in groups] == ["mine", "netviz", "later"]
    assert groups[0]["rules"] == [{"alert": "Mine", "expr": "vector(1)"}]
    assert "NetvizOld" not in text
    assert alerts.merge_chart_alerting_rules(text, settings) == (text, False)
    commented = "# kept as written\n" + text
    assert alerts.merge_chart_alerting_rules(commented, settings) == (commented, False)


def test_chart_values_snippet_renders_the_same_rules(settings):
    values = yaml.safe_load(alerts.chart_values_snippet(settings))
    assert values == {"serverFiles": {"alerting_rules.yml": alerts.rule_groups(settings)}}


def test_prometheus_rule_is_selected_like_the_pod_monitors(make):
    s = make(prometheus={"url": "http://p:9090", "mode": "operator",
                         "operator": {"namespace": "monitoring", "labels": {"release": "kube-prometheus-stack"}}})
    pr = alerts.prometheus_rule(s)
    assert pr["apiVersion"] == "monitoring.coreos.com/v1" and pr["kind"] == "PrometheusRule"
    assert pr["metadata"]["name"] == "netviz-alerts" and pr["metadata"]["namespace"] == "monitoring"
    assert pr["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert pr["metadata"]["labels"]["app.kubernetes.io/part-of"] == "netviz"
    assert pr["spec"]["groups"] == alerts.rule_groups(s)["groups"]
    bare = alerts.prometheus_rule(make(prometheus={"url": "http://p:9090", "mode": "operator"}))
    assert bare["metadata"]["namespace"] == "goflow2"


# -- applying them (file and chart modes, with fakes for Prometheus and the cluster) ---------------------
class FakeProm:
    def __init__(self, refuse: bool = False):
        self.refuse, self.reloads = refuse, 0

    def reload(self, url: str) -> None:
        from netviz_pipeline.resources.prometheus import PrometheusError

        self.reloads += 1
        if self.refuse:
            raise PrometheusError("Prometheus refused the new config (500): bad rule")


def apply_file_mode(s, cluster, prom):
    from netviz_pipeline.targets.prometheus_file import FileTarget

    return FileTarget.from_settings(s).apply(s, cluster, prom, [])


def apply_chart_mode(s, cluster):
    from netviz_pipeline.targets.prometheus_chart import ChartTarget

    return ChartTarget.from_settings(s).apply(s, cluster, None, [])


def test_file_mode_writes_the_rules_lists_them_and_reloads_once(settings):
    f = settings.prometheus.file
    prom = FakeProm()
    done = apply_file_mode(settings, None, prom)
    assert prom.reloads == 1 and len(done.changed) == 2
    assert f.rules_file.read_text() == alerts.rule_file_text(settings)
    assert yaml.safe_load(f.config_path.read_text())["rule_files"] == [str(f.rules_file)]
    done = apply_file_mode(settings, None, prom)
    assert prom.reloads == 1 and done.summary.startswith("converged")
    f.rules_file.write_text("groups: []\n")  # edited by hand: rewritten, and reloaded so it counts
    apply_file_mode(settings, None, prom)
    assert prom.reloads == 2 and f.rules_file.read_text() == alerts.rule_file_text(settings)


def test_file_mode_refused_reload_restores_both_files(settings):
    from netviz_pipeline.targets.prometheus import ApplyError

    f = settings.prometheus.file
    before = f.config_path.read_text()
    with pytest.raises(ApplyError, match="was restored to its previous content") as e:
        apply_file_mode(settings, None, FakeProm(refuse=True))
    assert f.config_path.read_text() == before and not f.rules_file.exists()
    assert "was removed" in str(e.value)
    apply_file_mode(settings, None, FakeProm())
    f.rules_file.write_text("groups: []\n")
    listed = f.config_path.read_text()
    with pytest.raises(ApplyError):
        apply_file_mode(settings, None, FakeProm(refuse=True))
    assert f.rules_file.read_text() == "groups: []\n" and f.config_path.read_text() == listed


class FakeCluster:
    def __init__(self, data: dict):
        self.cm = {"metadata": {"name": "prometheus-server", "namespace": "monitoring"}, "data": data}
        self.applied: list[dict] = []
        self.kube = self

    def get(self, api_version, kind, name, namespace=None):
        return self.cm

    def apply(self, objs):
        self.applied += objs
        for o in objs:
            self.cm["data"].update(o["data"])
        return []


def test_chart_mode_applies_both_keys_once_and_offers_the_values(make):
    s = make(prometheus={"url": "http://p:9090", "mode": "chart",
                         "chart": {"configmap_namespace": "monitoring", "configmap_name": "prometheus-server"}})
    chart = FakeCluster({"prometheus.yml": yaml.safe_dump({"rule_files": [alerts.CHART_RULES_PATH]}),
                         "alerting_rules.yml": "{}\n", "alerts": "{}\n"})
    notes = apply_chart_mode(s, chart).notes
    (body,) = chart.applied
    assert set(body["data"]) == {"prometheus.yml", "alerting_rules.yml"}  # never the chart's other keys
    assert yaml.safe_load(body["data"]["alerting_rules.yml"]) == alerts.rule_groups(s)
    assert yaml.safe_load(body["data"]["prometheus.yml"])["rule_files"] == [alerts.CHART_RULES_PATH]
    assert "serverFiles:" in notes["serverFiles"] and "NetvizCollectorDown" in notes["serverFiles"]
    apply_chart_mode(s, chart)
    assert len(chart.applied) == 1  # converged: nothing applied


def test_rules_loaded_check_wants_every_alert_of_the_netviz_group(settings):
    from netviz_pipeline.checks.scrape import rules_health
    from netviz_pipeline.targets import resolve

    class Rules:
        def __init__(self, groups):
            self.groups = groups

        def rules(self):
            return self.groups

    names = alerts.alert_names(settings)
    full = [{"name": "netviz", "file": "/p/netviz-alerts.yml",
             "rules": [{"name": n, "state": "inactive", "health": "ok"} for n in names]}]
    target = resolve(settings, None).prometheus
    f = rules_health(settings, Rules(full), target)
    assert f.healthy and not f.details["problems"] and f.details["alerts"]["NetvizCollectorDown"] == "inactive"
    assert f.details["files"] == ["/p/netviz-alerts.yml"]
    f = rules_health(settings, Rules([{"name": "other", "rules": full[0]["rules"]}]), target)
    problems = f.details["problems"]
    assert not f.healthy and "NetvizCarettaStale" in problems[0] and "netviz-alerts.yml" in problems[0]
    assert f.reason.startswith("alert rules not loaded")
    full[0]["rules"][0] |= {"health": "err", "lastError": "many-to-many matching not allowed"}
    f = rules_health(settings, Rules(full), target)
    assert not f.healthy and f.details["problems"] == [f"{names[0]}: many-to-many matching not allowed"]


def test_kafka_aggregator_alerts(make, raw, tmp_path, promtool):
    """Falling behind needs a large AND growing backlog (a burst being worked off does not page);
    a replica cut off from the brokers pages on its own."""
    s = make(flows=raw.get("flows", {}) | {"transport": "kafka", "kafka": {
        "brokers": ["198.18.0.1:9092"], "image": "localhost/netviz:1", "partitions": 2, "replicas": 2}})
    assert {"NetvizAggregatorsFallingBehind", "NetvizAggregatorKafkaDisconnected"} <= set(alerts.alert_names(s))
    assert "NetvizAggregatorsFallingBehind" not in alerts.alert_names(make())  # fifo: no such rule
    f = 'job="netviz-flows"'
    _promtool_test(promtool, tmp_path, s, {
        f'netviz_flow_kafka_lag_messages{{{f},pod="a"}}': "0+2000x40",  # grows without end
        f'netviz_flow_kafka_lag_messages{{{f},pod="b"}}': "0x40",
        f'netviz_flow_kafka_connected{{{f},pod="a"}}': "1x40",
        f'netviz_flow_kafka_connected{{{f},pod="b"}}': "1x10 0x30",
    }, [("NetvizAggregatorsFallingBehind", "30m", [{}]),
        ("NetvizAggregatorsFallingBehind", "6m", []),  # below the bound yet
        ("NetvizAggregatorKafkaDisconnected", "9m", []),
        ("NetvizAggregatorKafkaDisconnected", "20m", [{"job": "netviz-flows", "pod": "b"}])])
    burst = tmp_path / "burst"
    burst.mkdir()
    _promtool_test(promtool, burst, s, {  # a backlog of 50k being worked off: never pages
        f'netviz_flow_kafka_lag_messages{{{f},pod="a"}}': "50000-1000x40",
        f'netviz_flow_kafka_connected{{{f},pod="a"}}': "1x40",
    }, [("NetvizAggregatorsFallingBehind", "30m", [])])


def test_export_packets_lost_fires_from_sequence_numbers_against_goflow2s_count(settings, tmp_path, promtool):
    """198.18.0.2 says (sequence numbers) 10 packets a minute, GoFlow2 counts 9: 10 % lost, fires. 198.18.5.2
    loses none; 198.18.6.2's loss is one packet in the window (counted moments apart: under the bounds).
    Two aggregator replicas: the larger of their counts is what the exporter sent."""
    _promtool_test(promtool, tmp_path, settings, {
        f'up{{{G},instance="gf"}}': "1x40", f'up{{{F},instance="a"}}': "1x40", f'up{{{F},instance="b"}}': "1x40",
        f'goflow2_flow_process_nf_total{{{G},instance="gf",router="198.18.0.2",version="9"}}': "0+9x40",
        # 8 decoded and 2 that arrived before their template (undecodable): none lost on the way
        f'goflow2_flow_process_nf_total{{{G},instance="gf",router="198.18.5.2",version="9"}}': "0+8x40",
        f'goflow2_flow_decoder_error_total{{{G},instance="gf",router="198.18.5.2",name="netflow"}}': "0+2x40",
        f'goflow2_flow_process_nf_total{{{G},instance="gf",router="198.18.6.2",version="9"}}': "0+100x40",
        f'netviz_flow_exporter_sequence_packets_total{{{F},instance="a",exporter="198.18.0.2"}}': "0+10x40",
        f'netviz_flow_exporter_sequence_packets_total{{{F},instance="b",exporter="198.18.0.2"}}': "0+8x40",
        f'netviz_flow_exporter_sequence_packets_total{{{F},instance="a",exporter="198.18.5.2"}}': "0+10x40",
        f'netviz_flow_exporter_sequence_packets_total{{{F},instance="a",exporter="198.18.6.2"}}': "0+100x20 2001+100x20",
    }, [("NetvizExportPacketsLost", "5m", []),
        ("NetvizExportPacketsLost", "30m", [{"exporter": "198.18.0.2"}])])


def test_records_undelivered_fires_when_goflow2_decoded_more_than_the_aggregators_counted(settings, tmp_path, promtool):
    """198.18.0.2: GoFlow2 decodes 20 data records a minute, the aggregator counts 15 (25 % dropped after
    the collector): fires. 198.18.5.2: all delivered."""
    _promtool_test(promtool, tmp_path, settings, {
        f'up{{{G},instance="gf"}}': "1x40", f'up{{{F},instance="a"}}': "1x40",
        f'goflow2_flow_process_nf_flowset_records_total{{{G},instance="gf",router="198.18.0.2",version="9",type="DataFlowSet"}}': "0+20x40",
        f'goflow2_flow_process_nf_flowset_records_total{{{G},instance="gf",router="198.18.0.2",version="9",type="TemplateFlowSet"}}': "0+50x40",
        f'goflow2_flow_process_nf_flowset_records_total{{{G},instance="gf",router="198.18.5.2",version="9",type="DataFlowSet"}}': "0+10x40",
        f'netviz_flow_exporter_flows_total{{{F},instance="a",exporter="198.18.0.2"}}': "0+15x40",
        f'netviz_flow_exporter_flows_total{{{F},instance="a",exporter="198.18.5.2"}}': "0+10x40",
    }, [("NetvizFlowRecordsUndelivered", "5m", []),
        ("NetvizFlowRecordsUndelivered", "30m", [{"exporter": "198.18.0.2"}])])


def test_a_growing_kafka_backlog_is_not_called_undelivered(make, tmp_path, promtool):
    s = make(flows={"transport": "kafka", "kafka": {"brokers": ["198.18.0.1:9092"], "image": "netviz/pipeline:test"}})
    _promtool_test(promtool, tmp_path, s, {
        f'up{{{G},instance="gf"}}': "1x40", f'up{{{F},instance="a"}}': "1x40",
        f'goflow2_flow_process_nf_flowset_records_total{{{G},instance="gf",router="198.18.0.2",version="9",type="DataFlowSet"}}': "0+20x40",
        f'netviz_flow_exporter_flows_total{{{F},instance="a",exporter="198.18.0.2"}}': "0+15x40",
        f'netviz_flow_kafka_lag_messages{{{F},instance="a",partition="0"}}': "0+5x40",
    }, [("NetvizFlowRecordsUndelivered", "30m", [])])
