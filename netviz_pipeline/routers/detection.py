"""Which platform a router runs, from one read-only probe over SSH.

Each platform recognises itself (`Platform.matches`), tried in the registry's order: pfSense and
OPNsense are FreeBSD too (uname says FreeBSD), and the markers of the appliances must win over the
generic OS: pfSense has /etc/platform = "pfSense" and pfSsh.php, OPNsense has /usr/local/opnsense.
Plain Linux is supported only as Debian (its softflowd package and
/etc/softflowd/*.conf); other Linux routers (VyOS, OpenWrt) have their own flow accounting.
"""
from __future__ import annotations

from ..resources.router import RouterError
from .registry import PLATFORMS

# One line of POSIX sh, run as `sh -c PROBE` (so the login shell may be tcsh); no settings in it.
PROBE = ("uname -s; echo @@; cat /etc/platform 2>/dev/null; echo @@; "
         "[ -e /usr/local/sbin/pfSsh.php ] && echo pfssh; [ -d /usr/local/opnsense ] && echo opnsense; "
         "[ -e /etc/debian_version ] && echo debian; [ -d /run/systemd/system ] && echo systemd; true")


def parse_probe(out: str) -> dict:
    parts = out.split("@@")
    if len(parts) != 3:
        raise ValueError(f"unexpected probe output: {out[:200]!r}")
    flags = set(parts[2].split())
    return {"uname": parts[0].strip(), "platform_file": parts[1].strip(), "pfssh": "pfssh" in flags,
            "opnsense": "opnsense" in flags, "debian": "debian" in flags, "systemd": "systemd" in flags}


def platform_from(facts: dict, router: str = "router") -> str:
    """The first registered platform whose markers the facts show (registry order: appliances first)."""
    for name, platform in PLATFORMS.items():
        if platform.matches(facts):
            return name
    if facts["uname"] == "Linux":
        raise RouterError(f"router {router}: Linux without /etc/debian_version is not supported (the driver "
                          "uses Debian's softflowd package); VyOS/OpenWrt have their own flow accounting")
    raise RouterError(f"router {router}: unsupported platform (uname -s: {facts['uname']!r})")


def probe(session) -> dict:
    return parse_probe(session.check(["sh", "-c", PROBE], what="detect platform").out)


def detect(session) -> str:
    return platform_from(probe(session), session.name)
