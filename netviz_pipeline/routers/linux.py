"""Debian routers: Debian's softflowd package, one instance `netviz` in /etc/softflowd/netviz.conf.

Why the shim: Debian's softflowd 1.1.0 with libpcap >= 1.10 opens the capture with a zero timeout,
and libpcap's TPACKET_V3 ring then hands packets over only when a ring block fills, so a quiet LAN
exports nothing for a long time. No released softflowd enables immediate mode (irino/softflowd PR
#71 is still open), so for softflowd <= 1.1.1 with libpcap >= 1.10 we build
router_assets/pcap_immediate.c on the router and preload it into our instance only:
- sysvinit (/etc/init.d/softflowd sources the conf right before start-stop-daemon): an
  `export LD_PRELOAD=...` line in netviz.conf;
- systemd (the conf is an EnvironmentFile, not shell): a drop-in with Environment=LD_PRELOAD=...
Both persist across reboots with the conf. Without a compiler on the router the export is still
configured and the outcome carries a warning saying exactly what to install.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from ..render.softflowd import Command, checked, checked_path, options
from ..resources.router import Result
from .common import FlowExportStatus, RouterOutcome, Session, parse_ip_addr, upstream_version
from .hostnames import NameSource
from .platform import Instance, Marker, SoftflowdPlatform

if TYPE_CHECKING:
    from ..settings import Router, Settings

INSTANCE = "netviz"
DEBIAN_CONF = f"/etc/softflowd/{INSTANCE}.conf"
DEBIAN_CTL = f"/run/softflowd/{INSTANCE}.ctl"
DEBIAN_PID = f"/run/softflowd/{INSTANCE}.pid"
# The libpcap immediate-mode shim (router_assets/pcap_immediate.c), built on the router.
SHIM_DIR = "/usr/local/lib/netviz"
SHIM_SO = f"{SHIM_DIR}/libpcap-immediate.so"
SHIM_SRC = f"{SHIM_DIR}/pcap_immediate.c"
SHIM_STAMP = f"{SHIM_SO}.sha256"
SYSTEMD_DROPIN = f"/etc/systemd/system/softflowd@{INSTANCE}.service.d/netviz-pcap-immediate.conf"
SHIM_SOURCE = Path(__file__).resolve().parent.parent / "router_assets" / "pcap_immediate.c"
LAST_RELEASE_WITHOUT_FIX = (1, 1, 1)
_PKGS = ("softflowd", "libpcap0.8", "libpcap0.8t64")


# -- desired state (pure) ----------------------------------------------------------------------
def debian_conf(s: Settings, r: Router, ld_preload: str | None = None) -> str:
    """Content of /etc/softflowd/netviz.conf (sourced as shell by the package's sysvinit script, an
    EnvironmentFile for its systemd unit). `ld_preload`: an `export LD_PRELOAD=` line for the
    sysvinit script, which sources this file right before starting the daemon (under systemd use
    systemd_dropin() instead: an EnvironmentFile is not shell)."""
    text = ("# managed by netviz-pipeline; changes are overwritten\n"
            f"interface='{checked(r.interface)}'\n"
            f"options='{checked(' '.join(options(s, r)))}'\n")
    if ld_preload:
        text += ("# libpcap >= 1.10 trap: preload the immediate-mode shim (see pcap_immediate.c)\n"
                 f"export LD_PRELOAD='{checked_path(ld_preload)}'\n")
    return text


def systemd_dropin(ld_preload: str) -> str:
    """Drop-in for softflowd@netviz.service that preloads the shim (Debian with systemd)."""
    return ("# managed by netviz-pipeline: libpcap immediate-mode shim (see pcap_immediate.c)\n"
            f"[Service]\nEnvironment=LD_PRELOAD={checked_path(ld_preload)}\n")


def linux_commands() -> dict[str, Command]:
    # Only our instance: the user's other /etc/softflowd/*.conf instances are left running. Without
    # systemd, not /etc/init.d/softflowd: Debian 12's script passes `--pid_file` to start-stop-daemon
    # (which only knows --pidfile) and starts nothing; this does what it means to (= the unit's
    # ExecStart), sourcing our conf as that script does (so `export LD_PRELOAD=` applies).
    pid, ctl, conf = DEBIAN_PID, DEBIAN_CTL, DEBIAN_CONF
    sysv = (f"start-stop-daemon --stop --quiet --oknodo --retry TERM/5/KILL/2 --pidfile {pid} "
            f"--exec /usr/sbin/softflowd; mkdir -p /run/softflowd/chroot/etc && "
            f"{{ [ -e /run/softflowd/chroot/etc/protocols ] || cp -p /etc/protocols /run/softflowd/chroot/etc/; }} && "
            f"( interface=; options=; . {conf}; [ -n \"$interface\" ] && exec start-stop-daemon --start --quiet "
            f"--pidfile {pid} --exec /usr/sbin/softflowd -- -i \"$interface\" -p {pid} -c {ctl} $options )")
    restart = (f"if [ -d /run/systemd/system ]; then systemctl daemon-reload && systemctl enable "
               f"softflowd@{INSTANCE} && systemctl restart softflowd@{INSTANCE}; else {sysv}; fi")
    return {
        "installed": Command(("dpkg-query", "-W", "-f=${Status}", "softflowd"), "is the package installed"),
        "install": Command(("env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-q", "softflowd"),
                           "install Debian's softflowd"),
        "mkdir": Command(("mkdir", "-p", "/etc/softflowd", "/run/softflowd"), "config and control dirs"),
        "restart": Command(("sh", "-c", restart), "(re)start our instance with the new config"),
    }


def desired_args(s: Settings, r: Router) -> list[str]:
    """The argv the package's unit/init script runs for our conf (compared with the live process)."""
    return ["softflowd", "-i", r.interface, "-p", DEBIAN_PID, "-c", DEBIAN_CTL, *options(s, r)]


def parse_versions(out: str) -> dict[str, str]:
    """`dpkg-query -W -f='${Package} ${Version}\\n' ...` -> {package: version}."""
    found = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1]:
            found[parts[0].split(":", 1)[0]] = parts[1]
    return found


def needs_immediate_shim(softflowd_version: str | None, libpcap_version: str | None) -> bool:
    """True when the zero-timeout trap applies (unknown versions count as affected: the shim only
    turns on immediate mode, which is harmless)."""
    if softflowd_version and upstream_version(softflowd_version) > LAST_RELEASE_WITHOUT_FIX:
        return False
    return libpcap_version is None or upstream_version(libpcap_version) >= (1, 10)


# -- live router -------------------------------------------------------------------------------
def ensure_shim(session: Session) -> tuple[bool, str | None]:
    """Build the shim on the router when its source changed. Returns (built, problem)."""
    source = SHIM_SOURCE.read_text()
    digest = hashlib.sha256(source.encode()).hexdigest()
    stamp = session.read_file(SHIM_STAMP)
    if stamp is not None and stamp.strip() == digest and session.run(["test", "-s", SHIM_SO]).rc == 0:
        return False, None
    cc = session.run(["sh", "-c", "command -v cc || command -v gcc"]).out.strip().splitlines()
    header = session.run(["test", "-e", "/usr/include/pcap/pcap.h"]).rc == 0
    if not cc or not header:
        missing = " and ".join(x for x, ok in (("a C compiler (cc)", bool(cc)),
                                               ("libpcap headers (/usr/include/pcap/pcap.h)", header)) if not ok)
        return False, (f"softflowd needs the libpcap immediate-mode shim here, but the router lacks {missing}. "
                       "Fix: `apt-get install gcc libpcap-dev` on the router and run again; or build "
                       f"router_assets/pcap_immediate.c for this router (cc -shared -fPIC -O2 -o "
                       f"libpcap-immediate.so pcap_immediate.c -ldl), copy it to {SHIM_SO} and write "
                       f"{digest} into {SHIM_STAMP}. Until then a quiet LAN exports no flows.")
    session.check(["mkdir", "-p", SHIM_DIR], what="shim directory")
    session.write_file_atomic(SHIM_SRC, source)
    tmp = f"{SHIM_SO}.tmp"
    session.check([cc[0], "-shared", "-fPIC", "-O2", "-o", tmp, SHIM_SRC, "-ldl"], what="build the shim")
    session.check(["mv", "-f", tmp, SHIM_SO], what="install the shim")
    session.write_file_atomic(SHIM_STAMP, digest + "\n")
    return True, None


def _systemd(session: Session) -> bool:
    return session.run(["test", "-d", "/run/systemd/system"]).rc == 0


def _preloaded(session: Session, pid: int) -> bool:
    env = session.run(["cat", f"/proc/{int(pid)}/environ"]).out
    return f"LD_PRELOAD={SHIM_SO}" in env.split("\x00")


class Debian(SoftflowdPlatform):
    """Debian's softflowd package, our own instance. `apply` returns whether the shim must be preloaded
    (then a process without it is drift)."""

    name = "linux"
    name_sources = (NameSource("/var/lib/misc/dnsmasq.leases", "dnsmasq"),  # dnsmasq (Debian)
                    NameSource("/tmp/dhcp.leases", "dnsmasq"),  # OpenWrt's dnsmasq
                    NameSource("/var/lib/kea/kea-leases4.csv", "kea"),
                    NameSource("/var/lib/dhcp/dhcpd.leases", "isc"),
                    NameSource("/etc/hosts", "hosts"))
    title = "Debian (softflowd package)"
    list_addresses = ("ip", "-o", "addr", "show")
    parse_addresses = parse_ip_addr
    markers = (Marker("debian", "[ -e /etc/debian_version ]"), Marker("systemd", "[ -d /run/systemd/system ]"))

    def matches(self, facts: dict) -> bool:
        return facts["uname"] == "Linux" and facts["debian"]

    def why_not(self, facts: dict) -> str | None:
        if facts["uname"] == "Linux":  # only Debian: VyOS, OpenWrt and the like have their own flow accounting
            return ("Linux without /etc/debian_version is not supported (the driver uses Debian's softflowd "
                    "package); VyOS/OpenWrt have their own flow accounting")
        return None

    def instance(self, session: Session, s: Settings, r: Router) -> Instance:
        return Instance(DEBIAN_PID, desired_args(s, r), {"conf": DEBIAN_CONF})

    def process_drift(self, session: Session, st: FlowExportStatus, expect) -> list[str]:
        if not expect:  # no shim wanted (or the sensor's look, which passes none): spare the SSH command
            return []
        preloaded = _preloaded(session, st.processes[0].pid)
        st.details["shim_preloaded"] = preloaded
        return [f"LD_PRELOAD={SHIM_SO} missing from the running process"] if expect and not preloaded else []

    def install(self, session: Session, r: Router, out: RouterOutcome) -> None:
        cmds = linux_commands()
        if "install ok installed" not in session.run(cmds["installed"].argv).out:
            session.check(cmds["install"].argv, timeout=900, what="install softflowd")
            out.actions.append("installed softflowd (apt-get)")
            out.changed = True

    def apply(self, session: Session, s: Settings, r: Router, out: RouterOutcome) -> bool:
        """Shim (when this softflowd/libpcap pair needs it), conf, systemd drop-in. Returns: preload wanted."""
        res = session.run(["dpkg-query", "-W", "-f=${Package} ${Version}\\n", *_PKGS])
        versions = parse_versions(res.out)
        libpcap = versions.get("libpcap0.8t64") or versions.get("libpcap0.8")
        need_shim = needs_immediate_shim(versions.get("softflowd"), libpcap)
        systemd = _systemd(session)
        out.details.update(interface=r.interface, versions=versions, shim_needed=need_shim,
                           init="systemd" if systemd else "sysvinit")
        preload = None
        if need_shim:
            built, problem = ensure_shim(session)
            if problem:
                out.warnings.append(problem)
            else:
                preload = SHIM_SO
            if built:
                out.actions.append(f"built the libpcap immediate-mode shim at {SHIM_SO}")
                out.changed = True
        want_conf = debian_conf(s, r, ld_preload=None if systemd else preload)
        if session.read_file(DEBIAN_CONF) != want_conf:
            session.check(linux_commands()["mkdir"].argv, what="config directory")
            session.write_file_atomic(DEBIAN_CONF, want_conf)
            out.actions.append(f"wrote {DEBIAN_CONF}")
            out.changed = True
        if systemd:
            self._apply_systemd(session, preload, out)
        elif "--pid_file" in (session.read_file("/etc/init.d/softflowd") or ""):
            out.warnings.append(
                "no systemd, and /etc/init.d/softflowd is Debian 12's broken script (passes --pid_file to "
                "start-stop-daemon): it starts no instance at boot. Unless the boot starts /etc/softflowd/*.conf "
                "another way (the netviz lab does), add to /etc/rc.local: `( . /etc/softflowd/netviz.conf; "
                "mkdir -p /run/softflowd/chroot; start-stop-daemon --start --pidfile /run/softflowd/netviz.pid "
                "--exec /usr/sbin/softflowd -- -i \"$interface\" -p /run/softflowd/netviz.pid "
                "-c /run/softflowd/netviz.ctl $options )`")
        return preload is not None

    @staticmethod
    def _apply_systemd(session: Session, preload: str | None, out: RouterOutcome) -> None:
        current = session.read_file(SYSTEMD_DROPIN)
        if preload and current != systemd_dropin(preload):
            session.check(["mkdir", "-p", SYSTEMD_DROPIN.rsplit("/", 1)[0]], what="drop-in directory")
            session.write_file_atomic(SYSTEMD_DROPIN, systemd_dropin(preload))
            out.actions.append(f"wrote {SYSTEMD_DROPIN}")
            out.changed = True
        elif not preload and current is not None:
            session.check(["rm", "-f", SYSTEMD_DROPIN], what="remove drop-in")
            out.actions.append(f"removed {SYSTEMD_DROPIN}")
            out.changed = True
        if session.run(["systemctl", "is-enabled", f"softflowd@{INSTANCE}"]).out.strip() != "enabled":
            out.changed = True  # the restart enables it

    def restart_command(self, r: Router, running: bool) -> Command:
        return linux_commands()["restart"]

    def restart_action(self, r: Router, why: str, running: bool) -> str:
        return f"restarted softflowd@{INSTANCE} ({why})"

    def not_started(self, r: Router, command: Command, res: Result) -> str:
        return (f"router {r.name}: softflowd instance {INSTANCE} did not start (init said rc={res.rc}: "
                f"{(res.err or res.out).strip()[-400:]}); try `softflowd -d -i <if> ...` from {DEBIAN_CONF} "
                "on the router to see why")

    def after_restart(self, st: FlowExportStatus, expect, out: RouterOutcome) -> None:
        if expect and not st.details.get("shim_preloaded"):
            out.warnings.append(f"the restarted softflowd does not have the shim preloaded: check {DEBIAN_CONF} / "
                                "the init script")


PLATFORM = Debian()
