"""Lab component: the two routers the pipeline configures over SSH (topology.ROUTERS).

Network (per router, addresses from topology.py; IPv6 off everywhere, its link-local chatter would
show up as flows):

    host <host_if> ---- mgmt0 [router ns, ip_forward=1] <lan_if> ---- eth0 [lan ns]
                                                        <wan_if> ---- eth0 [wan ns]

lan/wan hosts route only 198.18.0.0/15 via their router (no default route). Each router routes
198.18.0.0/15 via the host end of its management link (so the pfSense router, whose management link
is 198.18.5.0/24, reaches NODE_IP 198.18.0.1 to export NetFlow); the host routes each router's
lan/wan subnets via its mgmt_ip.

Each router is a small "machine" booted by netviz_lab/shipped/routerinit.py (own mount, PID and UTS
namespaces, a chroot whose writable parts all live under lab.root/routers/<name>, see that module).
Its lab Service is that init; sshd (OpenSSH, key-only, root by key, no PAM, on mgmt_ip:22) is the
router's daemon; the boot also starts softflowd from persisted configuration. `reboot_router()` is a
hard power cycle (everything in the router killed, then booted again from its files).

What is on each router
----------------------
Linux router `nvz-router` ("Debian 12 without systemd", the lab's sysvinit-style machine):
- Debian's softflowd 1.1.0 installed, not configured, not running. `/etc/softflowd/` is
  `/etc/netns/nvz-router/softflowd/` on the host (bound by `ip netns exec`) and starts with the
  package's `default.conf` (empty interface = ignored instance).
- `/run/systemd/system` does not exist (no systemd); `/usr/bin/systemctl` exists but cannot work, as
  on any Debian booted without systemd.
- Trap (real, Debian 12): `/etc/init.d/softflowd` passes `--pid_file` to start-stop-daemon, which
  only knows `--pidfile`: on a sysvinit Debian 12 it starts nothing ("...: <inst> failed!", exit 0
  for restart). So the router's boot uses netviz_lab/shipped/softflowd-boot.sh (installed as
  /usr/local/libexec/netviz-lab/softflowd-boot), which does what that script means to do (= the
  systemd unit's ExecStart) for every `/etc/softflowd/<inst>.conf`, then runs /etc/rc.local if
  executable. Instances therefore come back after `reboot_router` from their conf file, as
  `systemctl enable softflowd@<inst>` would make them.
- What the pipeline runs over SSH to (re)start instance <inst> without systemd, after writing
  `/etc/softflowd/<inst>.conf` (`interface='lan0'`, `options='-n 198.18.0.1:32055 -v 9 ...'`, and
  `export LD_PRELOAD=/usr/local/lib/libpcap-immediate.so` to preload the immediate-mode shim — the
  file is sourced as shell here; under systemd it is read as an EnvironmentFile instead, so on a
  systemd router prefer a unit drop-in `Environment=LD_PRELOAD=...`):
      start-stop-daemon --stop --quiet --oknodo --retry TERM/5/KILL/2 \
          --pidfile /run/softflowd/<inst>.pid --exec /usr/sbin/softflowd
      mkdir -p /run/softflowd/chroot      # softflowd chroots there (privsep); tmpfiles.d makes it
                                          # under systemd, nothing does without it
      ( . /etc/softflowd/<inst>.conf; start-stop-daemon --start --quiet \
          --pidfile /run/softflowd/<inst>.pid --exec /usr/sbin/softflowd -- -i "$interface" \
          -p /run/softflowd/<inst>.pid -c /run/softflowd/<inst>.ctl $options )
  Detect the init system with `test -d /run/systemd/system` (not by the presence of systemctl).
  Check: `softflowctl -c /run/softflowd/<inst>.ctl statistics`. A softflowd already running with
  the same pid file makes a new one exit at once (it checks the pid in its pid file).
- Writable: /etc (overlay), /usr/local (overlay; e.g. the shim), /root, /tmp, /var, /run. gcc (`cc`)
  and libpcap headers are available to build the shim on the router. `/usr` is read-only.

pfSense router `nvz-pfsense`: see netviz_lab/shipped/pfsense/__init__.py (command surface reproduced).

What runs inside the routers' and LAN/WAN hosts' namespaces comes from netviz_lab/shipped/ (stdlib-only
programs: the init, the pfSense emulation, the softflowd boot script, the traffic generator); this
module only prepares their files and starts them.

Management access: client key `lab.ssh_dir/id_ed25519` (one key for both routers) and
`lab.ssh_dir/known_hosts` with both routers' ed25519 host keys (`198.18.0.2 ssh-ed25519 ...`).
"""
from __future__ import annotations

import ipaddress
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

from . import shipped
from .lab import Lab
from .proc import LabError, kill_netns_processes, netns_exists, pid_alive, run
from .supervisor import Service
from .topology import DEMO_WEB_CLUSTER_IP, DEMO_WEB_PORT, LAB_RANGE, ROUTERS, Router

HERE = Path(__file__).resolve().parent
ROUTERINIT = shipped.ROUTERINIT
PFSENSE_EMU = shipped.PFSENSE_EMU
SOFTFLOWD_BOOT = shipped.SOFTFLOWD_BOOT
TRAFFIC = shipped.TRAFFIC
SYSTEM_PYTHON = "/usr/bin/python3"  # stdlib only; the router's chroot has no venv
NETNS_ETC = Path("/etc/netns")
TRAFFIC_TCP_PORT = 8080
TRAFFIC_UDP_PORT = 9999
PF_EMU_DIR = "/usr/local/libexec/netviz-pfsense"  # inside the pfSense router
LINUX_BOOT = "/usr/local/libexec/netviz-lab/softflowd-boot"  # inside the Linux router


# -- paths ------------------------------------------------------------------------------------------
def router_dir(lab: Lab, r: Router) -> Path:
    return lab.root / "routers" / r.name


def rootfs(lab: Lab, r: Router) -> Path:
    """The router's `/` as seen from the host (persistent parts only; system dirs are mounts)."""
    return router_dir(lab, r) / "rootfs"


def etc_upper(lab: Lab, r: Router) -> Path:
    """Files written to the router's /etc (overlay upper dir)."""
    return router_dir(lab, r) / "upper" / "etc"


def shim_path(lab: Lab) -> Path:
    return lab.cache / "lib" / "libpcap-immediate.so"


def _subnet(ip: str, prefix: int) -> str:
    return str(ipaddress.ip_interface(f"{ip}/{prefix}").network)


# -- setup ------------------------------------------------------------------------------------------
def setup(lab: Lab) -> None:
    lab.root.mkdir(parents=True, exist_ok=True)
    lab.root.chmod(0o755)  # sshd StrictModes: keys must sit below root-owned 0755 directories
    lab.logs.mkdir(parents=True, exist_ok=True)
    build_shim(lab)
    _client_key(lab)
    for r in ROUTERS:
        _teardown_net(r)
        _setup_net(r)
        _setup_files(lab, r)
    _known_hosts(lab)


def build_shim(lab: Lab) -> Path:
    env = {**os.environ, "NETVIZ_LAB_CACHE": str(lab.cache)}
    subprocess.run(["sh", str(HERE / "build-shim.sh")], env=env, check=True, capture_output=True)
    return shim_path(lab)


def _sysctls(netns: str, forward: bool) -> None:
    cmds = ["echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6",
            "echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6",
            f"echo {int(forward)} > /proc/sys/net/ipv4/ip_forward"]
    run(["sh", "-c", " && ".join(cmds)], netns=netns)


def _setup_net(r: Router) -> None:
    for ns in (r.name, r.lan_ns, r.wan_ns):
        run(["ip", "netns", "add", ns])
        _sysctls(ns, forward=(ns == r.name))
    p = r.prefix
    run(["ip", "link", "add", r.host_if, "type", "veth", "peer", "name", "mgmt0", "netns", r.name])
    Path(f"/proc/sys/net/ipv6/conf/{r.host_if}/disable_ipv6").write_text("1\n")
    run(["ip", "-n", r.name, "link", "add", r.lan_if, "type", "veth", "peer", "name", "eth0", "netns", r.lan_ns])
    run(["ip", "-n", r.name, "link", "add", r.wan_if, "type", "veth", "peer", "name", "eth0", "netns", r.wan_ns])
    run(["ip", "addr", "add", f"{r.host_ip}/{p}", "dev", r.host_if])
    run(["ip", "link", "set", r.host_if, "up"])
    for ns, dev, ip in ((r.name, "mgmt0", r.mgmt_ip), (r.name, r.lan_if, r.lan_gw), (r.name, r.wan_if, r.wan_gw),
                        (r.lan_ns, "eth0", r.lan_host), (r.wan_ns, "eth0", r.wan_host)):
        run(["ip", "-n", ns, "addr", "add", f"{ip}/{p}", "dev", dev])
        run(["ip", "-n", ns, "link", "set", dev, "up"])
    run(["ip", "-n", r.lan_ns, "addr", "add", f"{r.canary_host}/{p}", "dev", "eth0"])
    for ns in (r.name, r.lan_ns, r.wan_ns):
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        # `all` again: applies to the devices that now exist, whatever they inherited when created.
        run(["sh", "-c", "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6"], netns=ns)
    run(["ip", "-n", r.name, "route", "add", LAB_RANGE, "via", r.host_ip])
    run(["ip", "-n", r.lan_ns, "route", "add", LAB_RANGE, "via", r.lan_gw])
    run(["ip", "-n", r.wan_ns, "route", "add", LAB_RANGE, "via", r.wan_gw])
    for net in (_subnet(r.lan_gw, p), _subnet(r.wan_gw, p)):
        run(["ip", "route", "replace", net, "via", r.mgmt_ip, "dev", r.host_if])


def _mkdir(path: Path, mode: int = 0o755) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(mode)
    return path


def _symlink(path: Path, target: str) -> None:
    if not path.is_symlink():
        path.symlink_to(target)


def _setup_files(lab: Lab, r: Router) -> None:
    d = router_dir(lab, r)
    for p in (lab.root / "routers", d, d / "upper", d / "work"):
        _mkdir(p)
    root = _mkdir(rootfs(lab, r))
    for sub in ("usr", "etc", "dev", "sys", "proc", "run", "var", "var/log", "var/lib", "var/db", "var/empty"):
        _mkdir(root / sub)
    _mkdir(root / "tmp", 0o1777)
    _mkdir(root / "var/tmp", 0o1777)
    _mkdir(root / "root", 0o700)
    for name in ("bin", "sbin", "lib", "lib64"):
        _symlink(root / name, f"usr/{name}")
    _symlink(root / "var/run", "../run")
    upper = _mkdir(etc_upper(lab, r))
    _mkdir(d / "work" / "etc")
    if r.platform == "pfsense":
        _hide_debian(upper)
    _sshd_files(lab, r, upper)
    mounts: list[dict] = [{"type": "bind", "src": "/usr", "dst": "/usr", "ro": True}]
    if r.platform == "linux":
        _mkdir(d / "upper" / "usr_local")
        _mkdir(d / "work" / "usr_local")
        mounts.append({"type": "overlay", "dst": "/usr/local", "lower": "/usr/local",
                       "upper": str(d / "upper" / "usr_local"), "work": str(d / "work" / "usr_local")})
    else:
        mounts.append({"type": "bind", "src": str(_pfsense_files(lab, r)), "dst": "/usr/local"})
    mounts.append({"type": "overlay", "dst": "/etc", "lower": "/etc", "upper": str(upper),
                   "work": str(d / "work" / "etc")})
    if r.platform == "linux":
        netns_etc = _linux_netns_etc(r)
        for entry in sorted(os.listdir(netns_etc)):  # what `ip netns exec` binds, re-bound in the chroot
            mounts.append({"type": "bind", "src": str(netns_etc / entry), "dst": f"/etc/{entry}"})
        _mkdir(root / "var/lib/dpkg")
        mounts.append({"type": "bind", "src": "/var/lib/dpkg", "dst": "/var/lib/dpkg", "ro": True})
        boot = [[_linux_boot_script(d)]]
    else:
        boot = [[f"{PF_EMU_DIR}/pfsense_emu.py", "boot"]]
    mounts += [{"type": "rbind", "src": "/dev", "dst": "/dev"},
               {"type": "bind", "src": "/sys", "dst": "/sys"},
               {"type": "proc", "dst": "/proc"}]
    daemons = [["/usr/sbin/sshd", "-D", "-e", "-f", "/etc/ssh/sshd_config"]]
    if r.platform == "linux":
        daemons.append(dnsmasq_argv(r))
    spec = {
        "name": r.name, "hostname": r.name, "rootfs": str(root), "mounts": mounts,
        "clear": ["/run", "/tmp"], "mkdirs": ["/run/sshd", "/var/lib/misc"],
        "daemons": daemons, "boot": boot, "state_file": str(d / "init.json"),
    }
    (d / "spec.json").write_text(json.dumps(spec, indent=2))


def dnsmasq_argv(r: Router) -> list[str]:
    """The Linux router's LAN DHCP server (DHCP only: no DNS), its leases where Debian keeps them
    (/var/lib/misc/dnsmasq.leases, persisted across reboots like a real disk). --no-ping: the LAN host
    already holds its static address and asks for it; dnsmasq would otherwise refuse an address that
    answers a ping."""
    net = ipaddress.ip_network(f"{r.lan_gw}/{r.prefix}", strict=False)
    first = ipaddress.ip_address(r.lan_host)
    return ["/usr/sbin/dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--port=0", f"--interface={r.lan_if}",
            "--bind-interfaces", f"--dhcp-range={first},{first + 9},{net.netmask},12h",
            "--dhcp-leasefile=/var/lib/misc/dnsmasq.leases", "--no-ping", "--pid-file=", "--log-facility=-"]


def dhcp_client_service(r: Router) -> Service:
    """The LAN host's DHCP client: real DHCP to the router's dnsmasq, sending its host name, keeping
    its lease renewed. `-s /bin/true`: the lease changes nothing on the host (it keeps its static
    address, which it requests)."""
    return Service(name=f"dhcp-{r.name}-lan-host", netns=r.lan_ns,
                   argv=["busybox", "udhcpc", "-f", "-i", "eth0", "-r", r.lan_host, "-x", f"hostname:{r.lan_host_name}",
                         "-s", "/bin/true", "-t", "5", "-T", "2", "-A", "5"])


def _linux_boot_script(d: Path) -> str:
    """softflowd-boot.sh into the Linux router's /usr/local (overlay upper); returns its router path."""
    dst = _mkdir(d / "upper" / "usr_local" / "libexec" / "netviz-lab") / "softflowd-boot"
    shutil.copy2(SOFTFLOWD_BOOT, dst)
    dst.chmod(0o755)
    return LINUX_BOOT


def _hide_debian(upper: Path) -> None:
    """Overlay whiteouts: the pfSense box has no Debian softflowd config, init script or os-release."""
    for hide in ("softflowd", "init.d/softflowd", "os-release", "debian_version"):
        p = upper / hide
        if not os.path.lexists(p):
            p.parent.mkdir(parents=True, exist_ok=True)
            os.mknod(p, 0o600 | stat.S_IFCHR, os.makedev(0, 0))


def _linux_netns_etc(r: Router) -> Path:
    """/etc/netns/<router>/softflowd: the router's /etc/softflowd, seeded with Debian's default.conf."""
    etc = _mkdir(NETNS_ETC / r.name)
    sfd = _mkdir(etc / "softflowd")
    default = Path("/etc/softflowd/default.conf")
    if default.exists() and not (sfd / "default.conf").exists():
        shutil.copy2(default, sfd / "default.conf")
    return etc


def _sshd_files(lab: Lab, r: Router, upper: Path) -> None:
    ssh = _mkdir(upper / "ssh")
    key = ssh / "ssh_host_ed25519_key"
    if not key.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{r.name}", "-f", str(key)])
    key.chmod(0o600)
    (ssh / "sshd_config").write_text(f"""\
# netviz-lab router sshd (generated by netviz_lab/router.py); key-only, root by key, no PAM.
ListenAddress {r.mgmt_ip}:22
HostKey /etc/ssh/ssh_host_ed25519_key
PidFile /run/sshd.pid
PermitRootLogin prohibit-password
PubkeyAuthentication yes
AuthorizedKeysFile .ssh/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes yes
UseDNS no
PrintMotd no
X11Forwarding no
MaxStartups 50:30:100
Subsystem sftp internal-sftp
""")
    dot_ssh = _mkdir(rootfs(lab, r) / "root" / ".ssh", 0o700)
    auth = dot_ssh / "authorized_keys"
    auth.write_text((lab.ssh_dir / "id_ed25519.pub").read_text())
    auth.chmod(0o600)


def _client_key(lab: Lab) -> None:
    _mkdir(lab.ssh_dir, 0o700)
    key = lab.ssh_dir / "id_ed25519"
    if not key.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "netviz-lab", "-f", str(key)])


def _known_hosts(lab: Lab) -> None:
    lines = []
    for r in ROUTERS:
        pub = (etc_upper(lab, r) / "ssh" / "ssh_host_ed25519_key.pub").read_text().split()
        lines.append(f"{r.mgmt_ip} {pub[0]} {pub[1]}\n")
    (lab.ssh_dir / "known_hosts").write_text("".join(lines))


def _pfsense_files(lab: Lab, r: Router) -> Path:
    """The pfSense router's /usr/local (emulation scripts) plus /cf/conf/config.xml and /etc bits."""
    d = router_dir(lab, r)
    usr_local = _mkdir(d / "usr_local")
    for sub in ("bin", "sbin", "lib", "etc", "etc/rc.d", "pkg", "share", "libexec"):
        _mkdir(usr_local / sub)
    emu = _mkdir(usr_local / "libexec" / "netviz-pfsense")
    shutil.copy2(PFSENSE_EMU, emu / "pfsense_emu.py")
    (emu / "pfsense_emu.py").chmod(0o755)
    shutil.copy2(shim_path(lab), emu / "libpcap-immediate.so")
    for link in ("sbin/pfSsh.php", "sbin/pkg", "sbin/pfSense-upgrade", "bin/php"):
        _symlink(usr_local / link, "/usr/local/libexec/netviz-pfsense/pfsense_emu.py")
    env = {**os.environ, "NETVIZ_PFSENSE_ROOT": str(rootfs(lab, r)), "NETVIZ_PFSENSE_ETC": str(etc_upper(lab, r)),
           "NETVIZ_PFSENSE_USR_LOCAL": str(usr_local)}
    subprocess.run([SYSTEM_PYTHON, str(PFSENSE_EMU), "factory-setup", "--hostname", r.name,
                    "--wan-if", r.wan_if, "--wan-ip", r.wan_gw, "--lan-if", r.lan_if, "--lan-ip", r.lan_gw,
                    "--prefix", str(r.prefix), "--lan-host-ip", r.lan_host, "--lan-host-name", r.lan_host_name],
                   env=env, check=True)
    _symlink(rootfs(lab, r) / "conf", "cf/conf")
    return usr_local


# -- services ---------------------------------------------------------------------------------------
def _tcp_open(ip: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=timeout):
            return True
    except OSError:
        return False


def init_state(lab: Lab, r: Router) -> dict:
    try:
        return json.loads((router_dir(lab, r) / "init.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def booted(lab: Lab, r: Router) -> bool:
    """The router's current boot finished (boot commands ran) and sshd accepts connections."""
    gen = init_state(lab, r).get("generation")
    try:
        marker = int((rootfs(lab, r) / "run" / "netviz-booted").read_text())
    except (FileNotFoundError, ValueError):
        return False
    return gen == marker and _tcp_open(r.mgmt_ip, 22)


def router_service(lab: Lab, r: Router) -> Service:
    return Service(name=f"router-{r.name}", argv=[SYSTEM_PYTHON, str(ROUTERINIT), str(router_dir(lab, r) / "spec.json")],
                   netns=r.name, ready=lambda: booted(lab, r), ready_timeout=30)


def traffic_pause_file(lab: Lab, r: Router) -> Path:
    """While this file exists the router's LAN client sends nothing: a quiet link (`netviz_lab traffic`)."""
    return lab.root / "traffic" / f"{r.name}.paused"


def set_traffic(lab: Lab, r: Router, paused: bool) -> None:
    path = traffic_pause_file(lab, r)
    if paused:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    else:
        path.unlink(missing_ok=True)


def traffic_services(lab: Lab, r: Router) -> list[Service]:
    mod = [sys.executable, str(TRAFFIC)]  # stdlib only: run as a file, the package need not be importable
    ports = ["--tcp-port", str(TRAFFIC_TCP_PORT), "--udp-port", str(TRAFFIC_UDP_PORT)]
    return [
        Service(name=f"traffic-{r.name}-server", argv=[*mod, "server", "--bind", r.wan_host, *ports],
                netns=r.wan_ns, ready=lambda: _tcp_open(r.wan_host, TRAFFIC_TCP_PORT), ready_timeout=15),
        # also to the demo web Service (routed to a node, topology.py): LAN host -> Service flows
        Service(name=f"traffic-{r.name}-client", argv=[*mod, "client", "--server", r.wan_host, *ports,
                                                       "--also-tcp", f"{DEMO_WEB_CLUSTER_IP}:{DEMO_WEB_PORT}",
                                                       "--pause-file", str(traffic_pause_file(lab, r))],
                netns=r.lan_ns),
    ]


def services(lab: Lab) -> list[Service]:
    out = [router_service(lab, r) for r in ROUTERS]
    for r in ROUTERS:
        out += traffic_services(lab, r)
        if r.platform == "linux":
            out.append(dhcp_client_service(r))
    return out


# -- operations -------------------------------------------------------------------------------------
def router_by_name(name: str) -> Router:
    for r in ROUTERS:
        if r.name == name:
            return r
    raise LabError(f"no router {name}")


def reboot_router(lab: Lab, router: Router | str, timeout: float = 30, down_seconds: float = 0) -> float:
    """Power-cycle a router: kill every process in its netns, keep it off `down_seconds` (a real router
    takes a while to boot), boot it again from its persisted files.

    Needs the router's init (its lab Service) running. Returns the seconds until it was booted again.
    """
    r = router_by_name(router) if isinstance(router, str) else router
    st = init_state(lab, r)
    outer = st.get("outer")
    if not outer or not pid_alive(outer):
        raise LabError(f"{r.name}: router init is not running (is the lab up?)")
    if down_seconds:
        (router_dir(lab, r) / "init.json.poweroff").write_text(f"{down_seconds}\n")  # read by routerinit
        timeout += down_seconds
    t0 = time.monotonic()
    keep = {outer, st.get("intermediate")}
    router_pidns = _pidns(st.get("pid1", 0))
    # Processes started in the netns from outside the router (e.g. `ip netns exec` by a test) die too.
    # The router's own processes are left to the reboot: killing its PID 1 here would race the SIGHUP
    # (routerinit would take it for a crash and exit instead of booting again).
    for pid in _netns_pids(r.name):
        if pid not in keep and (router_pidns is None or _pidns(pid) != router_pidns):
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
    os.kill(outer, 1)  # SIGHUP: routerinit SIGKILLs the router's PID 1 and boots it again
    deadline = t0 + timeout
    while time.monotonic() < deadline:
        if init_state(lab, r).get("generation", 0) > st.get("generation", 0) and booted(lab, r):
            return time.monotonic() - t0
        time.sleep(0.1)
    raise LabError(f"{r.name} did not come back within {timeout:.0f}s; see {lab.log(f'router-{r.name}')}")


def router_pids(r: Router) -> list[int]:
    """Host PIDs of every process in the router's netns (router processes and anything exec'd in)."""
    return _netns_pids(r.name)


def _netns_pids(netns: str) -> list[int]:
    res = run(["ip", "netns", "pids", netns], check=False)
    return [int(t) for t in res.stdout.split() if t.isdigit()]


def _pidns(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid") if pid else None
    except OSError:
        return None


# -- teardown ---------------------------------------------------------------------------------------
def _teardown_net(r: Router) -> None:
    names = (r.name, r.lan_ns, r.wan_ns)
    for ns in names:
        if netns_exists(ns):
            kill_netns_processes(ns)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and any(netns_exists(ns) and _netns_pids(ns) for ns in names):
        time.sleep(0.05)
    for ns in names:
        if netns_exists(ns):
            run(["ip", "netns", "del", ns], check=False)
    run(["ip", "link", "del", r.host_if], check=False)


def teardown(lab: Lab) -> None:
    for r in ROUTERS:
        _teardown_net(r)
        for ns in (r.name, r.lan_ns, r.wan_ns):
            shutil.rmtree(NETNS_ETC / ns, ignore_errors=True)
    try:
        NETNS_ETC.rmdir()  # only if empty: someone else may use /etc/netns
    except OSError:
        pass
    # Mounts of a router exist only in its private mount namespace (gone with its processes), so the
    # host sees plain directories here: removing them cannot reach /usr or /etc. Check anyway.
    routers = lab.root / "routers"
    if any(line.split()[4].startswith(str(routers)) for line in Path("/proc/self/mountinfo").read_text().splitlines()):
        raise LabError(f"something is mounted under {routers} in the host namespace; not removing it")
    shutil.rmtree(routers, ignore_errors=True)
    shutil.rmtree(lab.root / "traffic", ignore_errors=True)
    shutil.rmtree(lab.ssh_dir, ignore_errors=True)
