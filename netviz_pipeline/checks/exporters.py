"""Freshness checks, shared by the asset checks (verify runs) and the sensor (between runs). Each
returns findings (findings.Finding, plain data); the asset checks and the sensor turn them into Dagster
metadata and check results."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

from . import exporter_health, freshness
from . import routers as drivers
from .findings import Finding, healthy
from .render.scrape import CARETTA_JOB, GOFLOW2_JOB
from .resources.prometheus import PrometheusError, PrometheusResource
from .resources.router import RouterError
from .resources.routers import RoutersResource
from .settings import Router, Settings

PROBE_WORKERS = 8  # routers probed over SSH at once


T = TypeVar("T", Finding, list[Finding])


def poll(evaluate: Callable[[], T], timeout: float, interval: float = 2.0) -> T:
    """Re-evaluate until the finding (or every finding of a list) is healthy or `timeout` passes;
    return the last result. Checks right after a deploy must wait for discovery and the first
    scrapes, not fail at once."""
    deadline = time.monotonic() + timeout
    while True:
        result = evaluate()
        if healthy(result) or time.monotonic() > deadline:
            return result
        time.sleep(interval)


def datagram_counts(s: Settings, prom: PrometheusResource) -> tuple[dict[str, float], str]:
    """router name -> NetFlow datagrams GoFlow2 counted from its address in the freshness window, from
    one query for all of them (`sum by (router)`): a tick's cost does not grow with the routers.
    The second value is the Prometheus error, if the query failed."""
    window = s.checks.freshness.netflow_max_age_seconds
    try:
        counts = freshness.by_label(prom.query(freshness.netflow_by_router_query(window)), "router")
    except PrometheusError as exc:
        return {}, str(exc)
    return {r.name: counts.get(freshness.exporter_address(r), 0.0) for r in s.routers}, ""


def exporter_finding(router: str, verdict: exporter_health.Verdict, datagrams: float,
                     counters: dict | None) -> Finding:
    """One router's exporter at one look: the verdict and the figures it rests on."""
    return Finding(f"router:{router}", verdict.healthy, f"{verdict.cause}: {verdict.reason}",
                   {"router": router, "cause": verdict.cause, "datagrams": datagrams, "counters": counters},
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
        verdict = exporter_health.classify(
            reachable_error=ssh_error, running=bool(st and st.running), drift=list(st.drift) if st else [],
            samples=samples, counters_known=counters is not None, datagrams=counts.get(r.name, 0.0),
            window_s=window, settle_s=settle, now=now,
            interface=", ".join(st.interfaces) if st and st.interfaces else "its interface",
            address=freshness.exporter_address(r), collector=(st and st.collector) or "")
        if prom_error and verdict.cause not in _SETTLED_BAD:
            verdict = exporter_health.Verdict(False, "collector-unknown", f"cannot ask Prometheus: {prom_error}")
        looks.append(exporter_finding(r.name, verdict, counts.get(r.name, 0.0), counters and counters.as_dict()))
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


def caretta_finding(s: Settings, prom: PrometheusResource) -> Finding:
    """Caretta is fresh: its agents polled and the links' byte gauges grew in the window."""
    window = s.checks.freshness.caretta_max_age_seconds
    try:
        vals = {k: freshness.value(prom.query(q)) for k, q in freshness.caretta_queries(window).items()}
    except PrometheusError as exc:
        return Finding("caretta", False, str(exc))
    links = len(prom.query(freshness.CARETTA_LINKS))
    return Finding("caretta", vals["polls"] > 0 and vals["link_bytes"] > 0 and links > 0,
                   f"{vals['polls']:.0f} polls and {vals['link_bytes']:.0f} link bytes "
                   f"in the last {window}s over {links} link series", {"link_series": links})


def collection_observations(s: Settings, prom: PrometheusResource, collector: str | None = None) -> list[Finding]:
    """Is each netviz scrape job present (else the scrape config drifted) and is the collector up?
    `collector`: why the GoFlow2 Deployment is not available (None = it is). A job with no pod to
    scrape has no targets at all, so a stopped collector would otherwise look like a lost scrape job."""
    try:
        targets = prom.targets()
    except PrometheusError as exc:
        return [Finding("scrape", False, str(exc))]
    jobs: dict[str, list[dict]] = {}
    for t in targets:
        jobs.setdefault(t.get("labels", {}).get("job", ""), []).append(t)
    missing = [j for j in (CARETTA_JOB, GOFLOW2_JOB) if j not in jobs]
    if GOFLOW2_JOB in missing and collector:
        missing.remove(GOFLOW2_JOB)
        jobs[GOFLOW2_JOB] = []  # reported below as the collector being down, with the reason
    out = [Finding("scrape", not missing, f"jobs missing from Prometheus: {', '.join(missing)}" if missing
                   else "netviz scrape jobs present")]
    if GOFLOW2_JOB in jobs:
        up = [t for t in jobs[GOFLOW2_JOB] if t.get("health") == "up"]
        errors = "; ".join(sorted({t.get("lastError", "") for t in jobs[GOFLOW2_JOB]} - {""}))
        out.append(Finding("collector", bool(up), "GoFlow2 metrics target up" if up
                           else f"GoFlow2 metrics target down: {collector or errors or 'no healthy target'}"))
    return out


def observations(s: Settings, prom: PrometheusResource, routers: RoutersResource, dashboards: list[Finding],
                 samples: dict[str, list[exporter_health.Sample]], collector: str | None = None
                 ) -> tuple[list[Finding], dict[str, list[exporter_health.Sample]]]:
    """Everything the health sensor looks at, as subjects the remediation planner understands, and
    the exporter samples to keep for the next look. `dashboards`: their drift findings
    (assets.dashboards.dashboard_drift)."""
    out = collection_observations(s, prom, collector)
    looks, samples = exporter_looks(s, prom, routers, samples)
    out += looks
    out.append(caretta_finding(s, prom))
    out += dashboards
    return out, samples
