"""Freshness checks, shared by the asset checks (verify runs) and the sensor (between runs)."""
from __future__ import annotations

import dagster as dg

from . import freshness
from .resources.prometheus import PrometheusError, PrometheusResource
from .settings import Settings


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
    return vals["polls"] > 0 and vals["link_bytes"] > 0, {
        "detail": dg.MetadataValue.text(f"{vals['polls']:.0f} polls and {vals['link_bytes']:.0f} link bytes "
                                        f"in the last {window}s")}
