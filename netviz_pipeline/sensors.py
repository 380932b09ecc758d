"""Health between deploys: freshness evaluated from Prometheus data on an interval, recorded as
asset check results (no run launched), and a schedule running the checks-only `netviz_verify` job."""

import dagster as dg

from . import health
from .assets.routers import router_softflowd
from .assets.verify import end_to_end
from .jobs import netviz_verify
from .resources.prometheus import PrometheusResource

FRESHNESS_INTERVAL_S = 60


@dg.sensor(name="flow_freshness", minimum_interval_seconds=FRESHNESS_INTERVAL_S,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Per-exporter NetFlow freshness and Caretta freshness, from Prometheus data")
def flow_freshness(context: dg.SensorEvaluationContext, prometheus: PrometheusResource) -> dg.SensorResult:
    s = prometheus.config.settings
    fresh, meta = health.netflow_result(s, prometheus)
    c_fresh, c_meta = health.caretta_result(s, prometheus)
    events = [
        dg.AssetCheckEvaluation(asset_key=router_softflowd.key, check_name="netflow_arriving", passed=fresh,
                                severity=dg.AssetCheckSeverity.ERROR, metadata=meta),
        dg.AssetCheckEvaluation(asset_key=end_to_end.key, check_name="caretta_links_present", passed=c_fresh,
                                severity=dg.AssetCheckSeverity.ERROR, metadata=c_meta),
    ]
    context.log.info(f"netflow fresh={fresh}, caretta fresh={c_fresh}")
    return dg.SensorResult(asset_events=events)


verify_schedule = dg.ScheduleDefinition(name="netviz_verify_every_15m", job=netviz_verify, cron_schedule="*/15 * * * *",
                                        default_status=dg.DefaultScheduleStatus.RUNNING)
