"""Which platform a router runs, from one read-only probe over SSH.

The procedure only; what to look for is the platforms' own (registry order): the probe reads two
generic facts (`uname -s`, /etc/platform) and runs every registered platform's markers
(`Platform.markers`: fixed shell tests, each printing its flag when it holds); then the first platform
whose `matches(facts)` holds wins, which is why appliances (pfSense, OPNsense: FreeBSD too) are
registered before the OS they run on. When none matches, a platform may say why a router of its kind is
still not supported (`Platform.why_not`, e.g. Linux without Debian).
"""
from __future__ import annotations

from ..resources.router import RouterError
from .platform import Marker
from .registry import PLATFORMS


def markers() -> list[Marker]:
    """Every registered platform's markers, in registry order, each once."""
    out: list[Marker] = []
    for platform in PLATFORMS.values():
        out += [m for m in platform.markers if m not in out]
    return out


def probe_command() -> str:
    """One line of POSIX sh, run as `sh -c ...` (so the login shell may be tcsh); no settings in it."""
    tests = "".join(f"{m.test} && echo {m.flag}; " for m in markers())
    return f"uname -s; echo @@; cat /etc/platform 2>/dev/null; echo @@; {tests}true"


def parse_probe(out: str) -> dict:
    parts = out.split("@@")
    if len(parts) != 3:
        raise ValueError(f"unexpected probe output: {out[:200]!r}")
    flags = set(parts[2].split())
    return {"uname": parts[0].strip(), "platform_file": parts[1].strip(),
            **{m.flag: m.flag in flags for m in markers()}}


def platform_from(facts: dict, router: str = "router") -> str:
    """The first registered platform whose markers the facts show (registry order: appliances first)."""
    for name, platform in PLATFORMS.items():
        if platform.matches(facts):
            return name
    for platform in PLATFORMS.values():
        why = platform.why_not(facts)
        if why:
            raise RouterError(f"router {router}: {why}")
    raise RouterError(f"router {router}: unsupported platform (uname -s: {facts['uname']!r})")


def probe(session) -> dict:
    return parse_probe(session.check(["sh", "-c", probe_command()], what="detect platform").out)


def detect(session) -> str:
    return platform_from(probe(session), session.name)
