"""Is a router's NetFlow exporter healthy? Told apart from what the router and the collector say,
not from a longer timeout.

A router whose LAN is quiet sends no NetFlow at all (softflowd exports flows, not heartbeats), so
"no datagrams at the collector" alone cannot tell a quiet link from a dead exporter. Each look
therefore combines:
- the exporter over SSH: is softflowd running, as configured, and what do its own counters say
  (packets captured, NetFlow datagrams sent, send failures)?
- the collector, through Prometheus: datagrams GoFlow2 counted from this router in the window.

Causes, in the order they are decided (the first that holds wins):
  router-unreachable  SSH to the router failed                               unhealthy, not re-run
  exporter-down       no softflowd process                                   unhealthy
  misconfigured       softflowd runs with other flags than the settings      unhealthy
  export-failing      softflowd's send failures grew                         unhealthy
  flowing             GoFlow2 counted datagrams from it in the window        healthy
  not-received        softflowd sent datagrams GoFlow2 should have counted
                      by now, and it counted none                            unhealthy
  flows-open          packets captured, flows not expired yet                healthy
  quiet               no packets on the interface                            healthy
  baseline            first look at this softflowd: nothing to compare yet   healthy
  no-counters         no datagrams, and softflowd's counters are unreadable
                      (OPNsense's API has none): cannot tell quiet from lost unhealthy
(health.exporter_looks adds `collector-unknown` when Prometheus cannot be asked.)

Pure functions over plain data; the sensor keeps the samples in its cursor.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

MAX_SAMPLES = 12  # per router; a window of the default 180 s holds 6 looks 30 s apart
# Export packets lost on the way (NetFlow v9 sequence numbers against GoFlow2's count) that make a
# flowing exporter unhealthy. The two counters are different targets, scraped up to an interval apart,
# and increase() extrapolates each on its own: seen in the lab's chart mode, 8 of 79 packets "lost" over
# 180 s at 15 s scrapes with nothing lost. So the bound is 5 packets plus the larger of 2 % and two
# scrape intervals' worth of the window (`lost_bound`).
LOST_MIN_PACKETS = 5
LOST_MIN_RATIO = 0.02


def lost_bound(sent: float, window_s: float, scrape_interval_s: float) -> float:
    """Packets that must be missing before a comparison of counters `scrape_interval_s` apart over
    `window_s` calls it loss."""
    return LOST_MIN_PACKETS + sent * max(LOST_MIN_RATIO, 2 * scrape_interval_s / window_s)


@dataclass(frozen=True)
class Sample:
    """softflowd's counters at one look. `incarnation` (pid + start time) resets the history when
    softflowd was restarted, since its counters start from zero again."""

    t: float
    incarnation: str
    packets_processed: int
    export_packets: int
    export_failures: int


@dataclass(frozen=True)
class Verdict:
    healthy: bool
    cause: str
    reason: str
    heal: bool = True  # would re-running the router step help? (not when the router is unreachable)


def history(previous: list[Sample], current: Sample | None, now: float, window_s: float) -> list[Sample]:
    """Samples of the same softflowd within the window, oldest first, current last (bounded)."""
    if current is None:
        return []
    kept = [p for p in previous if p.incarnation == current.incarnation and now - window_s <= p.t < current.t]
    return (kept + [current])[-MAX_SAMPLES:]


def classify(*, reachable_error: str | None, running: bool, drift: list[str], samples: list[Sample],
             counters_known: bool, datagrams: float, window_s: int, settle_s: float, now: float,
             interface: str = "its interface", address: str = "", collector: str = "", lost: float = 0.0,
             sent: float = 0.0, scrape_interval_s: float = 15.0) -> Verdict:
    """`samples`: this softflowd's history (see `history`), current last. `settle_s`: how long a
    datagram takes to show up in Prometheus (scrape interval x 2 + a margin). `sent`, `lost`: export
    packets in the window by the exporter's NetFlow v9 sequence numbers, and of those never counted by
    GoFlow2 (freshness.export_lost_query; 0 for other NetFlow versions)."""
    if reachable_error is not None:
        return Verdict(False, "router-unreachable", f"router unreachable over SSH ({reachable_error}); softflowd "
                                                    "may still export, but it cannot be checked or restarted",
                       heal=False)
    if not running:
        return Verdict(False, "exporter-down", "softflowd is not running on the router")
    if drift:
        return Verdict(False, "misconfigured", "softflowd runs with other settings: " + "; ".join(drift))
    first, last = (samples[0], samples[-1]) if samples else (None, None)
    if first is not None and last.export_failures > first.export_failures:
        return Verdict(False, "export-failing",
                       f"softflowd failed to send {last.export_failures - first.export_failures} NetFlow datagrams "
                       f"to {collector or 'the collector'} in the last {now - first.t:.0f}s (sendto errors: no "
                       "route to the collector?)")
    if datagrams > 0 and lost >= lost_bound(sent, window_s, scrape_interval_s):
        return Verdict(False, "datagrams-lost",
                       f"{lost:.0f} of the {sent:.0f} NetFlow export packets {address} sent in the last {window_s}s "
                       f"(its sequence numbers) never reached GoFlow2: the network between router and collector "
                       f"drops them, or the collector's socket buffer is full (GoFlow2's own drops are "
                       f"NetvizFlowDrops)", heal=False)
    if datagrams > 0:
        return Verdict(True, "flowing", f"{datagrams:.0f} NetFlow datagrams from {address} counted by GoFlow2 "
                                        f"in the last {window_s}s" + (f", {lost:.0f} lost on the way" if sent else ""))
    if not counters_known:
        return Verdict(False, "no-counters", f"no NetFlow from {address} in the last {window_s}s, and softflowd's "
                                             "counters cannot be read here to tell a quiet link from lost datagrams")
    if len(samples) < 2:
        return Verdict(True, "baseline", f"no NetFlow from {address} in the last {window_s}s; softflowd runs, "
                                         "its counters are taken as the baseline for the next look")
    # Datagrams sent between looks that are old enough to be in Prometheus by now, and inside the window.
    settled = [p for p in samples if p.t <= now - settle_s]
    sent = settled[-1].export_packets - settled[0].export_packets if len(settled) >= 2 else 0
    if sent > 0:
        return Verdict(False, "not-received",
                       f"softflowd sent {sent} NetFlow datagrams to {collector or 'the collector'} in the "
                       f"{settled[-1].t - settled[0].t:.0f}s before {now - settled[-1].t:.0f}s ago, but GoFlow2 counted "
                       f"none from {address} in the last {window_s}s: a firewall or route between router and "
                       "collector, a wrong collector address, or NAT changing the source address")
    seen = last.packets_processed - first.packets_processed
    if seen > 0:
        return Verdict(True, "flows-open", f"softflowd captured {seen} packets on {interface} in the last "
                                           f"{now - first.t:.0f}s; their flows have not expired yet")
    return Verdict(True, "quiet", f"no traffic: softflowd captured no packets on {interface} in the last "
                                  f"{now - first.t:.0f}s (a quiet link, not a fault)")


def dump(samples: dict[str, list[Sample]]) -> dict:
    return {k: [asdict(s) for s in v] for k, v in samples.items()}


def load(data: dict | None) -> dict[str, list[Sample]]:
    return {k: [Sample(**s) for s in v] for k, v in (data or {}).items()}
