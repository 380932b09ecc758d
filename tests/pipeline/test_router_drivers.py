"""The router drivers against the lab's routers over real SSH: the Debian router (no systemd) and the
emulated pfSense. NetFlow must reach a UDP socket on the host; a second converge must change nothing
(same PID and start time); the exporter must come back after a power cycle; bad host keys are refused.

Each test converges to a fresh collector port; the module restores both routers at the end (our
Debian instance removed, the pfSense package disabled) so other lab tests see unconfigured routers.
"""
from __future__ import annotations

import socket
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from netviz_lab import router as router_mod
from netviz_lab.lab import Lab
from netviz_lab.settings import settings as lab_settings
from netviz_lab.topology import LINUX_ROUTER, NODE_IP, PFSENSE_ROUTER
from netviz_pipeline import routers
from netviz_pipeline.resources.router import HostKeyError, RouterSession
from netviz_pipeline.routers import linux, pfsense
from netviz_pipeline import loading
from netviz_pipeline.settings import Settings

pytestmark = pytest.mark.lab


def make_settings(lab: Lab, port: int, **router_overrides) -> Settings:
    """Lab settings with every router exporting to the `collector` fixture's socket on the host."""
    data = lab_settings(lab)
    data["cluster"]["standby_node_addresses"] = []  # a fixed collector_address: no collector to follow
    for r in data["routers"]:
        r["collector_address"] = NODE_IP
        r["collector_port"] = port
        r.update(router_overrides.get(r["name"], {}))
    return loading.parse(data)


@pytest.fixture
def collector():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((NODE_IP, 0))
    yield s
    s.close()


def drain(s: socket.socket) -> None:
    s.setblocking(False)
    try:
        while True:
            s.recvfrom(65535)
    except BlockingIOError:
        pass
    s.setblocking(True)


def first_v9(s: socket.socket, sender: str, timeout: float = 20) -> float:
    """Seconds until a NetFlow v9 datagram from `sender` arrives."""
    t0 = time.monotonic()
    while (left := timeout - (time.monotonic() - t0)) > 0:
        s.settimeout(left)
        try:
            data, (ip, _) = s.recvfrom(65535)
        except socket.timeout:
            break
        if ip == sender and int.from_bytes(data[:2], "big") == 9:
            return time.monotonic() - t0
    raise AssertionError(f"no NetFlow v9 datagram from {sender} within {timeout}s")


TOUCHED: set[str] = set()  # routers this module configured (only those are restored)


@pytest.fixture(scope="module", autouse=True)
def restore_routers(lab: Lab):
    yield
    data = loading.parse(lab_settings(lab))
    if LINUX_ROUTER.name in TOUCHED:
        _restore_linux(data)
    if PFSENSE_ROUTER.name in TOUCHED:
        with RouterSession(data.routers[1]) as ssh:
            cmd = pfsense.pfsense_commands({"enable": "off"})["apply"]
            ssh.run(cmd.argv, stdin=cmd.stdin)


def _restore_linux(data: Settings) -> None:
    with RouterSession(data.routers[0]) as ssh:
        ssh.run(["start-stop-daemon", "--stop", "--quiet", "--oknodo", "--retry", "TERM/5/KILL/2",
                 "--pidfile", linux.DEBIAN_PID, "--exec", "/usr/sbin/softflowd"])
        ssh.run(["rm", "-f", linux.DEBIAN_CONF, linux.DEBIAN_PID])


def test_linux_converge_exports_and_second_run_changes_nothing(lab: Lab, collector):
    port = collector.getsockname()[1]
    s = make_settings(lab, port)
    r = s.routers[0]
    TOUCHED.add(LINUX_ROUTER.name)
    with RouterSession(r) as ssh:
        assert routers.detect(ssh) == "linux"
        t0 = time.monotonic()
        out = routers.converge(ssh, s, r)
        cold = time.monotonic() - t0
        assert out.changed and out.restarted, out
        st = out.status
        assert st.healthy and st.collector == f"{NODE_IP}:{port}" and st.interfaces == [LINUX_ROUTER.lan_if]
        assert st.version == "9" and st.details["shim_preloaded"], st
        args = " ".join(st.processes[0].args)
        for flag in ("-t maxlife=60", "-t expint=1", "-t tcp.fin=1", f"-p {linux.DEBIAN_PID}", f"-c {linux.DEBIAN_CTL}"):
            assert flag in args, (flag, args)
        assert f"-n {NODE_IP}:{port}" in ssh.read_file(linux.DEBIAN_CONF)
        arrived = first_v9(collector, LINUX_ROUTER.mgmt_ip)

        t0 = time.monotonic()
        again = routers.converge(ssh, s, r)
        warm = time.monotonic() - t0
        assert not again.changed and not again.restarted and again.actions == [], again
        assert [(p.pid, p.started) for p in again.status.processes] == [(p.pid, p.started) for p in st.processes]

        auto = make_settings(lab, port, **{"edge-linux": {"interface": "auto", "lan_address": LINUX_ROUTER.lan_gw}})
        assert not routers.converge(ssh, auto, auto.routers[0]).changed
        print(f"\nlinux: ssh connect {ssh.connect_seconds:.3f}s, converge (config change) {cold:.2f}s, "
              f"converged {warm:.2f}s, first NetFlow v9 {arrived:.2f}s after converge; warnings {out.warnings}")


def test_linux_exporter_survives_reboot_and_restart_remediates(lab: Lab, collector):
    port = collector.getsockname()[1]
    s = make_settings(lab, port)
    r = s.routers[0]
    TOUCHED.add(LINUX_ROUTER.name)
    with RouterSession(r) as ssh:
        before = routers.converge(ssh, s, r).status
    took = router_mod.reboot_router(lab, LINUX_ROUTER.name)
    drain(collector)
    with RouterSession(r) as ssh:
        st = routers.status(ssh, s, r)
        assert st.healthy and linux._preloaded(ssh, st.processes[0].pid), st  # the boot starts it with the shim
        assert st.pids != before.pids
        first_v9(collector, LINUX_ROUTER.mgmt_ip)
        again = routers.converge(ssh, s, r)
        assert not again.changed, again  # the persisted config came back as desired
        fixed = routers.restart(ssh, s, r)
        assert fixed.healthy and fixed.pids != st.pids
    print(f"\nlinux reboot {took:.2f}s")


def test_pfsense_converge_config_xml_package_rc_script_and_reboot(lab: Lab, collector):
    port = collector.getsockname()[1]
    s = make_settings(lab, port)
    r = s.routers[1]
    TOUCHED.add(PFSENSE_ROUTER.name)
    with RouterSession(r) as ssh:
        assert routers.detect(ssh) == "pfsense"
        rc_conf = ssh.read_file("/etc/rc.conf")
        t0 = time.monotonic()
        out = routers.converge(ssh, s, r)
        cold = time.monotonic() - t0
        assert out.changed and out.restarted and out.status.healthy, out
        fields = pfsense.current_fields(ssh.read_file(pfsense.CONFIG))
        assert {k: fields.get(k) for k in pfsense.pfsense_fields(s, r)} == pfsense.pfsense_fields(s, r)
        assert fields["host"] == NODE_IP and fields["port"] == str(port) and fields["interface"] == "lan"
        assert ssh.read_file("/etc/rc.conf") == rc_conf  # never touched
        rc = ssh.read_file(pfsense.RCFILE)
        assert f"-n '{NODE_IP}:{port}'" in rc and "-i '1:vtnet1'" in rc
        st = out.status
        assert st.details["pidfile"] == "/var/run/softflowd.vtnet1.pid" and st.interfaces == [PFSENSE_ROUTER.lan_if]
        assert "is running" in ssh.check(["/usr/local/sbin/pfSsh.php", "playback", "svc", "status", "softflowd"]).out
        arrived = first_v9(collector, PFSENSE_ROUTER.mgmt_ip)

        t0 = time.monotonic()
        again = routers.converge(ssh, s, r)
        warm = time.monotonic() - t0
        assert not again.changed and again.actions == [], again
        assert [(p.pid, p.started) for p in again.status.processes] == [(p.pid, p.started) for p in st.processes]
        revision = pfsense.current_fields(ssh.read_file(pfsense.CONFIG))
        assert revision == fields
    took = router_mod.reboot_router(lab, PFSENSE_ROUTER.name)
    drain(collector)
    with RouterSession(r) as ssh:
        back = routers.status(ssh, s, r)
        for _ in range(40):  # the package's boot start is asynchronous (mwexec_bg)
            if back.healthy:
                break
            time.sleep(0.25)
            back = routers.status(ssh, s, r)
        assert back.healthy and back.pids != st.pids, back
        first_v9(collector, PFSENSE_ROUTER.mgmt_ip)
        assert ssh.run(["test", "-e", "/etc/rc.conf"]).rc != 0
        assert not routers.converge(ssh, s, r).changed
    print(f"\npfsense: ssh connect {ssh.connect_seconds:.3f}s, converge (config change) {cold:.2f}s, "
          f"converged {warm:.2f}s, first NetFlow v9 {arrived:.2f}s after converge, reboot {took:.2f}s")


def _router_with_known_hosts(lab: Lab, path) -> Settings:
    data = lab_settings(lab)
    data["routers"][0]["known_hosts_file"] = str(path)
    return loading.parse(data)


def test_unknown_host_key_is_refused(lab: Lab, tmp_path):
    kh = tmp_path / "known_hosts"
    kh.write_text("")
    r = _router_with_known_hosts(lab, kh).routers[0]
    with pytest.raises(HostKeyError) as e:
        RouterSession(r).connect()
    assert r.name in str(e.value) and str(kh) in str(e.value) and "not in" in str(e.value)


def test_changed_host_key_is_refused(lab: Lab, tmp_path):
    other = Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    kh = tmp_path / "known_hosts"
    kh.write_text(f"{LINUX_ROUTER.mgmt_ip} {other}\n")
    r = _router_with_known_hosts(lab, kh).routers[0]
    with pytest.raises(HostKeyError) as e:
        RouterSession(r).connect()
    assert r.name in str(e.value) and str(kh) in str(e.value) and "DIFFERS" in str(e.value)
