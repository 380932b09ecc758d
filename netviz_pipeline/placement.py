"""Where GoFlow2 runs: the node at `cluster.node_address`, or a standby when that node is lost.

GoFlow2 is pinned to one node (its NodePort keeps each router's source address only on the node running
the pod), so losing that node would end collection for good. With `cluster.standby_node_addresses`
the collector moves: the goflow2 step pins it to the first usable candidate, the routers' softflowd
follow (router_softflowd converges them to the same address), and the health sensor triggers both when
the collector's node is lost (checks/collector_node.py).

Usable: the node exists, is Ready, is not cordoned, and its kubelet renewed its Lease within
`cluster.node_lost_after_seconds` (the lease tells a lost node within 40 s; the node controller marks it
NotReady only after its 50 s grace period). The collector stays where it runs while that node is usable
(moving costs a gap in collection; a node that comes back does not drag it back), so a cordon is how an
operator moves it on purpose, before draining the node.

Pure functions over the objects the API returns; `look` reads them.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from .render import goflow2 as render_goflow2
from .settings import Settings

LEASE_NAMESPACE = "kube-node-lease"
HOSTNAME_LABEL = "kubernetes.io/hostname"
# The kubelet renews its lease every 10 s: two renewals missed and the node is suspect (the sensor
# then waits for the lease to lapse instead of re-running a collector whose node may be gone).
SUSPECT_AFTER_S = 20.0


@dataclass(frozen=True)
class Candidate:
    address: str
    node: str | None  # None: no node has this address
    ready: bool = False
    cordoned: bool = False
    lease_age: float | None = None  # seconds since the kubelet renewed its Lease; None: not read or none

    def problem(self, lost_after: float) -> str | None:
        """Why GoFlow2 cannot run here, or None."""
        if self.node is None:
            return f"no node has address {self.address}"
        if self.lease_age is not None and self.lease_age > lost_after:
            return f"node {self.node} lost: its kubelet has not renewed its Lease for {self.lease_age:.0f}s"
        if not self.ready:
            return f"node {self.node} is not Ready"
        if self.cordoned:
            return f"node {self.node} is cordoned"
        return None


@dataclass(frozen=True)
class Placement:
    address: str  # where routers send NetFlow
    node: str | None  # where GoFlow2 is pinned; None: no node has the address
    current: str | None  # where the Deployment pins it now (None: not deployed yet)
    reason: str  # one line: why here

    @property
    def moves(self) -> bool:
        return self.current is not None and self.node is not None and self.node != self.current


def lease_age(lease: dict | None, now: float) -> float | None:
    renewed = ((lease or {}).get("spec") or {}).get("renewTime")
    if not renewed:
        return None
    return max(0.0, now - datetime.fromisoformat(renewed.replace("Z", "+00:00")).timestamp())


def _ready(node: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (node.get("status") or {}).get("conditions") or [])


def node_with_address(nodes: list[dict], address: str) -> dict | None:
    """The node whose InternalIP (or ExternalIP) is `address`, first by name."""
    for node in sorted(nodes, key=lambda n: n["metadata"]["name"]):
        for a in (node.get("status") or {}).get("addresses") or []:
            if a.get("address") == address and a.get("type") in ("InternalIP", "ExternalIP"):
                return node
    return None


def candidates(s: Settings, nodes: list[dict], leases: dict[str, dict] | None, now: float) -> list[Candidate]:
    """node_address first, then the standbys, as the cluster shows them. `leases`: by node name
    (None: not read, as without standbys)."""
    out = []
    for address in [s.cluster.node_address, *s.cluster.standby_node_addresses]:
        node = node_with_address(nodes, address)
        if node is None:
            out.append(Candidate(address, None))
            continue
        name = node["metadata"]["name"]
        out.append(Candidate(address, name, ready=_ready(node), cordoned=bool((node.get("spec") or {}).get("unschedulable")),
                             lease_age=None if leases is None else lease_age(leases.get(name), now)))
    return out


def pinned_node(deployment: dict | None) -> str | None:
    """The node a GoFlow2 Deployment is pinned to (its nodeSelector), or None."""
    spec = ((((deployment or {}).get("spec") or {}).get("template") or {}).get("spec") or {})
    return (spec.get("nodeSelector") or {}).get(HOSTNAME_LABEL)


def choose(cands: list[Candidate], current: str | None, lost_after: float) -> Placement:
    """Stay on the current node while it is usable; else the first usable candidate; else stay put (or,
    not yet deployed, the first candidate) and say why."""
    here = next((c for c in cands if current is not None and c.node == current), None)
    if here is not None and here.problem(lost_after) is None:
        return Placement(here.address, here.node, current, f"stays on {here.node} ({here.address})")
    usable = next((c for c in cands if c.problem(lost_after) is None), None)
    if usable is not None:
        why = (f"on {usable.node} ({usable.address})" if here is None or current is None
               else f"moves to {usable.node} ({usable.address}): {here.problem(lost_after)}")
        return Placement(usable.address, usable.node, current, why)
    stay = here or cands[0]
    problems = "; ".join(p for c in cands if (p := c.problem(lost_after)))
    return Placement(stay.address, stay.node, current, f"no usable node ({problems}): stays on "
                                                       f"{stay.node or stay.address}")


# -- reading the cluster --------------------------------------------------------------------------------
def look(s: Settings, kube, now: float | None = None) -> tuple[Placement, list[Candidate]]:
    """The placement for the live cluster: nodes, their leases (only with standbys: the grant for
    leases exists only then) and the GoFlow2 Deployment as it pins the collector now."""
    now = time.time() if now is None else now
    leases = None
    if s.cluster.standby_node_addresses:
        leases = {lease["metadata"]["name"]: lease for lease in kube.list("coordination.k8s.io/v1", "Lease", LEASE_NAMESPACE)}
    cands = candidates(s, kube.list("v1", "Node"), leases, now)
    current = pinned_node(kube.get("apps/v1", "Deployment", render_goflow2.NAME, s.goflow2.namespace))
    return choose(cands, current, s.cluster.node_lost_after_seconds), cands


def for_routers(s: Settings, kube) -> Settings:
    """The settings as the routers must follow them: the collector where it is placed now (only with
    standbys; without, the settings' own node_address). What router_softflowd converges to and what the
    exporter checks expect softflowd to run with."""
    if not s.cluster.standby_node_addresses:
        return s
    return routed(s, look(s, kube)[0])


def routed(s: Settings, where: Placement) -> Settings:
    """`for_routers` for a placement already looked up."""
    return s.with_collector_at(where.address) if s.cluster.standby_node_addresses else s
