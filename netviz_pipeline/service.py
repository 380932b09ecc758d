"""Run netviz as a long-running service on one host: `python -m netviz_pipeline.service …`.

    init   write $DAGSTER_HOME/dagster.yaml (render/instance.py); unchanged file = nothing written
    migrate check the Postgres login (if any), then create or upgrade the storage (in the cluster: the
           init container before the webserver and the daemon)
    units  print (or write) systemd units for dagster-webserver and dagster-daemon
    start  start both as background processes where there is no systemd (pid files, log files)
    stop   stop what `start` started (by its pid files, nothing else)
    status what runs, and where the UI answers
    k8s    print the objects that run it inside the cluster instead, as Dagster's Helm chart does: code
           server, webserver, daemon, Postgres storage, each run a Kubernetes Job (render/service_k8s.py)

The settings file is validated before anything starts: a service that would fail on its first sensor
tick must not start at all. So is Postgres storage: the variable that holds its URL set, and a login
that works (the URL, which holds the password, is never printed).
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from . import loading, targets
from .render import instance, service_k8s
from .settings import SettingsError

ROOT = Path(__file__).resolve().parent.parent
PROCESSES = ("webserver", "daemon")
# Not $DAGSTER_HOME/logs: Dagster moves that directory away (its telemetry log queue) even with
# telemetry off, taking open log files with it.
SERVICE_DIR = "netviz-service"


def _run_dir(home: Path) -> Path:
    return home / SERVICE_DIR / "run"


def _log(home: Path, name: str) -> Path:
    return home / SERVICE_DIR / "logs" / f"{name}.log"


def write_if_changed(path: Path, text: str) -> bool:
    if path.exists() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return True


def init(home: Path, postgres_url_env: str | None) -> str:
    path = home / "dagster.yaml"
    changed = write_if_changed(path, instance.dagster_yaml(postgres_url_env))
    return f"{'wrote' if changed else 'unchanged:'} {path}"


def _alive(pid: int) -> bool:
    """Running and not a zombie (PID 1 here reaps late; a zombie counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _ours(pid: int) -> bool:
    try:
        return b"dagster" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def running(home: Path) -> dict[str, int]:
    """name -> pid of the service processes whose pid file points at a live dagster process."""
    out = {}
    for name in PROCESSES:
        try:
            pid = int((_run_dir(home) / f"{name}.pid").read_text())
        except (OSError, ValueError):
            continue
        if _alive(pid) and _ours(pid):
            out[name] = pid
    return out


def postgres_problem(home: Path, connect_timeout: int = 5) -> str | None:
    """Why the instance's Postgres storage cannot be used, or None (also None for SQLite storage). One
    line naming the cause and what to fix; never the URL or the password."""
    import psycopg2
    import yaml

    storage = (yaml.safe_load((home / "dagster.yaml").read_text()) or {}).get("storage") or {}
    if "postgres" not in storage:
        return None
    pg = storage["postgres"]
    if "postgres_url" in pg:  # the single host: `service init --postgres-url-env`
        env = pg["postgres_url"]["env"]
        where, login_hint = f"Postgres from ${env}", "check the user and password in the URL"
        net_hint = "check the host and port in the URL, and that Postgres listens there and lets this host in"
        unset = f"({home}/dagster.yaml, `service init --postgres-url-env {env}`)"
        connect = dict(dsn=os.environ.get(env))
        secret = connect["dsn"]
    else:  # the in-cluster recipe: the parts in dagster.yaml, the password from the Secret's variable
        db = pg["postgres_db"]
        env = db["password"]["env"]
        where = f"Postgres at {db['hostname']}:{db.get('port', 5432)} (database {db['db_name']}, user {db['username']})"
        login_hint = (f"check the password in ${env}, from Secret {service_k8s.POSTGRES_SECRET} key "
                      f"{service_k8s.POSTGRES_PASSWORD_KEY}, and the user (--postgres-user)")
        net_hint = ("check --postgres-host and --postgres-port, and that Postgres listens there and lets the "
                    "pods' addresses in (pg_hba.conf)")
        unset = f"(Secret {service_k8s.POSTGRES_SECRET}, key {service_k8s.POSTGRES_PASSWORD_KEY})"
        secret = os.environ.get(env)
        connect = dict(host=db["hostname"], port=db.get("port", 5432), user=db["username"], dbname=db["db_name"],
                       password=secret)
    if not secret:
        return f"${env} is not set: it holds the {'URL' if 'dsn' in connect else 'password'} of the Postgres " \
               f"that stores the runs {unset}"
    try:
        psycopg2.connect(**connect, connect_timeout=connect_timeout).close()
    except psycopg2.OperationalError as e:
        why = " ".join(str(e).replace(secret, "<secret>").split())
        refused = "authentication" in why or "password" in why or "no pg_hba.conf entry" in why
        return f"{where} refused or unreachable: {why}: {login_hint if refused else net_hint}"
    return None


def migrate(home: Path) -> None:
    """What runs before the webserver and the daemon start (in the cluster: their `migrate` init
    container): check the Postgres login, then create or upgrade the storage (`dagster instance
    migrate`). Dagster's own error for a refused login ends in "too many retries for DB connection",
    its cause out of the pod's termination message; this says the cause, on the last line and in the
    termination message (what `kubectl describe pod` shows)."""
    if problem := postgres_problem(home):
        try:
            Path("/dev/termination-log").write_text(problem)
        except OSError:
            pass  # not in a pod
        raise SystemExit(problem)
    beside = Path(sys.executable).parent / instance.MIGRATE[0]  # a virtualenv's bin need not be on PATH
    os.execvp(str(beside) if beside.exists() else instance.MIGRATE[0], instance.MIGRATE)


def start(home: Path, settings: Path, host: str, port: int, timeout: float = 90) -> list[str]:
    loading.load(settings)  # raises SettingsError naming every problem, before anything starts
    if not (home / "dagster.yaml").exists():
        raise SystemExit(f"{home}/dagster.yaml missing: run `python -m netviz_pipeline.service init --home {home}`")
    if problem := postgres_problem(home):
        raise SystemExit(problem)
    env = {**os.environ, "DAGSTER_HOME": str(home), "NETVIZ_CONFIG": str(settings)}
    bindir = Path(sys.executable).parent
    up = running(home)
    said = []
    if len(up) < len(PROCESSES):  # storage first, by one process (instance.MIGRATE says why)
        res = subprocess.run([str(bindir / instance.MIGRATE[0]), *instance.MIGRATE[1:]], cwd=ROOT, env=env,
                             capture_output=True, text=True)
        if res.returncode:
            raise SystemExit(f"`dagster instance migrate` failed for {home}: {(res.stderr or res.stdout)[-2000:]}")
    for name, argv in instance.commands(str(ROOT / "workspace.yaml"), host, port).items():
        if name in up:
            said.append(f"{name}: already running (pid {up[name]})")
            continue
        _log(home, name).parent.mkdir(parents=True, exist_ok=True)
        _run_dir(home).mkdir(parents=True, exist_ok=True)
        with open(_log(home, name), "ab") as log:
            proc = subprocess.Popen([str(bindir / argv[0]), *argv[1:]], cwd=ROOT, env=env, stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        (_run_dir(home) / f"{name}.pid").write_text(str(proc.pid))
        said.append(f"{name}: started (pid {proc.pid}, log {_log(home, name)})")
    url = f"http://{host}:{port}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            if requests.get(f"{url}/server_info", timeout=2).ok:
                break
        except requests.RequestException:
            pass
        if time.monotonic() > deadline or "webserver" not in running(home):
            raise SystemExit(f"the webserver did not answer at {url} within {timeout:.0f}s: see "
                             f"{_log(home, 'webserver')}")
        time.sleep(0.5)
    said.append(f"UI: {url}")
    return said


def stop(home: Path, timeout: float = 30) -> list[str]:
    said = []
    for name, pid in running(home).items():
        os.killpg(pid, signal.SIGTERM)  # its own session: the code server it spawned goes too
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)
        (_run_dir(home) / f"{name}.pid").unlink(missing_ok=True)
        said.append(f"{name}: stopped (pid {pid})")
    return said or ["nothing running"]


def add_k8s_args(p: argparse.ArgumentParser, image_flag: str, *, required: bool) -> None:
    """The in-cluster recipe's options, shared by `service k8s` and `admin print|apply|check`."""
    p.add_argument(image_flag, dest="image", required=required,
                   help="an image with netviz installed (see docs/operating.md, 'In the cluster')")
    p.add_argument("--namespace", default="netviz", help="where the Dagster pods and the run Jobs go")
    p.add_argument("--node-port", type=int, help="expose the UI on this NodePort (default: ClusterIP only)")
    p.add_argument("--node-selector", action="append", default=[], metavar="KEY=VALUE",
                   help="run the Dagster pods and the run Jobs only on nodes with this label (repeatable)")
    p.add_argument("--postgres-host", help="the Postgres that stores runs, events and sensor state (its "
                   f"password: Secret {service_k8s.POSTGRES_SECRET}, key {service_k8s.POSTGRES_PASSWORD_KEY})")
    p.add_argument("--postgres-port", type=int, default=5432)
    p.add_argument("--postgres-user", default="dagster")
    p.add_argument("--postgres-db", default="dagster")
    p.add_argument("--run-start-timeout", type=int, default=instance.RUN_START_TIMEOUT, metavar="SECONDS",
                   help="a run Job whose pod has not started by then is marked failed, with the pod's status "
                        f"and events (default {instance.RUN_START_TIMEOUT}; more where images pull slowly)")


def k8s_objects(a: argparse.Namespace, settings: Path) -> list[dict]:
    """The in-cluster objects for these options, the settings validated as the pod will see them (its
    paths are the pod's: not checked here). Raises SettingsError naming what to fix."""
    if not a.postgres_host:
        raise SettingsError(["--postgres-host: the in-cluster recipe stores its runs in Postgres; name its host"],
                            "in-cluster options")
    if a.run_start_timeout < 30:
        raise SettingsError([f"--run-start-timeout {a.run_start_timeout}: a pod needs time to be scheduled and "
                             "pull its image; give it 30 s or more"], "in-cluster options")
    selector = {}
    for item in a.node_selector:
        key, eq, value = item.partition("=")
        if not (key and eq):
            raise SettingsError([f"--node-selector {item!r}: write it as KEY=VALUE, a node label"], "in-cluster options")
        selector[key] = value
    try:
        text = settings.read_text()
    except OSError as exc:
        raise SettingsError([exc.strerror or str(exc)], str(settings)) from exc
    s = loading.load(settings, check_host=False)
    bad = service_k8s.problems(targets.resolve(s, None))  # offline: no cluster asked
    if bad:
        raise SettingsError(bad, f"{settings} (for running in the cluster)")
    pg = service_k8s.PostgresRef(a.postgres_host, a.postgres_port, a.postgres_user, a.postgres_db)
    return service_k8s.render(text, a.image, pg, a.namespace, a.node_port, node_selector=selector or None,
                              run_start_timeout=a.run_start_timeout)


def print_k8s(a: argparse.Namespace) -> int:
    try:
        objs = k8s_objects(a, a.settings)
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(service_k8s.to_yaml(objs), end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m netviz_pipeline.service", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    home_default = os.environ.get("DAGSTER_HOME")
    k8s = sub.add_parser("k8s", help="print the in-cluster objects (an administrator applies them)")
    k8s.add_argument("--settings", type=Path, required=True, help="settings as the pod will read them "
                     f"(in_cluster: true; router keys under {service_k8s.SSH_DIR})")
    add_k8s_args(k8s, "--image", required=True)
    for name in ("init", "migrate", "units", "start", "stop", "status"):
        p = sub.add_parser(name)
        p.add_argument("--home", type=Path, default=home_default, required=home_default is None,
                       help="DAGSTER_HOME (default: $DAGSTER_HOME)")
        if name == "init":
            p.add_argument("--postgres-url-env", help="store runs in Postgres: NAME of the env var holding its URL")
        if name in ("units", "start"):
            p.add_argument("--settings", type=Path, default=os.environ.get("NETVIZ_CONFIG"),
                           required="NETVIZ_CONFIG" not in os.environ, help="default: $NETVIZ_CONFIG")
            p.add_argument("--host", default="127.0.0.1")
            p.add_argument("--port", type=int, default=3000)
        if name == "units":
            p.add_argument("--user", default="netviz")
            p.add_argument("--env-file", help="root-only file with secrets (webhook URL, tokens) for both units")
            p.add_argument("--out", type=Path, help="write the .service files here instead of printing them")
    a = ap.parse_args(argv)
    if a.cmd == "k8s":
        return print_k8s(a)
    home = a.home.resolve()
    try:
        if a.cmd == "init":
            print(init(home, a.postgres_url_env))
        elif a.cmd == "migrate":
            migrate(home)
        elif a.cmd == "units":
            venv = str(Path(sys.executable).parent.parent)
            for name, cmd in instance.commands(str(ROOT / "workspace.yaml"), a.host, a.port).items():
                text = instance.systemd_unit(name, cmd, venv=venv, home=str(home), settings=str(a.settings.resolve()),
                                             workdir=str(ROOT), user=a.user, env_file=a.env_file)
                if a.out:
                    path = a.out / f"netviz-dagster-{name}.service"
                    print(f"{'wrote' if write_if_changed(path, text) else 'unchanged:'} {path}")
                else:
                    print(f"# netviz-dagster-{name}.service\n{text}")
        elif a.cmd == "start":
            print("\n".join(start(home, a.settings.resolve(), a.host, a.port)))
        elif a.cmd == "stop":
            print("\n".join(stop(home)))
        else:
            up = running(home)
            print("\n".join(f"{n}: {'running (pid %d)' % up[n] if n in up else 'stopped'}" for n in PROCESSES))
            return 0 if len(up) == len(PROCESSES) else 3
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
