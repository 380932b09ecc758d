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


def namespace(name: str, privileged: bool = False) -> dict:
    meta: dict = {"name": name, "labels": {"app.kubernetes.io/part-of": "netviz",
                                           "app.kubernetes.io/managed-by": MANAGED_BY}}
    if privileged:  # Pod Security Admission would refuse a privileged eBPF DaemonSet otherwise
        meta["labels"] |= {"pod-security.kubernetes.io/enforce": "privileged",
                           "pod-security.kubernetes.io/warn": "privileged"}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}
