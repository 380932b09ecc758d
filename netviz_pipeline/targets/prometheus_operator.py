"""Operator mode: the Prometheus Operator reconciles PodMonitors and a PrometheusRule into the
Prometheus it runs. Under `auto` it wins whenever a `monitoring.coreos.com/v1` Prometheus exists."""
from __future__ import annotations

from dataclasses import dataclass

from ..render import alerts
from ..render.scrape import monitors
from ..settings import PromOperator, Settings
from .prometheus import KUBELET_SYNC_SECONDS, KUBELET_SYNC_WHY, Applied, Grant, Lister, PrometheusTarget

MONITOR_RULES = ({"apiGroups": ["monitoring.coreos.com"], "resources": ["podmonitors", "prometheusrules"],
                  "verbs": ["get", "list", "create", "patch"]},)


@dataclass(frozen=True)
class OperatorTarget(PrometheusTarget):
    mode = "operator"
    # the Operator renders the PodMonitors into a Secret, which travels into the pod like a ConfigMap
    sync_seconds = KUBELET_SYNC_SECONDS
    operator: PromOperator | None

    @classmethod
    def from_settings(cls, s: Settings) -> OperatorTarget:
        return cls(s.prometheus.operator)

    @classmethod
    def claim(cls, s: Settings, kube: Lister | None) -> OperatorTarget | None:
        if kube is None:
            return None
        try:
            found = kube.list("monitoring.coreos.com/v1", "Prometheus")
        except Exception:  # noqa: BLE001 - the CRD is absent (or unreadable): no Operator to use
            found = []
        return cls(s.prometheus.operator) if found else None

    @classmethod
    def may_become(cls, s: Settings, kube: Lister | None) -> OperatorTarget:
        return cls(s.prometheus.operator)  # granted under auto: installing the Operator later switches to it

    def scrape_objects(self, s: Settings, exporters: list[str] | None = None) -> list[dict]:
        return monitors(s, self.operator, exporters) + [alerts.prometheus_rule(s)]

    def apply(self, s: Settings, cluster, prom, exporters: list[str]) -> Applied:
        return Applied(outcomes=tuple(cluster.apply(self.scrape_objects(s, exporters))))

    def grants(self, s: Settings) -> list[Grant]:
        op = self.operator
        namespaces = [op.namespace] if op and op.namespace else [s.caretta.namespace, s.goflow2.namespace]
        return [Grant(ns, "monitors", MONITOR_RULES) for ns in dict.fromkeys(namespaces)]

    def missing_rules(self, s: Settings) -> str:
        return f" ({KUBELET_SYNC_WHY}; the Prometheus resource's ruleSelector must match prometheus.operator.labels)"
