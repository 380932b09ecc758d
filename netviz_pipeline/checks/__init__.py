"""Every health question netviz asks, answered once, by subject: each function returns a
`findings.Finding` (plain data). Asset checks (during runs) and the `flow_freshness` sensor (between
runs) import them from here and turn them into Dagster results; nothing here imports an asset module.

- exporters.py: each router's exporter (softflowd + GoFlow2's count of its datagrams)
- scrape.py: is scraping healthy (jobs loaded, a healthy target per running pod), the collector, the
  alert rules
- caretta.py: Caretta's links are fresh; preflight.py: nodes fit for Caretta's eBPF agent
- canary.py: canary traffic sent now is counted as its own flow
- dashboards.py: dashboard ConfigMaps as rendered, where the sidecar loads them
- panels.py: every dashboard panel's query returns data
- observe.py: the set the sensor looks at each tick
"""
from __future__ import annotations

import time
from typing import Callable, TypeVar

from ..findings import Finding, healthy

T = TypeVar("T", Finding, list[Finding])


def poll(evaluate: Callable[[], T], timeout: float, interval: float = 2.0) -> T:
    """Re-evaluate until the finding (or every finding of a list) is healthy or `timeout` passes;
    return the last result. Checks right after a deploy must wait for discovery and the first
    scrapes, not fail at once."""
    deadline = time.monotonic() + timeout
    while True:
        result = evaluate()
        if healthy(result) or time.monotonic() > deadline:
            return result
        time.sleep(interval)
