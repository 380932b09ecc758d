"""The Dagster code location: assets in the plan's order, their checks, jobs, sensor and schedule."""
from __future__ import annotations

import dagster as dg

from .assets import caretta, dashboards, flow_topic, goflow2, prometheus, routers, verify
from .jobs import netviz_deploy, netviz_prune_runs, netviz_router, netviz_verify, prune_schedule
from .notify import NotifierResource, netviz_run_failure
from .resources.cluster import ClusterResource
from .resources.config import NetvizConfig
from .resources.grafana import GrafanaResource
from .resources.kafka import KafkaResource
from .resources.prometheus import PrometheusResource
from .resources.routers import RoutersResource

from .sensors import flow_freshness, verify_schedule

_MODULES = [caretta, dashboards, flow_topic, goflow2, prometheus, routers, verify]

config = NetvizConfig(config_path=dg.EnvVar("NETVIZ_CONFIG"))

defs = dg.Definitions(
    assets=dg.load_assets_from_modules(_MODULES),
    asset_checks=dg.load_asset_checks_from_modules(_MODULES),
    jobs=[netviz_deploy, netviz_router, netviz_verify, netviz_prune_runs],
    sensors=[flow_freshness, netviz_run_failure],
    schedules=[verify_schedule, prune_schedule],
    resources={
        "config": config,
        "cluster": ClusterResource(config=config),
        "prometheus": PrometheusResource(config=config),
        "grafana": GrafanaResource(config=config),
        "kafka": KafkaResource(config=config),
        "routers": RoutersResource(config=config),
        "notifier": NotifierResource(config=config),
    },
)
