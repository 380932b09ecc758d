"""`service migrate` (the in-cluster webserver's and daemon's init container) against the lab's real
PostgreSQL 15, with the instance file the in-cluster recipe renders (its password from
$DAGSTER_PG_PASSWORD): a refused login or an unreachable server is named in one line, the password
never printed, nothing created; with the right password the storage is created, and a second migrate
changes nothing.

Needs the running lab.
"""
from __future__ import annotations

import os
import subprocess
import sys

import psycopg2
import pytest

from netviz_lab import postgres
from netviz_lab.lab import Lab
from netviz_lab.topology import NODE_IP, POSTGRES_PORT
from netviz_pipeline.render import instance, service_k8s

pytestmark = pytest.mark.lab
DATABASE = "netviz_migrate_test"


def _migrate(home, password: str, port: int = POSTGRES_PORT) -> subprocess.CompletedProcess:
    pg = service_k8s.PostgresRef(NODE_IP, port, postgres.ROLE, DATABASE)
    (home / "dagster.yaml").write_text(instance.dagster_yaml(postgres_db=pg.postgres_db()))
    env = {**os.environ, "DAGSTER_HOME": str(home), service_k8s.POSTGRES_PASSWORD_ENV: password}
    return subprocess.run([sys.executable, "-m", "netviz_pipeline.service", "migrate", "--home", str(home)],
                          env=env, capture_output=True, text=True, timeout=120)


def _tables(lab: Lab) -> set[str]:
    with psycopg2.connect(postgres.url(lab, database=DATABASE), connect_timeout=5) as conn, conn.cursor() as cur:
        cur.execute("select tablename from pg_tables where schemaname = 'public'")
        return {r[0] for r in cur.fetchall()}


def test_a_refused_login_is_named_in_one_line_and_the_right_one_migrates_once(lab: Lab, tmp_path):
    postgres.fresh_database(lab, DATABASE)
    wrong = f"wrong-{os.urandom(6).hex()}"
    bad = _migrate(tmp_path, wrong)
    assert bad.returncode != 0
    last = bad.stderr.strip().splitlines()[-1]
    assert last.startswith(f"Postgres at {NODE_IP}:{POSTGRES_PORT} (database {DATABASE}, user dagster) refused"), last
    assert 'password authentication failed for user "dagster"' in last, last
    assert f"Secret {service_k8s.POSTGRES_SECRET} key {service_k8s.POSTGRES_PASSWORD_KEY}" in last, last
    assert wrong not in bad.stderr + bad.stdout
    assert not _tables(lab), "a refused migrate created tables"

    down = _migrate(tmp_path, postgres.password(lab), port=POSTGRES_PORT + 1)  # nothing listens there
    assert down.returncode != 0 and "Connection refused" in down.stderr and "--postgres-host" in down.stderr, down.stderr

    unset = subprocess.run([sys.executable, "-m", "netviz_pipeline.service", "migrate", "--home", str(tmp_path)],
                           env={k: v for k, v in os.environ.items() if k != service_k8s.POSTGRES_PASSWORD_ENV},
                           capture_output=True, text=True, timeout=60)
    assert unset.returncode != 0 and f"${service_k8s.POSTGRES_PASSWORD_ENV} is not set" in unset.stderr, unset.stderr

    ok = _migrate(tmp_path, postgres.password(lab))
    assert ok.returncode == 0, ok.stderr
    created = _tables(lab)
    assert {"runs", "event_logs", "alembic_version"} <= created, created
    again = _migrate(tmp_path, postgres.password(lab))
    assert again.returncode == 0 and _tables(lab) == created, again.stderr
