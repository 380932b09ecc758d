from __future__ import annotations

import json
import re
import subprocess

import pytest
import yaml

from netviz_pipeline.dashboards import dashboard_variables, load_dashboard, panel_queries, substitute
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
            if p["type"] == "row":  # a section header: no queries of its own
                assert "targets" not in p and not p["panels"]
                continue
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
    with pytest.raises(ValueError, match=r"\$namespace, which the dashboard does not define"):
        substitute('up{namespace="$namespace"}')
    with pytest.raises(ValueError, match=r"\$namespace, which the dashboard does not define"):
        substitute('up{namespace="$namespace"}', variables={"exporter": ".*"})
    assert substitute('topk($top, up{e=~"${exporter}"})', variables={"top": "5", "exporter": "(a|b)"}) == \
        'topk(5, up{e=~"(a|b)"})'
    with pytest.raises(ValueError, match=r"\$ns, whose default the dashboard does not fix"):
        substitute('up{namespace=~"$ns"}', variables={"ns": None})


def _var(name, **kw):
    return {"name": name, "type": "query", "query": "label_values(up, job)", **kw}


def test_dashboard_variables_are_what_a_fresh_user_sees():
    d = {"templating": {"list": [
        {"name": "datasource", "type": "datasource", "query": "prometheus", "current": {}},
        _var("all", includeAll=True, multi=True, allValue=".*", current={"text": ["All"], "value": ["$__all"]}),
        _var("all_unsaved", includeAll=True, multi=True, allValue=".+"),  # no current: All is the first option
        _var("all_live", includeAll=True, multi=True, current={"value": "$__all"}),  # Grafana's All: live options
        _var("picked", multi=True, current={"value": ["198.18.0.2", "a|b"]}),
        _var("one_of_multi", multi=True, current={"value": ["198.18.0.2"]}),
        _var("single", current={"value": "it's"}),
        _var("unknown"),  # a query variable nobody picked: only a live option list could say
        {"name": "n", "type": "custom", "query": "5, 10,20", "current": {}},
        {"name": "m", "type": "custom", "query": "5,10,20", "options": [
            {"text": "5", "value": "5", "selected": False}, {"text": "20", "value": "20", "selected": True}]},
        {"name": "c", "type": "custom", "query": "5,10", "current": {"text": "10", "value": "10"}}]}}
    assert dashboard_variables(d) == {
        "all": ".*", "all_unsaved": ".+", "all_live": None, "picked": r"(198\\.18\\.0\\.2|a\\|b)",
        "one_of_multi": r"198\\.18\\.0\\.2", "single": r"it\\'s", "unknown": None, "n": "5", "m": "20", "c": "10"}
    assert dashboard_variables(load_dashboard(GOFLOW2)) == {"exporter": ".*", "src_net": ".*", "dst_net": ".*",
                                                            "top": "10"}
    assert dashboard_variables(load_dashboard(CARETTA)) == {}


def test_panel_queries_carry_the_dashboards_variables():
    d = {"templating": {"list": [{"name": "top", "type": "custom", "query": "3,7"}]},
         "panels": [{"title": "t", "type": "bargauge", "targets": [{"refId": "A", "expr": "topk($top, up[$__range])"}]}]}
    (q,) = panel_queries(d)
    assert q.ready(range_seconds=60) == "topk(3, up[60s])"
    d["templating"]["list"] = []
    (q,) = panel_queries(d)
    with pytest.raises(ValueError, match="does not define"):
        q.ready()


def test_every_query_substitutes():
    for _, q in all_queries():
        assert not re.search(r"\$\{?[A-Za-z_]", q.ready()), q.expr


def test_every_query_parses(tmp_path, promtool):
    rules = [{"record": f"netviz:q{i}", "expr": q.ready()} for i, (_, q) in enumerate(all_queries())]
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


def _goflow2(title: str) -> dict:
    return {q.ref_id: q for q in panel_queries(load_dashboard(GOFLOW2)) if q.panel_title == title}


def _run_rule_tests(tmp_path, promtool, rules: list[dict], tests: list[dict]):
    (tmp_path / "r.yml").write_text(yaml.safe_dump({"groups": [{"name": "g", "interval": "1m", "rules": rules}]}))
    (tmp_path / "t.yml").write_text(yaml.safe_dump({"rule_files": [str(tmp_path / "r.yml")],
                                                    "evaluation_interval": "1m", "tests": tests}))
    r = subprocess.run([promtool, "test", "rules", str(tmp_path / "t.yml")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def _talker(src, dst, values, exporter="198.18.0.2", src_kind="host", dst_kind="workload", src_net="lan",
            dst_net="cluster"):
    return {"series": (f'netviz_flow_talker_bytes_total{{job="netviz-flows",exporter="{exporter}",src="{src}",'
                       f'dst="{dst}",src_name="{src}",dst_name="{dst}",src_kind="{src_kind}",dst_kind="{dst_kind}",'
                       f'src_net="{src_net}",dst_net="{dst_net}"}}'),
            "values": values}


# One sample a minute, 0m..20m. Over the range ending at 20m (10m, so increase() scales the 9 minutes of
# samples by 10/9): early 30000 B (all of it before 14m, idle now), steady 9000, late 2000 (all in the
# last minute: the largest now), tiny 900, before 0 (busy before the range only) and the aggregator's
# untracked remainder 4500.
TALKERS = [_talker("before", "shop/web", "0+9000x9 81000+0x10"), _talker("early", "shop/web", "0+9000x14 126000+0x5"), _talker("steady", "service/shop/web", "0+900x20"),
           _talker("late", "node/n1", "9000+0x19 10800", dst_kind="node"), _talker("tiny", "shop/db", "0+90x20"),
           _talker("other", "other", "0+450x20", exporter="other", src_kind="other", dst_kind="other",
                   src_net="other", dst_net="other")]
REMAINDER_ONLY = TALKERS[-1:]


def test_top_talkers_pick_the_top_n_over_the_whole_range_and_add_up(tmp_path, promtool):
    """Akvorado-style top talkers on the real engine: the N pairs with the most bytes over the whole
    dashboard range (a range query pins the choice with `@ end()`, so every step shows the same
    pairs), plus an "other" series that is the total minus those N, so the stack adds up; with fewer
    pairs than N, or none, "other" is the rest (the remainder), never missing."""
    bps, vol = _goflow2("Top talkers over time (bits/s)"), _goflow2("Top talkers (bytes in range)")
    assert {r: q.required_labels for r, q in bps.items()} == {"A": ("src_name", "dst_name"), "B": ()}
    assert {r: q.required_labels for r, q in vol.items()} == {"A": ("src_name", "dst_name"), "B": ()}
    assert "@ end()" in bps["A"].expr and "@ end()" in bps["B"].expr
    rules = []
    for top in ("2", "10"):
        variables = dict(bps["A"].variables, top=top)
        for name, q in (("bps", bps), ("bytes", vol)):
            for ref, part in (("A", "top"), ("B", "other")):
                expr = substitute(q[ref].expr, range_seconds=600, rate_interval_seconds=120, variables=variables)
                rules.append({"record": f"{name}_{part}{top}", "expr": expr})
                if name == "bps":  # a range query's step at 13m: `@ end()` still means the range's end, 20m
                    assert expr.count("@ end()") == 1
                    rules.append({"record": f"{name}_{part}{top}_pinned", "expr": expr.replace("@ end()", "@ 1200")})
    total = ('8 * sum(rate(netviz_flow_talker_bytes_total[2m]))', 'sum(increase(netviz_flow_talker_bytes_total[10m]))')
    rules += [{"record": "bps_total", "expr": total[0]}, {"record": "bytes_total", "expr": total[1]},
              {"record": "bps_sum2", "expr": "sum(bps_top2) + sum(bps_other2)"},
              {"record": "bytes_sum2", "expr": "sum(bytes_top2) + sum(bytes_other2)"}]

    def pair(rec, src, dst, v):
        return {"labels": f'{rec}{{src_name="{src}",dst_name="{dst}"}}', "value": v}
    tests = [{"interval": "1m", "input_series": TALKERS, "promql_expr_test": [
        # (b) at 20m `late` is the largest talker (30 B/s) but small over the range: not in the top 2;
        # `early` is idle now (0 bits/s) but the largest over the range: in, as a 0 line
        {"expr": "bps_top2", "eval_time": "20m", "exp_samples": [
            pair("bps_top2", "early", "shop/web", 0), pair("bps_top2", "steady", "service/shop/web", 120)]},
        # other = late 30 + tiny 1.5 + remainder 7.5 B/s
        {"expr": "bps_other2", "eval_time": "20m", "exp_samples": [{"labels": "bps_other2", "value": 312}]},
        # (a) the stack is the total
        {"expr": "bps_sum2", "eval_time": "20m", "exp_samples": [{"labels": "bps_sum2", "value": 432}]},
        {"expr": "bps_total", "eval_time": "20m", "exp_samples": [{"labels": "bps_total", "value": 432}]},
        # (b) the same two pairs at an earlier step of the same range query (early busy then, late idle),
        # not the top 2 of the 10 minutes before that step (early and before)
        {"expr": "bps_top2_pinned", "eval_time": "13m", "exp_samples": [
            pair("bps_top2_pinned", "early", "shop/web", 1200),
            pair("bps_top2_pinned", "steady", "service/shop/web", 120)]},
        {"expr": "bps_other2_pinned", "eval_time": "13m", "exp_samples": [
            {"labels": "bps_other2_pinned", "value": 72}]},
        {"expr": "bytes_top2", "eval_time": "20m", "exp_samples": [
            pair("bytes_top2", "early", "shop/web", 30000), pair("bytes_top2", "steady", "service/shop/web", 9000)]},
        {"expr": "bytes_other2", "eval_time": "20m", "exp_samples": [{"labels": "bytes_other2", "value": 7400}]},
        {"expr": "bytes_sum2", "eval_time": "20m", "exp_samples": [{"labels": "bytes_sum2", "value": 46400}]},
        {"expr": "bytes_total", "eval_time": "20m", "exp_samples": [{"labels": "bytes_total", "value": 46400}]},
        # (c) fewer tracked pairs (4) than N (10): all of them, and other = the remainder, never the
        # remainder as a pair of its own
        {"expr": "bytes_top10", "eval_time": "20m", "exp_samples": [
            pair("bytes_top10", "before", "shop/web", 0), pair("bytes_top10", "early", "shop/web", 30000), pair("bytes_top10", "steady", "service/shop/web", 9000),
            pair("bytes_top10", "late", "node/n1", 2000), pair("bytes_top10", "tiny", "shop/db", 900)]},
        {"expr": "bytes_other10", "eval_time": "20m", "exp_samples": [{"labels": "bytes_other10", "value": 4500}]},
        {"expr": "bps_other10", "eval_time": "20m", "exp_samples": [{"labels": "bps_other10", "value": 60}]}]},
        # (c) no tracked pair at all: no top series, other = everything
        {"interval": "1m", "input_series": REMAINDER_ONLY, "promql_expr_test": [
            {"expr": "bps_top10", "eval_time": "20m", "exp_samples": []},
            {"expr": "bps_other10", "eval_time": "20m", "exp_samples": [{"labels": "bps_other10", "value": 60}]},
            {"expr": "bytes_top10", "eval_time": "20m", "exp_samples": []},
            {"expr": "bytes_other10", "eval_time": "20m", "exp_samples": [
                {"labels": "bytes_other10", "value": 4500}]}]}]
    _run_rule_tests(tmp_path, promtool, rules, tests)


def test_talker_filters_and_the_remainder(tmp_path, promtool):
    """A picked exporter keeps its own pairs only: the remainder (exporter "other") cannot be split by
    exporter, so it leaves the total, and "other" is the picked exporter's traffic beyond the top N."""
    vol = _goflow2("Top talkers (bytes in range)")
    variables = dict(vol["A"].variables, top="1", exporter="198\\\\.18\\\\.0\\\\.3")  # as Grafana sends a pick
    rules = [{"record": f"bytes_{part}", "expr": substitute(vol[ref].expr, range_seconds=600, variables=variables)}
             for ref, part in (("A", "top"), ("B", "other"))]
    series = TALKERS + [_talker("steady", "service/shop/web", "0+90x20", exporter="198.18.0.3"),
                        _talker("tiny", "shop/db", "0+9x20", exporter="198.18.0.3")]
    _run_rule_tests(tmp_path, promtool, rules, [{"interval": "1m", "input_series": series, "promql_expr_test": [
        {"expr": "bytes_top", "eval_time": "20m", "exp_samples": [
            {"labels": 'bytes_top{src_name="steady",dst_name="service/shop/web"}', "value": 900}]},
        {"expr": "bytes_other", "eval_time": "20m", "exp_samples": [{"labels": "bytes_other", "value": 90}]}]}])


def _caretta(link, client, server, port, inst, values):
    (cn, cns, ck), (sn, sns, sk) = client, server
    return {"series": (f'caretta_links_observed{{link_id="{link}",client_id="c{link}",client_name="{cn}",'
                       f'client_namespace="{cns}",client_kind="{ck}",server_id="s{link}",server_name="{sn}",'
                       f'server_namespace="{sns}",server_kind="{sk}",server_port="{port}",instance="{inst}"}}'),
            "values": values}


def test_edge_to_cluster_map_joins_flows_and_caretta(tmp_path, promtool):
    """The edge section's node graph on the real engine: host → exporter → cluster destination from the
    flows, workload → workload from Caretta, one node per id where both name the same thing (Caretta's
    Deployment shop/web and the flows' dst_name shop/web; Caretta's node n1 and node/n1), an edge per
    hop, traffic to non-cluster destinations and the remainder left out."""
    qs = _goflow2("Edge to cluster map")
    assert {r: q.required_labels for r, q in qs.items()} == {"nodes": ("id", "title"), "edges": ("id", "source", "target")}
    assert all(q.instant and q.format == "table" for q in qs.values())
    rules = [{"record": ref, "expr": qs[ref].ready(range_seconds=600)} for ref in ("nodes", "edges")]
    # every rate below is over the 10-minute range: slope per minute / 60 = bytes/s
    series = [_talker("laptop", "service/shop/web", "0+600x20", dst_kind="service"),  # 10 B/s
              _talker("198.51.100.7", "node/n1", "0+120x20", src_kind="address", dst_kind="node"),  # 2
              _talker("laptop", "shop/web", "0+60x20", exporter="198.18.0.3"),  # 1
              _talker("laptop", "203.0.113.9", "0+6000x20", dst_kind="address"),  # not into the cluster
              TALKERS[-1]]
    web, db, cache, n1 = ("web", "shop", "Deployment"), ("db", "shop", "StatefulSet"), \
        ("cache", "shop", "Service"), ("n1", "node", "node")
    series += [_caretta("1", web, db, 5432, "n1", "0+600x20"), _caretta("1", web, db, 5432, "n2", "0+600x20"),
               _caretta("2", n1, web, 80, "n1", "0+60x20"), _caretta("3", web, cache, 6379, "n1", "0+120x20")]

    def node(id_, title, sub, kind, v):
        return {"labels": f'nodes{{id="{id_}",title="{title}",subTitle="{sub}",detail__kind="{kind}",arc__{kind}="1"}}',
                "value": v}

    def edge(src, dst, v):
        return {"labels": f'edges{{id="{src}->{dst}",source="{src}",target="{dst}"}}', "value": v}
    _run_rule_tests(tmp_path, promtool, rules, [{"interval": "1m", "input_series": series, "promql_expr_test": [
        {"expr": "nodes", "eval_time": "20m", "exp_samples": [
            node("laptop", "laptop", "host or address", "host", 11),
            node("198.51.100.7", "198.51.100.7", "host or address", "host", 2),
            node("exporter/198.18.0.2", "198.18.0.2", "exporter", "exporter", 12),
            node("exporter/198.18.0.3", "198.18.0.3", "exporter", "exporter", 1),
            node("service/shop/web", "web", "service in shop", "service", 10),
            node("node/n1", "n1", "node", "node", 3),  # flows' destination 2 + Caretta's client 1
            node("shop/web", "web", "shop", "workload", 14),  # flows 1 + Caretta client 10 + 2, server 1
            node("shop/db", "db", "shop", "workload", 10),
            node("service/shop/cache", "cache", "service in shop", "service", 2)]},
        {"expr": "count by (id) (nodes) > 1", "eval_time": "20m", "exp_samples": []},
        {"expr": "edges", "eval_time": "20m", "exp_samples": [
            edge("laptop", "exporter/198.18.0.2", 10), edge("198.51.100.7", "exporter/198.18.0.2", 2),
            edge("laptop", "exporter/198.18.0.3", 1), edge("exporter/198.18.0.2", "service/shop/web", 10),
            edge("exporter/198.18.0.2", "node/n1", 2), edge("exporter/198.18.0.3", "shop/web", 1),
            edge("shop/web", "shop/db", 10), edge("node/n1", "shop/web", 1),
            edge("shop/web", "service/shop/cache", 2)]},
        # every edge's ends are nodes
        {"expr": 'count(label_replace(edges, "id", "$1", "source", "(.*)") unless on (id) nodes) '
                 'or count(label_replace(edges, "id", "$1", "target", "(.*)") unless on (id) nodes)',
         "eval_time": "20m", "exp_samples": []}]}])


def test_goflow2_variables_and_filters():
    d = load_dashboard(GOFLOW2)
    v = {x["name"]: x for x in d["templating"]["list"]}
    assert [x["name"] for x in d["templating"]["list"]] == ["datasource", "exporter", "src_net", "dst_net", "top"]
    for name, metric in (("exporter", "netviz_flow_exporter_bytes_total"), ("src_net", "netviz_flow_network_bytes_total"),
                         ("dst_net", "netviz_flow_network_bytes_total")):
        assert v[name]["type"] == "query" and v[name]["multi"] and v[name]["includeAll"] and v[name]["allValue"] == ".*"
        assert v[name]["query"] == f'label_values({metric}{{job="netviz-flows"}}, {name})'
        assert v[name]["datasource"]["uid"] == "${datasource}" and v[name]["current"]["value"] == ["$__all"]
    assert v["top"]["type"] == "custom" and v["top"]["query"] == "5,10,20,50" and v["top"]["current"]["value"] == "10"
    # every selector of a talker series honours all three filters; exporter series the exporter filter
    talker_selectors = exporter_selectors = 0
    for name, q in all_queries():
        for metric, matchers in re.findall(r"(netviz_flow_(?:talker|exporter|network)_\w+)\{([^}]*)\}", q.expr):
            wanted = {"talker": ('exporter=~"$exporter"', 'src_net=~"$src_net"', 'dst_net=~"$dst_net"'),
                      "exporter": ('exporter=~"$exporter"',),
                      "network": ('src_net=~"$src_net"', 'dst_net=~"$dst_net"')}[metric.split("_")[2]]
            assert all(w in matchers for w in wanted), (q.panel_title, matchers)
            talker_selectors += "talker" in metric
            exporter_selectors += "exporter" in metric
    assert talker_selectors >= 10 and exporter_selectors >= 3
    assert all("$top" in q.expr for t in ("Top talkers (bytes in range)", "Top talkers over time (bits/s)")
               for q in _goflow2(t).values())


def test_units_and_legends_read_well():
    units = {}
    for path in (CARETTA, GOFLOW2):
        for p in load_dashboard(path)["panels"]:
            if p["type"] == "row":
                continue
            assert p.get("description"), p["title"]
            units[p["title"]] = p["fieldConfig"]["defaults"].get("unit")
            assert units[p["title"]], f'{p["title"]}: no unit'
            for t in p["targets"]:
                if p["type"] == "nodeGraph":  # frames, not series: fields name themselves
                    assert t["format"] == "table" and "legendFormat" not in t
                    continue
                legend = t.get("legendFormat", "")
                assert legend and "__name__" not in legend, (p["title"], t["refId"])
    assert units["Top talkers over time (bits/s)"] == "bps" and units["Top talkers (bytes in range)"] == "decbytes"
    assert units["Edge traffic into the cluster by destination"] == "decbytes"
    assert units["Edge to cluster map"] == units["Service Map"] == "Bps"
    for title in ("Top talkers (bytes in range)", "Top talkers over time (bits/s)"):
        legends = {q.ref_id: q.required_labels for q in _goflow2(title).values()}
        assert legends == {"A": ("src_name", "dst_name"), "B": ()}, title
    assert [t["legendFormat"] for p in load_dashboard(GOFLOW2)["panels"] if p["title"].startswith("Top talkers")
            for t in p["targets"]] == ["{{src_name}} → {{dst_name}}", "other"] * 2


def test_edge_section_and_links_between_dashboards():
    d = load_dashboard(GOFLOW2)
    titles = [p["title"] for p in d["panels"]]
    row = titles.index("Edge to cluster")
    assert d["panels"][row]["type"] == "row" and not d["panels"][row]["collapsed"]
    assert titles[row + 1:row + 3] == ["Edge to cluster map", "Edge traffic into the cluster by destination"]
    graph = d["panels"][row + 1]
    assert graph["type"] == "nodeGraph" and {t["refId"] for t in graph["targets"]} == {"nodes", "edges"}
    assert set(graph["transformations"][0]["options"]["renameByName"].values()) == {"mainStat"}
    converted = {c["targetField"] for c in graph["transformations"][1]["options"]["conversions"]}
    assert converted == {f"arc__{k}" for k in ("host", "exporter", "service", "node", "workload")}
    for p in d["panels"][row + 1:row + 3]:
        assert any(lk["url"].startswith("/d/netviz-caretta?") for lk in p["links"]), p["title"]
    (sm,) = [p for p in load_dashboard(CARETTA)["panels"] if p["title"] == "Service Map"]
    assert any(lk["url"].startswith("/d/netviz-goflow2?") for lk in sm["links"])
    for path in (CARETTA, GOFLOW2):
        d = load_dashboard(path)
        assert "netviz" in d["tags"]
        assert [(lk["type"], lk["tags"], lk["keepTime"]) for lk in d["links"]] == [("dashboards", ["netviz"], True)]


def test_loss_per_exporter_panel_reads_the_checks_own_queries():
    """The panel shows what the exporter check and the alerts compute (freshness), over the range."""
    from netviz_pipeline import freshness

    panel = next(p for p in load_dashboard(GOFLOW2)["panels"] if p["title"] == "Loss per exporter (in range)")
    assert [t["expr"] for t in panel["targets"]] == [freshness.export_lost_query("$__range", "$exporter"),
                                                      freshness.records_undelivered_query("$__range", "$exporter")]
    assert all("{{exporter}}" in t["legendFormat"] for t in panel["targets"])
