"""The router platforms netviz supports, in detection order. Settings validation (platform names and
each platform's rules), detection (`matches`) and dispatch (converge, status, restart) all read this
one table: adding a platform is one module with a `PLATFORM` and one line here."""
from __future__ import annotations

from . import freebsd, linux, opnsense, pfsense
from .platform import Platform

# pfSense and OPNsense are FreeBSD too (uname says so): their markers must be tried before plain FreeBSD.
PLATFORMS: dict[str, Platform] = {p.name: p for p in (pfsense.PLATFORM, opnsense.PLATFORM, freebsd.PLATFORM,
                                                      linux.PLATFORM)}


def get(name: str) -> Platform:
    try:
        return PLATFORMS[name]
    except KeyError:
        raise ValueError(f"unknown router platform {name!r}: one of {', '.join(PLATFORMS)}") from None
