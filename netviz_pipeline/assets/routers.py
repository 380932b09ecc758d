"""Plan task 5: softflowd on each router (placeholder until the router drivers land)."""
import dagster as dg

from .. import health
from ..resources.prometheus import PrometheusResource
from .goflow2 import goflow2

GROUP = "routers"


@dg.asset(group_name=GROUP, deps=[goflow2], kinds={"ssh"}, description="softflowd exporting NetFlow v9 to GoFlow2")
def router_softflowd(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    raise NotImplementedError


@dg.asset_check(asset=router_softflowd, description="Every exporter's NetFlow counted by GoFlow2 recently")
def netflow_fresh(prometheus: PrometheusResource) -> dg.AssetCheckResult:
    fresh, meta = health.netflow_result(prometheus.config.settings, prometheus)
    return dg.AssetCheckResult(passed=fresh, severity=dg.AssetCheckSeverity.WARN, metadata=meta)
