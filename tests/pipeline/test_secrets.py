"""No key material in logs, run metadata or exceptions; known_hosts never written by the pipeline.

Runs the jobs through the CLI as a user would (a deploy, a verify, and a deploy that fails on an unknown
host key), then searches everything they left: stdout/stderr and every file of the Dagster instance
(run and event-log storage, compute logs) for the lab's SSH private key and the pipeline's Kubernetes
client key, in every encoding they could appear in.
"""
from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest
import yaml

from netviz_lab import settings as lab_settings
from netviz_lab.lab import Lab

from test_pipeline import run_job  # tests/pipeline is on sys.path (pytest rootdir import)

pytestmark = pytest.mark.lab


def _secret_fragments(lab: Lab) -> dict[str, list[bytes]]:
    """Distinctive pieces of each secret (base64 lines of the PEM/OpenSSH bodies, the kubeconfig's
    base64 blob and its decoded PEM lines); any one appearing anywhere is a leak."""
    out: dict[str, list[bytes]] = {}
    body = [ln for ln in (lab.ssh_dir / "id_ed25519").read_text().splitlines() if ln and not ln.startswith("-----")]
    out["ssh private key"] = [ln.encode() for ln in body if len(ln) >= 24]
    kc = yaml.safe_load(lab.pipeline_kubeconfig.read_text())
    key_b64 = kc["users"][0]["user"]["client-key-data"]
    pem = base64.b64decode(key_b64).decode()
    out["kubernetes client key"] = [key_b64[i:i + 40].encode() for i in range(0, len(key_b64) - 40, 40)] + \
        [ln.encode() for ln in pem.splitlines() if ln and not ln.startswith("-----") and len(ln) >= 24]
    return out


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_no_secret_in_any_log_metadata_or_exception_and_known_hosts_untouched(lab: Lab, tmp_path):
    known_hosts = lab.ssh_dir / "known_hosts"
    kh_before = hashlib.sha256(known_hosts.read_bytes()).hexdigest(), known_hosts.stat().st_mtime_ns
    cfg = yaml.safe_load(lab_settings.render(lab))
    good = tmp_path / "netviz.yaml"
    good.write_text(yaml.safe_dump(cfg))
    empty_kh = tmp_path / "known_hosts.empty"
    empty_kh.write_text("")
    for r in cfg["routers"]:
        r["known_hosts_file"] = str(empty_kh)
    unknown_host = tmp_path / "netviz-unknown-host.yaml"
    unknown_host.write_text(yaml.safe_dump(cfg))

    outputs = []
    for job, config, home in (("netviz_deploy", good, "deploy"), ("netviz_verify", good, "verify"),
                              ("netviz_deploy", unknown_host, "refused")):
        res = run_job(job, config, tmp_path / home)
        outputs.append((f"{home} stdout/stderr", (res.stdout + res.stderr).encode()))
        if home == "refused":  # the failure path ran: an exception with the router's name, no key
            assert res.returncode != 0 and "edge-linux" in res.stdout + res.stderr
        else:
            assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    stored = [(str(p), p.read_bytes()) for home in ("deploy", "verify", "refused") for p in _files(tmp_path / home)]
    assert any(name.endswith(".db") for name, _ in stored), "expected the instance's SQLite storage"

    leaks = [(what, where) for what, frags in _secret_fragments(lab).items()
             for where, data in outputs + stored for f in frags if f in data]
    assert not leaks, f"secret material found: {sorted(set(leaks))}"
    assert empty_kh.read_text() == "", "the pipeline wrote a host key into known_hosts"
    assert (hashlib.sha256(known_hosts.read_bytes()).hexdigest(), known_hosts.stat().st_mtime_ns) == kh_before


def _listeners(port: int) -> set[str]:
    """Local addresses with a TCP socket in LISTEN on `port` (IPv4 and IPv6)."""
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, p = local.rsplit(":", 1)
            if state == "0A" and int(p, 16) == port:
                out.add(addr)
    return out


def test_the_dagster_ui_listens_on_loopback_only_unless_told(lab: Lab, tmp_path):
    """As docs/operating.md starts it (no --host): Dagster's webserver must bind 127.0.0.1 only."""
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp_path / "netviz.yaml"
    config.write_text(lab_settings.render(lab))
    env = {**__import__("os").environ, "NETVIZ_CONFIG": str(config), "DAGSTER_HOME": str(tmp_path)}
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([str(Path(sys.executable).with_name("dagster-webserver")), "-w", "workspace.yaml",
                             "-p", str(port)], cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not _listeners(port) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert _listeners(port) == {"0100007F"}, _listeners(port)  # 127.0.0.1, nothing else
    finally:
        proc.terminate()
        proc.wait(30)
