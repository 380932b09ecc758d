"""`up` is idempotent and bounded, `down` leaves nothing behind, even after a crashed `up`."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from netviz_lab.__main__ import leftovers
from netviz_lab import nodes
from netviz_lab.lab import Lab
from netviz_lab.supervisor import read_state, supervisor_alive

LAB = [sys.executable, "-m", "netviz_lab"]


def lab_cmd(*args: str, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LAB, *args], capture_output=True, text=True, timeout=400, **kw)


@pytest.fixture
def lab():
    lab = Lab()
    yield lab
    lab_cmd("down")


def _runtime_files() -> set[str]:
    """What containerd and libcni keep outside the lab root (shim sockets, CNI result cache)."""
    return {str(p) for d in (nodes.SHIM_SOCKETS, nodes.CNI_CACHE) if d.exists() for p in d.iterdir()}


def test_up_twice_then_down_leaves_nothing(lab: Lab):
    runtime_before = _runtime_files()
    first = lab_cmd("up")
    assert first.returncode == 0, first.stderr
    second = lab_cmd("up")
    assert second.returncode == 0 and "nothing changed" in second.stdout, second.stdout + second.stderr
    assert lab_cmd("status").returncode == 0
    assert leftovers(lab), "a running lab should have namespaces and processes"
    down = lab_cmd("down")
    assert down.returncode == 0, down.stderr
    assert leftovers(lab) == []
    assert _runtime_files() <= runtime_before  # the real nodes' pods left no shim socket or CNI cache entry


def test_down_after_crashed_up_leaves_nothing(lab: Lab):
    proc = subprocess.Popen([*LAB, "up"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Let it get part-way (namespaces and some daemons exist), then kill the supervisor hard.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(read_state(lab).get("services") or {}) < 3:
        time.sleep(0.2)
    pid = supervisor_alive(lab)
    assert pid, "supervisor never started"
    proc.kill()  # the `up` command would otherwise clean up after its failed supervisor
    proc.wait(60)
    os.kill(pid, signal.SIGKILL)
    assert leftovers(lab), "the crash should have left things behind for down to clean"
    down = lab_cmd("down")
    assert down.returncode == 0, down.stderr
    assert leftovers(lab) == []
