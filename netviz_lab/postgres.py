"""PostgreSQL for the lab (component): Dagster's storage when it runs as teams run it (dagster-postgres),
for the single-host service and the in-cluster recipe alike. Debian's postgresql-15 (`make lab-deps`
installs it), run by the supervisor as a host process beside the cluster, like the lab's Kafka: it
listens on NODE_IP (198.18.0.1), where pods on the real nodes reach the host, port POSTGRES_PORT.

Its files are `lab.root/postgres`: data/ (initdb's, owned by the `postgres` user, formatted once; a second
setup keeps it), run/ (its Unix socket), and dagster-password (0600): the password of role `dagster`,
owner of database `dagster` (the single-host service's), random per lab; the role may create databases
(`fresh_database`: the in-cluster recipe gets one of its own, as a second Dagster would). Only password
logins over TCP from 198.18.0.0/15 (scram-sha-256); the superuser has no password and logs in only over
the Unix socket, as `postgres`.

PostgreSQL refuses to run as root: the server runs as the `postgres` user through `setpriv`, which execs
(no process in between), so the supervisor's PID is the postmaster's and SIGINT (its fast shutdown)
stops it with its backends.
"""
from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import socket
from pathlib import Path

from .lab import Lab
from .proc import kill_by_cmdline, run
from .supervisor import Service
from .topology import NODE_IP, POSTGRES_PORT

PG_BIN = Path("/usr/lib/postgresql/15/bin")
USER = "postgres"  # the OS user the server runs as (Debian's package creates it)
ROLE = DATABASE = "dagster"
# Small on purpose: a lab database of run history on a 2-core machine.
SERVER_OPTIONS = {"shared_buffers": "32MB", "max_connections": "60", "fsync": "on",
                  "log_min_messages": "warning", "log_connections": "off"}
HBA = f"""\
# netviz lab (netviz_lab/postgres.py): the superuser over the socket only, everyone else by password.
local all {USER} peer
host all {ROLE} 198.18.0.0/15 scram-sha-256
"""


def pg_dir(lab: Lab) -> Path:
    return lab.root / "postgres"


def data_dir(lab: Lab) -> Path:
    return pg_dir(lab) / "data"


def password(lab: Lab) -> str:
    return (pg_dir(lab) / "dagster-password").read_text().strip()


def url(lab: Lab, *, password_override: str | None = None, host: str = NODE_IP, database: str = DATABASE) -> str:
    """The `dagster` role's URL (what goes into the env var that `service init --postgres-url-env` names)."""
    pw = password(lab) if password_override is None else password_override
    return f"postgresql://{ROLE}:{pw}@{host}:{POSTGRES_PORT}/{database}"


def fresh_database(lab: Lab, name: str) -> None:
    """Drop and create database `name`, owned by the `dagster` role: a new, empty Dagster storage."""
    import psycopg2
    from psycopg2 import sql

    conn = psycopg2.connect(url(lab), connect_timeout=5)
    conn.autocommit = True  # CREATE/DROP DATABASE cannot run in a transaction
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    finally:
        conn.close()


def require_binaries() -> None:
    if not (PG_BIN / "postgres").exists():
        raise RuntimeError(f"{PG_BIN / 'postgres'} is missing: run `make lab-deps` (Debian's postgresql-15)")


def _as_postgres(*argv: str) -> list[str]:
    return ["setpriv", f"--reuid={USER}", f"--regid={USER}", "--init-groups", "--", *argv]


def setup(lab: Lab) -> None:
    require_binaries()
    pw_user = pwd.getpwnam(USER)
    root = pg_dir(lab)
    (root / "run").mkdir(parents=True, exist_ok=True)
    os.chown(root / "run", pw_user.pw_uid, pw_user.pw_gid)
    pw_file = root / "dagster-password"
    if not pw_file.exists():
        fd = os.open(pw_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(18) + "\n")
    data = data_dir(lab)
    if not (data / "PG_VERSION").exists():  # formatted once; a second setup keeps the history
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir(mode=0o700)
        os.chown(data, pw_user.pw_uid, pw_user.pw_gid)
        run(_as_postgres(str(PG_BIN / "initdb"), "-D", str(data), "--username", USER, "--auth-local=peer",
                         "--auth-host=scram-sha-256", "--encoding=UTF8", "--locale=C.UTF-8"), timeout=120)
        # the role and database, before the server listens: single-user mode reads commands on stdin
        # (the password is never an argument)
        # (with -j a command ends at a semicolon followed by an empty line)
        sql = (f"CREATE ROLE {ROLE} LOGIN CREATEDB PASSWORD '{password(lab)}';\n\n"
               f"CREATE DATABASE {DATABASE} OWNER {ROLE};\n\n")
        run(_as_postgres(str(PG_BIN / "postgres"), "--single", "-D", str(data), "-j", "postgres"), input=sql,
            timeout=120)
    (data / "pg_hba.conf").write_text(HBA)


def ready(lab: Lab) -> bool:
    """The `dagster` role logs in over TCP on NODE_IP."""
    import psycopg2

    with socket.create_connection((NODE_IP, POSTGRES_PORT), timeout=1):
        pass
    psycopg2.connect(url(lab), connect_timeout=2).close()
    return True


def services(lab: Lab) -> list[Service]:
    opts = SERVER_OPTIONS | {"listen_addresses": NODE_IP, "port": str(POSTGRES_PORT),
                             "unix_socket_directories": str(pg_dir(lab) / "run")}
    argv = _as_postgres(str(PG_BIN / "postgres"), "-D", str(data_dir(lab)),
                        *(a for k, v in opts.items() for a in ("-c", f"{k}={v}")))
    return [Service(name="postgres", argv=argv, ready=lambda: ready(lab), ready_timeout=60, stop_signal=signal.SIGINT)]


def kill_leftovers(lab: Lab) -> list[int]:
    """SIGKILL a postmaster a crashed supervisor left (its argv names this lab's data dir); its backends
    exit when it does."""
    return kill_by_cmdline(str(data_dir(lab)), "postgres")


def teardown(lab: Lab) -> None:
    kill_leftovers(lab)
    shutil.rmtree(pg_dir(lab), ignore_errors=True)
