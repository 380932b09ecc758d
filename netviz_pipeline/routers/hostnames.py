"""Names a router already knows for its LAN, read (never changed) over SSH, for the flow aggregator.

Where a router keeps them, by format (each platform lists its files in priority order, see
`Platform.name_sources`):
  * `pfsense`  config.xml: DHCP static mappings (`dhcpd/<if>/staticmap`: ipaddr + hostname, and
               `dhcpdv6/<if>/staticmap`: ipaddrv6 + hostname) and DNS resolver host overrides
               (`unbound/hosts`: ip + host). pfSense and OPNsense keep these for both ISC and Kea.
  * `isc`      ISC dhcpd's lease file: `lease <ip> { ... client-hostname "<name>"; }`, an append log
               (the last block of an address wins); only leases in `binding state active`.
  * `kea`      Kea's memfile CSV (`address,hwaddr,...,hostname,state,...`), also an append log; a row
               with valid_lifetime 0 deletes the lease, state other than 0 is not a live lease.
  * `dnsmasq`  dnsmasq's lease file (OpenWrt, most small Linux routers): `<expiry> <mac> <ip> <name>
               <client id>`, `*` for no name (DHCPv6 lines have the IAID in the mac column).
  * `hosts`    /etc/hosts: the first name of each line.
What comes out is {address: name} for unicast addresses with a usable name: loopback, link-local,
multicast and unspecified addresses are left out; a name is kept whole (a trailing dot removed) and
must fit the settings' host name rule (letters, digits, `. _ : / @ -`, at most 128), else the entry is
skipped and counted. The first source naming an address wins. Pure parsers here; `read` does the SSH
part.
"""
from __future__ import annotations

import csv
import ipaddress
import io
import re
import secrets
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from .common import Session

MAX_BYTES = 8 << 20  # per file: lease logs grow between rewrites; what is read is capped, never the router
MAX_NAMES = 10_000  # per router: one ConfigMap (~40 B a name, far below 1 MiB)
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@-]{0,127}")  # settings.FlowNames.hosts' rule


@dataclass(frozen=True)
class NameSource:
    path: str
    format: str  # a key of PARSERS


@dataclass
class RouterNames:
    names: dict[str, str] = field(default_factory=dict)  # address -> name, first source wins
    found: dict[str, int] = field(default_factory=dict)  # path -> usable entries in it
    absent: list[str] = field(default_factory=list)  # paths the router does not have
    skipped: int = 0  # entries without a usable address or name
    problems: list[str] = field(default_factory=list)  # files present but unreadable or unparsable

    def summary(self) -> str:
        got = ", ".join(f"{n} from {p}" for p, n in self.found.items()) or "none"
        return f"{len(self.names)} names ({got})" + (f"; {self.skipped} entries skipped" if self.skipped else "")


def _address(text: str) -> str | None:
    try:
        ip = ipaddress.ip_address(text.strip().split("%", 1)[0])
    except ValueError:
        return None
    if ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_unspecified:
        return None
    return str(ip)


def _name(text: str | None) -> str | None:
    n = (text or "").strip().strip('"').rstrip(".")
    return n if NAME.fullmatch(n) else None


def parse_hosts(text: str) -> list[tuple[str, str | None]]:
    out = []
    for line in text.split("\n"):
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2:
            out.append((fields[0], fields[1]))
    return out


def parse_dnsmasq(text: str) -> list[tuple[str, str | None]]:
    out = []
    for line in text.split("\n"):
        fields = line.split()
        if len(fields) >= 4 and fields[0] != "duid":
            out.append((fields[2], None if fields[3] == "*" else fields[3]))
    return out


_ISC_LEASE = re.compile(r"lease\s+(\S+)\s*\{(.*?)\}", re.S)
_ISC_HOSTNAME = re.compile(r'client-hostname\s+"((?:[^"\\]|\\.)*)"\s*;')
_ISC_STATE = re.compile(r"(?<!next )(?<!rewind )binding\s+state\s+(\w+)\s*;")


def parse_isc(text: str) -> list[tuple[str, str | None]]:
    last: dict[str, str | None] = {}
    for addr, body in _ISC_LEASE.findall(text):
        state = _ISC_STATE.search(body)
        host = _ISC_HOSTNAME.search(body)
        live = state is None or state.group(1) == "active"  # old files have no binding state
        last[addr] = host.group(1) if host and live else None  # the newest block of an address decides
    return [(a, n) for a, n in last.items() if n is not None]


def parse_kea(text: str) -> list[tuple[str, str | None]]:
    rows = csv.reader(io.StringIO(text))
    header = next(rows, None)
    if not header or "address" not in header or "hostname" not in header:
        raise ValueError("not a Kea lease file (no address/hostname header)")
    col = {h: i for i, h in enumerate(header)}
    last: dict[str, str | None] = {}
    for row in rows:
        if len(row) < len(header):
            continue
        addr = row[col["address"]]
        gone = row[col["valid_lifetime"]] == "0" if "valid_lifetime" in col else False
        dead = "state" in col and row[col["state"]] not in ("", "0")
        last[addr] = None if gone or dead else row[col["hostname"]]
    return [(a, n) for a, n in last.items() if n]


def parse_pfsense(text: str) -> list[tuple[str, str | None]]:
    try:
        root = ET.fromstring(text)
    except ET.ParseError as e:
        raise ValueError(f"config.xml does not parse: {e}") from None
    out = []
    for tag, addr_tag in (("dhcpd", "ipaddr"), ("dhcpdv6", "ipaddrv6")):
        for sm in root.findall(f"./{tag}/*/staticmap"):
            out.append((sm.findtext(addr_tag) or "", sm.findtext("hostname")))
    for h in root.findall("./unbound/hosts"):
        for ip in (h.findtext("ip") or "").split(","):
            out.append((ip, h.findtext("host")))
    return out


PARSERS = {"pfsense": parse_pfsense, "isc": parse_isc, "kea": parse_kea, "dnsmasq": parse_dnsmasq,
           "hosts": parse_hosts}


def merge(parsed: list[tuple[str, list[tuple[str, str | None]]]], into: RouterNames | None = None) -> RouterNames:
    """(path, entries) in priority order -> RouterNames: the first usable name of an address wins."""
    out = into or RouterNames()
    for path, entries in parsed:
        n = 0
        for raw_addr, raw_name in entries:
            addr, name = _address(raw_addr), _name(raw_name)
            if addr is None or name is None:
                out.skipped += 1
                continue
            n += 1
            if addr not in out.names and len(out.names) < MAX_NAMES:
                out.names[addr] = name
        out.found[path] = n
    return out


# One round trip for every source: for each path, its first MAX_BYTES then a marker line with a random
# boundary saying whether it was read, absent or unreadable (paths are the platforms' constants, passed
# as arguments, never spliced into the script; no `!`, which csh, pfSense's root shell, would expand).
_READ_ALL = ('b=$1; n=$2; shift 2; for f in "$@"; do '
             'if [ -e "$f" ]; then if head -c "$n" -- "$f" 2>/dev/null; then s=ok; else s=unreadable; fi; else s=absent; fi; '
             'printf "\\n%s %s %s\\n" "$b" "$s" "$f"; done')


def split_read_all(out: str, boundary: str) -> list[tuple[str, str, str]]:
    """_READ_ALL's output -> [(path, status, content)] in the order read."""
    parts = re.split(rf"\n{re.escape(boundary)} (ok|absent|unreadable) ([^\n]*)\n", out)
    return [(parts[i + 1], parts[i], parts[i - 1]) for i in range(1, len(parts) - 1, 3)]


def read(session: Session, sources: tuple[NameSource, ...]) -> RouterNames:
    """Read each source the router has (at most MAX_BYTES of each, all in one command) and merge them.
    A file that is absent is normal (a router without DHCP); one that cannot be read or parsed is a
    problem to report, never a reason to fail the router's step: names are a convenience, flow export
    is the job."""
    out = RouterNames()
    if not sources:
        return out
    boundary = "netviz-names-" + secrets.token_hex(8)
    res = session.run(["sh", "-c", _READ_ALL, "sh", boundary, str(MAX_BYTES), *(src.path for src in sources)])
    got = {path: (status, content) for path, status, content in split_read_all(res.out, boundary)}
    parsed = []
    for src in sources:
        status, content = got.get(src.path, ("unreadable", ""))
        if status == "absent":
            out.absent.append(src.path)
        elif status != "ok":
            out.problems.append(f"{src.path}: cannot read (rc={res.rc}: {res.err.strip()[-200:]})")
        else:
            try:
                parsed.append((src.path, PARSERS[src.format](content)))
            except ValueError as e:
                out.problems.append(f"{src.path}: {e}")
    return merge(parsed, out)
