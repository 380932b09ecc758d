"""The Kubernetes cluster as a resource: apply (SSA, dry-run diff first), read, wait for rollouts.

It is also where assets, checks and the sensor get the settings resolved against the cluster
(`resolved`: targets.resolve, the one resolution stage). Dagster builds resources anew for every run
and every sensor tick, so it is looked up once per run or tick and every step of it sees the same."""
from __future__ import annotations

import math
import time
from functools import cached_property
from typing import Iterable

import dagster as dg

from .. import readiness, targets
from ..render import install
from ..settings import Settings
from .config import NetvizConfig
from .kube import ApplyOutcome, Kube

_WORKLOADS = {"Deployment": readiness.deployment, "DaemonSet": readiness.daemonset}


class ClusterResource(dg.ConfigurableResource):
    config: NetvizConfig

    @property
    def settings(self) -> Settings:
        """The settings file, as loaded and validated (steps that need no cluster answer read these)."""
        return self.config.settings

    @cached_property
    def resolved(self) -> targets.Resolved:
        """The settings, Prometheus target and Grafana target as the cluster shows them, once per run or
        tick (`.require_prometheus()` raises SettingsError when `prometheus.mode: auto` found nothing)."""
        return targets.resolve(self.settings, self.kube)

    @cached_property
    def kube(self) -> Kube:
        c = self.settings.cluster
        return Kube(str(c.kubeconfig) if c.kubeconfig else None, c.context)

    def apply(self, objs: Iterable[dict]) -> list[ApplyOutcome]:
        """Apply what the pipeline operates; install objects (namespaces, cluster RBAC, the pipeline's
        own grant) are only verified: an administrator applies those (render/install.py)."""
        objs = list(objs)
        self.require_installed([o for o in objs if install.is_install_object(o)])
        return self.kube.apply_all([o for o in objs if not install.is_install_object(o)],
                                   self.settings.ownership.on_foreign_manager)

    def require_installed(self, wanted: list[dict]) -> None:
        """Fail before any change, naming each install object that is missing or drifted."""
        problems = [line for o in wanted for line in
                    install.drift(o, self.kube.get(o["apiVersion"], o["kind"], o["metadata"]["name"],
                                                   o["metadata"].get("namespace")))]
        if problems:
            raise dg.Failure(
                description="install objects missing or drifted; nothing was applied. An administrator applies "
                            "them once (and after settings change): python -m netviz_pipeline.admin apply "
                            "--kubeconfig <admin kubeconfig>",
                metadata={"missing_or_drifted": dg.MetadataValue.md("\n".join(f"- {p}" for p in problems))})

    def pods_of(self, workload: dict) -> list[dict]:
        meta = workload["metadata"]
        selector = workload["spec"]["selector"]["matchLabels"]
        return self.kube.list("v1", "Pod", meta["namespace"],
                              label_selector=",".join(f"{k}={v}" for k, v in sorted(selector.items())))

    def wait_rollout(self, kind: str, name: str, namespace: str, timeout: float = 120,
                     stuck_after: float = 20, pods_every: float = 2.0
                     ) -> tuple[readiness.Readiness, dict | None, list[dict]]:
        """Watch the workload until it is current (kstatus rules) or the timeout passes.

        Readiness comes from the workload's status alone, so while waiting only the workload is
        watched (one request, events as the controller updates it) instead of polling it and listing
        its pods. Pods are listed once for the result and, after `stuck_after` seconds, every
        `pods_every` seconds: a pod stuck in a terminal waiting reason (ImagePullBackOff,
        CrashLoopBackOff...) then ends the wait early."""
        rule = _WORKLOADS[kind]
        start = time.monotonic()
        deadline, next_pods = start + timeout, start + stuck_after
        obj = self.kube.get("apps/v1", kind, name, namespace)
        while True:
            now = time.monotonic()
            if obj is not None and (rule(obj).ready or now > deadline):
                pods = self.pods_of(obj)
                r = rule(obj, pods)  # the pods confirm what the status counts say (readiness.deployment)
                if r.ready or now > deadline:
                    return r, obj, pods
                time.sleep(min(pods_every, max(0.0, deadline - now)))
                obj = self.kube.get("apps/v1", kind, name, namespace)
                continue
            if now > deadline:
                return readiness.Readiness(False, f"{kind} {namespace}/{name} does not exist"), None, []
            if obj is not None and now >= next_pods:
                pods = self.pods_of(obj)
                r = rule(obj, pods)
                if any(reason.split(":")[-1].strip() in readiness.STUCK_WAITING for reason in r.reasons):
                    return r, obj, pods
                next_pods = now + pods_every
            obj = self._watch_until(kind, name, namespace, obj, min(deadline, next_pods) - now, rule)

    def _watch_until(self, kind: str, name: str, namespace: str, obj: dict | None, seconds: float,
                     rule) -> dict | None:
        """The workload after watching it for up to `seconds`, or as soon as it is ready."""
        from kubernetes import watch

        rv = (obj or {}).get("metadata", {}).get("resourceVersion")
        w = watch.Watch()
        try:
            for ev in self.kube.resource("apps/v1", kind).watch(
                    namespace=namespace, name=name, resource_version=rv, timeout=max(1, math.ceil(seconds)),
                    watcher=w):
                if ev["type"] == "ERROR":  # e.g. 410 Gone: resourceVersion too old
                    break
                obj = None if ev["type"] == "DELETED" else ev["raw_object"]
                if obj is not None and rule(obj).ready:
                    w.stop()
                    return obj
            else:
                return obj  # watch timed out: nothing changed
        except Exception:  # noqa: BLE001 - a broken watch falls back to a plain read
            time.sleep(0.5)
        return self.kube.get("apps/v1", kind, name, namespace)
