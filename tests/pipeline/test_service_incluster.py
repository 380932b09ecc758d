"""netviz inside the cluster, as the in-cluster recipe (docs/operating.md) runs it, in the shape of Dagster's
Helm chart: code server, webserver and daemon as Deployments on the real nodes from the locally built
image, storage in the lab's real PostgreSQL 15, each run a Kubernetes Job (K8sRunLauncher) on a real
node as the pipeline's ServiceAccount, settings from a ConfigMap, the router key and the Postgres
password from Secrets, all but the Secrets applied by `admin apply --service-image …`.

Proves, in order: `admin check` finds what `apply` wrote and a second `apply` changes nothing;
`netviz_deploy` launched through that webserver (as the UI does) runs as a Job on a real node and
converges the lab, with the in-cluster Prometheus found by `mode: auto`, and no password is in a Job's
spec or arguments (dagster-k8s passes the instance serialised in the command); two routers' runs are let
go side by side, one router's one at a time; the health sensor's remediation of a killed softflowd runs
as a Job, and after a restart of every Dagster pod the history is there and the sensor carries on from
its stored state; a run worker SIGKILLed mid-run is marked failed by run monitoring and the sensor's
retry, within its bound, heals (the pod settings shorten the healing back-off to 15 s for this); a run
no node can take fails at the start timeout naming the scheduler's reason; PostgreSQL killed under a
run loses nothing; a wrong Postgres password is named where the daemon starts.

The instance is new (its own database) and the lab was never deployed from it: its health sensor must
not heal anything before this first deploy (it once re-ran the scrape config alone, whose check then
waited for targets nobody had created while the deploy sat in the queue behind it)."""
from __future__ import annotations

import json
import os
import signal
import time

import psycopg2
import pytest
import yaml
from kubernetes import client
from test_service import Service, _record, _remediations, _softflowd_pids, _tag  # tests/pipeline on sys.path

from netviz_lab import incluster_netviz, postgres
from netviz_lab import settings as lab_settings
from netviz_lab.lab import Lab
from netviz_lab.proc import pids_by_cmdline
from netviz_lab.supervisor import read_state
from netviz_lab.topology import REAL_NODES
from netviz_pipeline import admin
from netviz_pipeline.render import service_k8s

pytestmark = pytest.mark.lab
NS = incluster_netviz.NAMESPACE
FINISHED = ("SUCCESS", "FAILURE", "CANCELED")


@pytest.fixture(scope="module")
def incluster(lab: Lab):
    t0 = time.monotonic()
    try:
        url, admin_args = incluster_netviz.deploy(lab)
        service = Service(url, settings=None)  # its settings are a ConfigMap
        service.admin_args = admin_args
        service.wait_loaded()
        yield service, time.monotonic() - t0
    finally:
        incluster_netviz.remove(lab)


def _run_job(core, batch, run_id: str) -> tuple[client.V1Job, list[client.V1Pod]]:
    """The Job K8sRunLauncher created for the run, and its pods."""
    jobs = [j for j in batch.list_namespaced_job(NS).items if j.metadata.name == f"dagster-run-{run_id}"]
    assert jobs, f"no Job for run {run_id}: {[j.metadata.name for j in batch.list_namespaced_job(NS).items]}"
    pods = core.list_namespaced_pod(NS, label_selector=f"job-name=dagster-run-{run_id}").items
    return jobs[0], pods


def _ticks(service: Service) -> list[dict]:
    """The sensor's latest ticks; one still evaluating reads STARTED (callers wait for finished ones)."""
    return service.gql(TICKS)["sensorOrError"]["sensorState"]["ticks"]


def test_the_administrators_objects_are_as_applied_and_a_second_apply_changes_nothing(incluster, admin_api, capsys):
    """`admin check --service-image …` reads what `admin apply` wrote (grant and netviz's own objects,
    the API server's defaults aside); applying again changes no object (it once rewrote both admission
    policies every time); a drifted object is named and put back alone."""
    service, _ = incluster
    capsys.readouterr()
    assert admin.main(["check", *service.admin_args]) == 0, capsys.readouterr().out
    assert "install objects as wanted" in capsys.readouterr().out
    assert admin.main(["apply", *service.admin_args]) == 0
    out = capsys.readouterr().out
    assert out.startswith("0 of "), out
    # someone narrows the daemon's Role: check names it, apply puts that one object back
    rbac = client.RbacAuthorizationV1Api(admin_api)
    role = rbac.read_namespaced_role(service_k8s.DAGSTER_ACCOUNT, NS)
    narrowed = [client.ApiClient().sanitize_for_serialization(r) for r in role.rules if "events" not in r.resources]
    rbac.patch_namespaced_role(service_k8s.DAGSTER_ACCOUNT, NS, {"rules": narrowed})
    assert admin.main(["check", *service.admin_args]) == 1
    assert f"Role {NS}/{service_k8s.DAGSTER_ACCOUNT}: missing rules" in capsys.readouterr().out
    assert admin.main(["apply", *service.admin_args]) == 0
    out = capsys.readouterr().out
    assert out.startswith("1 of ") and f"Role {NS}/{service_k8s.DAGSTER_ACCOUNT}: updated" in out, out


def test_deploy_launched_in_the_cluster_runs_as_a_job_and_converges_the_lab(incluster, lab: Lab, admin_api):
    service, ready_s = incluster
    core, batch = client.CoreV1Api(admin_api), client.BatchV1Api(admin_api)
    t0 = time.time()
    run_id = service.launch("netviz_deploy")
    run = service.wait_run(lambda r: r["runId"] == run_id, 900, "netviz_deploy in the cluster")
    assert run["status"] == "SUCCESS", run
    job, pods = _run_job(core, batch, run_id)
    assert pods and all(p.spec.node_name in {n.name for n in REAL_NODES} for p in pods), \
        [(p.metadata.name, p.spec.node_name) for p in pods]
    assert all(p.spec.service_account_name == service_k8s.SERVICE_ACCOUNT for p in pods)
    # the instance travels in the Job's command: it holds a reference to the password, never the password
    spec = str(job.spec.template.to_dict())
    assert postgres.password(lab) not in spec and "DAGSTER_PG_PASSWORD" in spec
    # the sensor ticks every 30 s through the first deploy: it heals nothing before it (never deployed
    # from this instance) nor during it (a run that writes is in flight)
    early = [r for r in service.runs(tags=[{"key": "netviz/remediation", "value": "true"}])
             if r["creationTime"] < run["endTime"]]
    assert not early, f"the sensor healed before or during the first deploy: {early}"
    assert _tag(run, "netviz/writes") == "true"
    # the daemon runs the health sensor, evaluated in the code server against the Postgres instance: its
    # ticks after the deploy succeed (they once all failed there: no DAGSTER_PG_PASSWORD in that pod)
    deadline = time.monotonic() + 120
    while not (ticks := [t for t in _ticks(service) if t["timestamp"] > run["endTime"] and t["status"] != "STARTED"]):
        assert time.monotonic() < deadline, "the sensor did not tick after the deploy"
        time.sleep(3)
    assert all(t["status"] in ("SUCCESS", "SKIPPED") for t in ticks), ticks
    _record("in the cluster: pods answering", seconds=ready_s)
    _record("in the cluster: netviz_deploy as a Job through its webserver", seconds=time.time() - t0,
            launch_s=run["startTime"] - run["creationTime"])
    print(f"in the cluster: netviz_deploy queued -> started {run['startTime'] - run['creationTime']:.1f}s "
          f"(K8sRunLauncher: a Job, its pod on {pods[0].spec.node_name}), done {time.time() - t0:.0f}s")


def test_two_routers_run_side_by_side_in_their_own_jobs_and_one_router_one_at_a_time(incluster, lab: Lab, admin_api):
    """netviz_router for each router's partition, as a person launches it (the sensor's remediations of
    two routers take the same queue rule): the two routers' runs overlap, each in its own Job on a real
    node; a second run of the same router waits for the first."""
    service, _ = incluster
    core, batch = client.CoreV1Api(admin_api), client.BatchV1Api(admin_api)
    names = [r["name"] for r in yaml.safe_load(lab_settings.render(lab))["routers"]]
    assert len(names) == 2, names
    ids = [service.launch("netviz_router", n) for n in (*names, names[0])]
    runs = {r["runId"]: r for r in (service.wait_run(lambda r, i=i: r["runId"] == i, 300, f"netviz_router {i}")
                                    for i in ids)}
    first, other, again = (runs[i] for i in ids)
    assert all(r["status"] == "SUCCESS" for r in runs.values()), runs
    assert [_tag(r, "dagster/partition") for r in (first, other, again)] == [*names, names[0]]
    for run in runs.values():
        _, pods = _run_job(core, batch, run["runId"])
        assert pods and all(p.spec.node_name in {n.name for n in REAL_NODES} for p in pods)
    # When the queue let each run go: its RUN_STARTING event, written as the daemon dequeues it (then it
    # creates the Job). Both routers' runs went before either had ended; the same router's second run
    # only after its first had. (A converged router's run lasts about 2 s and the daemon creates Jobs
    # one after the other, so the runs' own spans may not overlap; the queue's decision is what is tested.)
    let_go = {r["runId"]: next(float(e["timestamp"]) / 1000 for e in service.events(r["runId"])
                               if e["__typename"] == "RunStartingEvent") for r in runs.values()}
    assert let_go[other["runId"]] < first["endTime"] and let_go[first["runId"]] < other["endTime"], (let_go, runs)
    assert let_go[again["runId"]] >= first["endTime"], (let_go, runs)
    apart = abs(let_go[other["runId"]] - let_go[first["runId"]])
    overlap = min(first["endTime"], other["endTime"]) - max(first["startTime"], other["startTime"])
    _record("in the cluster: two routers side by side (netviz_router Jobs)", let_go_apart_s=apart,
            runs_overlap_s=overlap, each_s=[r["endTime"] - r["startTime"] for r in (first, other)],
            queued_behind_s=let_go[again["runId"]] - again["creationTime"])
    print(f"in the cluster: two routers' runs let go {apart:.1f}s apart (runs of {first['endTime'] - first['startTime']:.1f}"
          f"/{other['endTime'] - other['startTime']:.1f}s, overlapping {overlap:.1f}s); the same router's second "
          f"run held {let_go[again['runId']] - again['creationTime']:.1f}s in the queue")


def test_a_remediation_runs_as_a_job_and_healing_survives_every_dagster_pod(incluster, admin_api):
    service, _ = incluster
    core, batch = client.CoreV1Api(admin_api), client.BatchV1Api(admin_api)
    before = _softflowd_pids()
    assert before, "softflowd not running on the lab router"
    t0 = time.time()
    for pid in before:
        os.kill(pid, signal.SIGKILL)
    run = service.wait_run(lambda r: r["creationTime"] >= t0 and _tag(r, "netviz/remediation") == "true", 300,
                           "a remediation run after the kill")
    assert run["status"] == "SUCCESS", run
    assert "router:edge-linux" in (_tag(run, "netviz/remediates") or ""), run
    _run_job(core, batch, run["runId"])
    assert _softflowd_pids() and _softflowd_pids() != before
    history = {r["runId"]: r["status"] for r in service.runs()}

    # every Dagster pod goes: code server, webserver, daemon (their Deployments bring them back)
    t_restart = time.time()
    gone = set()
    for p in core.list_namespaced_pod(NS).items:
        if p.metadata.labels.get("app.kubernetes.io/name") in (service_k8s.CODE, service_k8s.WEBSERVER, service_k8s.DAEMON):
            core.delete_namespaced_pod(p.metadata.name, NS, grace_period_seconds=5)
            gone.add(p.metadata.name)
    deadline = time.monotonic() + 300
    while gone & {p.metadata.name for p in core.list_namespaced_pod(NS).items}:  # the old webserver answers
        assert time.monotonic() < deadline, "the deleted pods did not go"           # until it has stopped
        time.sleep(1)
    while True:
        try:
            service.wait_loaded(timeout=5)
            break
        except (AssertionError, OSError, ValueError, KeyError) as e:  # not answering yet
            assert time.monotonic() < deadline, f"the webserver did not come back: {e}"
            time.sleep(3)
    after = {r["runId"]: r["status"] for r in service.runs()}
    assert {k: v for k, v in after.items() if k in history} == history, "run history lost in the restart"
    # the new daemon ticks again from the stored cursor, and heals nothing: the router is healthy and its
    # incident is remembered (a sensor that forgot would re-run the router on its first tick)
    deadline = time.monotonic() + 150
    while not (ticks := [t for t in _ticks(service) if t["timestamp"] > t_restart and t["status"] != "STARTED"]):
        assert time.monotonic() < deadline, "the sensor did not tick after the restart"
        time.sleep(3)
    assert all(t["status"] in ("SUCCESS", "SKIPPED") for t in ticks), ticks
    time.sleep(35)  # one more tick
    assert not _remediations(service, t_restart), _remediations(service, t_restart)
    _record("in the cluster: softflowd killed, remediation as a Job", detected_s=run["creationTime"] - t0,
            healed_s=run["endTime"] - t0, launch_s=run["startTime"] - run["creationTime"])


def _run_worker_pids(run_id: str) -> list[int]:
    """The run worker of a run Job (`dagster api execute_run`, the run id in its argument), as the host
    sees it: the lab's real nodes run their containers on this host."""
    return pids_by_cmdline("execute_run", run_id)


def test_a_run_worker_killed_mid_run_is_marked_failed_by_run_monitoring_and_the_sensor_retries(incluster, admin_api):
    """The run worker dies without a word (SIGKILL, as the OOM killer does): nothing records the failure
    but the daemon's run monitoring, which reads the Job (failed, no active pod) on its 60 s poll."""
    service, _ = incluster
    t0 = time.time()
    for pid in _softflowd_pids():
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 240
    while not (started := [r for r in _remediations(service, t0)
                           if r["status"] == "STARTED" and _run_worker_pids(r["runId"])]):
        assert time.monotonic() < deadline, f"no remediation run started: {_remediations(service, t0)}"
        time.sleep(0.5)
    killed = started[0]
    for pid in _run_worker_pids(killed["runId"]):
        os.kill(pid, signal.SIGKILL)
    t_kill = time.time()
    failed = service.wait_run(lambda r: r["runId"] == killed["runId"], 240, "the killed run marked failed")
    assert failed["status"] == "FAILURE", failed
    marked_s = failed["endTime"] - t_kill
    retry = service.wait_run(lambda r: r["creationTime"] > t_kill and _tag(r, "netviz/remediation") == "true", 300,
                             "the sensor's retry")
    assert retry["status"] == "SUCCESS", retry
    assert "router:edge-linux" in (_tag(retry, "netviz/remediates") or ""), retry
    assert _softflowd_pids(), "softflowd not back after the retry"
    assert len(_remediations(service, t0)) == 2, _remediations(service, t0)  # the killed one and one retry
    _record("in the cluster: a run worker SIGKILLed mid-run", marked_failed_s=marked_s,
            retry_created_s=retry["creationTime"] - t_kill, healed_s=retry["endTime"] - t0)
    print(f"in the cluster: SIGKILLed run worker marked failed {marked_s:.0f}s after (run monitoring), retried "
          f"{retry['creationTime'] - t_kill:.0f}s after, healed {retry['endTime'] - t0:.0f}s after the fault")


def test_a_run_no_node_can_take_fails_at_its_start_timeout_naming_why(incluster, admin_api):
    """A run whose pod no node can take: it asks for more memory than any node has, through the
    `dagster-k8s/config` run tag a person can set in the Launchpad. Its Job's pod stays Pending; run
    monitoring marks the run failed at the start timeout (the lab's pods: --run-start-timeout 60), and
    the failure carries the scheduler's reason, read from the pod's events."""
    service, _ = incluster
    core = client.CoreV1Api(admin_api)
    big = {"container_config": {"resources": {"requests": {"memory": "64Ti"}, "limits": {"memory": "64Ti"}}}}
    t0 = time.time()
    run_id = service.launch("netviz_verify", tags={"dagster-k8s/config": json.dumps(big)})
    run = service.wait_run(lambda r: r["runId"] == run_id, 400, "the run no node can take")
    assert run["status"] == "FAILURE", run
    said = "\n".join(service.messages(run_id))
    assert "seconds to start" in said and "Insufficient memory" in said, said[-3000:]
    pods = core.list_namespaced_pod(NS, label_selector=f"job-name=dagster-run-{run_id}").items
    assert all(p.spec.node_name is None for p in pods), "a node took the pod after all"
    failed_s = (run["endTime"] or time.time()) - t0
    _record("in the cluster: a run no node can take", failed_s=failed_s)
    print(f"in the cluster: a run no node can take marked failed {failed_s:.0f}s after launch: "
          f"{[ln for ln in said.splitlines() if 'Insufficient' in ln][:1]}")


def _answers(lab: Lab) -> bool:
    try:
        return postgres.ready(lab)
    except (OSError, psycopg2.Error):  # refused, or "the database system is starting up"
        return False


def test_postgres_lost_under_a_running_run_loses_no_run_and_the_daemon_carries_on(incluster, lab: Lab):
    """The lab's PostgreSQL is killed (SIGKILL: a crashed server, a failover) while a run is in flight;
    the lab's supervisor starts it again within seconds, as a managed Postgres fails over. The run ends
    (it is never left "started"), every earlier run is still there, and the daemon ticks on."""
    service, _ = incluster
    history = {r["runId"]: r["status"] for r in service.runs() if r["status"] in FINISHED}
    run_id = service.launch("netviz_verify")
    deadline = time.monotonic() + 120
    while not _run_worker_pids(run_id):
        assert time.monotonic() < deadline, "the verify run's worker did not start"
        time.sleep(0.5)
    pid = read_state(lab)["services"]["postgres"]
    os.kill(pid, signal.SIGKILL)
    t_kill = time.time()
    deadline = time.monotonic() + 120
    while read_state(lab)["services"].get("postgres") == pid or not _answers(lab):
        assert time.monotonic() < deadline, "the lab's PostgreSQL did not come back"
        time.sleep(0.2)
    back_s = time.time() - t_kill
    # The webserver keeps its storage connections pooled (Dagster's optimize_for_webserver), and a pooled
    # connection is found dead on first use: that request fails naming Postgres, and SQLAlchemy drops the
    # pool, so the next one on that storage reconnects. Count them.
    failed_requests = []
    deadline = time.monotonic() + 120
    while True:
        try:
            service.runs()  # run storage
            if "sensorState" not in (sensor := service.gql(TICKS)["sensorOrError"]):  # schedule storage
                raise AssertionError(str(sensor))
            service.events(run_id)  # event log storage
            break
        except AssertionError as e:
            failed_requests.append(str(e))
            assert time.monotonic() < deadline, f"the webserver still fails after Postgres came back: {e}"
            time.sleep(1)
    assert all("OperationalError" in e for e in failed_requests), failed_requests
    run = service.wait_run(lambda r: r["runId"] == run_id, 600, "the run in flight when Postgres went")
    after = {r["runId"]: r["status"] for r in service.runs()}
    assert {k: v for k, v in after.items() if k in history} == history, "runs lost or changed"
    deadline = time.monotonic() + 150
    while not (ticks := [t for t in _ticks(service) if t["timestamp"] > t_kill + back_s and t["status"] != "STARTED"]):
        assert time.monotonic() < deadline, "the daemon did not tick after Postgres came back"
        time.sleep(3)
    assert all(t["status"] in ("SUCCESS", "SKIPPED") for t in ticks), ticks
    print(f"in the cluster: Postgres killed under a run, back in {back_s:.1f}s; {len(failed_requests)} webserver "
          f"request(s) failed after it, naming Postgres; the run ended {run['status']} {run['endTime'] - t_kill:.0f}s "
          f"after the kill; first tick after {ticks[-1]['timestamp'] - t_kill:.0f}s; run messages: "
          f"{[m[:160] for m in service.messages(run_id) if 'OperationalError' in m or 'Postgres' in m][:2]}")
    _record("in the cluster: Postgres killed under a run", postgres_back_s=back_s, run=run["status"],
            run_ended_s=run["endTime"] - t_kill, webserver_requests_failed=len(failed_requests))


def _daemon_pods(core) -> list:
    return [p for p in core.list_namespaced_pod(NS, label_selector=f"app.kubernetes.io/name={service_k8s.DAEMON}").items
            if not p.metadata.deletion_timestamp]


def _migrate_failure(pod) -> str | None:
    """The termination message of the pod's failed `migrate` init container, if it failed."""
    for st in pod.status.init_container_statuses or []:
        for state in (st.state, st.last_state):
            t = state and state.terminated
            if st.name == "migrate" and t and t.exit_code:
                return t.message or f"exit {t.exit_code}, no message"
    return None


def test_a_wrong_postgres_password_is_named_where_the_pod_starts_and_no_run_is_lost(incluster, lab: Lab, admin_api):
    """The password in Secret netviz-postgres is wrong (rotated in Postgres, not in the Secret): a
    restarted daemon stops in its `migrate` init container, whose termination message (what `kubectl
    describe pod` shows) names Postgres's refusal, never the password; the history is untouched, and
    with the Secret right again the daemon comes back and the sensor ticks."""
    service, _ = incluster
    core = client.CoreV1Api(admin_api)
    history = {r["runId"]: r["status"] for r in service.runs() if r["status"] in FINISHED}
    wrong = f"wrong-{os.urandom(6).hex()}"

    def set_password(value: str) -> None:
        core.patch_namespaced_secret(service_k8s.POSTGRES_SECRET, NS,
                                     {"stringData": {service_k8s.POSTGRES_PASSWORD_KEY: value}})
        for p in _daemon_pods(core):
            core.delete_namespaced_pod(p.metadata.name, NS, grace_period_seconds=5)

    t0 = time.time()
    set_password(wrong)
    try:
        deadline = time.monotonic() + 180
        while not (failed := [m for p in _daemon_pods(core) if (m := _migrate_failure(p))]):
            assert time.monotonic() < deadline, f"the daemon's migrate did not fail: {_daemon_pods(core)}"
            time.sleep(2)
        message = failed[0]
        assert 'password authentication failed for user "dagster"' in message, message
        assert f"Secret {service_k8s.POSTGRES_SECRET} key {service_k8s.POSTGRES_PASSWORD_KEY}" in message, message
        assert wrong not in message and postgres.password(lab) not in message
        named_s = time.time() - t0
        log = core.read_namespaced_pod_log(_daemon_pods(core)[0].metadata.name, NS, container="migrate",
                                           previous=False)
        assert wrong not in log, "the password is in the migrate container's log"
    finally:
        t_back = time.time()
        set_password(postgres.password(lab))
    deadline = time.monotonic() + 240
    while not (ticks := [t for t in _ticks(service) if t["timestamp"] > t_back and t["status"] != "STARTED"]):
        assert time.monotonic() < deadline, "the daemon did not tick with the password right again"
        time.sleep(3)
    assert all(t["status"] in ("SUCCESS", "SKIPPED") for t in ticks), ticks
    after = {r["runId"]: r["status"] for r in service.runs()}
    assert {k: v for k, v in after.items() if k in history} == history, "runs lost or changed"
    _record("in the cluster: wrong Postgres password", named_s=named_s, ticking_again_s=ticks[-1]["timestamp"] - t_back)
    print(f"in the cluster: wrong Postgres password named by the daemon's migrate {named_s:.0f}s after the "
          f"restart: {message.strip().splitlines()[-1][:200]}")


TICKS = """{ sensorOrError(sensorSelector: {repositoryLocationName: "netviz", repositoryName: "__repository__",
  sensorName: "flow_freshness"}) { ... on Sensor { sensorState { ticks(limit: 5) { timestamp status } } }
  ... on PythonError { message } } }"""
