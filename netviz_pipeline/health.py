"""Freshness checks, shared by the asset checks (verify runs) and the sensor (between runs)."""
from __future__ import annotations

import time
from typing import Callable, TypeVar

import dagster as dg

from . import freshness
from .remediation import Observation
from .render.scrape import CARETTA_JOB, GOFLOW2_JOB
from .resources.prometheus import PrometheusError, PrometheusResource
from .settings import Settings


T = TypeVar("T", bound=tuple)


def poll(evaluate: Callable[[], T], timeout: float, interval: float = 2.0) -> T:
    """Re-evaluate until the first element is truthy or `timeout` passes; return the last result.
    Checks right after a deploy must wait for discovery and the first scrapes, not fail at once."""
    deadline = time.monotonic() + timeout
    while True:
        result = evaluate()
        if result[0] or time.monotonic() > deadline:
            return result
        time.sleep(interval)


def netflow_evaluations(s: Settings, prom: PrometheusResource) -> list[tuple[str, bool, dict]]:
    """(router name, fresh, metadata) for every configured router, from one query for all of them
    (`sum by (router)`): the cost of a check or sensor tick does not grow with the number of routers."""
    window = s.checks.freshness.netflow_max_age_seconds
    try:
        counts, error = freshness.by_label(prom.query(freshness.netflow_by_router_query(window)), "router"), ""
    except PrometheusError as exc:
        counts, error = {}, str(exc)
    out = []
    for r in s.routers:
        address = freshness.exporter_address(r)
        datagrams = counts.get(address, 0.0)
        detail = error or f"{datagrams:.0f} NetFlow datagrams from {address} in the last {window}s"
        out.append((r.name, datagrams > 0, {"exporter": dg.MetadataValue.text(address),
                                           "detail": dg.MetadataValue.text(detail)}))
    return out


def netflow_result(s: Settings, prom: PrometheusResource) -> tuple[bool, dict]:
    evals = netflow_evaluations(s, prom)
    stale = [name for name, fresh, _ in evals if not fresh]
    meta = {name: m["detail"] for name, _, m in evals}
    meta["stale_exporters"] = dg.MetadataValue.text(", ".join(stale) or "none")
    return not stale, meta


def caretta_result(s: Settings, prom: PrometheusResource) -> tuple[bool, dict]:
    window = s.checks.freshness.caretta_max_age_seconds
    try:
        vals = {k: freshness.value(prom.query(q)) for k, q in freshness.caretta_queries(window).items()}
    except PrometheusError as exc:
        return False, {"detail": dg.MetadataValue.text(str(exc))}
    links = len(prom.query(freshness.CARETTA_LINKS))
    return vals["polls"] > 0 and vals["link_bytes"] > 0 and links > 0, {
        "link_series": dg.MetadataValue.int(links),
        "detail": dg.MetadataValue.text(f"{vals['polls']:.0f} polls and {vals['link_bytes']:.0f} link bytes "
                                        f"in the last {window}s over {links} link series")}


def collection_observations(s: Settings, prom: PrometheusResource) -> list[Observation]:
    """Is each netviz scrape job present (else the scrape config drifted) and is the collector up?"""
    try:
        targets = prom.targets()
    except PrometheusError as exc:
        return [Observation("scrape", False, str(exc))]
    jobs: dict[str, list[dict]] = {}
    for t in targets:
        jobs.setdefault(t.get("labels", {}).get("job", ""), []).append(t)
    missing = [j for j in (CARETTA_JOB, GOFLOW2_JOB) if j not in jobs]
    out = [Observation("scrape", not missing, f"jobs missing from Prometheus: {', '.join(missing)}" if missing
                       else "netviz scrape jobs present")]
    if GOFLOW2_JOB in jobs:
        up = [t for t in jobs[GOFLOW2_JOB] if t.get("health") == "up"]
        errors = "; ".join(sorted({t.get("lastError", "") for t in jobs[GOFLOW2_JOB]} - {""}))
        out.append(Observation("collector", bool(up), "GoFlow2 metrics target up" if up
                               else f"GoFlow2 metrics target down: {errors or 'no healthy target'}"))
    return out


def observations(s: Settings, prom: PrometheusResource, dashboard_drift: dict[str, str]) -> list[Observation]:
    """Everything the health sensor looks at, as subjects the remediation planner understands."""
    out = collection_observations(s, prom)
    out += [Observation(f"router:{name}", fresh, str(meta["detail"].value))
            for name, fresh, meta in netflow_evaluations(s, prom)]
    fresh, meta = caretta_result(s, prom)
    out.append(Observation("caretta", fresh, str(meta["detail"].value)))
    out += [Observation(f"dashboard:{stem}", not problem, problem or "as deployed")
            for stem, problem in dashboard_drift.items()]
    return out
