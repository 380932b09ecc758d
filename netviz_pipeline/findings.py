"""One shape for every health and check result: what was looked at, whether it is healthy, why, and
the figures the verdict rests on.

Plain data, no Dagster types: the health layer (health.py, the check helpers in assets/) returns
findings, the remediation planner and the notifications read them, and only the edge (the asset
check functions and the sensor) turns them into Dagster metadata, check results and evaluations.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence


@dataclass(frozen=True)
class Finding:
    subject: str  # "router:<name>", "collector", "scrape", "caretta", "dashboard:<stem>", "panels", ...
    healthy: bool
    reason: str  # one line a person reads: why it is (un)healthy
    details: dict[str, Any] = field(default_factory=dict, hash=False)  # JSON-able figures behind the verdict
    heal: bool = True  # False: re-running a step cannot fix it (e.g. the router is unreachable)
    # > 0: a failure this recent is watched, not healed (remediation.plan): it is often in passing
    confirm_after_s: float = 0.0


def healthy(result: Finding | Sequence[Finding]) -> bool:
    """A finding's verdict, or whether every finding of a list is healthy."""
    return result.healthy if isinstance(result, Finding) else all(f.healthy for f in result)

