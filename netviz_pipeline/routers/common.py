"""What every router driver shares: result types, and the pure parsing/comparison they rely on.

Why compare the RUNNING process and not only the config files: a converged config with a stale
daemon (someone edited the file and never restarted, the rc script is old, the shim is not preloaded)
exports to the wrong place or not at all. Drivers restart only when the files changed or the live
process differs from the desired flags, so a converged router keeps its PID and start time.
"""
from __future__ import annotations

import ipaddress
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Protocol

from ..resources.router import Result, RouterError

# softflowd options that take a value (softflowd 1.1: `softflowd -h`).
_VALUED = set("inmptcvLTsAPCRSxbe")


class Session(Protocol):
    """What drivers need from a connection (resources.router.RouterSession; fakes in unit tests)."""

    name: str

    def run(self, argv, *, stdin: str | None = None, timeout: float | None = None) -> Result: ...
    def check(self, argv, *, stdin: str | None = None, timeout: float | None = None, what: str = "") -> Result: ...
    def read_file(self, path: str) -> str | None: ...
    def write_file_atomic(self, path: str, text: str, mode: int = 0o644) -> None: ...


@dataclass
class Proc:
    pid: int
    started: str  # ps lstart: with the pid, identifies this incarnation of the daemon
    args: list[str]


@dataclass
class FlowExportStatus:
    """What the freshness sensors and remediation need to know about a router's exporter."""

    router: str
    platform: str
    running: bool
    processes: list[Proc] = field(default_factory=list)
    collector: str | None = None  # where the running exporter sends (host:port), as it was started
    interfaces: list[str] = field(default_factory=list)
    version: str | None = None
    drift: list[str] = field(default_factory=list)  # running flags vs. settings; empty = as desired
    details: dict = field(default_factory=dict)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    @property
    def healthy(self) -> bool:
        return self.running and not self.drift

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class RouterOutcome:
    router: str
    platform: str
    changed: bool
    actions: list[str]
    restarted: bool
    status: FlowExportStatus | None = None
    warnings: list[str] = field(default_factory=list)
    details: dict = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


# -- pure parsing ------------------------------------------------------------------------------
def parse_ps_line(line: str) -> Proc | None:
    """`ps -o pid=,lstart=,args=` line -> Proc (lstart is 5 words: 'Wed Nov 26 05:43:01 2025')."""
    tokens = line.split()
    if len(tokens) < 7 or not tokens[0].isdigit():
        return None
    return Proc(pid=int(tokens[0]), started=" ".join(tokens[1:6]), args=tokens[6:])


def parse_softflowd_args(args: list[str]) -> dict:
    """softflowd argv -> {'interfaces', 'collectors', 'version', 'timeouts', 'pidfile', 'ctlsock'}.
    Interfaces lose their optional `ifindex:` prefix (pfSense runs `-i 1:vtnet1`)."""
    out: dict = {"interfaces": [], "collectors": [], "version": "5", "timeouts": {}, "pidfile": None,
                 "ctlsock": None}
    i = 1 if args and not args[0].startswith("-") else 0
    while i < len(args):
        a = args[i]
        if a.startswith("-") and len(a) >= 2 and a[1] in _VALUED:
            val = a[2:] if len(a) > 2 else (args[i + 1] if i + 1 < len(args) else "")
            i += 1 if len(a) > 2 else 2
            flag = a[1]
            if flag == "i":
                if val.isdigit() and i < len(args) and not args[i].startswith("-"):
                    val = args[i]  # softflowd splits "1:vtnet1" in place: ps shows "-i 1 vtnet1"
                    i += 1
                out["interfaces"].append(val.split(":", 1)[1] if re.fullmatch(r"\d+:.+", val) else val)
            elif flag == "n":
                out["collectors"] += [c for c in val.split(",") if c]
            elif flag == "v":
                out["version"] = val
            elif flag == "t" and "=" in val:
                k, v = val.split("=", 1)
                out["timeouts"][k] = v
            elif flag == "p":
                out["pidfile"] = val
            elif flag == "c":
                out["ctlsock"] = val
        else:
            i += 1
    return out


def args_drift(desired: list[str], actual: list[str]) -> list[str]:
    """Differences that matter between two softflowd argvs (interfaces, collectors, version,
    timeouts); pid/ctl paths and flag order are ignored. Empty list = the process is as desired."""
    want, have = parse_softflowd_args(desired), parse_softflowd_args(actual)
    diffs = []
    for key in ("interfaces", "collectors"):
        if sorted(want[key]) != sorted(have[key]):
            diffs.append(f"{key}: running {','.join(have[key]) or '-'}, want {','.join(want[key])}")
    if want["version"] != have["version"]:
        diffs.append(f"version: running {have['version']}, want {want['version']}")
    for k, v in sorted(want["timeouts"].items()):
        if have["timeouts"].get(k) != v:
            diffs.append(f"timeout {k}: running {have['timeouts'].get(k, 'default')}, want {v}")
    return diffs


def parse_ip_addr(text: str) -> list[tuple[str, str]]:
    """`ip -o addr show` -> [(ifname, address)] (Linux)."""
    out = []
    for line in text.splitlines():
        tokens = line.split()
        if len(tokens) >= 4 and tokens[2] in ("inet", "inet6"):
            out.append((tokens[1].split("@", 1)[0], tokens[3].split("/", 1)[0]))
    return out


def parse_ifconfig(text: str) -> list[tuple[str, str]]:
    """FreeBSD `ifconfig` -> [(ifname, address)]."""
    out, current = [], None
    for line in text.splitlines():
        if line and not line[0].isspace() and ":" in line:
            current = line.split(":", 1)[0]
        elif current and line.strip().startswith(("inet ", "inet6 ")):
            out.append((current, line.split()[1].split("%", 1)[0]))
    return out


def interface_holding(pairs: list[tuple[str, str]], address: str, router: str) -> str:
    want = ipaddress.ip_address(address)
    for name, addr in pairs:
        try:
            if ipaddress.ip_address(addr) == want:
                return name
        except ValueError:
            continue
    listed = ", ".join(f"{n}={a}" for n, a in pairs) or "none"
    raise RouterError(f"router {router}: no interface holds lan_address {address} (found: {listed}); "
                      "fix lan_address or set interface explicitly")


def upstream_version(pkg_version: str) -> tuple[int, ...]:
    """Debian version '1:1.10.3-1+b1' -> (1, 10, 3)."""
    v = pkg_version.split(":", 1)[-1].split("-", 1)[0]
    return tuple(int(n) for n in re.findall(r"\d+", v)[:3])


# -- small remote helpers ----------------------------------------------------------------------
# The pid file's first line, then that process as `ps` shows it, in one SSH command: each command costs
# an sshd session (~45 ms on the lab's routers), and the health sensor looks at every router each tick.
# No output when the file is missing or unreadable.
PROCESS_OF_PIDFILE = ('pid=$(head -n 1 "$1" 2>/dev/null) || exit 0; echo "$pid"; '
                      'ps -ww -o pid=,lstart=,args= -p "$pid" 2>/dev/null; exit 0')


def softflowd_process(session: Session, pidfile: str) -> Proc | None:
    """The live softflowd whose pid is in pidfile (a stale file or a reused pid gives None)."""
    lines = session.run(["sh", "-c", PROCESS_OF_PIDFILE, "sh", pidfile]).out.splitlines()
    first = lines[0].strip() if lines else ""
    if not first.isdigit():
        return None
    proc = next((p for p in map(parse_ps_line, lines[1:]) if p and p.pid == int(first)), None)
    if proc is None or not proc.args or not proc.args[0].rsplit("/", 1)[-1].startswith("softflowd"):
        return None
    return proc


def wait_for(fn: Callable[[], object], timeout: float, interval: float = 0.25):
    """Call fn until it returns something truthy or timeout passes; returns the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


# -- softflowd's own counters (`softflowctl statistics`) ---------------------------------------
@dataclass(frozen=True)
class SoftflowdCounters:
    """What softflowd itself counted since it started: tells a quiet link (no packets seen) from an
    exporter whose datagrams never reach the collector (datagrams sent, none counted there)."""

    packets_processed: int  # packets captured on the watched interface
    flows_exported: int
    export_packets: int  # NetFlow datagrams sent
    export_failures: int  # sendto() errors

    def as_dict(self) -> dict:
        return asdict(self)


_STAT_PATTERNS = {
    "packets_processed": re.compile(r"^Packets processed:\s*(\d+)", re.M),
    "exported": re.compile(r"^Flows exported:\s*(\d+)\s*\(\d+ records\)\s*in\s*(\d+)\s*packets\s*\((\d+) failures\)", re.M),
}


def parse_statistics(text: str) -> SoftflowdCounters | None:
    """`softflowctl statistics` (softflowd 0.9.9-1.1.x) -> counters; None when the text is not that."""
    processed = _STAT_PATTERNS["packets_processed"].search(text)
    exported = _STAT_PATTERNS["exported"].search(text)
    if not processed or not exported:
        return None
    flows, packets, failures = (int(g) for g in exported.groups())
    return SoftflowdCounters(int(processed.group(1)), flows, packets, failures)


def read_counters(session: Session, ctlsock: str | None) -> SoftflowdCounters | None:
    """Ask the running softflowd over its control socket; None if it has none or does not answer."""
    if not ctlsock:
        return None
    res = session.run(["softflowctl", "-c", ctlsock, "statistics"], timeout=10)
    return parse_statistics(res.out) if res.rc == 0 else None
