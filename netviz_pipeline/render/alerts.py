"""Alert rules for what netviz deploys, in the three shapes users run Prometheus: a rule file named in
`rule_files` (file mode), the chart's `alerting_rules.yml` server file (chart mode), a `PrometheusRule`
(operator mode). One group, `netviz`; every alert is named `Netviz*` and says what to do.

The checks and the freshness sensor see problems while the pipeline runs; these rules keep watching
from Prometheus itself (and reach whoever its Alertmanager pages) between runs. Expressions use the
same job names as the scrape configs (render/scrape.py) and only metrics GoFlow2 v2.2.1 (its
`metrics` package) and the flow aggregator (flowagg.py) export. Pure functions, no I/O.
"""
from __future__ import annotations

import copy
import fnmatch

import yaml

from .. import exporter_health, freshness
from ..settings import Settings
from . import aggregators, goflow2, labels
from .scrape import CARETTA_JOB, FLOWS_JOB, GOFLOW2_JOB

GROUP = "netviz"
GROUP_PREFIX = "netviz"  # groups we own in a shared rule file (the chart's alerting_rules.yml)
RULES_FILE_NAME = "netviz-alerts.yml"
PROMETHEUS_RULE_NAME = "netviz-alerts"
CHART_RULES_KEY = "alerting_rules.yml"  # the chart's server ConfigMap key (serverFiles), default `{}`
CHART_RULES_PATH = "/etc/config/alerting_rules.yml"  # where the chart mounts it; in its default rule_files

SILENT_AFTER = 15 * 60  # an exporter with no datagram this long is silent...
SENT_WITHIN = 6 * 3600  # ...if it sent any in this long (one that never sent is not configured yet)


class _Dumper(yaml.SafeDumper):
    """safe_dump, with multi-line expressions as `|` blocks a person can read in the file."""


_Dumper.add_representer(str, lambda d, v: d.represent_scalar("tag:yaml.org,2002:str", v,
                                                             style="|" if "\n" in v else None))


def _dump(doc: dict) -> str:
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=100)


def _dur(seconds: int) -> str:
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    return f"{seconds // 60}m" if seconds % 60 == 0 else f"{seconds}s"


def _window(s: Settings, minimum: int) -> str:
    """A range for increase()/rate(): at least `minimum`, and at least four scrapes so one missed
    scrape still leaves the two samples they need (scrape intervals go up to 5 min)."""
    return _dur(max(minimum, 4 * s.prometheus.scrape_interval_seconds))


def _for(s: Settings, minimum: int) -> str:
    """How long a condition must hold: never less than two scrapes, so one failed scrape cannot page."""
    return _dur(max(minimum, 2 * s.prometheus.scrape_interval_seconds))


def _alert(name: str, expr: str, for_: str, severity: str, summary: str, description: str) -> dict:
    return {"alert": name, "expr": expr, "for": for_, "labels": {"severity": severity},
            "annotations": {"summary": summary, "description": description}}


def _collector_rules(s: Settings) -> list[dict]:
    g, ns = f'job="{GOFLOW2_JOB}"', s.goflow2.namespace
    nf = f"goflow2_flow_process_nf_total{{{g}}}"
    w5 = _window(s, 300)
    errors = f"sum by (router) (increase(goflow2_flow_decoder_error_total{{{g}}}[{_window(s, 600)}]))"
    missing_template = (f'sum by (router) (increase(goflow2_flow_process_nf_errors_total{{{g},'
                        f'error="template_not_found"}}[{_window(s, 600)}]))')
    return [
        _alert("NetvizCollectorDown", f"up{{{g}}} == 0 or absent(up{{{g}}})", _for(s, 120), "critical",
               "GoFlow2 (the NetFlow collector) is down or not scraped",
               f"Prometheus has no successful scrape of job {GOFLOW2_JOB}: no NetFlow from any router is being "
               f"counted and the flow dashboards go flat. Check `kubectl -n {ns} get pods -l app=goflow2` and the "
               "pod's events and logs. The netviz flow_freshness sensor re-runs the goflow2 and "
               "prometheus_scrape_config steps by itself; if this persists, run the netviz_deploy job and read "
               "its goflow2 step."),
        _alert("NetvizExporterSilent",
               f"(sum by (router) (increase({nf}[{_window(s, SENT_WITHIN)}])) > 0)\n"
               f"unless\n(sum by (router) (increase({nf}[{_window(s, SILENT_AFTER)}])) > 0)\n"
               f"and on ()\n(max(up{{{g}}}) == 1)",  # a down collector is NetvizCollectorDown, not every router
               _for(s, 300), "warning",
               "Router {{ $labels.router }} stopped sending NetFlow",
               f"GoFlow2 decoded NetFlow from {{{{ $labels.router }}}} within the last {_dur(SENT_WITHIN)} but "
               f"none in the last {_window(s, SILENT_AFTER)}. softflowd only exports when it sees traffic, so a "
               "quiet LAN sends nothing too; the netviz flow_freshness sensor tells the two apart (it asks "
               "softflowd's own counters on the router over SSH) and re-runs router_softflowd when softflowd "
               "died or lost its config. Otherwise check that softflowd runs on that router and that UDP to "
               f"the collector's NodePort ({s.goflow2.netflow_node_port}) is not filtered."),
        _alert("NetvizFlowDrops", f"sum by (instance, remote_ip) (increase(goflow2_flow_dropped_packets_total{{{g}}}[{w5}])) > 0",
               _for(s, 600), "warning",
               "GoFlow2 is dropping NetFlow datagrams from {{ $labels.remote_ip }}",
               "GoFlow2's receive queue has been full for a while: datagrams from {{ $labels.remote_ip }} are "
               "discarded before decoding, so flow dashboards under-count. Give the goflow2 pod more CPU, or "
               "lower the routers' export rate (fewer, longer flows: softflowd timeouts)."),
        # template_not_found is expected for a moment after GoFlow2 starts (NetFlow v9 templates arrive
        # every few datagrams); a template that never comes shows as NetvizExporterSilent instead.
        _alert("NetvizFlowDecodeErrors",
               f"(\n  {errors}\n-\n  ({missing_template}\n   or {errors} * 0)\n) > 0.5",  # increase() extrapolates: ~1 datagram
               _for(s, 600), "warning",
               "GoFlow2 cannot decode NetFlow from {{ $labels.router }}",
               "Datagrams from {{ $labels.router }} fail to decode for another reason than a missing template "
               "(malformed, or a NetFlow version or field GoFlow2 does not support); they are lost. Check the "
               "exporter's NetFlow version (netflow_version in the netviz settings, 9 by default) and the goflow2 "
               f"container's log in namespace {ns}."),
    ]


def _aggregator_rules(s: Settings) -> list[dict]:
    f, ns = f'job="{FLOWS_JOB}"', s.goflow2.namespace
    w10 = _window(s, 600)
    # the exporter check's bound (exporter_health.lost_bound) over this window: 5 + the larger of 2 % and
    # two scrape intervals' worth, since the counters compared are different targets
    w10_s = max(600, 4 * s.prometheus.scrape_interval_seconds)
    ratio = max(exporter_health.LOST_MIN_RATIO, 2 * s.prometheus.scrape_interval_seconds / w10_s)
    lost, sent = freshness.export_lost_query(w10), freshness.export_sent_query(w10)
    undelivered = freshness.records_undelivered_query(w10)
    decoded = freshness.records_decoded_query(w10)
    return [
        # the same bounds as the exporter check (exporter_health.classify): counted moments apart, a
        # packet or two either way is not loss
        _alert("NetvizExportPacketsLost",
               f"({lost})\n>= on (exporter)\n{exporter_health.LOST_MIN_PACKETS} + {ratio:g} * ({sent})",
               _for(s, 600), "warning",
               "NetFlow from {{ $labels.exporter }} is lost before it reaches GoFlow2",
               "The NetFlow v9 sequence numbers of {{ $labels.exporter }} say it sent more export packets than "
               "GoFlow2 counted from it: the difference was lost on the way (the network between router and "
               "collector, a firewall dropping some, or a full socket buffer on the collector's node), and the "
               "flow dashboards under-count that router. GoFlow2's own queue drops are NetvizFlowDrops. Check "
               "interface errors on the path and the collector node's UDP receive errors (netstat -su)."),
        _alert("NetvizFlowRecordsUndelivered",
               f"({undelivered})\n>= on (exporter)\n{exporter_health.LOST_MIN_PACKETS} + {ratio:g} * ({decoded})"
               + (f"\nunless on ()\n(sum(deriv(netviz_flow_kafka_lag_messages{{{f}}}[{_window(s, 300)}])) > 0)"
                  if goflow2.kafka_transport(s) else ""),
               _for(s, 600), "warning",
               "Flow records from {{ $labels.exporter }} decoded by GoFlow2 never reach the aggregators",
               ("GoFlow2 decoded more data records from {{ $labels.exporter }} than the flow aggregators counted: "
                "they were dropped after the collector. With Kafka, GoFlow2's producer gives up on a message after "
                "its retries and only logs it: check the goflow2 container's log for producer errors and the "
                "brokers' health (a growing backlog is NetvizAggregatorsFallingBehind instead)."
                if goflow2.kafka_transport(s) else
                "GoFlow2 decoded more data records from {{ $labels.exporter }} than the flow aggregator counted: "
                "they were lost between GoFlow2 and the aggregator (the FIFO) or skipped as malformed "
                "(NetvizAggregatorMalformedInput). Check both containers' logs in the goflow2 pod.")),
        _alert("NetvizAggregatorDown", f"up{{{f}}} == 0 or absent(up{{{f}}})", _for(s, 120), "critical",
               "The flow aggregator is down or not scraped",
               f"Prometheus has no successful scrape of job {FLOWS_JOB} (the flowagg sidecar in the goflow2 pod, "
               "port flow-metrics): top talkers, protocols and networks are missing from the dashboards. Check "
               f"`kubectl -n {ns} logs -l app=goflow2 -c flowagg`; run the netviz_deploy job if the sidecar is "
               "missing."),
        _alert("NetvizAggregatorInputDisconnected", f"netviz_flow_input_connected{{{f}}} == 0", _for(s, 120),
               "critical", "The flow aggregator receives nothing from GoFlow2",
               "The aggregator is waiting for GoFlow2's FIFO (in the pod's shared in-memory volume), so no flow "
               "record reaches it and the talker, protocol and network series stop. GoFlow2's container creates "
               f"the FIFO when it starts: check its state and log (`kubectl -n {ns} describe pod -l app=goflow2`); "
               "run the netviz_deploy job if the pod does not match what netviz renders."),
        _alert("NetvizAggregatorMalformedInput",
               f"sum by (instance, reason) (increase(netviz_flow_malformed_lines_total{{{f}}}[{_window(s, 600)}])) > 0",
               _for(s, 600), "warning",
               "The flow aggregator skips GoFlow2 output ({{ $labels.reason }})",
               ("Messages from the Kafka topic keep failing to decode as GoFlow2 FlowMessages (reason "
                "{{ $labels.reason }}): those flows are missing from the flow dashboards. Something other than "
                f"netviz's GoFlow2 (-format bin) may produce to topic {s.flows.kafka.topic}, or a GoFlow2 image other "
                "than the one netviz pins (netsampler/goflow2:v2.2.1) another layout: check the topic's producers "
                "and goflow2.image." if goflow2.kafka_transport(s) else
                "Lines from GoFlow2 keep failing to parse (reason {{ $labels.reason }}): those flows are missing "
                "from the flow dashboards. A GoFlow2 image other than the one netviz pins (netsampler/goflow2:v2.2.1) "
                "may write another JSON layout: set goflow2.image back, or update the aggregator with it.")),
        _alert("NetvizAggregatorOverBudget",
               f"netviz_flow_series{{{f}}} > netviz_flow_series_budget{{{f}}}", _for(s, 60), "warning",
               "The flow aggregator exports more series than its budget",
               "netviz_flow_series is above netviz_flow_series_budget, the hard bound the aggregator promises "
               "(top_k per dimension plus fixed series) to keep Prometheus' cardinality in check. That is a bug "
               "in the aggregator: report it with the pod's /metrics output; lower flows.top_k meanwhile."),
    ]


KAFKA_MAX_LAG = aggregators.MAX_LAG  # the same bound as the check and the sensor (checks/kafka.py)


def _kafka_rules(s: Settings) -> list[dict]:
    """The kafka transport's aggregators: falling behind (lag large and growing) and cut off from the
    brokers; "no flows" is left to NetvizExporterSilent, which tells it per router."""
    f, ns = f'job="{FLOWS_JOB}"', s.goflow2.namespace
    lag = f"sum(netviz_flow_kafka_lag_messages{{{f}}})"
    w = _window(s, 600)
    return [
        _alert("NetvizAggregatorsFallingBehind",
               f"{lag} > {KAFKA_MAX_LAG}\nand\nderiv({lag}[{w}:]) > 0", _for(s, 600), "warning",
               "The flow aggregators fall behind the Kafka topic",
               f"More than {KAFKA_MAX_LAG} flow messages wait in the topic and the backlog keeps growing: the "
               "dashboards lag behind the traffic (nothing is lost while Kafka retains the messages). Give the "
               f"flowagg pods in namespace {ns} more CPU, or raise flows.kafka.replicas (and partitions), then "
               "run the netviz_deploy job."),
        _alert("NetvizAggregatorKafkaDisconnected", f"netviz_flow_kafka_connected{{{f}}} == 0", _for(s, 120),
               "critical", "Aggregator {{ $labels.pod }} cannot reach the Kafka brokers",
               "The aggregator replica has no working connection to the brokers in flows.kafka.brokers (or a "
               "commit has been waiting on them): it counts nothing, flows wait in the topic. Check the brokers, "
               f"the network from namespace {ns} to them, and the TLS/SASL settings (flows.kafka.tls, .sasl)."),
    ]


def _caretta_rules(s: Settings) -> list[dict]:
    c = f'job="{CARETTA_JOB}"'
    return [_alert(
        "NetvizCarettaStale",
        f"sum by (node) (increase(caretta_polls_made{{{c}}}[{_window(s, 300)}])) == 0\n"
        f"or sum by (node) (up{{{c}}}) == 0\nor absent(caretta_polls_made{{{c}}})",
        _for(s, 300), "warning",
        "Caretta is not polling (node {{ $labels.node }})",
        f"Caretta's agent on node {{{{ $labels.node }}}} made no poll in the last {_window(s, 300)}, is not scraped, "
        "or no Caretta agent is scraped at all (no node label): the service map stops changing. Check "
        f"`kubectl -n {s.caretta.namespace} get pods -l app=caretta -o wide` and that agent's log (eBPF probes "
        "need a supported kernel: the caretta step's preflight says why); the flow_freshness sensor re-runs the "
        "caretta step."),
    ]


def rule_groups(s: Settings) -> dict:
    """A Prometheus rule-file document with the `netviz` group; `prometheus.alert_for_seconds` overrides
    an alert's `for` (still never below two scrapes)."""
    rules = (_collector_rules(s) + (_aggregator_rules(s) if s.flows.enabled else [])
             + (_kafka_rules(s) if goflow2.kafka_transport(s) else [])
             + _caretta_rules(s))
    floor = 2 * s.prometheus.scrape_interval_seconds
    for r in rules:
        if r["alert"] in s.prometheus.alert_for_seconds:
            r["for"] = _dur(max(s.prometheus.alert_for_seconds[r["alert"]], floor))
    return {"groups": [{"name": GROUP, "rules": rules}]}


def settings_problems(s: Settings) -> list[str]:
    """`prometheus.alert_for_seconds` may name only alerts netviz renders (with any flows settings)."""
    known = sorted(r["alert"] for r in _collector_rules(s) + _aggregator_rules(s) + _kafka_rules(s) + _caretta_rules(s))
    return [f"prometheus.alert_for_seconds: no netviz alert is named {name!r}; the alerts are {', '.join(known)}"
            for name in s.prometheus.alert_for_seconds if name not in known]


def alert_names(s: Settings) -> list[str]:
    return [r["alert"] for g in rule_groups(s)["groups"] for r in g["rules"]]


def rule_file_text(s: Settings) -> str:
    return _dump(rule_groups(s))


def _load_mapping(text: str, what: str) -> dict:
    doc = yaml.safe_load(text) if text.strip() else {}
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ValueError(f"{what} is not a YAML mapping")
    return doc


def _covers(pattern: str, path: str) -> bool:
    """Does a rule_files entry load `path`? Exact, or a glob with as many path parts (Go's
    filepath.Match, which Prometheus uses, never lets `*` cross a `/`)."""
    return pattern == path or (pattern.count("/") == path.count("/") and fnmatch.fnmatchcase(path, pattern))


def merge_rule_files(config_text: str, path: str) -> tuple[str, bool]:
    """Add `path` to a Prometheus config's `rule_files` unless an entry already loads it; every other
    key is kept. Unchanged input is returned byte-for-byte (comments survive)."""
    config = _load_mapping(config_text, "the existing Prometheus config")
    files = config.get("rule_files") or []
    if not isinstance(files, list):
        raise ValueError("rule_files in the existing Prometheus config is not a list")
    if any(isinstance(f, str) and _covers(f, path) for f in files):
        return config_text, False
    new = dict(config)
    new["rule_files"] = [*files, path]
    return yaml.safe_dump(new, sort_keys=False, default_flow_style=False), True  # as merge_scrape_configs


def _is_ours(group: object) -> bool:
    return isinstance(group, dict) and str(group.get("name", "")).startswith(GROUP_PREFIX)


def merge_chart_alerting_rules(existing_text: str, s: Settings) -> tuple[str, bool]:
    """The chart's `alerting_rules.yml` with our groups in place of any `netviz*` group (ours go where
    the first old one was, else last); the user's groups and other keys kept. Unchanged input is
    returned byte-for-byte."""
    doc = _load_mapping(existing_text, f"the chart's {CHART_RULES_KEY}")
    groups = doc.get("groups") or []
    if not isinstance(groups, list):
        raise ValueError(f"groups in the chart's {CHART_RULES_KEY} is not a list")
    ours = copy.deepcopy(rule_groups(s)["groups"])
    first = next((i for i, g in enumerate(groups) if _is_ours(g)), None)
    kept = [g for g in groups if not _is_ours(g)]
    at = len(kept) if first is None else sum(1 for g in groups[:first] if not _is_ours(g))
    new_groups = kept[:at] + ours + kept[at:]
    if new_groups == groups and "groups" in doc:
        return existing_text, False
    new = dict(doc)
    new["groups"] = new_groups
    return _dump(new), True


def chart_values_snippet(s: Settings) -> str:
    """The chart values that make `helm upgrade` render the same rules (its serverFiles)."""
    return _dump({"serverFiles": {CHART_RULES_KEY: rule_groups(s)}})


def prometheus_rule(s: Settings) -> dict:
    """Operator mode: a PrometheusRule labelled like the PodMonitors, so a ruleSelector that matches
    them (the usual setup: the same labels as podMonitorSelector) loads it."""
    op = s.prometheus.operator
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
            "metadata": {"name": PROMETHEUS_RULE_NAME, "namespace": (op and op.namespace) or s.goflow2.namespace,
                         "labels": labels("netviz", "alerts") | dict(op.labels if op else {})},
            "spec": {"groups": rule_groups(s)["groups"]}}
