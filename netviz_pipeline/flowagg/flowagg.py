#!/usr/bin/env python3
"""netviz flow aggregator: GoFlow2 JSON flow records in, a hard-bounded set of Prometheus series out.

Standalone and stdlib-only (Python >= 3.9): the pipeline ships this file in a ConfigMap and runs it
in a stock python:3.12-alpine sidecar next to GoFlow2, reading GoFlow2's `-format json` records from
a FIFO on a memory emptyDir (no flow ever touches disk) and serving /metrics (default :9102).

Input: one JSON object per line with GoFlow2 v2 keys: `sampler_address` (exporter), `sampling_rate`
(0 = not sampled/unknown, treated as 1 and counted per exporter), `bytes`, `packets`, `src_addr`,
`dst_addr`, `proto` (a name such as "TCP"; numbers are accepted too), `src_port`, `dst_port`,
`time_received_ns`. Malformed, truncated or oversized lines are counted by reason and skipped;
nothing in a line can stop the process. End of input (GoFlow2 gone) exits with status 3 so the
container restarts; the FIFO is reopened then. Another input may hand over records it parsed itself
(`Aggregator.add`, the tuples `parse_line` returns, with its malformed inputs by reason): the `kafka`
transport's consumer, kafka_input.py, does (it decodes GoFlow2's protobuf; it is not stdlib-only and
does not ship in the ConfigMap).

Series and their bound. Every dimension (talkers = (exporter, src, dst), protocol, (protocol, service port),
exporter, (src network, dst network)) keeps at most k keys with the Space-Saving algorithm
(Metwally, Agrawal, El Abbadi 2005), weighted by sampling-corrected bytes; everything else is
folded into an "other" key. Guarantees, for a stream of total weight N (bytes) in that dimension:
  * a key whose true weight exceeds N/k is always tracked (idle keys are expired after
    `idle_seconds`, which frees their slots; a key idle that long is not a current top talker);
  * a tracked key's Space-Saving count over-estimates its true weight by at most err <= N/k;
  * the exported counters of a tracked key are EXACT since the key was admitted (count - err),
    so any rate() over a window during which it stayed tracked is exact; bytes of evicted or
    never-admitted keys go to "other", so sum over a dimension always equals the exact total.
The number of series is therefore fixed by configuration, whatever the traffic:
`netviz_flow_series` (exported now) <= `netviz_flow_series_budget` (the hard maximum).

Names. The talker series also carry `src_name` and `dst_name`, from `names` when configured
(Kubernetes, a static `hosts` map and/or the routers' names, see names.py, shipped in the same
ConfigMap): `namespace/workload`, `service/<namespace>/<name>`, `node/<name>`, a host name, or the
address itself when none is known; `src_kind`/`dst_kind` say which (workload, service, node, host,
address), and `src_net`/`dst_net` the configured network of each address, so dashboards can filter
talkers by them. All are functions of the tracked key at render time: they add no series.
Names are looked up when /metrics is rendered, for the tracked pairs only: a tracked pair is still
one series per metric, so the talker bound is unchanged; when an address's name changes (a pod gone,
its address reused) that pair's series is replaced by one with the new name (never both in one
scrape). Its counter keeps counting since admission, so the new series' first sample is its rate()
baseline and no bytes are attributed to the new name twice. The names' health series are a fixed
number (`names.Names.SERIES`), so budget = sum over dimensions of 3 (k + 1), + 3 (k_exporters + 1),
+ 33 fixed (3 totals, 6 malformed reasons, 4 per dimension, 4 more), + 27 when names are configured,
+ 6 with the kafka input (its consumer's health, `INPUT_SERIES`).

Service port: the lower of the two ports when it is below 32768 (below the Linux and IANA
ephemeral ranges, so it is the server side), else "ephemeral"; "none" when both are 0 (ICMP, ...).
"""
from __future__ import annotations

import argparse
import heapq
import ipaddress
import json
import os
import re
import signal
import socket
import stat
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

try:  # imported as netviz_pipeline.flowagg.flowagg (tests, the pipeline)
    from . import names as names_mod
except ImportError:  # run as a script: names.py sits next to this file (both come in the ConfigMap)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import names as names_mod

OTHER = "other"
MAX_LINE = 65536  # bytes; a longer "line" is garbage (GoFlow2 records are ~1 KiB)
MAX_LABEL = 128  # label values are cut to this length
EXIT_INPUT_LOST = 3
EXIT_NO_INPUT = 4
SERVICE_PORT_MAX = 32767
# labels the talker series carry besides their key, derived from it at render time
TALKER_EXTRA_LABELS = ("src_name", "dst_name", "src_kind", "dst_kind", "src_net", "dst_net")
# "protobuf": a Kafka message that is not a length-prefixed FlowMessage (kafka_input.py)
MALFORMED_REASONS = ("json", "truncated", "missing_field", "bad_value", "too_long", "protobuf")
# series an input other than the FIFO adds of its own (a fixed number), by the config section that selects it
INPUT_SERIES = {"kafka": 6}  # kafka_input.py: its consumer's health
DEFAULT_TOP_K = {"talkers": 100, "protocols": 16, "ports": 50, "exporters": 32}
PROTO_NAMES = {1: "ICMP", 2: "IGMP", 6: "TCP", 17: "UDP", 41: "IPv6", 47: "GRE", 50: "ESP", 51: "AH",
               58: "IPv6-ICMP", 89: "OSPF", 103: "PIM", 112: "VRRP", 132: "SCTP"}

# GoFlow2 v2's JSON formatter writes keys in a fixed order: a compiled pattern reads the fields we
# need ~6x faster than json.loads. Lines it does not match (other versions, mappings) use json.
_FAST = re.compile(
    r'\{"type":"([A-Za-z0-9_]*)","time_received_ns":(\d+),"sequence_num":(\d+),"sampling_rate":(\d+),'
    r'"sampler_address":"([^"\\]{0,64})","time_flow_start_ns":\d+,"time_flow_end_ns":\d+,'
    r'"bytes":(\d+),"packets":(\d+),"src_addr":"([^"\\]{0,64})","dst_addr":"([^"\\]{0,64})",'
    r'"etype":"[^"\\]*","proto":"([^"\\]{0,32})","src_port":(\d+),"dst_port":(\d+),')


_DOMAIN_KEY = '"observation_domain_id":'
_DOMAIN = re.compile(re.escape(_DOMAIN_KEY) + r'(\d+)')
# NetFlow v9's header sequence number counts export packets (RFC 3954), as GoFlow2 counts datagrams:
# the two compared tell export packets lost on the way (Sequences). v5 and IPFIX count records instead.
SEQUENCED = "NETFLOW_V9"
NO_SEQUENCE = -1


class Malformed(ValueError):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# ---------------------------------------------------------------------------------- parsing
def _uint(v, field: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        if isinstance(v, str) and v.isdigit() and len(v) < 20:
            return int(v)
        raise Malformed("bad_value")
    if v < 0 or v >= 1 << 64:
        raise Malformed("bad_value")
    return v


def _label(v) -> str:
    s = v if isinstance(v, str) else str(v)
    return s[:MAX_LABEL]


def _proto(v) -> str:
    if isinstance(v, bool):
        raise Malformed("bad_value")
    if isinstance(v, int):
        if not 0 <= v <= 255:
            raise Malformed("bad_value")
        return PROTO_NAMES.get(v, str(v))
    if isinstance(v, str):
        return v[:32] or "unknown"
    raise Malformed("bad_value")


def parse_line(line: str):
    """(exporter, sampling_rate, bytes, packets, src, dst, proto, src_port, dst_port, t_received_s,
    sequence, domain) or raise Malformed(reason). Never raises anything else. `sequence`: the NetFlow
    v9 packet's sequence number, NO_SEQUENCE for other flow types; `domain` its observation domain."""
    if len(line) > MAX_LINE:
        raise Malformed("too_long")
    m = _FAST.match(line)
    if m is not None and line.endswith("}"):
        kind, t, seq, rate, exp, b, p, src, dst, proto, sp, dp = m.groups()
        if kind != SEQUENCED:
            return (exp, int(rate), int(b), int(p), src, dst, proto, int(sp), int(dp), int(t) / 1e9, NO_SEQUENCE, 0)
        dom = _DOMAIN.match(line, line.rfind(_DOMAIN_KEY, m.end()))  # near the end: rfind, not a search
        return (exp, int(rate), int(b), int(p), src, dst, proto, int(sp), int(dp), int(t) / 1e9,
                int(seq), int(dom.group(1)) if dom else 0)
    try:
        rec = json.loads(line)
    except (ValueError, RecursionError):
        s = line.rstrip()
        raise Malformed("truncated" if s.startswith("{") and not s.endswith("}") else "json") from None
    if not isinstance(rec, dict):
        raise Malformed("json")
    try:
        src, dst = rec["src_addr"], rec["dst_addr"]
        b = rec["bytes"]
    except KeyError:
        raise Malformed("missing_field") from None
    if not isinstance(src, str) or not isinstance(dst, str):
        raise Malformed("bad_value")
    exp = rec.get("sampler_address", "")
    if not isinstance(exp, str):
        raise Malformed("bad_value")
    t = rec.get("time_received_ns", 0)
    seq = _uint(rec.get("sequence_num", 0), "sequence_num") if rec.get("type") == SEQUENCED else NO_SEQUENCE
    return (_label(exp), _uint(rec.get("sampling_rate", 0), "sampling_rate"), _uint(b, "bytes"),
            _uint(rec.get("packets", 0), "packets"), _label(src), _label(dst), _proto(rec.get("proto", 0)),
            _uint(rec.get("src_port", 0), "src_port"), _uint(rec.get("dst_port", 0), "dst_port"),
            _uint(t, "time_received_ns") / 1e9, seq, _uint(rec.get("observation_domain_id", 0), "domain"))


def service_port(sp: int, dp: int) -> str:
    if sp == 0 and dp == 0:
        return "none"
    low = min(p for p in (sp, dp) if p) if (sp and dp) else (sp or dp)
    return str(low) if low <= SERVICE_PORT_MAX else "ephemeral"


def _parsed(lines, bad: dict[str, int]):
    """The records of `lines`; empty lines are skipped, malformed ones counted in `bad` by reason."""
    for line in lines:
        if not line or line == "\n":
            continue
        try:
            rec = parse_line(line)
        except Malformed as m:
            bad[m.reason] += 1
            continue
        except Exception:  # noqa: BLE001 - defensive: no input may stop the aggregator
            bad["bad_value"] += 1
            continue
        yield rec


class Networks:
    """Address -> configured network name (longest prefix wins), else "other". Cached, bounded."""

    def __init__(self, mapping: dict[str, list[str]] | None, cache_size: int = 65536):
        nets = []
        for name, cidrs in (mapping or {}).items():
            for c in cidrs:
                nets.append((ipaddress.ip_network(c, strict=False), str(name)[:MAX_LABEL]))
        nets.sort(key=lambda n: -n[0].prefixlen)
        self.v4 = [(int(n.network_address), int(n.netmask), name) for n, name in nets if n.version == 4]
        self.v6 = [(n, name) for n, name in nets if n.version == 6]
        self.names = sorted({name for _, name in nets})
        self.cache: dict[str, str] = {}
        self.cache_size = cache_size

    def name(self, addr: str) -> str:
        hit = self.cache.get(addr)
        if hit is not None:
            return hit
        out = OTHER
        try:
            a = struct.unpack("!I", socket.inet_aton(addr))[0] if addr.count(".") == 3 else None
            if a is not None:
                for net, mask, name in self.v4:
                    if a & mask == net:
                        out = name
                        break
            elif self.v6:
                ip = ipaddress.ip_address(addr)
                out = next((name for n, name in self.v6 if ip in n), OTHER)
        except (OSError, ValueError):
            out = OTHER
        if len(self.cache) >= self.cache_size:
            self.cache.clear()  # bounded memory; the working set refills it
        self.cache[addr] = out
        return out


# ---------------------------------------------------------------------------------- counting
class SpaceSaving:
    """Weighted Space-Saving with k counters and an "other" bucket (see module doc for bounds).

    entry = [count, err, bytes, packets, flows, last_seen]; count - err == bytes observed since
    admission == entry[2]. A lazy min-heap of (count, seq, key) finds the eviction victim.
    """

    __slots__ = ("k", "entries", "heap", "seq", "other", "total", "evictions", "expired")

    def __init__(self, k: int):
        if k < 1:
            raise ValueError("k must be >= 1")
        self.k = k
        self.entries: dict = {}
        self.heap: list = []
        self.seq = 0
        self.other = [0, 0, 0]  # bytes, packets, flows
        self.total = 0  # N: total weight (bytes) ever offered
        self.evictions = 0
        self.expired = 0

    def _push(self, count, key):
        self.seq += 1
        heapq.heappush(self.heap, (count, self.seq, key))
        if len(self.heap) > 4 * self.k + 64:  # drop stale heap items
            self.heap = [(e[0], i, k) for i, (k, e) in enumerate(self.entries.items())]
            heapq.heapify(self.heap)
            self.seq = len(self.heap)

    def _fold(self, e):
        o = self.other
        o[0] += e[2]
        o[1] += e[3]
        o[2] += e[4]

    def offer(self, key, b: int, p: int, f: int, now: float) -> None:
        self.total += b
        e = self.entries.get(key)
        if e is not None:
            e[0] += b
            e[2] += b
            e[3] += p
            e[4] += f
            e[5] = now
            self._push(e[0], key)
            return
        err = 0
        if len(self.entries) >= self.k:
            heap, entries = self.heap, self.entries
            while True:
                count, _, victim = heapq.heappop(heap)
                v = entries.get(victim)
                if v is not None and v[0] == count:
                    break
            del entries[victim]
            self._fold(v)
            self.evictions += 1
            err = count
        self.entries[key] = [err + b, err, b, p, f, now]
        self._push(err + b, key)

    def expire(self, before: float) -> None:
        for key in [k for k, e in self.entries.items() if e[5] < before]:
            self._fold(self.entries.pop(key))
            self.expired += 1

    def max_error(self) -> int:
        return max((e[1] for e in self.entries.values()), default=0)


def tracked_keys(top_k: dict[str, int] | None, nets: "Networks") -> dict[str, int]:
    """Keys tracked per dimension: top_k, and every network pair (bounded by configuration: never evicts)."""
    k = dict(DEFAULT_TOP_K, **(top_k or {}))
    k["networks"] = (len(nets.names) + 1) ** 2
    return k


def config_budget(cfg: dict) -> int:
    """The series budget of the aggregator `main` builds from this --config."""
    names = cfg.get("names") or {}
    return series_budget(tracked_keys(cfg.get("top_k"), Networks(cfg.get("networks"))),
                         bool(names.get("kubernetes") or names.get("hosts") or names.get("router_hosts_dir")),
                         sum(n for section, n in INPUT_SERIES.items() if cfg.get(section)))


def series_budget(k: dict[str, int], names: bool, input_series: int = 0) -> int:
    """Hard maximum of series an aggregator with these tracked keys per dimension (`Aggregator.k`:
    top_k plus `networks`, the (names + 1)^2 network pairs) exports, `input_series` being its input's
    own (INPUT_SERIES); the scrape job's sample_limit is sized from it."""
    dims = sum((k[name] + 1) * 3 for name, _, _ in Aggregator.DIMENSIONS)  # bytes, packets, flows
    per_exporter = (k["exporters"] + 1) * 3  # last record timestamp, sampling_rate zero, sequence packets
    fixed = 3 + len(MALFORMED_REASONS) + 4 * len(Aggregator.DIMENSIONS) + 4  # totals, malformed, per-dim, misc
    return dims + per_exporter + fixed + (names_mod.Names.SERIES if names else 0) + input_series


class Sequences:
    """Export packets each exporter says it sent, from NetFlow v9 sequence numbers: per (exporter,
    observation domain) the advance of the newest packet's number, summed per exporter. Compared in
    Prometheus with the datagrams GoFlow2 counted from it (checks/exporters.py, the alert rules), the
    difference is what was lost before GoFlow2 decoded it (the network, a full socket buffer).

    Robust to seeing only some packets (a Kafka replica sees the records of its partitions: any record of
    a packet carries its number) and to old records arriving late (a lagging partition): only a packet
    received after the newest one so far moves the count. A number far below the newest, received later,
    is an exporter that restarted; a little below, a reordered datagram (ignored). Uint32 wraps."""

    REORDER = 64  # packets: a lower number this close is a reordered datagram, not a restart
    MAX_DOMAINS = 16  # per exporter (memory bound against spoofed domain ids)

    def __init__(self):
        self.newest: dict[tuple[str, int], tuple[float, int]] = {}  # (exporter, domain) -> (t, seq)
        self.sent: dict[str, int] = {}
        self.domains: dict[str, int] = {}

    def advance(self, newest: dict[tuple[str, int], tuple[float, int]]) -> None:
        """A batch's newest (t_received, sequence) per (exporter, domain)."""
        for key, (t, seq) in newest.items():
            last = self.newest.get(key)
            if last is None:
                exp = key[0]
                if self.domains.get(exp, 0) >= self.MAX_DOMAINS:
                    continue
                self.domains[exp] = self.domains.get(exp, 0) + 1
                self.sent.setdefault(exp, 0)
                self.newest[key] = (t, seq)  # a baseline: what it sent before is unknown
                continue
            last_t, last_seq = last
            if t < last_t:
                continue  # an older packet, late (another partition's backlog)
            step = (seq - last_seq) % (1 << 32)
            if step == 0:
                continue
            if step < 1 << 31:  # ahead (across a wrap too)
                self.sent[key[0]] += step
            elif (last_seq - seq) % (1 << 32) <= self.REORDER:
                continue  # reordered: received after a higher number
            else:  # restarted: numbering began again
                self.sent[key[0]] += seq
            self.newest[key] = (t, seq)

    def prune(self, tracked) -> None:
        for key in [k for k in self.newest if k[0] not in tracked]:
            del self.newest[key]
        for exp in [e for e in self.sent if e not in tracked]:
            del self.sent[exp]
            self.domains.pop(exp, None)


class Aggregator:
    """All dimensions plus per-exporter freshness; thread-safe between `feed` and `render`."""

    DIMENSIONS = (  # name, metric prefix, label names
        ("talkers", "netviz_flow_talker", ("exporter", "src", "dst")),
        ("protocols", "netviz_flow_protocol", ("protocol",)),
        ("ports", "netviz_flow_port", ("protocol", "port")),
        ("exporters", "netviz_flow_exporter", ("exporter",)),
        ("networks", "netviz_flow_network", ("src_net", "dst_net")),
    )

    def __init__(self, top_k: dict[str, int] | None = None, networks: dict[str, list[str]] | None = None,
                 idle_seconds: float = 900.0, clock=time.time, names=None):
        self.nets = Networks(networks)
        self.k = k = tracked_keys(top_k, self.nets)
        self.sketch = {name: SpaceSaving(k[name]) for name, _, _ in self.DIMENSIONS}
        self.last_record: dict[str, float] = {}
        self.zero_rate: dict[str, int] = {}
        self.zero_rate_other = 0
        self.sequences = Sequences()
        self.malformed = dict.fromkeys(MALFORMED_REASONS, 0)
        self.records = 0
        self.bytes = 0
        self.packets = 0
        self.idle_seconds = idle_seconds
        self.clock = clock
        # names.Names (or anything with name(addr) -> str | None and samples()); None: no name labels
        self.names = names
        self.lock = threading.Lock()
        self.input_connected = 0  # or a function returning it, read when /metrics is rendered
        self.input_help = "1 while the GoFlow2 FIFO is open."
        # another input's own series (kafka_input.py): SERIES (a fixed count) and samples() as names.Names'
        self.input_series = None
        self.started = clock()
        self._last_expire = self.started

    # -- input ---------------------------------------------------------------------------------
    def feed(self, lines) -> int:
        """Count an iterable of lines (str, without or with trailing newline); returns records."""
        bad = dict.fromkeys(MALFORMED_REASONS, 0)
        return self._count(_parsed(lines, bad), bad)

    def add(self, records, malformed: dict[str, int] | None = None) -> int:
        """Count records another input has parsed already: tuples exactly as `parse_line` returns them
        (exporter, sampling_rate, bytes, packets, src, dst, proto, src_port, dst_port, t_received_s, sequence,
        domain), and
        `malformed` {reason: count} (reasons from MALFORMED_REASONS) for what it could not parse; both in
        one step under the lock, as one `feed`. Returns records counted."""
        bad = dict.fromkeys(MALFORMED_REASONS, 0)
        for reason, c in (malformed or {}).items():
            if reason not in bad:
                raise ValueError(f"malformed reason {reason!r} is not one of {MALFORMED_REASONS}")
            bad[reason] += c
        return self._count(records, bad)

    def _count(self, records, bad: dict[str, int]) -> int:
        talk: dict = {}
        prot: dict = {}
        port: dict = {}
        expo: dict = {}
        netw: dict = {}
        last: dict = {}
        zero: dict = {}
        newest: dict = {}
        netname = self.nets.name
        n = tb = tp = 0
        prev = None  # a packet's records come one after another: look each packet up once
        for exp, rate, b, p, src, dst, proto, sp, dp, t, seq, dom in records:  # `bad` is complete once this ends
            if seq >= 0 and (seq, t, exp, dom) != prev:
                prev = (seq, t, exp, dom)
                k = (exp, dom)
                cur = newest.get(k)
                if cur is None or t > cur[0] or (t == cur[0] and seq > cur[1]):
                    newest[k] = (t, seq)
            if rate == 0:
                zero[exp] = zero.get(exp, 0) + 1
                rate = 1
            b *= rate
            p *= rate
            n += 1
            tb += b
            tp += p
            for d, key in ((talk, (exp, src, dst)), (prot, proto), (port, (proto, service_port(sp, dp))),
                           (expo, exp), (netw, (netname(src), netname(dst)))):
                e = d.get(key)
                if e is None:
                    d[key] = [b, p, 1]
                else:
                    e[0] += b
                    e[1] += p
                    e[2] += 1
            if t > last.get(exp, 0.0):
                last[exp] = t
        now = self.clock()
        with self.lock:
            for reason, c in bad.items():
                self.malformed[reason] += c
            self.records += n
            self.bytes += tb
            self.packets += tp
            for name, d in (("talkers", talk), ("protocols", prot), ("ports", port), ("exporters", expo),
                            ("networks", netw)):
                s = self.sketch[name]
                # heaviest first: within a batch, big keys claim slots before small ones
                for key, (b, p, f) in sorted(d.items(), key=lambda kv: -kv[1][0]) if len(d) > s.k else d.items():
                    s.offer(key, b, p, f, now)
            tracked = self.sketch["exporters"].entries
            for exp, t in last.items():
                if t > now + 300 or t <= 0:  # exporter clock nonsense: use our own
                    t = now
                if exp in tracked:
                    if t > self.last_record.get(exp, 0.0):
                        self.last_record[exp] = t
            for exp, c in zero.items():
                if exp in tracked:
                    self.zero_rate[exp] = self.zero_rate.get(exp, 0) + c
                else:
                    self.zero_rate_other += c
            self.sequences.advance({k: v for k, v in newest.items() if k[0] in tracked})
            self._maybe_expire(now)
            self._prune_exporters()
        return n

    def _maybe_expire(self, now: float) -> None:
        if now - self._last_expire < 10:
            return
        self._last_expire = now
        for s in self.sketch.values():
            s.expire(now - self.idle_seconds)
        self._prune_exporters()

    def _prune_exporters(self) -> None:
        """Per-exporter series exist only for tracked exporters (their count is bounded by k)."""
        tracked = self.sketch["exporters"].entries
        for exp in [e for e in self.last_record if e not in tracked]:
            del self.last_record[exp]
        for exp in [e for e in self.zero_rate if e not in tracked]:
            self.zero_rate_other += self.zero_rate.pop(exp)
        self.sequences.prune(tracked)

    # -- output ---------------------------------------------------------------------------------
    def budget(self) -> int:
        """Hard maximum of series this process can export (what `render` may ever emit)."""
        return series_budget(self.k, self.names is not None,
                             self.input_series.SERIES if self.input_series is not None else 0)

    def render(self) -> str:
        with self.lock:
            self._maybe_expire(self.clock())
            out: list[str] = []
            count = 0

            def metric(name: str, kind: str, help_: str, samples) -> None:
                nonlocal count
                out.append(f"# HELP {name} {help_}\n# TYPE {name} {kind}\n")
                for labels, value in samples:
                    lbl = ",".join(f'{k}="{_esc(v)}"' for k, v in labels) if labels else ""
                    out.append(f"{name}{{{lbl}}} {_num(value)}\n" if lbl else f"{name} {_num(value)}\n")
                    count += 1

            named: dict[str, tuple[str, str]] = {}
            if self.names is not None:
                self.names.refresh()

            def name_of(addr: str) -> tuple[str, str]:  # at render time: one series per tracked key, current names
                n = named.get(addr)
                if n is None:
                    name, kind = self.names.resolve(addr) if self.names is not None else (None, "address")
                    n = named[addr] = (_label(name or addr), kind)
                return n

            for name, prefix, label_names in self.DIMENSIONS:
                s = self.sketch[name]
                rows = []
                # always, names configured or not: dashboards and checks read one label set
                with_names = name == "talkers"
                all_labels = label_names + (TALKER_EXTRA_LABELS if with_names else ())
                for key, e in s.entries.items():
                    parts = key if isinstance(key, tuple) else (key,)
                    if with_names:
                        (src_name, src_kind), (dst_name, dst_kind) = name_of(parts[1]), name_of(parts[2])
                        parts = (*parts, src_name, dst_name, src_kind, dst_kind,
                                 self.nets.name(parts[1]), self.nets.name(parts[2]))
                    rows.append((tuple(zip(all_labels, parts)), e))
                other = tuple((ln, OTHER) for ln in all_labels)
                what = {"talkers": "source/destination pair", "protocols": "protocol",
                        "ports": "protocol and service port", "exporters": "exporter",
                        "networks": "source/destination network"}[name]
                for i, unit in ((2, "bytes"), (3, "packets"), (4, "flows")):
                    metric(f"{prefix}_{unit}_total", "counter",
                           f"Sampling-corrected {unit} per {what} (top {s.k} by bytes; the rest under \"{OTHER}\").",
                           [(lbl, e[i]) for lbl, e in rows] + [(other, s.other[i - 2])])
            metric("netviz_flow_last_record_timestamp_seconds", "gauge",
                   "When GoFlow2 received the newest flow record from this exporter (unix seconds).",
                   [((("exporter", k),), v) for k, v in sorted(self.last_record.items())])
            metric("netviz_flow_sampling_rate_zero_total", "counter",
                   "Flow records with sampling_rate 0 (counted as 1:1): a misconfigured or unsampled exporter.",
                   [((("exporter", k),), v) for k, v in sorted(self.zero_rate.items())]
                   + [((("exporter", OTHER),), self.zero_rate_other)])
            metric("netviz_flow_exporter_sequence_packets_total", "counter",
                   "NetFlow v9 export packets the exporter says it sent (its sequence numbers' advance since this "
                   "aggregator first saw it); less the datagrams GoFlow2 counted from it: lost on the way.",
                   [((("exporter", k),), v) for k, v in sorted(self.sequences.sent.items())])
            metric("netviz_flow_records_total", "counter", "Flow records counted.", [((), self.records)])
            metric("netviz_flow_bytes_total", "counter", "Sampling-corrected bytes of all flows.", [((), self.bytes)])
            metric("netviz_flow_packets_total", "counter", "Sampling-corrected packets of all flows.",
                   [((), self.packets)])
            metric("netviz_flow_malformed_lines_total", "counter", "Input lines (Kafka messages) skipped, by reason.",
                   [((("reason", r),), c) for r, c in self.malformed.items()])
            dims = [(name, self.sketch[name]) for name, _, _ in self.DIMENSIONS]
            metric("netviz_flow_tracked_keys", "gauge", "Keys tracked per dimension (at most top_k).",
                   [((("dimension", n),), len(s.entries)) for n, s in dims])
            metric("netviz_flow_top_k", "gauge", "Configured number of tracked keys per dimension.",
                   [((("dimension", n),), s.k) for n, s in dims])
            metric("netviz_flow_evictions_total", "counter", "Keys evicted (Space-Saving) or expired (idle), folded into other.",
                   [((("dimension", n),), s.evictions + s.expired) for n, s in dims])
            metric("netviz_flow_heavy_hitter_error_bytes", "gauge",
                   "Largest Space-Saving over-estimate among tracked keys; <= N/k (exported counters are exact since admission).",
                   [((("dimension", n),), s.max_error()) for n, s in dims])
            if self.names is not None:
                for m_name, kind, help_, samples in self.names.samples():
                    metric(m_name, kind, help_, samples)
            if self.input_series is not None:
                for m_name, kind, help_, samples in self.input_series.samples():
                    metric(m_name, kind, help_, samples)
            metric("netviz_flow_input_connected", "gauge", self.input_help,
                   [((), self.input_connected() if callable(self.input_connected) else self.input_connected)])
            metric("netviz_flow_start_time_seconds", "gauge", "Process start (unix seconds).", [((), self.started)])
            metric("netviz_flow_series_budget", "gauge", "Hard maximum of series this aggregator exports.",
                   [((), self.budget())])
            metric("netviz_flow_series", "gauge", "Series exported in this scrape (<= netviz_flow_series_budget).",
                   [((), count + 1)])  # + this one
            return "".join(out)


def _esc(v) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(v) -> str:
    return str(v) if isinstance(v, int) else repr(float(v))


# ---------------------------------------------------------------------------------- I/O
class Splitter:
    """Bytes chunks -> complete lines; an overlong partial line is dropped (counted) up to its end."""

    def __init__(self, agg: Aggregator):
        self.rest = b""
        self.skipping = False  # inside an overlong line: drop bytes up to its newline
        self.agg = agg

    def lines(self, chunk: bytes) -> list[str]:
        data = self.rest + chunk if self.rest else chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            self.rest = data
            lines: list[str] = []
        else:
            self.rest = data[cut + 1:]
            lines = data[:cut].decode("utf-8", "replace").split("\n")
            if self.skipping:
                lines.pop(0)  # the tail of the overlong line
                self.skipping = False
        if len(self.rest) > MAX_LINE:
            self.rest = b""
            if not self.skipping:
                self.skipping = True
                with self.agg.lock:
                    self.agg.malformed["too_long"] += 1
        return lines

    def flush(self) -> list[str]:
        rest, self.rest = self.rest, b""
        return [rest.decode("utf-8", "replace")] if rest and not self.skipping else []


def open_input(path: str, wait_seconds: float, agg: Aggregator) -> int:
    """Open the FIFO (or file) for reading, waiting for it to appear; -1 when it never does."""
    if path == "-":
        return 0
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            st = os.stat(path)
            if stat.S_ISREG(st.st_mode) or stat.S_ISFIFO(st.st_mode):
                return os.open(path, os.O_RDONLY)  # a FIFO blocks until GoFlow2 holds it open
        except FileNotFoundError:
            pass
        if time.monotonic() > deadline:
            return -1
        time.sleep(0.2)


def run(agg: Aggregator, fd: int) -> int:
    """Read until end of input; returns records counted."""
    split = Splitter(agg)
    total = 0
    while True:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break
        total += agg.feed(split.lines(chunk))
    total += agg.feed(split.flush())
    return total


def serve(agg: Aggregator, host: str, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                body, ctype, code = agg.render().encode(), "text/plain; version=0.0.4; charset=utf-8", 200
            elif path in ("/healthz", "/"):
                body, ctype, code = b"OK\n", "text/plain", 200
            else:
                body, ctype, code = b"not found\n", "text/plain", 404
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    ThreadingHTTPServer.allow_reuse_address = True
    ThreadingHTTPServer.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
    srv = ThreadingHTTPServer((host, port), Handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True, name="metrics").start()
    return srv


def load_config(path: str | None) -> dict:
    if not path:
        return {}
    with open(path) as f:
        cfg = json.load(f)
    if not isinstance(cfg, dict):
        raise SystemExit(f"{path}: not a JSON object")
    return cfg


def make_names(cfg) -> "names_mod.Names | None":
    """`names` of the config: {kubernetes: bool, max_entries: int, hosts: {address: name},
    router_hosts_dir: path}; None: off."""
    if not isinstance(cfg, dict):
        return None
    cluster = None
    if cfg.get("kubernetes"):
        cluster = names_mod.ClusterNames(int(cfg.get("max_entries") or names_mod.DEFAULT_MAX_OBJECTS))
    hosts = cfg.get("hosts") if isinstance(cfg.get("hosts"), dict) else {}
    names = names_mod.Names(cluster, hosts, cfg.get("router_hosts_dir") or None)
    return names if names.enabled else None


def log(msg: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} flowagg: {msg}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="GoFlow2 JSON records -> bounded Prometheus series")
    ap.add_argument("--input", default="-", help="FIFO or file GoFlow2 writes (-transport.file), - for stdin")
    ap.add_argument("--config", help="JSON: {top_k: {talkers, protocols, ports, exporters}, networks: "
                                     "{name: [cidr, ...]}, idle_seconds, names: {kubernetes: bool, "
                                     "max_entries: int, hosts: {address: name}, router_hosts_dir: path}}")
    ap.add_argument("--listen", default="0.0.0.0:9102", help="host:port of /metrics")
    ap.add_argument("--wait-input", type=float, default=120.0, help="seconds to wait for the FIFO to appear")
    a = ap.parse_args(argv)
    cfg = load_config(a.config)
    names = make_names(cfg.get("names"))
    agg = Aggregator(cfg.get("top_k"), cfg.get("networks"), float(cfg.get("idle_seconds", 900)), names=names)
    host, _, port = a.listen.rpartition(":")
    serve(agg, host.strip("[]") or "0.0.0.0", int(port))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    log(f"serving /metrics on {a.listen}; series budget {agg.budget()}; top_k {agg.k}; "
        f"networks {agg.nets.names}; reading {a.input}")
    if names is not None and names.cluster is not None:
        names_mod.start(names.cluster, log)
    fd = open_input(a.input, a.wait_input, agg)
    if fd < 0:
        log(f"input {a.input} did not appear within {a.wait_input:.0f}s; exiting")
        return EXIT_NO_INPUT
    agg.input_connected = 1
    log("input open")
    n = run(agg, fd)
    agg.input_connected = 0
    log(f"input closed after {n} records (GoFlow2 gone?): exiting {EXIT_INPUT_LOST} so the container restarts")
    return EXIT_INPUT_LOST


if __name__ == "__main__":
    sys.exit(main())
