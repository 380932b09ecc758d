"""The single-host recipe: the instance file Dagster itself accepts, the queue limits that keep writing
runs apart, secrets kept out of the units."""
from __future__ import annotations

import os

import dagster as dg
import yaml
from dagster._core.instance.ref import InstanceRef

from netviz_pipeline import service
from netviz_pipeline.jobs import PARTITION_TAG, WRITES_ROUTER, WRITES_SHARED, WRITES_TAG
from netviz_pipeline.render import instance


def test_dagster_loads_the_rendered_instance(tmp_path, monkeypatch):
    (tmp_path / "dagster.yaml").write_text(instance.dagster_yaml())
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(tmp_path))) as inst:
        limits = inst.run_coordinator.get_run_queue_config().tag_concurrency_limits
        assert {"key": WRITES_TAG, "value": WRITES_SHARED, "limit": 1} in limits
        assert {"key": PARTITION_TAG, "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in limits
        assert inst.run_monitoring_enabled and not inst.telemetry_enabled
        assert inst.get_settings("retention")["sensor"]["purge_after_days"]["skipped"] == 7


def _queue(in_progress: list[dict]):
    """Dagster's own tag-limit counter over the rendered limits, with these runs' tags in progress."""
    from dagster._utils.tags import TagConcurrencyLimitsCounter

    limits = yaml.safe_load(instance.dagster_yaml())["run_coordinator"]["config"]["tag_concurrency_limits"]
    return TagConcurrencyLimitsCounter(limits, [dg.DagsterRun(job_name="j", tags=t) for t in in_progress])


DEPLOY = {WRITES_TAG: WRITES_SHARED}
ROUTER_A = {WRITES_TAG: WRITES_ROUTER, PARTITION_TAG: "edge-a", "netviz/remediation": "true"}
ROUTER_B = {WRITES_TAG: WRITES_ROUTER, PARTITION_TAG: "edge-b"}


def test_routers_runs_go_side_by_side_one_per_router_and_shared_writes_one_at_a_time():
    def blocked(run, running):
        return _queue(running).is_blocked(dg.DagsterRun(job_name="j", tags=run))

    assert not blocked(ROUTER_B, [ROUTER_A])  # two routers: two runs at once (remediations too)
    assert blocked({**ROUTER_A, "netviz/remediation": "false"}, [ROUTER_A])  # one router: one at a time
    assert blocked(DEPLOY, [DEPLOY]) and blocked({**DEPLOY, "netviz/remediation": "true"}, [DEPLOY])
    assert not blocked({}, [DEPLOY, ROUTER_A, ROUTER_B])  # checks-only runs go beside


def test_postgres_storage_reads_its_url_from_the_environment_only():
    cfg = yaml.safe_load(instance.dagster_yaml(postgres_url_env="NETVIZ_DAGSTER_PG_URL"))
    assert cfg["storage"] == {"postgres": {"postgres_url": {"env": "NETVIZ_DAGSTER_PG_URL"}}}


def test_units_carry_paths_but_no_secrets():
    cmds = instance.commands("/opt/netviz/workspace.yaml", "0.0.0.0", 3000)
    unit = instance.systemd_unit("daemon", cmds["daemon"], venv="/opt/netviz/.venv", home="/var/lib/netviz",
                                 settings="/etc/netviz/netviz.yaml", workdir="/opt/netviz", user="netviz",
                                 env_file="/etc/netviz/secrets.env")
    assert "ExecStart=/opt/netviz/.venv/bin/dagster-daemon run -w /opt/netviz/workspace.yaml" in unit
    assert "EnvironmentFile=/etc/netviz/secrets.env" in unit and "Environment=DAGSTER_HOME=/var/lib/netviz" in unit
    assert cmds["webserver"][-4:] == ["-h", "0.0.0.0", "-p", "3000"]
    # both units migrate the storage first, one at a time
    assert ("ExecStartPre=flock /var/lib/netviz/.netviz-migrate.lock /opt/netviz/.venv/bin/dagster instance migrate"
            in unit)


def test_init_is_idempotent_and_start_refuses_bad_settings_before_starting(tmp_path, capsys):
    assert service.init(tmp_path, None).startswith("wrote")
    assert service.init(tmp_path, None).startswith("unchanged")
    bad = tmp_path / "netviz.yaml"
    bad.write_text("cluster: {}\n")
    assert service.main(["start", "--home", str(tmp_path), "--settings", str(bad)]) == 2
    assert "cluster.node_address: required" in capsys.readouterr().err
    assert service.running(tmp_path) == {} and not (tmp_path / service.SERVICE_DIR).exists()


def test_a_pid_file_pointing_at_another_process_is_not_ours(tmp_path):
    run = tmp_path / service.SERVICE_DIR / "run"
    run.mkdir(parents=True)
    (run / "daemon.pid").write_text(str(os.getpid()))  # alive, but pytest, not dagster: a reused pid
    (run / "webserver.pid").write_text("999999999")  # gone
    assert service.running(tmp_path) == {}


def test_the_sensor_holds_healing_while_any_run_that_writes_is_in_flight():
    from netviz_pipeline.sensors import writes_in_flight

    with dg.DagsterInstance.ephemeral() as inst:
        assert not writes_in_flight(inst)
        inst.add_run(dg.DagsterRun(job_name="j", tags={}, status=dg.DagsterRunStatus.STARTED))  # checks only
        assert not writes_in_flight(inst)
        inst.add_run(dg.DagsterRun(job_name="j", tags=ROUTER_A, status=dg.DagsterRunStatus.SUCCESS))
        assert not writes_in_flight(inst)
        inst.add_run(dg.DagsterRun(job_name="j", tags=ROUTER_B, status=dg.DagsterRunStatus.STARTING))
        assert writes_in_flight(inst)  # one router's run counts as much as a deploy
