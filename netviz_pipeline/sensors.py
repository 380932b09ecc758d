"""Health between deploys, from data: every 30 s the `flow_freshness` sensor looks at each router's
exporter (softflowd over SSH and GoFlow2's count of its datagrams: exporter_health.py), Caretta
freshness, the scrape jobs, the collector and the dashboards; records the results as asset check
evaluations (no run needed to see them), and heals within bounds by requesting a run of the step that
owns a failure (see remediation.py). A schedule also runs the checks-only `netviz_verify` job.

Why 30 s: a dead exporter is then seen within 60 s even when a tick takes a connect timeout (10 s)."""
import json
import time

import dagster as dg

from . import exporter_health, notify, remediation
from .checks.kafka import SUBJECT_LAG
from .checks.observe import observations
from .findings import Finding
from .jobs import (AGGREGATORS_CHECK, CARETTA_CHECK, HEALABLE, NETFLOW_CHECK, REMEDIATION_TAG, ROUTER_PARTITIONS, WRITES_ROUTER,
                   WRITES_SHARED, WRITES_TAG, netviz_verify)
from .resources.cluster import ClusterResource
from .resources.prometheus import PrometheusResource
from .resources.routers import RoutersResource

FRESHNESS_INTERVAL_S = 30


def writes_in_flight(instance: dg.DagsterInstance) -> bool:
    """A run that changes the system (a deploy or a remediation) is queued or running. The sensor then
    observes but heals nothing: the run converges it anyway, and a tick in the middle of a deploy sees
    half-rolled-out steps (seen in the lab: a re-run of the scrape config queued behind the deploy that
    was busy writing it)."""
    runs = instance.get_runs(filters=dg.RunsFilter(tags={WRITES_TAG: [WRITES_SHARED, WRITES_ROUTER]}, statuses=[
        dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
        dg.DagsterRunStatus.STARTED]), limit=1)
    return bool(runs)


def undeployed(instance: dg.DagsterInstance) -> frozenset[str]:
    """Healable assets this instance has never materialised (a fresh service before its first deploy)."""
    keys = [dg.AssetKey(a) for a in HEALABLE]
    latest = instance.get_latest_materialization_events(keys)  # one storage query
    return frozenset(k.to_user_string() for k in keys if latest.get(k) is None)


def _evaluation(key: dg.AssetKey, check: str, subjects: list[Finding], p: remediation.Plan):
    """The sensor's findings as an asset check evaluation: one text entry per subject, the plan's
    diagnosis where it has one."""
    bad = [o for o in subjects if not o.healthy]
    meta = {o.subject: dg.MetadataValue.text(p.diagnoses.get(o.subject, o.reason)) for o in subjects}
    return dg.AssetCheckEvaluation(asset_key=key, check_name=check, passed=not bad,
                                   severity=dg.AssetCheckSeverity.ERROR, metadata=meta)


@dg.sensor(name="flow_freshness", minimum_interval_seconds=FRESHNESS_INTERVAL_S,
           default_status=dg.DefaultSensorStatus.RUNNING, target=dg.AssetSelection.assets(*HEALABLE),
           description="Freshness per exporter and for Caretta, scrape jobs, collector and dashboard drift, "
                       "from data; re-runs the owning step within bounds")
def flow_freshness(context: dg.SensorEvaluationContext, prometheus: PrometheusResource,
                   cluster: ClusterResource, routers: RoutersResource,
                   notifier: notify.NotifierResource) -> dg.SensorResult:
    r = cluster.resolved  # as every step gets them; resources are built anew each tick
    s = r.settings
    now = time.time()
    cursor = load_cursor(context.cursor)
    seen, samples = observations(s, prometheus, routers, cluster.kube, r.prometheus,
                                 exporter_health.load(cursor.get("samples")))
    state = remediation.load(cursor.get("remediation"))
    busy = writes_in_flight(context.instance)
    policy = remediation.Policy.of(s.healing)
    p = remediation.plan(seen, state, now, policy, busy=busy, undeployed=undeployed(context.instance))
    # A person hears once per incident: it began, its re-runs gave up, it recovered.
    messages, announced = notify.transitions(cursor.get("announced") or {}, seen, p, now, policy=policy, busy=busy,
                                             link=notifier.link())
    outbox = notifier.deliver(cursor.get("outbox") or [], messages, log=context.log)  # bounded in time
    exporters = [o for o in seen if o.subject.startswith("router:")]
    events = [_evaluation(dg.AssetKey(NETFLOW_CHECK[0]), NETFLOW_CHECK[1], exporters, p),
              _evaluation(dg.AssetKey(CARETTA_CHECK[0]), CARETTA_CHECK[1], [o for o in seen if o.subject == "caretta"], p)]
    lag = [o for o in seen if o.subject == SUBJECT_LAG]
    if lag:  # the kafka transport: falling behind or stalled, told apart from no flows
        events.append(_evaluation(dg.AssetKey(AGGREGATORS_CHECK[0]), AGGREGATORS_CHECK[1], lag, p))
    for subject, why in p.diagnoses.items():
        context.log.warning(f"{subject}: {why}")
    runs = [dg.RunRequest(run_key=f"remediate-{int(now)}-{r.partition or 'shared'}", partition_key=r.partition,
                          asset_selection=[dg.AssetKey(a) for a in r.assets],
                          tags={REMEDIATION_TAG: "true", WRITES_TAG: WRITES_ROUTER if r.partition else WRITES_SHARED,
                                "netviz/remediates": ",".join(r.subjects)})
            for r in remediation.reruns(p, now)]
    cursor = {"remediation": remediation.dump(p.state), "samples": exporter_health.dump(samples),
              "announced": announced, "outbox": outbox}
    # a router's partition must exist before a run can target it (the deploy adds them too)
    partitions = [dg.AddDynamicPartitionsRequest(ROUTER_PARTITIONS.name, [r.name for r in s.routers])]
    return dg.SensorResult(asset_events=events, run_requests=runs, cursor=json.dumps(cursor),
                           dynamic_partitions_requests=partitions)


def load_cursor(text: str | None) -> dict:
    """The sensor's memory: remediation state and exporter samples. A cursor written before the
    samples existed held the remediation state alone."""
    data = json.loads(text) if text else {}
    return data if "remediation" in data else {"remediation": data}


verify_schedule = dg.ScheduleDefinition(name="netviz_verify_every_15m", job=netviz_verify, cron_schedule="*/15 * * * *",
                                        default_status=dg.DefaultScheduleStatus.RUNNING)
