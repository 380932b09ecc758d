"""How Prometheus finds Caretta and GoFlow2: scrape jobs and PodMonitors (the Prometheus targets in
`targets/` choose which shape their Prometheus reads).

Caretta pods each serve only their own node, so discovery is per pod (role: pod, keep app=caretta,
port prom-metrics) — never a Service address. Job names are `netviz-*` in every mode (operator
monitors relabel `job`), so checks and dashboards can rely on them, and `merge_scrape_configs` can
own exactly those jobs in a config file it shares with the user's own jobs.
"""
from __future__ import annotations

import copy
import ipaddress
import re

import yaml

from ..flowagg import flowagg as aggregator
from ..settings import PromOperator, Settings
from . import aggregators, caretta, goflow2, labels

JOB_PREFIX = "netviz-"
CARETTA_JOB = "netviz-caretta"
GOFLOW2_JOB = "netviz-goflow2"
FLOWS_JOB = "netviz-flows"  # the flow aggregator sidecar of the GoFlow2 pod (port flow-metrics)

# Bounds per scrape: above sample_limit Prometheus refuses the whole scrape (its series stop, `up`
# stays 1 and the scrape alerts fire), so nothing a target does can grow Prometheus without end.
LABEL_LIMIT = 20  # the widest series: a talker's 9 labels + job, instance, namespace, pod, node
CARETTA_SAMPLE_LIMIT = 20_000  # per agent (one node's links); Caretta itself has no bound to size from
# GoFlow2 labels its receiver and decoder series by sender (`router`, `remote_ip`, sFlow `agent`): a
# flood of spoofed sources at the NodePort makes series without end. Only the routers in the settings
# are kept (metric relabelling, before sample_limit counts); the limit is sized for what stays.
SENDER_LABELS = ("router", "remote_ip", "agent")
GOFLOW2_FIXED_SERIES = 300  # Go runtime, process, HTTP handler and per-decoder timing series
GOFLOW2_SERIES_PER_SENDER = 300  # receiver, decoder and template series of one exporter, with room


def intervals(s: Settings) -> tuple[str, str]:
    """(scrape interval, scrape timeout) of every netviz job: the timeout may not exceed the interval
    (Prometheus refuses such a config), and a user's global default timeout (10 s) could."""
    n = s.prometheus.scrape_interval_seconds
    return f"{n}s", f"{min(n, 10)}s"


def sample_limit(s: Settings, job: str) -> int:
    """The most samples one target of `job` may return: from the aggregator's hard series budget, the
    configured routers for GoFlow2, a fixed ceiling for Caretta."""
    if job == FLOWS_JOB:
        budget = aggregator.config_budget(aggregators.config(s) if goflow2.kafka_transport(s) else goflow2.flowagg_config(s))
        return budget + budget // 10 + 10  # the budget is exact; the margin only absorbs a future series
    if job == GOFLOW2_JOB:
        return GOFLOW2_FIXED_SERIES + GOFLOW2_SERIES_PER_SENDER * max(1, len(s.routers))
    return CARETTA_SAMPLE_LIMIT


def senders(s: Settings) -> list[str]:
    """The exporter addresses GoFlow2 may keep series for: the routers' IP literals (a router given by
    host name is resolved by the caller: freshness.exporter_address)."""
    return sorted({r.host for r in s.routers if _is_ip(r.host)})


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def sender_filter(addresses: list[str]) -> dict:
    """A metric relabelling that keeps a GoFlow2 series only when each sender label it carries is one
    of `addresses` (series without one, e.g. the Go runtime's, are kept). GoFlow2 v2.2.1 writes a
    sender as `198.18.0.2` in most series, but as `[::ffff:198.18.0.2]:48159` (with the exporter's
    source port) in its template counts."""
    forms = [rf"{a}|\[(?:::ffff:)?{a}\]:[0-9]+" for a in (re.escape(a) for a in sorted(set(addresses)))]
    one = "(?:" + "|".join(forms) + ")?"
    return {"source_labels": list(SENDER_LABELS), "separator": ";", "regex": ";".join([one] * len(SENDER_LABELS)),
            "action": "keep"}


def _limits(s: Settings, job: str, exporters: list[str] | None) -> dict:
    out: dict = {"sample_limit": sample_limit(s, job), "label_limit": LABEL_LIMIT}
    if job == GOFLOW2_JOB:
        out["metric_relabel_configs"] = [sender_filter(senders(s) if exporters is None else exporters)]
    return out


def _pod_job(s: Settings, job: str, ns: str, app: str, port_name: str, kubeconfig: str | None) -> dict:
    sd: dict = {"role": "pod", "namespaces": {"names": [ns]}}
    if kubeconfig:  # Prometheus running outside the cluster
        sd["kubeconfig_file"] = kubeconfig
    meta = "__meta_kubernetes_pod_"
    interval, timeout = intervals(s)
    return {
        "job_name": job,
        "scrape_interval": interval,
        "scrape_timeout": timeout,
        "metrics_path": "/metrics",
        "kubernetes_sd_configs": [sd],
        "relabel_configs": [
            {"source_labels": [f"{meta}label_app"], "regex": app, "action": "keep"},
            {"source_labels": [f"{meta}container_port_name"], "regex": port_name, "action": "keep"},
            {"source_labels": [f"{meta}phase"], "regex": "Pending|Succeeded|Failed", "action": "drop"},
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": [f"{meta}name"], "target_label": "pod"},
            {"source_labels": [f"{meta}node_name"], "target_label": "node"},
        ],
    }


def _file_sd_job(s: Settings, job: str, directory: str) -> dict:
    interval, timeout = intervals(s)
    return {"job_name": job, "scrape_interval": interval, "scrape_timeout": timeout, "metrics_path": "/metrics",
            "file_sd_configs": [{"files": [f"{directory}/{job}.json"], "refresh_interval": "5s"}]}


def pod_scrape_jobs(s: Settings, exporters: list[str] | None = None, kubeconfig: str | None = None) -> list[dict]:
    """Prometheus `scrape_configs` entries that discover the pods (kubernetes_sd): in-cluster, or
    through `kubeconfig` for a Prometheus outside the cluster."""
    return [_pod_job(s, job, ns, app, port, kubeconfig) | _limits(s, job, exporters)
            for job, ns, app, port in pod_jobs(s)]


def file_sd_jobs(s: Settings, directory: str, exporters: list[str] | None = None) -> list[dict]:
    """Prometheus `scrape_configs` entries that read target files the pipeline writes (file_sd_targets)."""
    return [_file_sd_job(s, job, directory) | _limits(s, job, exporters) for job, *_ in pod_jobs(s)]


def pod_jobs(s: Settings) -> list[tuple[str, str, str, str]]:
    """(job, namespace, app label, container port name) of every netviz scrape job."""
    jobs = [(CARETTA_JOB, s.caretta.namespace, "caretta", caretta.METRICS_PORT_NAME),
            (GOFLOW2_JOB, s.goflow2.namespace, "goflow2", "metrics")]
    if s.flows.enabled:  # the GoFlow2 pod's sidecar (fifo) or the aggregators' own pods (kafka)
        app = aggregators.NAME if goflow2.kafka_transport(s) else goflow2.NAME
        jobs.append((FLOWS_JOB, s.goflow2.namespace, app, goflow2.FLOWS_PORT_NAME))
    return jobs


def file_sd_targets(pods: list[dict], app: str, port_name: str) -> list[dict]:
    """file_sd content (one group per pod, labels as the kubernetes_sd relabelling sets them) from
    pod objects (API JSON / camelCase). Only running pods with an IP and the named port count, not one
    being deleted (a collector moved off a lost node leaves its old pod deleting there until the node is back)."""
    groups = []
    for pod in pods:
        meta, spec, status = pod.get("metadata", {}), pod.get("spec", {}), pod.get("status", {})
        if ((meta.get("labels") or {}).get("app") != app or status.get("phase") != "Running" or not status.get("podIP")
                or meta.get("deletionTimestamp")):
            continue
        ports = [p["containerPort"] for c in spec.get("containers", []) for p in c.get("ports", [])
                 if p.get("name") == port_name]
        if not ports:
            continue
        ip = status["podIP"]
        host = f"[{ip}]" if ":" in ip else ip
        groups.append({"targets": [f"{host}:{ports[0]}"],
                       "labels": {"namespace": meta.get("namespace", ""), "pod": meta.get("name", ""),
                                  "node": spec.get("nodeName", "")}})
    return sorted(groups, key=lambda g: g["labels"]["pod"])


def monitors(s: Settings, op: PromOperator | None, exporters: list[str] | None = None) -> list[dict]:
    """Prometheus Operator objects: a PodMonitor per component (`op`: where they live, their labels)."""
    interval, timeout = intervals(s)
    out = []
    for job, ns, app, port in pod_jobs(s):
        limits = _limits(s, job, exporters)
        metric_relabelings = [{"sourceLabels": r["source_labels"], "separator": r["separator"], "regex": r["regex"],
                               "action": r["action"]} for r in limits.get("metric_relabel_configs", [])]
        out.append({
            "apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor",
            "metadata": {"name": job, "namespace": (op and op.namespace) or ns,
                         "labels": labels(app, "monitor") | dict(op.labels if op else {})},
            "spec": {"selector": {"matchLabels": {"app": app}},
                     "namespaceSelector": {"matchNames": [ns]},
                     "sampleLimit": limits["sample_limit"], "labelLimit": limits["label_limit"],
                     "podMetricsEndpoints": [{"port": port, "path": "/metrics", "interval": interval,
                                              "scrapeTimeout": timeout,
                                              **({"metricRelabelings": metric_relabelings} if metric_relabelings else {}),
                                              "relabelings": [{"targetLabel": "job", "replacement": job,
                                                               "action": "replace"},
                                                              {"sourceLabels": ["__meta_kubernetes_pod_node_name"],
                                                               "targetLabel": "node", "action": "replace"}]}]},
        })
    return out


def _is_ours(job: object) -> bool:
    return isinstance(job, dict) and str(job.get("job_name", "")).startswith(JOB_PREFIX)


def merge_scrape_configs(existing_yaml_text: str, ours: list[dict]) -> tuple[str, bool]:
    """Replace only the `netviz-*` jobs in a Prometheus config; every other job and top-level key is
    kept. Our jobs take the place of the first old netviz job (else go last). Unchanged input is
    returned byte-for-byte (comments survive); a changed config is re-serialised (comments lost)."""
    names = [j.get("job_name", "") for j in ours]
    if not all(n.startswith(JOB_PREFIX) for n in names) or len(set(names)) != len(names):
        raise ValueError(f"our jobs must have unique names starting with {JOB_PREFIX!r}: {names}")
    config = yaml.safe_load(existing_yaml_text) if existing_yaml_text.strip() else {}
    if not isinstance(config, dict):
        raise ValueError("the existing Prometheus config is not a YAML mapping")
    jobs = config.get("scrape_configs") or []
    if not isinstance(jobs, list):
        raise ValueError("scrape_configs in the existing Prometheus config is not a list")
    first = next((i for i, j in enumerate(jobs) if _is_ours(j)), None)
    kept = [j for j in jobs if not _is_ours(j)]
    at = len(kept) if first is None else sum(1 for j in jobs[:first] if not _is_ours(j))
    new_jobs = kept[:at] + copy.deepcopy(ours) + kept[at:]
    if new_jobs == jobs and "scrape_configs" in config:
        return existing_yaml_text, False
    new = dict(config)
    new["scrape_configs"] = new_jobs
    return yaml.safe_dump(new, sort_keys=False, default_flow_style=False), True
