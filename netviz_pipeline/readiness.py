"""kstatus-style readiness over plain dicts (what the API returns, `to_dict()` or JSON).

Why our own: kstatus and `kubectl rollout status` call a DaemonSet with desiredNumberScheduled 0
"done" (a nodeSelector or taint that matches no node) and say nothing about *why* pods are stuck.
These rules add the desired > 0 check and surface pod waiting reasons (ImagePullBackOff, ...).
Accepts camelCase (API JSON) and snake_case (kubernetes client `to_dict()`) keys.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

STUCK_WAITING = {"ImagePullBackOff", "ErrImagePull", "CrashLoopBackOff", "CreateContainerConfigError",
                 "CreateContainerError", "InvalidImageName", "RunContainerError"}


@dataclass(frozen=True)
class Readiness:
    ready: bool
    message: str
    reasons: list[str] = field(default_factory=list)


def _snake(key: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()


def _get(obj: dict | None, *path: str, default=None):
    cur = obj
    for key in path:
        if not isinstance(cur, dict):
            return default
        cur = cur.get(key, cur.get(_snake(key)))
    return default if cur is None else cur


def _name(obj: dict) -> str:
    return f"{_get(obj, 'kind', default='object')} {_get(obj, 'metadata', 'namespace', default='')}/" \
           f"{_get(obj, 'metadata', 'name', default='?')}".replace(" /", " ")


def _condition(obj: dict, ctype: str) -> dict | None:
    return next((c for c in _get(obj, "status", "conditions", default=[]) if c.get("type") == ctype), None)


def generation_current(obj: dict) -> Readiness | None:
    """None when the controller has observed the latest spec; else a not-ready result."""
    gen, seen = _get(obj, "metadata", "generation"), _get(obj, "status", "observedGeneration")
    if gen is not None and seen != gen:
        return Readiness(False, f"{_name(obj)}: controller has not observed generation {gen} yet (saw {seen})")
    return None


def serving(pod: dict) -> bool:
    """Running, Ready and not being deleted: a pod that does its work now. A pod on a lost node keeps
    phase Running; its Ready condition turns False (the node controller) and a replaced one is deleting."""
    ready = _condition(pod, "Ready")
    return (_get(pod, "status", "phase") == "Running" and not _get(pod, "metadata", "deletionTimestamp")
            and bool(ready) and ready.get("status") == "True")


def deployment(obj: dict, pods: list[dict] | None = None) -> Readiness:
    """`pods`: the Deployment's pods, when listed. The status counts alone can report a rollout done
    before its new pod is ready: right after a move off a lost node they were seen all at 1 while the
    only Ready pod was the old one, being deleted. Listed pods must then show enough serving ones."""
    name = _name(obj)
    if (r := generation_current(obj)) is not None:
        return r
    reasons = pod_reasons(pods)
    progressing = _condition(obj, "Progressing")
    if progressing and progressing.get("reason") == "ProgressDeadlineExceeded":
        return Readiness(False, f"{name}: rollout failed: progress deadline exceeded", reasons)
    want = _get(obj, "spec", "replicas", default=1)
    counts = {k: _get(obj, "status", k, default=0) for k in
              ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas")}
    if any(v != want for v in counts.values()):
        detail = ", ".join(f"{k} {v}" for k, v in counts.items())
        return Readiness(False, f"{name}: want {want} replicas; {detail}", reasons)
    available = _condition(obj, "Available")
    if want > 0 and not (available and available.get("status") == "True"):
        return Readiness(False, f"{name}: Available condition is not True", reasons)
    if pods is not None and (up := sum(map(serving, pods))) < want:
        return Readiness(False, f"{name}: status says {want} ready, but {up} pod(s) serve (Running, Ready, "
                                f"not deleting)", reasons)
    return Readiness(True, f"{name}: {want}/{want} replicas ready")


def daemonset(obj: dict, pods: list[dict] | None = None) -> Readiness:
    name = _name(obj)
    if (r := generation_current(obj)) is not None:
        return r
    reasons = pod_reasons(pods)
    desired = _get(obj, "status", "desiredNumberScheduled")
    if desired is None:
        return Readiness(False, f"{name}: controller has not reported desiredNumberScheduled yet", reasons)
    if desired <= 0:
        return Readiness(False, f"{name}: scheduled on 0 nodes: check nodeSelector, tolerations and node taints",
                         reasons)
    counts = {k: _get(obj, "status", k, default=0) for k in
              ("currentNumberScheduled", "updatedNumberScheduled", "numberAvailable", "numberReady")}
    short = {k: v for k, v in counts.items() if v < desired}
    if short:
        detail = ", ".join(f"{k} {v}" for k, v in short.items())
        return Readiness(False, f"{name}: want {desired} pods; {detail}", reasons)
    return Readiness(True, f"{name}: {desired}/{desired} pods ready")


def exited(terminated: dict) -> str:
    """How a container's last run ended: exit code and the last line of its termination message (its
    log's tail with terminationMessagePolicy FallbackToLogsOnError)."""
    lines = (terminated.get("message") or "").strip().splitlines()
    code = terminated.get("exitCode", terminated.get("exit_code"))
    if code is None:
        return ""
    return f"last exit {code}" + (f": {lines[-1][-300:]}" if lines else "")


def pod_reasons(pods: list[dict]) -> list[str]:
    """Why pods are stuck: waiting reasons of (init) containers, OOM kills and unschedulable pods."""
    out: list[str] = []
    for pod in pods or ():
        pname = _get(pod, "metadata", "name", default="?")
        sched = _condition(pod, "PodScheduled")
        if sched and sched.get("status") == "False" and sched.get("reason") == "Unschedulable":
            out.append(f"pod {pname}: Unschedulable: {sched.get('message', '')}".rstrip(": "))
        statuses = (_get(pod, "status", "initContainerStatuses", default=[]) +
                    _get(pod, "status", "containerStatuses", default=[]))
        for cs in statuses:
            waiting = _get(cs, "state", "waiting", default={})
            reason = waiting.get("reason")
            last = _get(cs, "lastState", "terminated", default={})
            if reason in STUCK_WAITING:
                msg = waiting.get("message") or ""
                out.append(f"pod {pname} container {cs.get('name')}: {reason}" + (f": {msg}" if msg else "")
                           + (f"; {exited(last)}" if reason == "CrashLoopBackOff" and exited(last) else ""))
            if last.get("reason") == "OOMKilled":
                out.append(f"pod {pname} container {cs.get('name')}: OOMKilled (raise the memory limit)")
    return list(dict.fromkeys(out))


def ready(obj: dict, pods: list[dict] | None = None) -> Readiness:
    """Dispatch on kind. Objects without a rollout (ConfigMap, Service, RBAC, ...) are ready once
    they exist; a Namespace must be Active."""
    kind = _get(obj, "kind", default="")
    if kind == "Deployment":
        return deployment(obj, pods)
    if kind == "DaemonSet":
        return daemonset(obj, pods)
    if kind == "Namespace":
        phase = _get(obj, "status", "phase", default="Active")
        return Readiness(phase == "Active", f"{_name(obj)}: {phase}")
    return generation_current(obj) or Readiness(True, f"{_name(obj)}: exists")
