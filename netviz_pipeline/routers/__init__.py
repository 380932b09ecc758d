"""Router drivers: make a user's edge router export NetFlow to GoFlow2, the platform's own way.

One module per platform (linux = Debian, pfsense, freebsd, opnsense) with the same three calls:
  converge(session, settings, router) -> RouterOutcome   idempotent; restarts only on change/drift
  status(session, settings, router)   -> FlowExportStatus for the freshness sensors
  restart(session, settings, router)  -> FlowExportStatus for remediation
`probe` adds softflowd's own counters (through its control socket) to the status.
`session` is a resources.router.RouterSession (OPNsense uses its HTTP API and ignores it, except
for detection when platform is auto).
"""
from __future__ import annotations

import time
from types import ModuleType

from ..resources.router import RouterError, RouterSession
from ..settings import Router, Settings
from . import freebsd, linux, opnsense, pfsense
from .common import FlowExportStatus, RouterOutcome, SoftflowdCounters, parse_softflowd_args, read_counters
from .detection import detect

DRIVERS: dict[str, ModuleType] = {"linux": linux, "pfsense": pfsense, "freebsd": freebsd, "opnsense": opnsense}

__all__ = ["DRIVERS", "FlowExportStatus", "RouterError", "RouterOutcome", "RouterSession", "converge", "detect",
           "driver", "platform_of", "probe", "restart", "status"]


def platform_of(session, r: Router) -> str:
    if r.platform != "auto":
        return r.platform
    if session is None:
        raise RouterError(f"router {r.name}: platform auto needs an SSH session to detect it")
    return detect(session)


def driver(session, r: Router) -> ModuleType:
    return DRIVERS[platform_of(session, r)]


def converge(session, s: Settings, r: Router) -> RouterOutcome:
    t0 = time.monotonic()
    out = driver(session, r).converge(session, s, r)
    out.seconds = round(time.monotonic() - t0, 3)
    if getattr(session, "connect_seconds", None) is not None:
        out.details["ssh_connect_seconds"] = round(session.connect_seconds, 3)
    return out


def status(session, s: Settings, r: Router) -> FlowExportStatus:
    return driver(session, r).status(session, s, r)


def restart(session, s: Settings, r: Router) -> FlowExportStatus:
    return driver(session, r).restart(session, s, r)


def probe(session, s: Settings, r: Router) -> tuple[FlowExportStatus, SoftflowdCounters | None]:
    """The exporter as the health sensor sees it: status, and softflowd's counters where its control
    socket is reachable over SSH (not through OPNsense's API: None there)."""
    st = status(session, s, r)
    if not st.running or not st.processes or st.platform == "opnsense":
        return st, None
    return st, read_counters(session, parse_softflowd_args(st.processes[0].args)["ctlsock"])
