"""Is the collector's node alive: the root cause the sensor looks for before "collector down".

A lost node makes GoFlow2's target and every router's exporter look dead; re-running GoFlow2 in place
cannot help (it is pinned there), so this subject explains those symptoms (remediation.root_causes)
and, with standby nodes, heals by moving the collector and re-pointing the routers."""
from __future__ import annotations

from ..findings import Finding
from ..placement import SUSPECT_AFTER_S, Candidate, Placement
from ..settings import Settings

SUBJECT = "collector-node"


def collector_node_finding(s: Settings, where: Placement, cands: list[Candidate]) -> Finding | None:
    """None before the first deploy (no Deployment to place)."""
    if where.current is None:
        return None
    lost_after = s.cluster.node_lost_after_seconds
    here = next((c for c in cands if c.node == where.current), None)
    details = {"node": where.current, "to": where.node, "address": where.address,
               "lease_age_s": None if here is None or here.lease_age is None else round(here.lease_age, 1)}
    if where.moves:
        return Finding(SUBJECT, False, f"GoFlow2 {where.reason}", details)
    problem = here.problem(lost_after) if here is not None else f"node {where.current} is not a candidate"
    if problem:  # nowhere to go
        fix = ("no standby node is usable either" if s.cluster.standby_node_addresses else
               "set cluster.standby_node_addresses to let netviz move the collector")
        return Finding(SUBJECT, False, f"{problem}: {fix}", details, heal=False)
    if here.lease_age is not None and here.lease_age > SUSPECT_AFTER_S:
        return Finding(SUBJECT, False, f"node {here.node} has not renewed its Lease for {here.lease_age:.0f}s: "
                                       f"GoFlow2 moves if it lapses ({lost_after}s)", details | {"waiting": True},
                       heal=False)
    return Finding(SUBJECT, True, f"GoFlow2's node {here.node} is usable", details)
