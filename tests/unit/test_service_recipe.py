"""The single-host recipe: the instance file Dagster itself accepts, the queue limits that keep writing
runs apart, secrets kept out of the units."""
from __future__ import annotations

import os

import dagster as dg
import yaml
from dagster._core.instance.ref import InstanceRef

from netviz_pipeline import service
from netviz_pipeline.jobs import REMEDIATION_TAG, WRITES_TAG
from netviz_pipeline.render import instance


def test_dagster_loads_the_rendered_instance(tmp_path, monkeypatch):
    (tmp_path / "dagster.yaml").write_text(instance.dagster_yaml())
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(tmp_path))) as inst:
        limits = inst.run_coordinator.get_run_queue_config().tag_concurrency_limits
        assert {"key": WRITES_TAG, "limit": 1} in limits
        assert {"key": REMEDIATION_TAG, "value": "true", "limit": 1} in limits
        assert inst.run_monitoring_enabled and not inst.telemetry_enabled
        assert inst.get_settings("retention")["sensor"]["purge_after_days"]["skipped"] == 7


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
