"""pfSense: the softflowd package, configured in config.xml (NEVER rc.conf, which pfSense deletes).

Why through config.xml + the package sync: that is the only persistence pfSense supports. The
package's sync_package_softflowd() writes /usr/local/etc/rc.d/softflowd.sh (one softflowd per
interface, `-p /var/run/softflowd.<real if>.pid`), and pfSense's boot runs it. We compare the
downloaded config.xml with our fields first, so a converged router gets no write_config (no new
config revision) and no restart. The package supports one collector host:port for all interfaces;
the fields we set (render.softflowd.pfsense_fields) are ours, the others are left alone.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET

from ..render import softflowd as sf
from ..resources.router import RouterError
from ..settings import Router, Settings
from .common import (FlowExportStatus, RouterOutcome, Session, args_drift, parse_softflowd_args,
                     softflowd_process, wait_for)

PLATFORM = "pfsense"
CONFIG = "/cf/conf/config.xml"
RCFILE = "/usr/local/etc/rc.d/softflowd.sh"


def resolve_interface(r: Router) -> Router:
    return r if r.interface != "auto" else r.model_copy(update={"interface": "lan"})


def real_interface(xml_text: str, friendly: str, router: str) -> str:
    """pfSense name (lan, optN) -> device (vtnet1, igb0) from config.xml's <interfaces>."""
    root = ET.fromstring(xml_text)
    real = (root.findtext(f"interfaces/{friendly}/if") or "").strip()
    if not real:
        names = ", ".join(el.tag for el in root.findall("interfaces/*")) or "none"
        raise RouterError(f"router {router}: pfSense has no interface {friendly!r} (config.xml has: {names})")
    return real


def current_fields(xml_text: str) -> dict[str, str]:
    el = ET.fromstring(xml_text).find("installedpackages/softflowd/config")
    return {} if el is None else {c.tag: (c.text or "") for c in el}


def desired_args(s: Settings, r: Router, real_if: str) -> list[str]:
    ip, port = s.collector(r)
    host = f"[{ip}]" if ":" in ip else ip
    t = r.timeouts
    return ["softflowd", "-i", real_if, "-n", f"{host}:{port}", "-v", str(r.netflow_version),
            *(x for name, v in (("general", t.general), ("maxlife", t.maxlife), ("expint", t.expint),
                                ("tcp", t.tcp), ("tcp.rst", t.tcp_rst), ("tcp.fin", t.tcp_fin), ("udp", t.udp))
              for x in ("-t", f"{name}={v}"))]


def _config(session: Session, r: Router) -> str:
    text = session.read_file(CONFIG)
    if text is None:
        raise RouterError(f"router {r.name}: {CONFIG} not found: is this pfSense?")
    return text


def status(session: Session, s: Settings, r: Router) -> FlowExportStatus:
    r = resolve_interface(r)
    real = real_interface(_config(session, r), r.interface, r.name)
    pidfile = f"/var/run/softflowd.{real}.pid"
    proc = softflowd_process(session, pidfile)
    st = FlowExportStatus(router=r.name, platform=PLATFORM, running=proc is not None,
                          details={"pidfile": pidfile, "interface_device": real, "rc_script": RCFILE})
    if proc is not None:
        parsed = parse_softflowd_args(proc.args)
        st.processes, st.interfaces, st.version = [proc], parsed["interfaces"], parsed["version"]
        st.collector = ",".join(parsed["collectors"]) or None
        st.drift = args_drift(desired_args(s, r, real), proc.args)
    return st


def _wait_healthy(session: Session, s: Settings, r: Router, timeout: float = 20) -> FlowExportStatus:
    """The package starts softflowd in the background (mwexec_bg): poll until it runs as desired."""
    def ready():
        st = status(session, s, r)
        return st if st.healthy else None
    return wait_for(ready, timeout) or status(session, s, r)


def restart(session: Session, s: Settings, r: Router) -> FlowExportStatus:
    """Re-sync the package (rewrites the rc script from config.xml, then restarts every instance)."""
    cmds = sf.pfsense_commands({})
    session.check(cmds["sync"].argv, stdin=cmds["sync"].stdin, what="softflowd package sync")
    return _wait_healthy(session, s, r)


def ensure_package(session: Session, r: Router) -> bool:
    cmds = sf.pfsense_commands({})
    if session.run(cmds["installed"].argv).rc == 0:
        return False
    res = session.run(cmds["install"].argv, timeout=900)  # pfSsh.php exits 0 even when it failed
    if session.run(cmds["installed"].argv).rc != 0:
        raise RouterError(f"router {r.name}: `{cmds['install'].shell}` did not install pfSense-pkg-softflowd: "
                          f"{(res.out + res.err).strip()[-400:]} (does the router reach the pfSense package "
                          "repository? System > Package Manager shows the error)")
    return True


def converge(session: Session, s: Settings, r: Router) -> RouterOutcome:
    out = RouterOutcome(router=r.name, platform=PLATFORM, changed=False, actions=[], restarted=False)
    r = resolve_interface(r)
    if ensure_package(session, r):
        out.actions.append("installed pfSense-pkg-softflowd (pfSsh.php playback installpkg)")
        out.changed = True
    xml_text = _config(session, r)
    real = real_interface(xml_text, r.interface, r.name)
    fields = sf.pfsense_fields(s, r)
    cmds = sf.pfsense_commands(fields)
    have = current_fields(xml_text)
    differs = {k: (have.get(k), v) for k, v in fields.items() if have.get(k) != v}
    out.details.update(interface=r.interface, interface_device=real, fields=fields)
    if differs:
        session.check(cmds["apply"].argv, stdin=cmds["apply"].stdin, what="write config.xml and sync softflowd")
        after = current_fields(_config(session, r))
        still = sorted(k for k, v in fields.items() if after.get(k) != v)
        if still:
            raise RouterError(f"router {r.name}: config.xml still lacks {', '.join(still)} after write_config")
        out.actions.append("set installedpackages/softflowd/config[0] "
                           f"({', '.join(sorted(differs))}) via write_config, package sync restarted softflowd")
        out.details["changed_fields"] = {k: {"was": a, "now": b} for k, (a, b) in differs.items()}
        out.changed = out.restarted = True
        st = _wait_healthy(session, s, r)
    else:
        st = status(session, s, r)
        if not st.running:
            session.check(cmds["start"].argv, what="start softflowd")
            st = _wait_healthy(session, s, r)
            out.actions.append("started softflowd (pfSsh.php playback svc start)")
            out.changed = out.restarted = True
        elif st.drift:
            why = "; ".join(st.drift)
            st = restart(session, s, r)
            out.actions.append(f"re-synced the package: running softflowd differed ({why})")
            out.changed = out.restarted = True
    if not st.running:
        raise RouterError(f"router {r.name}: softflowd is not running after the package sync; check "
                          f"{RCFILE} and `pfSsh.php playback svc status softflowd`")
    if st.drift:
        raise RouterError(f"router {r.name}: softflowd runs but not as configured: {'; '.join(st.drift)}")
    out.status = st
    return out
