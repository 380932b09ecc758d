"""Where Grafana's dashboard sidecar looks, read from the Grafana Deployment itself.

The grafana chart and kube-prometheus-stack run a `k8s-sidecar` container whose env says which
ConfigMaps it loads: LABEL (key), LABEL_VALUE (default "1"), NAMESPACE ("ALL", a comma list, or
unset = Grafana's own namespace). Reading it beats trusting settings that may have drifted: what the
cluster shows overrides the settings' `grafana` label and namespace, for the dashboards and for the
administrator's grant alike.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..settings import Settings


@dataclass(frozen=True)
class SidecarTarget:
    deployment: str  # namespace/name of the Grafana Deployment it came from
    label_key: str
    label_value: str
    namespaces: tuple[str, ...] | None  # None = every namespace

    def watches(self, namespace: str) -> bool:
        return self.namespaces is None or namespace in self.namespaces


@dataclass(frozen=True)
class GrafanaTarget:
    """Where dashboards go: the label and namespace in force, and the sidecar they came from (None:
    no Grafana Deployment found, so from the settings)."""

    label_key: str
    label_value: str
    namespace: str
    sidecar: SidecarTarget | None = None
    overrides_settings: bool = False

    def describe(self) -> str:
        return (f"Grafana sidecar in {self.sidecar.deployment} loads {self.label_key}={self.label_value} from "
                f"{self.namespace}") if self.sidecar else "no Grafana Deployment found; label and namespace from settings"


def _env(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env") or [] if "name" in e}


def find_sidecar(deployments: list[dict]) -> SidecarTarget | None:
    """The first Deployment with a container that has LABEL in its env and a grafana container or name."""
    for dep in deployments:
        meta = dep.get("metadata") or {}
        spec = ((dep.get("spec") or {}).get("template") or {}).get("spec") or {}
        containers = (spec.get("containers") or []) + (spec.get("initContainers") or [])
        if not any("grafana" in (c.get("image", "") + c.get("name", "")) for c in containers):
            continue
        for c in containers:
            env = _env(c)
            if "LABEL" in env and (c.get("name", "").find("dashboard") >= 0 or "FOLDER" in env or "k8s-sidecar" in c.get("image", "")):
                raw = env.get("NAMESPACE", "").strip()
                namespaces = None if raw.upper() == "ALL" else (
                    tuple(n.strip() for n in raw.split(",") if n.strip()) or (meta.get("namespace", "default"),))
                return SidecarTarget(f"{meta.get('namespace')}/{meta.get('name')}", env["LABEL"],
                                     env.get("LABEL_VALUE", "1") or "1", namespaces)
    return None


def resolve(s: Settings, sidecar: SidecarTarget | None) -> GrafanaTarget:
    g = s.grafana
    if sidecar is None:
        return GrafanaTarget(g.sidecar_label_key, g.sidecar_label_value, g.dashboards_namespace)
    ns = g.dashboards_namespace if sidecar.watches(g.dashboards_namespace) else (sidecar.namespaces or ("default",))[0]
    target = GrafanaTarget(sidecar.label_key, sidecar.label_value, ns, sidecar)
    differs = (target.label_key, target.label_value, ns) != (g.sidecar_label_key, g.sidecar_label_value,
                                                            g.dashboards_namespace)
    return GrafanaTarget(target.label_key, target.label_value, ns, sidecar, differs)


def apply_to(s: Settings, t: GrafanaTarget) -> Settings:
    """The settings with the grafana section as the cluster shows it, for renderers that read it."""
    g = s.grafana
    return s.model_copy(update={"grafana": g.model_copy(update={
        "sidecar_label_key": t.label_key, "sidecar_label_value": t.label_value, "dashboards_namespace": t.namespace})})
