"""Small helpers for running commands, inside or outside the lab's network namespaces."""
from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path
from typing import Sequence


class LabError(RuntimeError):
    pass


def run(argv: Sequence[str], *, check: bool = True, netns: str | None = None, input: str | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    cmd = in_netns(netns, argv)
    res = subprocess.run(cmd, capture_output=True, text=True, input=input, timeout=timeout)
    if check and res.returncode != 0:
        raise LabError(f"{shlex.join(cmd)} failed ({res.returncode}): {res.stderr.strip() or res.stdout.strip()}")
    return res


def in_netns(netns: str | None, argv: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", netns, *argv] if netns else list(argv)


def netns_exists(name: str) -> bool:
    return Path("/run/netns", name).exists()


def list_netns(prefix: str) -> list[str]:
    try:
        return sorted(n for n in os.listdir("/run/netns") if n.startswith(prefix))
    except FileNotFoundError:
        return []


def pid_alive(pid: int) -> bool:
    """True for a running process. PID 1 here reaps late, so a zombie counts as dead."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def pid_cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def pids_by_cmdline(*marks: str) -> list[int]:
    """Every process (but this one) whose argv contains all of `marks`."""
    return [int(e) for e in os.listdir("/proc") if e.isdigit() and int(e) != os.getpid()
            and all(m in pid_cmdline(int(e)) for m in marks)]


def kill_by_cmdline(*marks: str, wait_s: float = 5.0) -> list[int]:
    """SIGKILL every process (but this one) whose argv contains all of `marks`, and wait for them to go:
    what a crashed supervisor left of a host service. Returns their PIDs."""
    victims = pids_by_cmdline(*marks)
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + wait_s
    while any(pid_alive(p) for p in victims) and time.monotonic() < deadline:
        time.sleep(0.05)
    return victims


def kill_netns_processes(netns: str, sig: int = 9) -> None:
    """`ip netns del` does not stop processes inside; kill them first (all ours: the lab made the ns)."""
    res = run(["ip", "netns", "pids", netns], check=False)
    for token in res.stdout.split():
        try:
            os.kill(int(token), sig)
        except (ProcessLookupError, ValueError):
            pass
