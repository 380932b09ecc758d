"""Router drivers: make a user's edge router export NetFlow to GoFlow2, the platform's own way.

One module per platform (linux = Debian, pfsense, freebsd, opnsense), each a `platform.Platform`
listed in `registry.PLATFORMS` and holding all that is its own (settings section and rules, detection
markers, client); the calls below pick the router's platform (detecting it over SSH when
settings say auto) and hand over:
  converge(session, settings, router) -> RouterOutcome   idempotent; restarts only on change/drift
  status(session, settings, router)   -> FlowExportStatus for the freshness sensors
  restart(session, settings, router)  -> FlowExportStatus for remediation
  probe(session, settings, router)    -> status plus softflowd's own counters, for the health sensor
  host_names(session, router, name)   -> the names the router knows for its LAN (hostnames.py), read only
`session` is a resources.router.RouterSession (OPNsense uses its HTTP API and ignores it, except
for detection when platform is auto).
"""
from __future__ import annotations

import time

from ..resources.router import RouterError, RouterSession
from ..settings import Router, Settings
from .common import FlowExportStatus, RouterOutcome, SoftflowdCounters
from .detection import detect
from .hostnames import RouterNames, read
from .platform import Platform
from .registry import PLATFORMS, get

__all__ = ["PLATFORMS", "FlowExportStatus", "RouterError", "RouterOutcome", "RouterSession", "converge", "detect",
           "RouterNames", "host_names", "platform", "probe", "restart", "status"]


def platform(session, r: Router) -> Platform:
    if r.platform != "auto":
        return get(r.platform)
    if session is None:
        raise RouterError(f"router {r.name}: platform auto needs an SSH session to detect it")
    return PLATFORMS[detect(session)]


def converge(session, s: Settings, r: Router) -> RouterOutcome:
    t0 = time.monotonic()
    out = platform(session, r).converge(session, s, r)
    out.seconds = round(time.monotonic() - t0, 3)
    if getattr(session, "connect_seconds", None) is not None:
        out.details["ssh_connect_seconds"] = round(session.connect_seconds, 3)
    return out


def status(session, s: Settings, r: Router) -> FlowExportStatus:
    return platform(session, r).status(session, s, r)


def restart(session, s: Settings, r: Router) -> FlowExportStatus:
    return platform(session, r).restart(session, s, r)


def probe(session, s: Settings, r: Router) -> tuple[FlowExportStatus, SoftflowdCounters | None]:
    """The exporter as the health sensor sees it: status, and softflowd's counters where the platform
    can read them (its control socket over SSH; not through OPNsense's API: None there)."""
    p = platform(session, r)
    st = p.status(session, s, r)
    return st, p.counters(session, st)


def host_names(session, r: Router, platform_name: str | None = None) -> RouterNames:
    """What the router's own files name (DHCP static mappings, leases, hosts), for the aggregator.
    `platform_name`: the platform a converge already resolved (spares detecting `auto` again)."""
    p = PLATFORMS[platform_name] if platform_name else platform(session, r)
    return read(session, p.name_sources)
