"""What the `flow_freshness` sensor looks at each tick, as subjects the remediation planner understands."""
from __future__ import annotations

from .. import exporter_health
from ..findings import Finding
from ..render.goflow2 import kafka_transport
from ..render.scrape import FLOWS_JOB
from ..resources.prometheus import PrometheusResource
from ..resources.routers import RoutersResource
from ..settings import Settings
from ..targets.prometheus import PrometheusTarget
from .caretta import caretta_finding
from .dashboards import drift
from .exporters import exporter_looks
from .kafka import MAX_LAG, lag_from_series
from .scrape import scrape_health


def observations(s: Settings, prom: PrometheusResource, routers: RoutersResource, kube,
                 prometheus: PrometheusTarget | None, samples: dict[str, list[exporter_health.Sample]]
                 ) -> tuple[list[Finding], dict[str, list[exporter_health.Sample]]]:
    """Scrape and collector, each router's exporter, Caretta, dashboard drift, the kafka transport's
    aggregators keeping up; and the exporter samples
    to keep for the next look. `s`: resolved settings; `prometheus`: the resolved target (None when auto
    could not resolve: the scrape finding says so)."""
    out = scrape_health(s, prom, kube, prometheus, pending_ok=True)
    looks, samples = exporter_looks(s, prom, routers, samples)
    out += looks
    out.append(caretta_finding(s, prom))
    out += drift(s, kube)
    if kafka_transport(s):  # falling behind vs no flows; never healed
        out.append(lag_from_series(prom, FLOWS_JOB, MAX_LAG))
    return out, samples
