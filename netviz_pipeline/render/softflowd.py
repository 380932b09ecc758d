"""softflowd's arguments as every platform renders them, and the command shape drivers run.

Each platform keeps its own desired state in its module (routers/<platform>.py): Debian's conf file,
pfSense's config.xml fields, FreeBSD's rc vars, OPNsense's API body. What they share is here: the
collector address, the `-t` timeouts and the safety checks on values placed into config text.
Everything here is pure: commands are argv lists (joined with shlex for SSH), built only from
validated settings.
"""
from __future__ import annotations

import ipaddress
import re
import shlex
from dataclasses import dataclass

from ..settings import Router, Settings, Timeouts

_TIMEOUT_NAMES = (("maxlife", "maxlife"), ("expint", "expint"), ("tcp_fin", "tcp.fin"), ("tcp_rst", "tcp.rst"),
                  ("tcp", "tcp"), ("udp", "udp"), ("icmp", "icmp"), ("general", "general"))
_SAFE = re.compile(r"[A-Za-z0-9._:=\[\] -]*")  # what may appear inside a quoted config value


@dataclass(frozen=True)
class Command:
    argv: tuple[str, ...]
    why: str
    stdin: str | None = None

    @property
    def shell(self) -> str:
        return shlex.join(self.argv)


def checked_path(value: str) -> str:
    if not re.fullmatch(r"/[A-Za-z0-9._/-]+", value):
        raise ValueError(f"refusing to render unsafe path {value!r}")
    return value


def checked(value: str) -> str:
    if not _SAFE.fullmatch(value):  # settings validation makes this unreachable; keep it anyway
        raise ValueError(f"refusing to render unsafe value {value!r}")
    return value


def collector(s: Settings, r: Router) -> str:
    ip, port = s.collector(r)
    return f"[{ip}]:{port}" if ipaddress.ip_address(ip).version == 6 else f"{ip}:{port}"


def timeout_args(t: Timeouts) -> list[str]:
    out = []
    for attr, name in _TIMEOUT_NAMES:
        out += ["-t", f"{name}={getattr(t, attr)}"]
    return out


def options(s: Settings, r: Router) -> list[str]:
    """softflowd arguments other than -i/-p/-c (which the platform's service script adds)."""
    return ["-n", collector(s, r), "-v", str(r.netflow_version), *timeout_args(r.timeouts)]
