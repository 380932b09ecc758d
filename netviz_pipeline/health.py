"""Freshness checks, shared by the asset checks (verify runs) and the sensor (between runs)."""
from __future__ import annotations

import time
from typing import Callable, TypeVar

import dagster as dg

from . import freshness
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
    """(router name, fresh, metadata) for every configured router."""
    window = s.checks.freshness.netflow_max_age_seconds
    out = []
    for r in s.routers:
        address = freshness.exporter_address(r)
        try:
            datagrams = freshness.value(prom.query(freshness.netflow_query(address, window)))
            detail = f"{datagrams:.0f} NetFlow datagrams from {address} in the last {window}s"
        except PrometheusError as exc:
            datagrams, detail = 0.0, str(exc)
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
