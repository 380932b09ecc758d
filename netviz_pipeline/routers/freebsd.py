"""Plain FreeBSD: the softflowd port/package and its rc script, configured with sysrc.

Why sysrc: it edits /etc/rc.conf (or rc.conf.local) safely and is how the port's rc script is
configured: softflowd_enable, softflowd_interfaces, softflowd_<if>_collector/_timeouts/_extra_args
(there is no softflowd_flags). `service softflowd restart <if>` restarts one interface's instance,
pid file /var/run/softflowd.<if>.pid. Interfaces the user already listed are kept.
"""
from __future__ import annotations

import shlex

from ..render import softflowd as sf
from ..resources.router import RouterError
from ..settings import Router, Settings
from .common import (FlowExportStatus, RouterOutcome, Session, args_drift, interface_holding, parse_ifconfig,
                     parse_softflowd_args, softflowd_process, wait_for)

PLATFORM = "freebsd"


def resolve_interface(session: Session, r: Router) -> Router:
    if r.interface != "auto":
        return r
    if r.lan_address is None:
        raise RouterError(f"router {r.name}: interface auto needs lan_address on FreeBSD")
    out = session.check(["ifconfig"], what="list addresses").out
    return r.model_copy(update={"interface": interface_holding(parse_ifconfig(out), r.lan_address, r.name)})


def parse_sysrc_e(out: str) -> dict[str, str]:
    """`sysrc -e name...` lines (`name="value"`) -> {name: value}."""
    values = {}
    for line in out.splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            try:
                parts = shlex.split(v)
            except ValueError:
                continue
            values[k.strip()] = parts[0] if parts else ""
    return values


def desired_args(s: Settings, r: Router) -> list[str]:
    return ["softflowd", "-i", r.interface, "-n", sf.collector(s, r), *sf.timeout_args(r.timeouts),
            "-v", str(r.netflow_version)]


def status(session: Session, s: Settings, r: Router) -> FlowExportStatus:
    r = resolve_interface(session, r)
    pidfile = f"/var/run/softflowd.{r.interface}.pid"
    proc = softflowd_process(session, pidfile)
    st = FlowExportStatus(router=r.name, platform=PLATFORM, running=proc is not None, details={"pidfile": pidfile})
    if proc is not None:
        parsed = parse_softflowd_args(proc.args)
        st.processes, st.interfaces, st.version = [proc], parsed["interfaces"], parsed["version"]
        st.collector = ",".join(parsed["collectors"]) or None
        st.drift = args_drift(desired_args(s, r), proc.args)
    return st


def restart(session: Session, s: Settings, r: Router) -> FlowExportStatus:
    r = resolve_interface(session, r)
    running = status(session, s, r).running
    res = session.run(["service", "softflowd", "restart" if running else "start", r.interface], timeout=60)

    def ready():
        st = status(session, s, r)
        return st if st.healthy else None
    st = wait_for(ready, 15) or status(session, s, r)
    if not st.running:
        raise RouterError(f"router {r.name}: `service softflowd start {r.interface}` did not start it: "
                          f"{(res.err or res.out).strip()[-400:]}")
    return st


def converge(session: Session, s: Settings, r: Router) -> RouterOutcome:
    out = RouterOutcome(router=r.name, platform=PLATFORM, changed=False, actions=[], restarted=False)
    r = resolve_interface(session, r)
    probe = sf.freebsd_commands({}, r.interface)
    if session.run(probe["installed"].argv).rc != 0:
        session.check(probe["install"].argv, timeout=900, what="install softflowd")
        out.actions.append("installed softflowd (pkg install)")
        out.changed = True
    current_ifs = session.run(probe["current_interfaces"].argv).out.strip()
    want = sf.freebsd_sysrc(s, r, current_ifs)
    have = parse_sysrc_e(session.run(["sysrc", "-e", "-i", *want]).out)
    differs = sorted(k for k, v in want.items() if have.get(k) != v)
    out.details.update(interface=r.interface, rc_vars=want)
    if differs:
        session.check(sf.freebsd_commands(want, r.interface)["sysrc"].argv, what="sysrc")
        out.actions.append(f"sysrc {', '.join(differs)}")
        out.changed = True
    st = status(session, s, r)
    if out.changed or not st.healthy:
        why = "config changed" if out.changed else ("not running" if not st.running else "; ".join(st.drift))
        st = restart(session, s, r)
        out.actions.append(f"restarted softflowd on {r.interface} ({why})")
        out.changed = out.restarted = True
    if st.drift:
        raise RouterError(f"router {r.name}: softflowd runs but not as configured: {'; '.join(st.drift)}")
    out.status = st
    return out
