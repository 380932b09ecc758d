"""Plain FreeBSD: the softflowd port/package and its rc script, configured with sysrc.

Why sysrc: it edits /etc/rc.conf (or rc.conf.local) safely and is how the port's rc script is
configured: softflowd_enable, softflowd_interfaces, softflowd_<if>_collector/_timeouts/_extra_args
(there is no softflowd_flags). `service softflowd restart <if>` restarts one interface's instance,
pid file /var/run/softflowd.<if>.pid. Interfaces the user already listed are kept.
"""
from __future__ import annotations

import re
import shlex
from typing import TYPE_CHECKING

from ..render.softflowd import Command, checked, collector, timeout_args
from ..resources.router import Result
from .common import RouterOutcome, Session, parse_ifconfig
from .hostnames import NameSource
from .platform import Instance, SoftflowdPlatform

if TYPE_CHECKING:
    from ..settings import Router, Settings


# -- desired state (pure) ----------------------------------------------------------------------
def freebsd_sysrc(s: Settings, r: Router, current_interfaces: str = "") -> dict[str, str]:
    """rc.conf variables for the port's rc script (there is no softflowd_flags). Interfaces already
    listed by the user are kept. The script evals softflowd_<if>_*, so <if> must be a shell name."""
    if not re.fullmatch(r"[A-Za-z0-9_]+", r.interface):
        raise ValueError(f"FreeBSD's rc script cannot handle interface {r.interface!r} ('.' or '-' in the name)")
    ifs = current_interfaces.split()
    if r.interface not in ifs:
        ifs.append(r.interface)
    p = f"softflowd_{r.interface}_"
    return {"softflowd_enable": "YES", "softflowd_interfaces": " ".join(ifs),
            p + "collector": collector(s, r), p + "timeouts": " ".join(timeout_args(r.timeouts)),
            p + "extra_args": f"-v {r.netflow_version}"}


def freebsd_commands(variables: dict[str, str], interface: str) -> dict[str, Command]:
    return {
        "installed": Command(("pkg", "info", "-e", "softflowd"), "is the package installed"),
        "install": Command(("pkg", "install", "-y", "softflowd"), "install from FreeBSD packages"),
        "current_interfaces": Command(("sysrc", "-n", "-i", "softflowd_interfaces"), "interfaces set by the user"),
        "sysrc": Command(("sysrc", *(f"{k}={checked(v)}" for k, v in variables.items())), "persist rc vars"),
        "restart": Command(("service", "softflowd", "restart", interface), "restart our interface's instance"),
        "start": Command(("service", "softflowd", "start", interface), "start our interface's instance"),
    }


def desired_args(s: Settings, r: Router) -> list[str]:
    return ["softflowd", "-i", r.interface, "-n", collector(s, r), *timeout_args(r.timeouts),
            "-v", str(r.netflow_version)]


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


class FreeBSD(SoftflowdPlatform):
    name = "freebsd"
    name_sources = (NameSource("/var/db/dnsmasq.leases", "dnsmasq"),
                    NameSource("/var/db/kea/kea-leases4.csv", "kea"),
                    NameSource("/var/db/dhcpd/dhcpd.leases", "isc"),  # the isc-dhcp44-server port
                    NameSource("/etc/hosts", "hosts"))
    title = "FreeBSD (softflowd port, rc vars)"
    restart_timeout = 60
    list_addresses = ("ifconfig",)
    parse_addresses = parse_ifconfig

    def matches(self, facts: dict) -> bool:
        return facts["uname"] == "FreeBSD"  # after pfSense and OPNsense, which are FreeBSD too

    def instance(self, session: Session, s: Settings, r: Router) -> Instance:
        return Instance(f"/var/run/softflowd.{r.interface}.pid", desired_args(s, r))

    def install(self, session: Session, r: Router, out: RouterOutcome) -> None:
        probe = freebsd_commands({}, r.interface)
        if session.run(probe["installed"].argv).rc != 0:
            session.check(probe["install"].argv, timeout=900, what="install softflowd")
            out.actions.append("installed softflowd (pkg install)")
            out.changed = True

    def apply(self, session: Session, s: Settings, r: Router, out: RouterOutcome) -> None:
        current_ifs = session.run(freebsd_commands({}, r.interface)["current_interfaces"].argv).out.strip()
        want = freebsd_sysrc(s, r, current_ifs)
        have = parse_sysrc_e(session.run(["sysrc", "-e", "-i", *want]).out)
        differs = sorted(k for k, v in want.items() if have.get(k) != v)
        out.details.update(interface=r.interface, rc_vars=want)
        if differs:
            session.check(freebsd_commands(want, r.interface)["sysrc"].argv, what="sysrc")
            out.actions.append(f"sysrc {', '.join(differs)}")
            out.changed = True

    def restart_command(self, r: Router, running: bool) -> Command:
        return freebsd_commands({}, r.interface)["restart" if running else "start"]

    def restart_action(self, r: Router, why: str, running: bool) -> str:
        return f"restarted softflowd on {r.interface} ({why})"

    def not_started(self, r: Router, command: Command, res: Result) -> str:
        return f"router {r.name}: `{command.shell}` did not start it: {(res.err or res.out).strip()[-400:]}"


PLATFORM = FreeBSD()
