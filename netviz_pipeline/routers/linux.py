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

from ..render import softflowd as sf
from ..resources.router import RouterError
from ..settings import Router, Settings
from .common import (FlowExportStatus, RouterOutcome, Session, args_drift, interface_holding, parse_ip_addr,
                     parse_softflowd_args, softflowd_process, upstream_version, wait_for)

PLATFORM = "linux"
SHIM_SOURCE = Path(__file__).resolve().parent.parent / "router_assets" / "pcap_immediate.c"
LAST_RELEASE_WITHOUT_FIX = (1, 1, 1)
_PKGS = ("softflowd", "libpcap0.8", "libpcap0.8t64")


def resolve_interface(session: Session, r: Router) -> Router:
    if r.interface != "auto":
        return r
    if r.lan_address is None:
        raise RouterError(f"router {r.name}: interface auto needs lan_address on Linux")
    out = session.check(["ip", "-o", "addr", "show"], what="list addresses").out
    return r.model_copy(update={"interface": interface_holding(parse_ip_addr(out), r.lan_address, r.name)})


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


def desired_args(s: Settings, r: Router) -> list[str]:
    """The argv the package's unit/init script runs for our conf (compared with the live process)."""
    return ["softflowd", "-i", r.interface, "-p", sf.DEBIAN_PID, "-c", sf.DEBIAN_CTL, *sf.options(s, r)]


def _systemd(session: Session) -> bool:
    return session.run(["test", "-d", "/run/systemd/system"]).rc == 0


def ensure_shim(session: Session) -> tuple[bool, str | None]:
    """Build the shim on the router when its source changed. Returns (built, problem)."""
    source = SHIM_SOURCE.read_text()
    digest = hashlib.sha256(source.encode()).hexdigest()
    stamp = session.read_file(sf.SHIM_STAMP)
    if stamp is not None and stamp.strip() == digest and session.run(["test", "-s", sf.SHIM_SO]).rc == 0:
        return False, None
    cc = session.run(["sh", "-c", "command -v cc || command -v gcc"]).out.strip().splitlines()
    header = session.run(["test", "-e", "/usr/include/pcap/pcap.h"]).rc == 0
    if not cc or not header:
        missing = " and ".join(x for x, ok in (("a C compiler (cc)", bool(cc)),
                                               ("libpcap headers (/usr/include/pcap/pcap.h)", header)) if not ok)
        return False, (f"softflowd needs the libpcap immediate-mode shim here, but the router lacks {missing}. "
                       "Fix: `apt-get install gcc libpcap-dev` on the router and run again; or build "
                       f"router_assets/pcap_immediate.c for this router (cc -shared -fPIC -O2 -o "
                       f"libpcap-immediate.so pcap_immediate.c -ldl), copy it to {sf.SHIM_SO} and write "
                       f"{digest} into {sf.SHIM_STAMP}. Until then a quiet LAN exports no flows.")
    session.check(["mkdir", "-p", sf.SHIM_DIR], what="shim directory")
    session.write_file_atomic(sf.SHIM_SRC, source)
    tmp = f"{sf.SHIM_SO}.tmp"
    session.check([cc[0], "-shared", "-fPIC", "-O2", "-o", tmp, sf.SHIM_SRC, "-ldl"], what="build the shim")
    session.check(["mv", "-f", tmp, sf.SHIM_SO], what="install the shim")
    session.write_file_atomic(sf.SHIM_STAMP, digest + "\n")
    return True, None


def _preloaded(session: Session, pid: int) -> bool:
    env = session.run(["cat", f"/proc/{int(pid)}/environ"]).out
    return f"LD_PRELOAD={sf.SHIM_SO}" in env.split("\x00")


def status(session: Session, s: Settings, r: Router, *, want_preload: bool | None = None) -> FlowExportStatus:
    r = resolve_interface(session, r)
    proc = softflowd_process(session, sf.DEBIAN_PID)
    st = FlowExportStatus(router=r.name, platform=PLATFORM, running=proc is not None,
                          details={"pidfile": sf.DEBIAN_PID, "conf": sf.DEBIAN_CONF})
    if proc is None:
        return st
    parsed = parse_softflowd_args(proc.args)
    st.processes, st.interfaces, st.version = [proc], parsed["interfaces"], parsed["version"]
    st.collector = ",".join(parsed["collectors"]) or None
    st.drift = args_drift(desired_args(s, r), proc.args)
    preloaded = _preloaded(session, proc.pid)
    st.details["shim_preloaded"] = preloaded
    if want_preload and not preloaded:
        st.drift.append(f"LD_PRELOAD={sf.SHIM_SO} missing from the running process")
    return st


def restart(session: Session, s: Settings, r: Router, *, want_preload: bool | None = None) -> FlowExportStatus:
    """(Re)start only our instance, then wait until it runs with the desired flags."""
    r = resolve_interface(session, r)
    res = session.run(sf.linux_commands()["restart"].argv, timeout=120)

    def ready() -> FlowExportStatus | None:
        st = status(session, s, r, want_preload=want_preload)
        return st if st.healthy else None
    st = wait_for(ready, timeout=15) or status(session, s, r, want_preload=want_preload)
    if not st.running:
        raise RouterError(f"router {r.name}: softflowd instance {sf.INSTANCE} did not start "
                          f"(init said rc={res.rc}: {(res.err or res.out).strip()[-400:]}); try "
                          f"`softflowd -d -i <if> ...` from {sf.DEBIAN_CONF} on the router to see why")
    return st


def converge(session: Session, s: Settings, r: Router) -> RouterOutcome:
    out = RouterOutcome(router=r.name, platform=PLATFORM, changed=False, actions=[], restarted=False)
    cmds = sf.linux_commands()
    if "install ok installed" not in session.run(cmds["installed"].argv).out:
        session.check(cmds["install"].argv, timeout=900, what="install softflowd")
        out.actions.append("installed softflowd (apt-get)")
        out.changed = True
    r = resolve_interface(session, r)
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
            preload = sf.SHIM_SO
        if built:
            out.actions.append(f"built the libpcap immediate-mode shim at {sf.SHIM_SO}")
            out.changed = True
    want_conf = sf.debian_conf(s, r, ld_preload=None if systemd else preload)
    if session.read_file(sf.DEBIAN_CONF) != want_conf:
        session.check(cmds["mkdir"].argv, what="config directory")
        session.write_file_atomic(sf.DEBIAN_CONF, want_conf)
        out.actions.append(f"wrote {sf.DEBIAN_CONF}")
        out.changed = True
    if systemd:
        current = session.read_file(sf.SYSTEMD_DROPIN)
        if preload and current != sf.systemd_dropin(preload):
            session.check(["mkdir", "-p", sf.SYSTEMD_DROPIN.rsplit("/", 1)[0]], what="drop-in directory")
            session.write_file_atomic(sf.SYSTEMD_DROPIN, sf.systemd_dropin(preload))
            out.actions.append(f"wrote {sf.SYSTEMD_DROPIN}")
            out.changed = True
        elif not preload and current is not None:
            session.check(["rm", "-f", sf.SYSTEMD_DROPIN], what="remove drop-in")
            out.actions.append(f"removed {sf.SYSTEMD_DROPIN}")
            out.changed = True
        if session.run(["systemctl", "is-enabled", f"softflowd@{sf.INSTANCE}"]).out.strip() != "enabled":
            out.changed = True  # restart below enables it
    if not systemd and "--pid_file" in (session.read_file("/etc/init.d/softflowd") or ""):
        out.warnings.append(
            "no systemd, and /etc/init.d/softflowd is Debian 12's broken script (passes --pid_file to "
            "start-stop-daemon): it starts no instance at boot. Unless the boot starts /etc/softflowd/*.conf "
            "another way (the netviz lab does), add to /etc/rc.local: `( . /etc/softflowd/netviz.conf; "
            "mkdir -p /run/softflowd/chroot; start-stop-daemon --start --pidfile /run/softflowd/netviz.pid "
            "--exec /usr/sbin/softflowd -- -i \"$interface\" -p /run/softflowd/netviz.pid "
            "-c /run/softflowd/netviz.ctl $options )`")
    st = status(session, s, r, want_preload=preload is not None)
    if out.changed or not st.healthy:
        why = "config changed" if out.changed else ("not running" if not st.running else "; ".join(st.drift))
        st = restart(session, s, r, want_preload=preload is not None)
        out.actions.append(f"restarted softflowd@{sf.INSTANCE} ({why})")
        out.changed = out.restarted = True
        if preload and not st.details.get("shim_preloaded"):
            out.warnings.append("the restarted softflowd does not have the shim preloaded: check "
                                f"{sf.DEBIAN_CONF} / the init script")
    if st.drift:
        raise RouterError(f"router {r.name}: softflowd runs but not as configured: {'; '.join(st.drift)}")
    out.status = st
    return out
