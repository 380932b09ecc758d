"""netviz_deploy: every asset and its checks. netviz_verify: the checks only, for health.
netviz_prune_runs: run history retention (Dagster has no setting for it).

Deploy and verify run in-process: the steps are I/O-bound and share one API client, and the
multiprocess executor's per-step process start (~1 s each) would dominate a converged run.
"""

import time

import dagster as dg

# Run tags the instance's run queue limits (render/instance.py). `netviz/writes` is on every run that
# changes something: "true" for runs that write shared things (a deploy, a re-run of the shared steps;
# one at a time), "router" for a run of one router's partition (one per router, any number of routers
# at once, each its own Job with K8sRunLauncher). Dagster tags every partitioned run `dagster/partition`,
# which is the router's name here (router_softflowd is the only partitioned asset).
WRITES_TAG = "netviz/writes"
WRITES_SHARED, WRITES_ROUTER = "true", "router"
PARTITION_TAG = "dagster/partition"
REMEDIATION_TAG = "netviz/remediation"

ALL_ASSETS = dg.AssetSelection.all()

# One partition per configured router (kept in step with the settings by every full run): the UI shows
# each router's state, a person materialises or heals one router alone, the sensor heals only the
# router that failed. A run without a partition (netviz_deploy from the CLI) converges every router
# and records each router's partition.
ROUTER_PARTITIONS = dg.DynamicPartitionsDefinition(name="routers")

# What the health sensor may re-run and the checks it records between runs, by name: the sensor
# reaches the assets through these names, not by importing asset modules
# (tests/unit/test_pipeline_logic.py holds them to the definitions).
HEALABLE = ("router_softflowd", "goflow2", "prometheus_scrape_config", "caretta", "caretta_dashboard",
            "goflow2_dashboard")
NETFLOW_CHECK = ("router_softflowd", "netflow_arriving")
CARETTA_CHECK = ("end_to_end", "caretta_links_present")
AGGREGATORS_CHECK = ("goflow2", "aggregators_keep_up")  # recorded only with the kafka transport

netviz_deploy = dg.define_asset_job("netviz_deploy", selection=ALL_ASSETS, executor_def=dg.in_process_executor,
                                    tags={WRITES_TAG: WRITES_SHARED},
                                    description="Deploy every step of the plan and prove each one")
# One router, or several side by side (partitioned by router, as router_softflowd is): launch it for
# routers' partitions (Launchpad, or a backfill); it converges softflowd there and checks the exporter.
netviz_router = dg.define_asset_job("netviz_router", selection=dg.AssetSelection.assets("router_softflowd"),
                                    executor_def=dg.in_process_executor, tags={WRITES_TAG: WRITES_ROUTER},
                                    description="Converge softflowd on one router (its partition) and check its "
                                                "exporter; routers' runs go side by side")
netviz_verify = dg.define_asset_job("netviz_verify", selection=dg.AssetSelection.all_asset_checks(),
                                    executor_def=dg.in_process_executor,
                                    description="Run every check without changing anything")


class PruneConfig(dg.Config):
    keep_days: int = 30


@dg.op(description="Delete runs (and their event logs) that finished more than keep_days ago")
def prune_runs(context: dg.OpExecutionContext, config: PruneConfig) -> int:
    cutoff = time.time() - config.keep_days * 86400
    old = context.instance.get_run_records(filters=dg.RunsFilter(
        updated_before=_utc(cutoff), statuses=[dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE,
                                               dg.DagsterRunStatus.CANCELED]))
    for record in old:
        context.instance.delete_run(record.dagster_run.run_id)
    context.log.info(f"deleted {len(old)} runs older than {config.keep_days} days")
    return len(old)


def _utc(ts: float):
    from datetime import datetime, timezone

    return datetime.fromtimestamp(ts, tz=timezone.utc)


@dg.job(executor_def=dg.in_process_executor, description="Keep the run history bounded (default 30 days)")
def netviz_prune_runs():
    prune_runs()


prune_schedule = dg.ScheduleDefinition(name="netviz_prune_runs_daily", job=netviz_prune_runs, cron_schedule="17 3 * * *",
                                       default_status=dg.DefaultScheduleStatus.RUNNING)
