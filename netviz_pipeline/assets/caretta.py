"""Plan tasks 1-2: Caretta (eBPF pod-to-pod map) and its dashboard.

Fixes to the plan: the chart has no Service to scrape, so a headless Service (and pod discovery) lets
Prometheus reach every DaemonSet pod; nodes are checked before rollout (kernel version, BTF, the
BPF-map memory charge on kernels >= 6.1 that OOM-kills the chart's 300Mi limit), and a short-lived
probe on each node checks what Node objects cannot show: kprobes, which Caretta's probe needs.
"""
import time

import dagster as dg

from .. import readiness
from ..checks import preflight
from ..render import caretta as render_caretta
from ..render import install
from ..render import preflight_probe as render_probe
from ..resources.cluster import ClusterResource
from ..resources.kube import Kube
from . import OWNERS
from .report import apply_metadata, rollout_metadata, table

GROUP = "caretta"
PROBE_TIMEOUT_S = 60.0


@dg.asset(group_name=GROUP, kinds={"kubernetes"}, owners=OWNERS,
          description="Changes the cluster: Caretta's namespace, ServiceAccount, ClusterRole and binding (read "
                      "only what Caretta watches), the DaemonSet (one eBPF agent per node) and a headless Service. "
                      "First checks every node's kernel, BTF and memory, and probes each node for kprobes "
                      "(preflight); applies nothing if one fails")
def caretta(context: dg.AssetExecutionContext, cluster: ClusterResource) -> dg.MaterializeResult:
    s = cluster.settings
    nodes = cluster.kube.list("v1", "Node")
    probed, record, how = probe_or_recorded(cluster, nodes)
    findings = preflight.caretta_preflight(nodes, s.caretta.resources.memory_limit) + probed
    for f in findings:
        (context.log.warning if f.severity != "info" else context.log.info)(f"preflight {f.node}: {f.message}")
    metadata = {"preflight": _findings(findings), "preflight_probe": dg.MetadataValue.text(how)}
    if preflight.blocks_rollout(findings, s.caretta.preflight):
        raise dg.Failure(
            description="Caretta preflight found nodes where the agent cannot run; nothing of Caretta was "
                        "applied. Fix the findings, or set caretta.preflight: warn (report only) or, where a "
                        "stand-in image runs instead of Caretta, standin.",
            metadata={"findings": metadata["preflight"], "preflight_probe": metadata["preflight_probe"]})
    if went := preflight.overridden(findings, s.caretta.preflight):
        note = (f"caretta.preflight: standin: went ahead on nodes without kprobes: {', '.join(went)}; Caretta's "
                "eBPF probe cannot run there: what runs is a stand-in")
        context.log.warning(note)
        metadata["preflight_overridden"] = dg.MetadataValue.text(note)
    outcomes = cluster.apply(render_caretta.render(s, record))
    return dg.MaterializeResult(metadata=apply_metadata(outcomes) | metadata)


def probe_or_recorded(cluster: ClusterResource, nodes: list[dict]
                      ) -> tuple[list[preflight.Finding], dict[str, str] | None, str]:
    """The probe's findings, the annotations recording them on Caretta's DaemonSet (None: nothing to
    record, probe again next run) and how they were had. Nodes unchanged since the recorded probe (same
    names, same boot IDs) are not probed again: a converged run changes nothing."""
    s = cluster.settings
    fingerprint = preflight.nodes_fingerprint(nodes)
    recorded = render_caretta.recorded_preflight(
        cluster.kube.get("apps/v1", "DaemonSet", render_caretta.NAME, s.caretta.namespace))
    if recorded and recorded[0] == fingerprint:
        return (preflight.recorded_findings(recorded[1], nodes), render_caretta.preflight_record(*recorded),
                "recorded: the nodes and their boot IDs are those last probed")
    results, settled = run_probe(cluster)
    findings = preflight.probe_findings(results, nodes)
    record = render_caretta.preflight_record(fingerprint, [f.node for f in findings if f.check == "kprobes"])
    answered = sorted(n for n, r in results.items() if isinstance(r, dict))
    how = f"probed: {len(answered)} node(s) answered" + (f" ({', '.join(answered)})" if len(answered) <= 10 else "")
    return findings, record if settled else None, how + ("" if settled else "; not recorded: some did not answer")


def run_probe(cluster: ClusterResource, timeout: float = PROBE_TIMEOUT_S, every: float = 1.0
              ) -> tuple[dict[str, dict | str], bool]:
    """Each node's answer (or why it gave none) and whether every probe pod settled in time. The probe
    DaemonSet is deleted whatever happens, so nothing is left behind."""
    s = cluster.settings
    ns, ds = s.caretta.namespace, render_probe.daemonset(s)
    cluster.require_installed([o for o in render_caretta.render(s) if install.is_install_object(o)])
    if not cluster.kube.allowed("delete", "apps", "daemonsets", ns, render_probe.NAME):
        raise dg.Failure(description=f"the pipeline may not delete DaemonSet {ns}/{render_probe.NAME}, so it "
                                     "does not start Caretta's preflight probe; an administrator applies the "
                                     "current grant: python -m netviz_pipeline.admin apply --kubeconfig <admin "
                                     "kubeconfig>")
    try:
        cluster.apply([ds])
        return _collect(cluster, ds, timeout, every)
    finally:
        cluster.kube.delete("apps/v1", "DaemonSet", render_probe.NAME, ns)


def _collect(cluster: ClusterResource, ds: dict, timeout: float, every: float
             ) -> tuple[dict[str, dict | str], bool]:
    """Poll the probe's pods until every scheduled one answered or cannot (ends as soon as all did)."""
    meta = ds["metadata"]
    deadline = time.monotonic() + timeout
    results: dict[str, dict | str] = {}
    waiting: dict[str, str] = {}
    while True:
        live = cluster.kube.get("apps/v1", "DaemonSet", meta["name"], meta["namespace"]) or {}
        for pod in _pods_of(cluster, live):
            node = (pod.get("spec") or {}).get("nodeName")
            if node and node not in results:
                answer = _answer(cluster.kube, pod)
                if answer is None:
                    waiting[node] = _state(pod)
                else:
                    results[node] = answer
                    waiting.pop(node, None)
        if _all_settled(live, results):
            return results, True
        if time.monotonic() > deadline:
            return results | {n: f"no answer within {timeout:.0f} s ({w})" for n, w in waiting.items()}, False
        time.sleep(every)


def _pods_of(cluster: ClusterResource, live: dict) -> list[dict]:
    """The probe DaemonSet's own pods, not ones of an earlier probe still terminating."""
    uid = (live.get("metadata") or {}).get("uid")
    if not uid:
        return []
    return [p for p in cluster.pods_of(live) if not p["metadata"].get("deletionTimestamp")
            and any(o.get("uid") == uid for o in p["metadata"].get("ownerReferences") or [])]


def _all_settled(live: dict, results: dict) -> bool:
    meta, status = live.get("metadata") or {}, live.get("status") or {}
    if not meta or status.get("observedGeneration", 0) < meta.get("generation", 1):
        return False  # the controller has not counted the nodes yet
    return len(results) >= status.get("desiredNumberScheduled", 0)


def _state(pod: dict) -> str:
    status = pod.get("status") or {}
    reasons = [(cs.get("state") or {}).get("waiting", {}).get("reason") for cs in status.get("containerStatuses") or []]
    return ": ".join(filter(None, [status.get("phase", "Pending"), *reasons]))


def _answer(kube: Kube, pod: dict) -> dict | str | None:
    """The pod's answer, why it cannot give one (str), or None: not yet."""
    meta, statuses = pod["metadata"], (pod.get("status") or {}).get("containerStatuses") or []
    state = (statuses[0].get("state") or {}) if statuses else {}
    if not state or "waiting" in state:
        reason = (state.get("waiting") or {}).get("reason", "")
        return f"its probe pod is stuck: {reason}" if reason in readiness.STUCK_WAITING else None
    try:
        log = kube.pod_log(meta["namespace"], meta["name"])
    except Exception as exc:  # noqa: BLE001 - a node that serves no logs (kwok's) will never answer
        return f"its probe pod's log cannot be read ({getattr(exc, 'status', '') or type(exc).__name__})"
    answer = render_probe.parse_answer(log)
    if answer is None and "terminated" in state:
        return "its probe pod exited without an answer"
    return answer


def _findings(findings: list[preflight.Finding]) -> dg.MetadataValue:
    if not findings:
        return dg.MetadataValue.text("all nodes pass")
    return table([{"node": f.node, "severity": f.severity, "finding": f.message} for f in findings])


@dg.asset_check(asset=caretta, blocking=True, description="DaemonSet rolled out on every eligible node (desired > 0)")
def caretta_rollout(cluster: ClusterResource) -> dg.AssetCheckResult:
    s = cluster.settings
    r, obj, pods = cluster.wait_rollout("DaemonSet", render_caretta.NAME, s.caretta.namespace)
    return dg.AssetCheckResult(passed=r.ready, severity=dg.AssetCheckSeverity.ERROR,
                               metadata=rollout_metadata(r, obj, pods))

