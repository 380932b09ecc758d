"""The Dagster instance a long-running netviz runs on (`$DAGSTER_HOME/dagster.yaml`), and the service
units that start its webserver and daemon. Pure rendering; `netviz_pipeline.service` writes and runs it.

Why each setting:
- storage: SQLite files under DAGSTER_HOME by default (one host, nothing else to run); Postgres when
  the user names an environment variable holding its URL (the URL carries a password: never inline).
- run queue: runs that write shared things (a deploy, a re-run of the shared steps) never overlap; runs
  of one router's partition go one per router, several routers at once (they touch nothing else);
  checks-only runs may run beside them. The queue cannot also hold a router's run back while a deploy
  runs (Dagster's tag limits count each run once): the sensor never asks for one then, and a person
  who does gets two runs converging that router to the same settings (at most one extra restart).
- run monitoring: a run whose process died (host reboot, OOM) is marked failed instead of hanging
  "started" forever, which would also block the queue above; so is a run that has not started within
  the start timeout (in the cluster: a pod no node takes, an image that cannot be pulled; dagster-k8s
  adds the pod's status and events to the failure).
- retention: the health sensor ticks every 30 s (2,880 ticks a day); ticks that did nothing are kept
  for a week, the rest for longer. Runs have no retention setting in Dagster: the daily `netviz_prune_runs`
  job deletes old runs (jobs.py).
- telemetry off: a network-visibility service should not phone home.
"""
from __future__ import annotations

import shlex

import yaml

from ..jobs import PARTITION_TAG, WRITES_SHARED, WRITES_TAG


RUN_START_TIMEOUT = 180  # s: Dagster's default; an image pull on a slow registry may need more


def dagster_yaml(postgres_url_env: str | None = None, max_concurrent_runs: int = 4, *,
                 postgres_db: dict | None = None, run_launcher: dict | None = None,
                 run_start_timeout: int = RUN_START_TIMEOUT) -> str:
    """`postgres_db`: Dagster's postgres_db block (its password `{env: ...}`, never a value), used by the
    in-cluster recipe; `run_launcher`: a launcher block (K8sRunLauncher there). With either, step output
    is not kept as files (NoOpComputeLogManager, as Dagster's Helm chart does): the event log in Postgres
    has what the UI shows, and the pods that run have no volume to keep files on."""
    config: dict = {
        "run_coordinator": {
            "module": "dagster._core.run_coordinator", "class": "QueuedRunCoordinator",
            "config": {"max_concurrent_runs": max_concurrent_runs, "tag_concurrency_limits": [
                {"key": WRITES_TAG, "value": WRITES_SHARED, "limit": 1},
                {"key": PARTITION_TAG, "value": {"applyLimitPerUniqueValue": True}, "limit": 1}]}},
        "run_monitoring": {"enabled": True, "start_timeout_seconds": run_start_timeout, "cancel_timeout_seconds": 180,
                           "max_runtime_seconds": 3600, "poll_interval_seconds": 60},
        "retention": {"schedule": {"purge_after_days": 90},
                      "sensor": {"purge_after_days": {"skipped": 7, "failure": 90, "success": 30}}},
        "telemetry": {"enabled": False},
        "nux": {"enabled": False},
    }
    if postgres_db:
        config["storage"] = {"postgres": {"postgres_db": postgres_db}}
        config["compute_logs"] = {"module": "dagster._core.storage.noop_compute_log_manager",
                                  "class": "NoOpComputeLogManager"}
    elif postgres_url_env:
        config["storage"] = {"postgres": {"postgres_url": {"env": postgres_url_env}}}
    else:
        config["storage"] = {"sqlite": {"base_dir": {"env": "DAGSTER_HOME"}}}
    if run_launcher:
        config["run_launcher"] = run_launcher
    return ("# Written by netviz (netviz_pipeline/render/instance.py says why each setting).\n"
            + yaml.safe_dump(config, sort_keys=False))


# Creates or upgrades the instance's storage, once, before the two processes start: both would otherwise
# create a new SQLite instance at the same moment and may stamp its schema twice (seen in the lab's pod:
# "Version table 'alembic_version' has more than one head present", the code location never loaded).
# Idempotent: on a current instance it changes nothing. A Dagster upgrade needs it too.
MIGRATE = ["dagster", "instance", "migrate"]


# dagster-webserver serves the UI and GraphQL; dagster-daemon runs sensors, schedules, the run queue
# and run monitoring. Both load the same workspace and read the same DAGSTER_HOME.
def commands(workspace: str, host: str = "127.0.0.1", port: int = 3000) -> dict[str, list[str]]:
    return {"webserver": ["dagster-webserver", "-w", workspace, "-h", host, "-p", str(port)],
            "daemon": ["dagster-daemon", "run", "-w", workspace]}


def systemd_unit(name: str, argv: list[str], *, venv: str, home: str, settings: str, workdir: str,
                 user: str, env_file: str | None = None) -> str:
    """A systemd service for one of the two processes. Secrets (webhook URL, Postgres URL, Grafana token)
    go in `env_file` (root-readable only), never in the unit, which any user can read."""
    exe = [f"{venv}/bin/{argv[0]}", *argv[1:]]
    lines = ["[Unit]", f"Description=netviz {name} (Dagster)", "After=network-online.target",
             "Wants=network-online.target", "", "[Service]", f"User={user}", f"WorkingDirectory={workdir}",
             f"Environment=DAGSTER_HOME={home}", f"Environment=NETVIZ_CONFIG={settings}"]
    if env_file:
        lines.append(f"EnvironmentFile={env_file}")
    # both units migrate first, one at a time (flock), so whichever starts first creates the storage
    migrate = ["flock", f"{home}/.netviz-migrate.lock", f"{venv}/bin/{MIGRATE[0]}", *MIGRATE[1:]]
    lines += [f"ExecStartPre={shlex.join(migrate)}", f"ExecStart={shlex.join(exe)}", "Restart=on-failure", "RestartSec=5", "", "[Install]",
              "WantedBy=multi-user.target"]
    return "\n".join(lines) + "\n"
