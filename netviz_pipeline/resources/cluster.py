"""The Kubernetes cluster as a resource: apply (SSA, dry-run diff first), read, wait for rollouts."""
from __future__ import annotations

import time
from functools import cached_property
from typing import Iterable

import dagster as dg

from .. import readiness
from .config import NetvizConfig
from .kube import ApplyOutcome, Kube

_WORKLOADS = {"Deployment": readiness.deployment, "DaemonSet": readiness.daemonset}


class ClusterResource(dg.ConfigurableResource):
    config: NetvizConfig

    @cached_property
    def kube(self) -> Kube:
        c = self.config.settings.cluster
        return Kube(str(c.kubeconfig) if c.kubeconfig else None, c.context)

    def apply(self, objs: Iterable[dict]) -> list[ApplyOutcome]:
        return self.kube.apply_all(objs, self.config.settings.ownership.on_foreign_manager)

    def pods_of(self, workload: dict) -> list[dict]:
        meta = workload["metadata"]
        selector = workload["spec"]["selector"]["matchLabels"]
        return self.kube.list("v1", "Pod", meta["namespace"],
                              label_selector=",".join(f"{k}={v}" for k, v in sorted(selector.items())))

    def rollout(self, kind: str, name: str, namespace: str) -> tuple[readiness.Readiness, dict | None, list[dict]]:
        obj = self.kube.get("apps/v1", kind, name, namespace)
        if obj is None:
            return readiness.Readiness(False, f"{kind} {namespace}/{name} does not exist"), None, []
        pods = self.pods_of(obj)
        return _WORKLOADS[kind](obj, pods), obj, pods

    def wait_rollout(self, kind: str, name: str, namespace: str, timeout: float = 120,
                     interval: float = 0.5) -> tuple[readiness.Readiness, dict | None, list[dict]]:
        """Poll until the workload is current (kstatus rules) or the timeout passes. A pod stuck in
        a terminal waiting reason (ImagePullBackOff, CrashLoopBackOff...) ends the wait early."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.rollout(kind, name, namespace)
            r = result[0]
            if r.ready or time.monotonic() > deadline:
                return result
            if any(reason.split(":")[-1].strip() in readiness.STUCK_WAITING for reason in r.reasons) \
                    and time.monotonic() > deadline - timeout + 20:
                return result
            time.sleep(interval)
