"""Is Caretta's pod-to-pod map fresh: its agents polled and the links' byte gauges grew."""
from __future__ import annotations

from .. import freshness
from ..findings import Finding
from ..resources.prometheus import PrometheusError, PrometheusResource
from ..settings import Settings


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
