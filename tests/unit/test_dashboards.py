from __future__ import annotations

import json
import re
import subprocess

import pytest
import yaml

from netviz_pipeline.dashboards import load_dashboard, panel_queries, substitute
from netviz_pipeline.render.dashboards import DASHBOARD_DIR, dashboard_configmaps

CARETTA = DASHBOARD_DIR / "caretta.json"
GOFLOW2 = DASHBOARD_DIR / "goflow2.json"
GOFLOW2_REAL_METRICS = {  # v2.2.1 metrics/metrics.go
    "goflow2_flow_process_nf_total", "goflow2_flow_process_nf_errors_total",
    "goflow2_flow_process_nf_flowset_records_total", "goflow2_flow_process_nf_flowset_total",
    "goflow2_flow_process_nf_delay_seconds", "goflow2_flow_process_nf_templates_total",
    "goflow2_flow_traffic_bytes_total", "goflow2_flow_traffic_packets_total", "goflow2_flow_decoder_error_total",
    "goflow2_flow_decoding_time_seconds", "goflow2_flow_dropped_packets_total", "goflow2_flow_dropped_bytes_total",
    "goflow2_flow_traffic_size_bytes"}


def all_queries():
    return [(name, q) for name in (CARETTA, GOFLOW2) for q in panel_queries(load_dashboard(name))]


def test_dashboards_use_a_datasource_variable():
    for path in (CARETTA, GOFLOW2):
        d = load_dashboard(path)
        var = d["templating"]["list"][0]
        assert var["name"] == "datasource" and var["type"] == "datasource" and var["query"] == "prometheus"
        assert "__inputs" not in d and d["uid"].startswith("netviz-")
        for p in d["panels"]:
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert all(t["datasource"]["uid"] == "${datasource}" for t in p["targets"])


def test_panel_ids_unique():
    for path in (CARETTA, GOFLOW2):
        ids = [p["id"] for p in load_dashboard(path)["panels"]]
        assert len(ids) == len(set(ids))


def test_service_map_node_graph():
    d = load_dashboard(CARETTA)
    (sm,) = [p for p in d["panels"] if p["title"] == "Service Map"]
    assert sm["type"] == "nodeGraph"
    targets = {t["refId"]: t for t in sm["targets"]}
    assert set(targets) == {"nodes", "edges"}
    assert all(t["instant"] and t["format"] == "table" for t in targets.values())
    for field in ("\"id\"", "\"title\"", "\"subTitle\"", "\"detail__kind\"", "arc__"):
        assert field in targets["nodes"]["expr"]
    for field in ("\"id\"", "\"source\"", "\"target\""):
        assert field in targets["edges"]["expr"]
    renames = sm["transformations"][0]["options"]["renameByName"]
    assert set(renames.values()) == {"mainStat"}


def test_caretta_queries_never_use_raw_cumulative_gauge():
    for name, q in all_queries():
        if "caretta_links_observed" in q.expr:
            assert re.search(r"(rate|increase)\(caretta_links_observed\[", q.expr), q.panel_title


def test_caretta_has_required_panels():
    titles = {q.panel_title for name, q in all_queries() if name == CARETTA}
    assert {"Service Map", "Top workloads by throughput", "Top connections", "Active server ports"} <= titles


def test_goflow2_uses_only_real_metrics():
    used = set()
    for name, q in all_queries():
        if name == GOFLOW2:
            used |= set(re.findall(r"goflow2_[a-z0-9_]+", q.expr))
    assert used and used <= GOFLOW2_REAL_METRICS, used - GOFLOW2_REAL_METRICS
    assert "goflow2_flow_process_nf_total" in used
    text = GOFLOW2.read_text()
    for fake in ("flow_bytes", "flow_packets", "src_addr", "dst_addr", "proto"):
        assert not re.search(rf"\b{fake}\b", text), fake


def test_panel_queries_extracts_everything():
    qs = panel_queries(load_dashboard(CARETTA))
    assert [(q.panel_title, q.ref_id) for q in qs][:2] == [("Service Map", "nodes"), ("Service Map", "edges")]
    assert qs[0].required_labels == ("id", "title") and qs[1].required_labels == ("id", "source", "target")
    assert qs[0].instant and qs[0].format == "table"
    series = [q for q in qs if q.panel_title == "Cluster TCP throughput"][0]
    assert not series.instant


def test_panel_queries_walks_rows_and_skips_hidden():
    d = {"panels": [{"type": "row", "title": "r", "panels": [
        {"title": "inner", "type": "timeseries", "targets": [
            {"refId": "A", "expr": "up", "legendFormat": "{{job}} {{ instance }}"},
            {"refId": "B", "expr": "up", "hide": True}]}]}]}
    (q,) = panel_queries(d)
    assert q.panel_title == "inner" and q.required_labels == ("job", "instance") and not q.instant


def test_substitute():
    e = 'label_replace(rate(x[$__range]), "a", "$1", "b", "(.*)") + rate(y[${__rate_interval}]) * $__interval_ms'
    assert substitute(e, range_seconds=300, rate_interval_seconds=30, interval_seconds=15) == \
        'label_replace(rate(x[300s]), "a", "$1", "b", "(.*)") + rate(y[30s]) * 15000'
    with pytest.raises(ValueError, match=r"\$namespace"):
        substitute('up{namespace="$namespace"}')


def test_every_query_substitutes():
    for _, q in all_queries():
        assert "$__" not in substitute(q.expr)


def test_every_query_parses(tmp_path, promtool):
    rules = [{"record": f"netviz:q{i}", "expr": substitute(q.expr)} for i, (_, q) in enumerate(all_queries())]
    (tmp_path / "r.yml").write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": rules}]}))
    r = subprocess.run([promtool, "check", "rules", str(tmp_path / "r.yml")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def _links(link, client, server, port, role, inst, per_min):
    (cid, cn, cns, ck), (sid, sn, sns, sk) = client, server
    return {"series": (f'caretta_links_observed{{link_id="{link}",client_id="{cid}",client_name="{cn}",'
                       f'client_namespace="{cns}",client_kind="{ck}",server_id="{sid}",server_name="{sn}",'
                       f'server_namespace="{sns}",server_kind="{sk}",server_port="{port}",role="{role}",'
                       f'instance="{inst}"}}'),
            "values": f"0+{per_min}x10"}


def test_service_map_queries_build_node_graph_frames(tmp_path, promtool):
    """Evaluate the node-graph queries on synthetic Caretta series with promtool: a link seen by
    both agents counts once, every edge endpoint is a node, and kinds colour the arcs."""
    qs = {q.ref_id: q for q in panel_queries(load_dashboard(CARETTA)) if q.panel_title == "Service Map"}
    rules = [{"record": ref, "expr": substitute(qs[ref].expr, range_seconds=300)} for ref in ("nodes", "edges")]
    (tmp_path / "r.yml").write_text(yaml.safe_dump({"groups": [{"name": "g", "interval": "1m", "rules": rules}]}))
    web, db, ext = ("11", "web", "shop", "Deployment"), ("22", "db", "shop", "StatefulSet"), \
        ("33", "1.2.3.4", "external", "external")
    test = {"rule_files": [str(tmp_path / "r.yml")], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": [_links("1", web, db, 5432, 1, "n1", 600), _links("2", web, db, 5432, 2, "n2", 600),
                         _links("3", ext, web, 80, 2, "n1", 60)],
        "promql_expr_test": [
            {"expr": "nodes", "eval_time": "10m", "exp_samples": [
                {"labels": 'nodes{id="11",title="web",subTitle="shop",detail__kind="Deployment",arc__workload="1"}', "value": 11},
                {"labels": 'nodes{id="22",title="db",subTitle="shop",detail__kind="StatefulSet",arc__workload="1"}', "value": 10},
                {"labels": 'nodes{id="33",title="1.2.3.4",subTitle="external",detail__kind="external",arc__external="1"}', "value": 1}]},
            {"expr": "edges", "eval_time": "10m", "exp_samples": [
                {"labels": 'edges{id="11->22",source="11",target="22"}', "value": 10},
                {"labels": 'edges{id="33->11",source="33",target="11"}', "value": 1}]}]}]}
    (tmp_path / "t.yml").write_text(yaml.safe_dump(test))
    r = subprocess.run([promtool, "test", "rules", str(tmp_path / "t.yml")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_configmaps_carry_sidecar_label(settings, make):
    cms = dashboard_configmaps(settings)
    assert [c["metadata"]["name"] for c in cms] == ["netviz-dashboard-caretta", "netviz-dashboard-goflow2"]
    for cm in cms:
        assert cm["metadata"]["namespace"] == "monitoring"
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        (key, text), = cm["data"].items()
        assert key.endswith(".json") and json.loads(text)["uid"]
    cms = dashboard_configmaps(make(grafana={"dashboards_namespace": "grafana", "sidecar_label_key": "dash",
                                             "sidecar_label_value": "yes"}))
    assert cms[0]["metadata"]["labels"]["dash"] == "yes" and cms[0]["metadata"]["namespace"] == "grafana"


def test_configmaps_reject_bad_dashboards(settings, tmp_path):
    (tmp_path / "a.json").write_text("{not json")
    with pytest.raises(ValueError, match="a.json"):
        dashboard_configmaps(settings, tmp_path)
    (tmp_path / "a.json").write_text(json.dumps({"uid": "x", "title": "t", "__inputs": []}))
    with pytest.raises(ValueError, match="__inputs"):
        dashboard_configmaps(settings, tmp_path)
