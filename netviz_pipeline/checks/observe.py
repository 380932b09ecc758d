"""What the `flow_freshness` sensor looks at each tick, as subjects the remediation planner understands."""
from __future__ import annotations

from .. import exporter_health, placement
from ..findings import Finding
from ..render.goflow2 import kafka_transport
from ..render.scrape import FLOWS_JOB
from ..resources.prometheus import PrometheusResource
from ..resources.routers import RoutersResource
from ..settings import Settings
from ..targets.prometheus import PrometheusTarget
from .caretta import caretta_finding
from .collector_node import SUBJECT as NODE_SUBJECT
from .collector_node import collector_node_finding
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
    node, placed = node_findings(s, kube)
    out += node
    looks, samples = exporter_looks(placed, prom, routers, samples)  # softflowd follows a moved collector
    out += looks
    out.append(caretta_finding(s, prom))
    out += drift(s, kube)
    if kafka_transport(s):  # falling behind vs no flows; never healed
        out.append(lag_from_series(prom, FLOWS_JOB, MAX_LAG))
    return out, samples


def node_findings(s: Settings, kube) -> tuple[list[Finding], Settings]:
    """The collector's node (checks/collector_node.py; [] before the first deploy), and the settings as
    the routers follow the collector (placement.for_routers)."""
    try:
        where, cands = placement.look(s, kube)
    except Exception as exc:  # noqa: BLE001 - e.g. the grant for leases not applied yet: say so, heal nothing
        why = exc.summary() if hasattr(exc, "summary") else str(exc)  # the API's one line, not its whole body
        return [Finding(NODE_SUBJECT, False, f"cannot read nodes, leases or the GoFlow2 Deployment: {why}",
                        heal=False)], s
    f = collector_node_finding(s, where, cands)
    return ([f] if f else []), placement.routed(s, where)
