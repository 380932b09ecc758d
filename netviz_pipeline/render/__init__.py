"""Pure renderers: settings in, plain dicts of Kubernetes objects / config text out.

Deterministic (same settings, same output) so the deploy step can diff and server-side apply them,
and unit tests can pin every field that matters without a cluster.
"""
from __future__ import annotations

MANAGED_BY = "netviz-pipeline"  # also the server-side-apply field manager


def labels(app: str, component: str | None = None) -> dict[str, str]:
    out = {"app": app, "app.kubernetes.io/name": app, "app.kubernetes.io/part-of": "netviz",
           "app.kubernetes.io/managed-by": MANAGED_BY}
    if component:
        out["app.kubernetes.io/component"] = component
    return out


def namespace(name: str, pod_security: str | None = None) -> dict:
    """A Namespace; `pod_security` sets Pod Security Admission's enforced level: "privileged" where
    Caretta's eBPF DaemonSet runs (it would be refused otherwise), "restricted" where only our hardened
    pods run, so whoever can write workloads there still cannot start a privileged or hostPath pod."""
    meta: dict = {"name": name, "labels": {"app.kubernetes.io/part-of": "netviz",
                                           "app.kubernetes.io/managed-by": MANAGED_BY}}
    if pod_security:
        meta["labels"] |= {"pod-security.kubernetes.io/enforce": pod_security,
                           "pod-security.kubernetes.io/warn": pod_security}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


def pod_security_level(s, ns: str) -> str | None:
    """The level a netviz namespace enforces: privileged for Caretta's, restricted for GoFlow2's alone."""
    if ns == s.caretta.namespace:
        return "privileged"
    if ns == s.goflow2.namespace:
        return "restricted"
    return None
