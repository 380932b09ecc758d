"""Flow freshness from data, not from materialisation times.

A NetFlow exporter is fresh when GoFlow2 counted datagrams from it within the window
(`increase(goflow2_flow_process_nf_total)` by `router`, from collectors up now); Caretta is fresh when its agents keep
polling and the links' byte gauges keep growing. These are the queries the checks and sensors run.
"""
from __future__ import annotations

import ipaddress
import socket

from .render.scrape import CARETTA_JOB, FLOWS_JOB, GOFLOW2_JOB
from .settings import Router


def exporter_address(router: Router) -> str:
    """The address GoFlow2 labels the router's datagrams with (`router` label): its SSH address."""
    try:
        return str(ipaddress.ip_address(router.host))
    except ValueError:
        return socket.gethostbyname(router.host)


def exporter_addresses(routers: list[Router]) -> list[str]:
    """Every router's exporter address (the senders GoFlow2's scrape job keeps series for)."""
    out = set()
    for i, r in enumerate(routers):
        try:
            out.add(exporter_address(r))
        except OSError as e:
            raise ValueError(f"routers[{i}].host {r.host!r} does not resolve ({e}): fix the name or give "
                             "its address") from None
    return sorted(out)


def netflow_by_router_query(window_s: int) -> str:
    """NetFlow datagrams per exporter (`router` label) in the window, one query for all of them,
    counted only by collectors that are up now: a replaced GoFlow2 pod's old series keeps its
    increase for the whole window and would otherwise pass the check while the new pod receives
    nothing."""
    return (f'sum by (router) (increase(goflow2_flow_process_nf_total{{job="{GOFLOW2_JOB}"}}[{window_s}s]) '
            f'and on (instance) (up{{job="{GOFLOW2_JOB}"}} == 1))')


def _up_only(expr: str, job: str) -> str:
    """`expr` counted only by targets of `job` up now (a replaced pod's old series drops out)."""
    return f'{expr} and on (instance) (up{{job="{job}"}} == 1)'


def _by_exporter(expr: str) -> str:
    """GoFlow2's per-sender series (`router` label) summed and labelled `exporter`, as the aggregator's."""
    return f'label_replace(sum by (router) ({expr}), "exporter", "$1", "router", "(.*)")'


def _only(exporters: str) -> str:
    return f',exporter=~"{exporters}"' if exporters else ""


def export_sent_query(window: str, exporters: str = "") -> str:
    """Export packets each exporter says it sent in the window (its NetFlow v9 sequence numbers, as the
    aggregators up now saw them: flowagg.Sequences), `exporter` label. The largest of the replicas':
    each sees the numbers of the packets whose records reach its partitions. `exporters`: a regex on
    the exporter label (a dashboard's filter); the other side of each join follows it."""
    sent = f'increase(netviz_flow_exporter_sequence_packets_total{{job="{FLOWS_JOB}"{_only(exporters)}}}[{window}])'
    return f'max by (exporter) ({_up_only(sent, FLOWS_JOB)})'


def export_lost_query(window: str, exporters: str = "") -> str:
    """Export packets lost before GoFlow2's decoder, per exporter: what it says it sent (NetFlow v9
    sequence numbers) less the v9 datagrams GoFlow2 decoded from it and those it failed to decode (they
    arrived: right after GoFlow2 starts, data before the template is undecodable), never below 0 (the
    two are counted moments apart). Both transports: GoFlow2 counts before the FIFO or Kafka."""
    g = f'job="{GOFLOW2_JOB}"'
    arrived = (f'(increase(goflow2_flow_process_nf_total{{{g},version="9"}}[{window}]) '
               f'or increase(goflow2_flow_decoder_error_total{{{g},name="netflow"}}[{window}]))')
    return f'clamp_min({export_sent_query(window, exporters)} - on (exporter) {_by_exporter(_up_only(arrived, GOFLOW2_JOB))}, 0)'


def records_decoded_query(window: str) -> str:
    """Flow (data) records GoFlow2 decoded from each exporter in the window, `exporter` label."""
    decoded = (f'increase(goflow2_flow_process_nf_flowset_records_total{{job="{GOFLOW2_JOB}",'
               f'type="DataFlowSet"}}[{window}])')
    return _by_exporter(_up_only(decoded, GOFLOW2_JOB))


def records_undelivered_query(window: str, exporters: str = "") -> str:
    """Flow records GoFlow2 decoded from each exporter (its data records) that no aggregator counted,
    per exporter: what was dropped after the collector (GoFlow2's Kafka producer gives up after its
    retries and only logs it; a FIFO write that fails; an aggregator that could not parse it). Never below
    0. A growing Kafka backlog reads as undelivered too, until it is worked off: the alert leaves that to
    NetvizAggregatorsFallingBehind."""
    counted = f'increase(netviz_flow_exporter_flows_total{{job="{FLOWS_JOB}",exporter!="other"{_only(exporters)}}}[{window}])'
    return (f'clamp_min({records_decoded_query(window)} - on (exporter) '
            f'sum by (exporter) ({_up_only(counted, FLOWS_JOB)}), 0)')


def flow_record_age_query(address: str) -> str:
    """Seconds since GoFlow2 received the newest flow *record* from this exporter (the aggregator's
    last-record timestamp). Stricter than `netflow_by_router_query`: template-only datagrams do not count.
    No result = no record from it since the aggregator started."""
    return (f'time() - max(netviz_flow_last_record_timestamp_seconds{{job="{FLOWS_JOB}",'
            f'exporter="{_esc(address)}"}})')


def flow_record_ages_query() -> str:
    """Age in seconds of every exporter's newest flow record (one series per exporter)."""
    return f'time() - max by (exporter) (netviz_flow_last_record_timestamp_seconds{{job="{FLOWS_JOB}",exporter!="other"}})'


def current_talker_query(src: str, dst: str) -> str:
    """The byte counter of the top-talker pair (src, dst), empty while the pair is not among the
    tracked top talkers (then it is inside "other"), counted by the aggregators that are up now: the
    series of a replaced pod stays in instant queries for 5 minutes (Prometheus' lookback) and drops
    out whole, which would make a before/after comparison (the canary check) shrink while the new
    pod's counter grows."""
    sel = f'netviz_flow_talker_bytes_total{{job="{FLOWS_JOB}",src="{_esc(src)}",dst="{_esc(dst)}"}}'
    return f'sum({sel} and on (instance) (up{{job="{FLOWS_JOB}"}} == 1))'


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"')


CARETTA_LINKS = f'caretta_links_observed{{job="{CARETTA_JOB}"}}'


def caretta_queries(window_s: int) -> dict[str, str]:
    return {"polls": f'sum(increase(caretta_polls_made{{job="{CARETTA_JOB}"}}[{window_s}s]))',
            "link_bytes": f'sum(increase(caretta_links_observed{{job="{CARETTA_JOB}"}}[{window_s}s]))'}


def by_label(result: list[dict], label: str) -> dict[str, float]:
    """label value -> value of a `sum by (label)` instant query."""
    return {r["metric"].get(label, ""): float(r["value"][1]) for r in result}


def value(result: list[dict]) -> float:
    """The single value of a `sum(...)` instant query; 0 when there is no series at all."""
    return float(result[0]["value"][1]) if result else 0.0
