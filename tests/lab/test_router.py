"""The lab's routers: SSH access, softflowd + the immediate-mode shim, the pfSense emulation, reboots."""
from __future__ import annotations

import socket
import time
from pathlib import Path

import paramiko
import pytest

from netviz_lab import router as router_mod
from netviz_lab.lab import Lab
from netviz_lab.topology import LINUX_ROUTER, NODE_IP, PFSENSE_ROUTER, ROUTERS, Router

pytestmark = pytest.mark.lab

SHIM_SRC = Path(__file__).resolve().parents[2] / "netviz_pipeline" / "router_assets" / "pcap_immediate.c"


def connect(lab: Lab, r: Router, known_hosts: Path | None = None) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.load_host_keys(str(known_hosts or lab.ssh_dir / "known_hosts"))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(r.mgmt_ip, username="root", key_filename=str(lab.ssh_dir / "id_ed25519"),
                   look_for_keys=False, allow_agent=False, timeout=5)
    return client


def sh(lab: Lab, r: Router, cmd: str, check: bool = True) -> str:
    client = connect(lab, r)
    try:
        _, out, err = client.exec_command(cmd, timeout=60)
        text, error = out.read().decode(), err.read().decode()
        rc = out.channel.recv_exit_status()
    finally:
        client.close()
    assert not check or rc == 0, f"{r.name}: `{cmd}` exited {rc}: {error or text}"
    return text


def netflow_socket() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((NODE_IP, 0))
    return s


def first_datagram(s: socket.socket, sender: str, timeout: float) -> tuple[bytes, float]:
    t0 = time.monotonic()
    while (left := timeout - (time.monotonic() - t0)) > 0:
        s.settimeout(left)
        try:
            data, (ip, _port) = s.recvfrom(65535)
        except socket.timeout:
            break
        if ip == sender:
            return data, time.monotonic() - t0
    raise AssertionError(f"no NetFlow datagram from {sender} within {timeout}s")


def softflowd_cmdlines(r: Router) -> list[list[str]]:
    out = []
    for pid in router_mod.router_pids(r):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        if comm == "softflowd" and argv and argv[0].endswith(b"/softflowd"):  # not a dying one, not the wrapper
            out.append([a.decode() for a in argv])
    return out


def wait_for(pred, timeout: float = 10, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := pred():
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


# -- SSH ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("r", ROUTERS, ids=lambda r: r.name)
def test_ssh_with_lab_key_and_known_hosts(lab: Lab, r: Router):
    assert sh(lab, r, "hostname; id -un").split() == [r.name, "root"]


def test_wrong_host_key_is_refused(lab: Lab, tmp_path: Path):
    # known_hosts claims the Linux router has the pfSense router's key
    pf_key = next(line.split(None, 1)[1] for line in (lab.ssh_dir / "known_hosts").read_text().splitlines()
                  if line.startswith(PFSENSE_ROUTER.mgmt_ip + " "))
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"{LINUX_ROUTER.mgmt_ip} {pf_key}\n")
    with pytest.raises(paramiko.BadHostKeyException):
        connect(lab, LINUX_ROUTER, known_hosts=wrong)


def test_unknown_host_is_refused(lab: Lab, tmp_path: Path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        connect(lab, LINUX_ROUTER, known_hosts=empty)


# -- Linux router -----------------------------------------------------------------------------------
def test_linux_router_is_debian_without_systemd_and_softflowd_unconfigured(lab: Lab):
    out = sh(lab, LINUX_ROUTER, "test -d /run/systemd/system && echo systemd; dpkg-query -W -f '${Status}' softflowd;"
                                " echo; ls /etc/softflowd; . /etc/softflowd/default.conf; echo \"if=[$interface]\";"
                                " pgrep -x softflowd || echo none")
    assert out.split("\n") == ["install ok installed", "default.conf", "if=[]", "none", ""]


def test_softflowd_by_hand_with_shim_exports_netflow_v9(lab: Lab):
    """What the pipeline does on a real Linux router: upload the shim source, build it, preload it."""
    r = LINUX_ROUTER
    client = connect(lab, r)
    try:
        sftp = client.open_sftp()
        sftp.put(str(SHIM_SRC), "/tmp/pcap_immediate.c")
        sftp.close()
    finally:
        client.close()
    sh(lab, r, "mkdir -p /usr/local/lib && cc -shared -fPIC -O2 -o /usr/local/lib/libpcap-immediate.so "
               "/tmp/pcap_immediate.c -ldl")
    s = netflow_socket()
    port = s.getsockname()[1]
    try:
        sh(lab, r, f"mkdir -p /run/softflowd/chroot && LD_PRELOAD=/usr/local/lib/libpcap-immediate.so "
                   f"softflowd -i {r.lan_if} -n {NODE_IP}:{port} -v 9 -t expint=1 -t maxlife=5 "
                   f"-p /run/test-byhand.pid -c /run/test-byhand.ctl")
        data, after = first_datagram(s, r.mgmt_ip, timeout=15)
        assert int.from_bytes(data[:2], "big") == 9, "not NetFlow v9"
        assert after < 15
        # the lab's traffic generator: TCP, UDP and ICMP between the LAN and WAN hosts
        flows = sh(lab, r, "softflowctl -c /run/test-byhand.ctl dump-flows")
        for proto in ("proto:6", "proto:17", "proto:1 "):
            assert any(proto in line and r.lan_host in line and r.wan_host in line for line in flows.splitlines()), (
                proto, flows[-1500:])
    finally:
        sh(lab, r, "kill $(cat /run/test-byhand.pid) 2>/dev/null; rm -f /run/test-byhand.pid", check=False)
        s.close()


def test_debian_softflowd_instance_without_systemd_survives_reboot(lab: Lab):
    """The pipeline's no-systemd path (router.py docstring): conf file + start-stop-daemon; the
    instance comes back after a reboot. Also pins Debian 12's broken init script (--pid_file)."""
    r = LINUX_ROUTER
    s = netflow_socket()
    port = s.getsockname()[1]
    conf = (f"interface='{r.lan_if}'\noptions='-n {NODE_IP}:{port} -v 9 -t expint=1 -t tcp.fin=1 -t maxlife=5'\n"
            "export LD_PRELOAD=/usr/local/lib/libpcap-immediate.so\n")
    pid = "/run/softflowd/labtest.pid"
    try:
        client = connect(lab, r)
        with client.open_sftp() as sftp:
            sftp.put(str(lab.cache / "lib" / "libpcap-immediate.so"), "/usr/local/lib/libpcap-immediate.so")
            with sftp.open("/etc/softflowd/labtest.conf", "w") as f:
                f.write(conf)
        client.close()
        out = sh(lab, r, "/etc/init.d/softflowd restart labtest 2>&1")
        assert "unrecognized option '--pid_file'" in out and "failed!" in out
        assert not softflowd_cmdlines(r)
        sh(lab, r, f"start-stop-daemon --stop --quiet --oknodo --retry TERM/5/KILL/2 --pidfile {pid} "
                   f"--exec /usr/sbin/softflowd; mkdir -p /run/softflowd/chroot; "
                   f"( . /etc/softflowd/labtest.conf; start-stop-daemon --start --quiet --pidfile {pid} "
                   f"--exec /usr/sbin/softflowd -- -i \"$interface\" -p {pid} "
                   f"-c /run/softflowd/labtest.ctl $options )")
        argv = wait_for(lambda: softflowd_cmdlines(r), what="softflowd instance")[0]
        assert argv[:5] == ["/usr/sbin/softflowd", "-i", r.lan_if, "-p", pid]
        first_datagram(s, r.mgmt_ip, timeout=15)
        took = router_mod.reboot_router(lab, r)
        assert took < 15
        assert softflowd_cmdlines(r), "softflowd instance not started again at boot"
        first_datagram(s, r.mgmt_ip, timeout=15)
    finally:
        sh(lab, r, f"start-stop-daemon --stop --quiet --oknodo --pidfile {pid} --exec /usr/sbin/softflowd;"
                   " rm -f /etc/softflowd/labtest.conf", check=False)
        s.close()


# -- pfSense router ---------------------------------------------------------------------------------
PF_SETTINGS = {"enable": "enabled", "interface": "lan", "host": NODE_IP, "version": "9",
               "timeout-expint": "1", "timeout-tcp-fin": "1", "timeout-maxlife": "5"}


def _pf_configure(lab: Lab, settings: dict[str, str]) -> str:
    base = "$config['installedpackages']['softflowd']['config'][0]"
    php = "require_once('/usr/local/pkg/softflowd.inc'); global $config; "
    php += " ".join(f"{base}['{k}'] = '{v}';" for k, v in settings.items())
    php += " write_config('netviz test: softflowd settings'); sync_package_softflowd();"
    return sh(lab, PFSENSE_ROUTER, f'php -r "{php.replace("$", chr(92) + "$")}"')


def test_pfsense_install_config_and_svc_run_real_softflowd(lab: Lab):
    r = PFSENSE_ROUTER
    out = sh(lab, r, "pfSsh.php playback installpkg softflowd; pkg info -e pfSense-pkg-softflowd && echo installed")
    assert 'Installing package "softflowd"... Done.' in out and "installed" in out
    s = netflow_socket()
    port = s.getsockname()[1]
    try:
        _pf_configure(lab, {**PF_SETTINGS, "port": str(port)})
        rc = sh(lab, r, "cat /usr/local/etc/rc.d/softflowd.sh")
        assert "/usr/local/bin/softflowd  -i '1:vtnet1' -n '%s:%d' -v '9'" % (NODE_IP, port) in rc
        sh(lab, r, "pfSsh.php playback svc restart softflowd")
        wait_for(lambda: "is running" in sh(lab, r, "pfSsh.php playback svc status softflowd"), what="svc status")
        argv = wait_for(lambda: softflowd_cmdlines(r), what="softflowd on the pfSense router")[0]
        # softflowd splits "1:vtnet1" in place, so /proc shows "-i 1 vtnet1"
        assert argv[0] == "/usr/local/bin/softflowd"
        joined = " ".join(argv)
        for flag in ("-i 1", "vtnet1", f"-n {NODE_IP}:{port}", "-v 9", "-t maxlife=5", "-t expint=1",
                     "-t tcp.fin=1", "-p /var/run/softflowd.vtnet1.pid", "-c /var/run/softflowd.vtnet1.ctl"):
            assert flag in joined, (flag, joined)
        assert "Service softflowd is running." in sh(lab, r, "pfSsh.php playback svc status softflowd")
        data, _ = first_datagram(s, r.mgmt_ip, timeout=15)
        assert int.from_bytes(data[:2], "big") == 9
        sh(lab, r, "pfSsh.php playback svc stop softflowd")
        wait_for(lambda: not softflowd_cmdlines(r), what="softflowd stopped")
        assert "Service softflowd is stopped." in sh(lab, r, "pfSsh.php playback svc status softflowd")
    finally:
        s.close()


def test_pfsense_rc_conf_is_deleted_and_enabled_package_starts_at_boot(lab: Lab):
    r = PFSENSE_ROUTER
    sh(lab, r, "pfSsh.php playback installpkg softflowd")
    s = netflow_socket()
    try:
        _pf_configure(lab, {**PF_SETTINGS, "port": str(s.getsockname()[1])})
        sh(lab, r, "echo 'softflowd_enable=\"YES\"' > /etc/rc.conf")
        router_mod.reboot_router(lab, r)
        assert sh(lab, r, "test -e /etc/rc.conf && echo present || echo absent").strip() == "absent"
        wait_for(lambda: softflowd_cmdlines(r), what="softflowd started at boot from config.xml")
        first_datagram(s, r.mgmt_ip, timeout=15)
    finally:
        _pf_configure(lab, {"enable": "off"})  # sync stops it and removes the rc script
        s.close()
    wait_for(lambda: not softflowd_cmdlines(r), what="softflowd stopped after disabling")
    assert "absent" in sh(lab, r, "test -e /usr/local/etc/rc.d/softflowd.sh && echo present || echo absent")
