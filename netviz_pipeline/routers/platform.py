"""What a router platform is, and the softflowd lifecycle the SSH platforms share.

A platform (one module each: linux, pfsense, freebsd, opnsense) holds everything that is its own: its
settings (an optional section of the router's settings with its pydantic model, and its rules; applied
after parsing by the registry), its detection markers and how it recognises itself from the probe's
facts, its desired state (rendered from settings, pure), and how to read and apply that state on a live
router (over SSH, or its own client: OPNsense's HTTP API). The registry (routers/registry.py) lists
them; settings rules, detection and dispatch all read it, and nothing else names a platform.

Why one shared lifecycle: on Debian, FreeBSD and pfSense the exporter is a softflowd process started by
the platform's own service script. Only where its config lives and how it is restarted differ; reading
the running process (pid file -> process -> its flags vs. the desired flags), restarting only on change
or drift and waiting for it to run as desired is the same everywhere, so it is written once here.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from pydantic import BaseModel

from ..render.softflowd import Command
from ..resources.router import Result, RouterError
from ..settings import validation_context
from .common import (FlowExportStatus, RouterOutcome, Session, SoftflowdCounters, args_drift, interface_holding,
                     parse_softflowd_args, read_counters, softflowd_process, wait_for)
from .hostnames import NameSource

if TYPE_CHECKING:
    from ..settings import Router, Settings

_FLAG = re.compile(r"[a-z][a-z0-9_]{0,30}")


@dataclass(frozen=True)
class Marker:
    """A sign of a platform on the router: `test` (fixed POSIX sh, e.g. `[ -d /usr/local/opnsense ]`) is
    run in the detection probe, and facts[flag] says whether it held."""

    flag: str
    test: str

    def __post_init__(self):
        if not _FLAG.fullmatch(self.flag) or self.flag in ("uname", "platform_file"):
            raise ValueError(f"marker flag {self.flag!r}: lowercase letters, digits, '_', not a generic fact")
        if any(c in self.test for c in "\n\r\x00!") or "@@" in self.test or ";" in self.test:
            raise ValueError(f"marker test {self.test!r}: one sh test without newline, '!', ';' or '@@'")


class Platform:
    """One router platform. Subclasses set `name` and implement the parts below."""

    name: ClassVar[str]
    title: ClassVar[str]  # for people: "Debian (softflowd package)"
    # Files where this platform keeps names of its LAN hosts, in priority order (routers/hostnames.py);
    # read over the same SSH session, never written. Empty: the platform has no way to read them.
    name_sources: ClassVar[tuple[NameSource, ...]] = ()

    # -- settings (pure; applied by registry.apply_rules after the settings are parsed) -----------
    # The router key holding this platform's own settings (e.g. "opnsense") and the model validating it
    # (a settings.PlatformSection); None: the platform has no section.
    section: ClassVar[str | None] = None
    settings_model: ClassVar[type[BaseModel] | None] = None

    def settings_problems(self, r: Router) -> list[str]:
        """Why these router settings cannot work on this platform; empty = fine. The router's section is
        already validated (read it with `section_of`)."""
        return []

    def section_of(self, r: Router) -> BaseModel | None:
        """This platform's section of the router's settings, typed; None when absent. Settings loaded
        through loading.parse/load hold it typed already; raw data (the pure settings parser) is validated
        here (host checks were that parser's to skip or make)."""
        if not self.section:
            return None
        value = (r.model_extra or {}).get(self.section)
        if value is None or isinstance(value, BaseModel):
            return value
        return self.settings_model.model_validate(value, context=validation_context(check_host=False))

    # -- detection (pure; facts from routers.detection.probe) -------------------------------------
    # Shell tests the probe runs for this platform; their flags appear in the facts of every router.
    markers: ClassVar[tuple[Marker, ...]] = ()

    def matches(self, facts: dict) -> bool:
        return False

    def why_not(self, facts: dict) -> str | None:
        """When no platform matched: why a router that looks like this platform's kind is still not
        supported (shown to the user), else None."""
        return None

    # -- desired state (pure) ---------------------------------------------------------------------
    def desired(self, s: Settings, r: Router) -> dict:
        """A JSON-safe summary of what this platform will make the router hold."""
        raise NotImplementedError

    # -- live router ------------------------------------------------------------------------------
    def converge(self, session, s: Settings, r: Router) -> RouterOutcome:
        raise NotImplementedError

    def status(self, session, s: Settings, r: Router) -> FlowExportStatus:
        raise NotImplementedError

    def restart(self, session, s: Settings, r: Router) -> FlowExportStatus:
        raise NotImplementedError

    def counters(self, session, st: FlowExportStatus) -> SoftflowdCounters | None:
        """softflowd's own counters for the health sensor; None where the platform cannot tell."""
        return None


@dataclass(frozen=True)
class Instance:
    """Where a platform's softflowd for this router lives and how it should run."""

    pidfile: str
    want_args: list[str]  # compared with the live process (args_drift)
    details: dict = field(default_factory=dict)  # shown in status metadata


class SoftflowdPlatform(Platform):
    """softflowd under the platform's service script, reached over SSH. Subclasses provide the hooks
    below; status, restart and converge are shared."""

    wait_seconds: ClassVar[float] = 15  # a restarted softflowd runs as desired within this
    restart_timeout: ClassVar[float] = 120
    # `interface: auto` on a plain OS = the interface holding lan_address: the command listing addresses
    # and its parser (-> [(ifname, address)]). None: the platform resolves auto its own way (pfSense: lan).
    list_addresses: ClassVar[tuple[str, ...] | None] = None
    parse_addresses: ClassVar[Callable[[str], list[tuple[str, str]]] | None] = None

    # -- hooks ------------------------------------------------------------------------------------
    def settings_problems(self, r: Router) -> list[str]:
        if self.list_addresses and r.interface == "auto" and r.lan_address is None:
            return [f"interface auto on {self.name} needs lan_address (the router's LAN address, whose interface "
                    "softflowd watches), or give the interface name"]
        return []

    def resolve(self, session: Session, r: Router) -> Router:
        """The router with `interface: auto` replaced by the real name."""
        if r.interface != "auto" or not self.list_addresses:
            return r
        if r.lan_address is None:
            raise RouterError(f"router {r.name}: interface auto needs lan_address on {self.name}")
        out = session.check(list(self.list_addresses), what="list addresses").out
        pairs = type(self).parse_addresses(out)  # a plain function kept on the class, not a method
        return r.model_copy(update={"interface": interface_holding(pairs, r.lan_address, r.name)})

    def instance(self, session: Session, s: Settings, r: Router) -> Instance:
        raise NotImplementedError

    def install(self, session: Session, r: Router, out: RouterOutcome) -> None:
        """Install the exporter when missing (record an action and `out.changed`)."""

    def apply(self, session: Session, s: Settings, r: Router, out: RouterOutcome) -> Any:
        """Write the desired config where the platform keeps it, only where it differs (record actions and
        `out.changed`; set `out.restarted` when the platform's own apply restarted softflowd). Returns what
        `status` should additionally expect of the process (see `process_drift`)."""
        return None

    def restart_command(self, r: Router, running: bool) -> Command:
        raise NotImplementedError

    def restart_action(self, r: Router, why: str, running: bool) -> str:
        return f"restarted softflowd ({why})"

    def process_drift(self, session: Session, st: FlowExportStatus, expect: Any) -> list[str]:
        """Platform-specific ways a running process differs from the desired one (beyond its flags)."""
        return []

    def not_started(self, r: Router, command: Command, res: Result) -> str:
        return (f"router {r.name}: `{command.shell}` did not start softflowd (rc={res.rc}: "
                f"{(res.err or res.out).strip()[-400:]})")

    def after_restart(self, st: FlowExportStatus, expect: Any, out: RouterOutcome) -> None:
        """Warnings about a restarted process."""

    def not_running(self, r: Router) -> str:
        return f"router {r.name}: softflowd is not running after its restart"

    # -- shared lifecycle -------------------------------------------------------------------------
    def status(self, session: Session, s: Settings, r: Router, expect: Any = None) -> FlowExportStatus:
        r = self.resolve(session, r)
        where = self.instance(session, s, r)
        proc = softflowd_process(session, where.pidfile)
        st = FlowExportStatus(router=r.name, platform=self.name, running=proc is not None,
                              details={"pidfile": where.pidfile, **where.details})
        if proc is not None:
            parsed = parse_softflowd_args(proc.args)
            st.processes, st.interfaces, st.version = [proc], parsed["interfaces"], parsed["version"]
            st.collector = ",".join(parsed["collectors"]) or None
            st.drift = args_drift(where.want_args, proc.args) + self.process_drift(session, st, expect)
        return st

    def wait_healthy(self, session: Session, s: Settings, r: Router, expect: Any = None) -> FlowExportStatus:
        def ready() -> FlowExportStatus | None:
            st = self.status(session, s, r, expect)
            return st if st.healthy else None
        return wait_for(ready, self.wait_seconds) or self.status(session, s, r, expect)

    def restart(self, session: Session, s: Settings, r: Router, expect: Any = None,
                running: bool | None = None) -> FlowExportStatus:
        """(Re)start our softflowd the platform's way, then wait until it runs as desired. `running`: whether
        it runs now, when the caller already looked (else one more status read)."""
        r = self.resolve(session, r)
        if running is None:
            running = self.status(session, s, r, expect).running
        command = self.restart_command(r, running=running)
        res = session.run(command.argv, stdin=command.stdin, timeout=self.restart_timeout)
        st = self.wait_healthy(session, s, r, expect)
        if not st.running:
            raise RouterError(self.not_started(r, command, res))
        return st

    def converge(self, session: Session, s: Settings, r: Router) -> RouterOutcome:
        """Idempotent: restarts only when the config changed or the live process differs."""
        out = RouterOutcome(router=r.name, platform=self.name, changed=False, actions=[], restarted=False)
        self.install(session, r, out)
        r = self.resolve(session, r)
        expect = self.apply(session, s, r, out)
        st = self.wait_healthy(session, s, r, expect) if out.restarted else self.status(session, s, r, expect)
        if not out.restarted and (out.changed or not st.healthy):
            why = "config changed" if out.changed else ("not running" if not st.running else "; ".join(st.drift))
            running = st.running
            st = self.restart(session, s, r, expect, running=running)
            out.actions.append(self.restart_action(r, why, running))
            out.changed = out.restarted = True
            self.after_restart(st, expect, out)
        if not st.running:
            raise RouterError(self.not_running(r))
        if st.drift:
            raise RouterError(f"router {r.name}: softflowd runs but not as configured: {'; '.join(st.drift)}")
        out.status = st
        return out

    def counters(self, session: Session, st: FlowExportStatus) -> SoftflowdCounters | None:
        if not st.running or not st.processes:
            return None
        return read_counters(session, parse_softflowd_args(st.processes[0].args)["ctlsock"])
