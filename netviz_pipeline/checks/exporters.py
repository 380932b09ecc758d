"""Is each router's exporter healthy: softflowd over SSH (its status and counters) and GoFlow2's count of
its datagrams, classified by exporter_health. The `netflow_arriving` check and the sensor both ask here."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from .. import exporter_health, freshness
from .. import routers as drivers
from ..findings import Finding
from ..resources.prometheus import PrometheusError, PrometheusResource
from ..resources.router import RouterError
from ..resources.routers import RoutersResource
from ..settings import Router, Settings

PROBE_WORKERS = 8  # routers probed over SSH at once


def datagram_counts(s: Settings, prom: PrometheusResource) -> tuple[dict[str, tuple[float, float, float]], str]:
    """router name -> (NetFlow datagrams GoFlow2 counted from its address, export packets it sent by its
    v9 sequence numbers, of those lost on the way) in the freshness window, from one query each for all
    of them: a tick's cost does not grow with the routers. The second value is the Prometheus error, if
    a query failed."""
    window = s.checks.freshness.netflow_max_age_seconds
    try:
        counts = freshness.by_label(prom.query(freshness.netflow_by_router_query(window)), "router")
        sent = freshness.by_label(prom.query(freshness.export_sent_query(f"{window}s")), "exporter")
        lost = freshness.by_label(prom.query(freshness.export_lost_query(f"{window}s")), "exporter")
    except PrometheusError as exc:
        return {}, str(exc)
    return {r.name: (counts.get(a, 0.0), sent.get(a, 0.0), lost.get(a, 0.0))
            for r in s.routers for a in [freshness.exporter_address(r)]}, ""


def exporter_finding(router: str, verdict: exporter_health.Verdict, datagrams: float,
                     counters: dict | None, sent: float = 0.0, lost: float = 0.0) -> Finding:
    """One router's exporter at one look: the verdict and the figures it rests on."""
    return Finding(f"router:{router}", verdict.healthy, f"{verdict.cause}: {verdict.reason}",
                   {"router": router, "cause": verdict.cause, "datagrams": datagrams, "counters": counters,
                    "sent": sent, "lost": lost},
                   heal=verdict.heal)


def _probe(routers: RoutersResource, s: Settings, r: Router):
    """(status, counters, error) of one router's exporter; an SSH failure is an answer, not a crash."""
    try:
        with routers.session(r) as ssh:
            st, counters = drivers.probe(ssh, s, r)
        return st, counters, None
    except (RouterError, OSError) as exc:
        return None, None, str(exc)


def exporter_looks(s: Settings, prom: PrometheusResource, routers: RoutersResource,
                   previous: dict[str, list[exporter_health.Sample]], now: float | None = None
                   ) -> tuple[list[Finding], dict[str, list[exporter_health.Sample]]]:
    """Look at every router's exporter (SSH, in parallel) and at GoFlow2's count of its datagrams, and
    decide each one's health (exporter_health.classify). Returns a finding per router (subject
    `router:<name>`) and the samples to keep."""
    counts, prom_error = datagram_counts(s, prom)
    with ThreadPoolExecutor(max_workers=max(1, min(PROBE_WORKERS, len(s.routers)))) as pool:
        probes = list(pool.map(lambda r: _probe(routers, s, r), s.routers))
    now = time.time() if now is None else now
    window = s.checks.freshness.netflow_max_age_seconds
    settle = 2 * s.prometheus.scrape_interval_seconds + 5  # a sent datagram is in Prometheus by then
    looks, kept = [], {}
    for r, (st, counters, ssh_error) in zip(s.routers, probes):
        sample = None
        if st is not None and counters is not None and st.processes:
            p = st.processes[0]
            sample = exporter_health.Sample(now, f"{p.pid}@{p.started}", counters.packets_processed,
                                            counters.export_packets, counters.export_failures)
        samples = exporter_health.history(previous.get(r.name, []), sample, now, window)
        kept[r.name] = samples
        datagrams, sent, lost = counts.get(r.name, (0.0, 0.0, 0.0))
        verdict = exporter_health.classify(
            reachable_error=ssh_error, running=bool(st and st.running), drift=list(st.drift) if st else [],
            samples=samples, counters_known=counters is not None, datagrams=datagrams,
            window_s=window, settle_s=settle, now=now,
            interface=", ".join(st.interfaces) if st and st.interfaces else "its interface",
            address=freshness.exporter_address(r), collector=(st and st.collector) or "", lost=lost, sent=sent,
            scrape_interval_s=s.prometheus.scrape_interval_seconds)
        if prom_error and verdict.cause not in _SETTLED_BAD:
            verdict = exporter_health.Verdict(False, "collector-unknown", f"cannot ask Prometheus: {prom_error}")
        looks.append(exporter_finding(r.name, verdict, datagrams, counters and counters.as_dict(), sent, lost))
    return looks, kept


# Causes another look within a check's deadline will not change: reported at once.
_SETTLED_BAD = {"router-unreachable", "exporter-down", "misconfigured"}


def netflow_check(s: Settings, prom: PrometheusResource, routers: RoutersResource, timeout: float,
                  interval: float = 3.0) -> list[Finding]:
    """The `netflow_arriving` check: wait (up to `timeout`) until every router's NetFlow is counted or
    its exporter is seen healthy without it (a quiet link passes once softflowd's counters showed no
    packets across the wait); an exporter that is down or unreachable fails at once."""
    deadline = time.monotonic() + timeout
    samples: dict[str, list[exporter_health.Sample]] = {}
    while True:
        looks, samples = exporter_looks(s, prom, routers, samples)
        causes = [lk.details["cause"] for lk in looks]
        if all(c == "flowing" for c in causes) or time.monotonic() > deadline or any(
                c in _SETTLED_BAD for c in causes):
            return looks
        time.sleep(interval)
