"""The lab supervisor: one long-lived process that owns every lab daemon as a direct child.

PID 1 on these machines reaps orphans late, so daemons are never left to it: the supervisor starts
each service itself, `wait()`s on it, restarts one that dies, and stops them in reverse order on SIGTERM. Components are
modules (or any objects) exposing three functions (`Component`):

    setup(lab)     -> None            idempotent preparation (files, namespaces, links); no daemons
    services(lab)  -> list[Service]   daemons to start, in order, each with an optional ready check
    teardown(lab)  -> None            remove what setup made; must work with no state (after a crash)

The supervisor imports none of them: its caller passes them in, in start order (`__main__.components()`).
Components import this module's generic pieces (`Service`) instead, so the layers have no loop.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

from .lab import Lab
from .proc import in_netns, pid_alive


@dataclass
class Service:
    name: str
    argv: Sequence[str]
    netns: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    ready: Callable[[], bool] | None = None
    ready_timeout: float = 60.0
    # Called after the process is up and ready (e.g. create API objects once the API server answers).
    after_ready: Callable[[], None] | None = None
    # What stops it at once (PostgreSQL: SIGINT is its fast shutdown; SIGTERM waits for every client)
    stop_signal: int = signal.SIGTERM


class Component(Protocol):
    """What the supervisor starts and stops; the lab's are modules (hostnet, router, cluster, ...)."""

    def setup(self, lab: Lab) -> None: ...

    def services(self, lab: Lab) -> list[Service]: ...

    def teardown(self, lab: Lab) -> None: ...


def read_state(lab: Lab) -> dict:
    try:
        return json.loads(lab.state_file.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def write_state(lab: Lab, **changes) -> None:
    state = read_state(lab) | changes
    tmp = lab.state_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    os.replace(tmp, lab.state_file)


class Supervisor:
    def __init__(self, lab: Lab, components: Sequence[Component]):
        self.lab = lab
        self.components = list(components)  # in start order; stopped and torn down in reverse
        self.procs: list[tuple[Service, subprocess.Popen]] = []
        self.stopping = False
        self.restart_at: dict[str, float] = {}
        self.backoff: dict[str, float] = {}
        self.started: dict[str, float] = {}

    def log(self, msg: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)

    def start(self, svc: Service) -> subprocess.Popen:
        log = open(self.lab.log(svc.name), "ab")
        env = {**os.environ, **svc.env}
        proc = subprocess.Popen(in_netns(svc.netns, svc.argv), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=svc.cwd, env=env)
        log.close()
        self.procs.append((svc, proc))
        self.record()
        if svc.ready is not None:
            deadline = time.monotonic() + svc.ready_timeout
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"{svc.name} exited with {proc.returncode} while starting; "
                                       f"see {self.lab.log(svc.name)}")
                try:
                    if svc.ready():
                        break
                except Exception:  # noqa: BLE001 - not ready yet
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{svc.name} not ready after {svc.ready_timeout:.0f}s; "
                                       f"see {self.lab.log(svc.name)}")
                time.sleep(0.1)
        if svc.after_ready is not None:
            svc.after_ready()
        self.log(f"started {svc.name} pid {proc.pid}")
        return proc

    def record(self) -> None:
        write_state(self.lab, services={s.name: p.pid for s, p in self.procs})

    def stop_all(self) -> None:
        for svc, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(svc.stop_signal)
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
            self.log(f"stopped {svc.name}")
        self.procs.clear()

    def run(self) -> int:
        lab = self.lab
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        write_state(lab, supervisor_pid=os.getpid(), phase="starting", nodes=lab.nodes, error=None,
                    started=time.time())
        t0 = time.monotonic()
        try:
            for comp in self.components:
                if self.stopping:
                    raise RuntimeError("stopped while starting")
                comp.setup(lab)
                for svc in comp.services(lab):
                    self.start(svc)
            write_state(lab, phase="ready", up_seconds=round(time.monotonic() - t0, 2))
            self.log(f"lab ready in {time.monotonic() - t0:.1f}s")
        except Exception as exc:  # noqa: BLE001 - reported to `up` through the state file
            self.log(traceback.format_exc())
            write_state(lab, phase="failed", error=str(exc))
            self.shutdown()
            return 1
        while not self.stopping:
            self.restart_exited()
            time.sleep(0.5)
        self.shutdown()
        return 0

    def restart_exited(self) -> None:
        """Like Restart=always: a lab daemon that dies (or is killed by a fault test) comes back,
        after 1, 2, 4 ... 30 s if it keeps dying. Ready checks and after_ready hooks are not re-run."""
        now = time.monotonic()
        for i, (svc, proc) in enumerate(self.procs):
            if proc.poll() is None:
                continue
            due = self.restart_at.setdefault(svc.name, now + self.backoff.get(svc.name, 1.0))
            if not getattr(proc, "_reported", False):
                proc._reported = True  # type: ignore[attr-defined]
                self.log(f"{svc.name} exited with {proc.returncode}; restarting in {due - now:.0f}s")
            if now < due:
                continue
            with open(self.lab.log(svc.name), "ab") as log:
                new = subprocess.Popen(in_netns(svc.netns, svc.argv), stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, cwd=svc.cwd, env={**os.environ, **svc.env})
            self.procs[i] = (svc, new)
            del self.restart_at[svc.name]
            # back off only if it died soon after its last start
            started = self.started.get(svc.name, 0.0)
            self.backoff[svc.name] = min(self.backoff.get(svc.name, 1.0) * 2, 30.0) if now - started < 30 else 1.0
            self.started[svc.name] = now
            self.record()
            self.log(f"restarted {svc.name} pid {new.pid}")

    def _on_term(self, *_: object) -> None:
        self.stopping = True

    def shutdown(self) -> None:
        self.stop_all()
        for comp in reversed(self.components):
            try:
                comp.teardown(self.lab)
            except Exception:  # noqa: BLE001 - teardown is best effort; `down` re-runs it
                self.log(traceback.format_exc())
        write_state(self.lab, phase="down", services={})


def main(lab: Lab, components: Sequence[Component]) -> int:
    lab.logs.mkdir(parents=True, exist_ok=True)
    return Supervisor(lab, components).run()


def supervisor_alive(lab: Lab) -> int | None:
    pid = read_state(lab).get("supervisor_pid")
    if pid and pid_alive(pid) and "netviz_lab" in open(f"/proc/{pid}/cmdline").read():
        return pid
    return None
