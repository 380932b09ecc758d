"""Where Grafana's dashboard sidecar looks, read from the Grafana Deployment itself.

The grafana chart and kube-prometheus-stack run a `k8s-sidecar` container whose env says which
ConfigMaps it loads: LABEL (key), LABEL_VALUE (default "1"), NAMESPACE ("ALL", a comma list, or
unset = Grafana's own namespace). Reading it beats trusting settings that may have drifted.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SidecarTarget:
    deployment: str  # namespace/name of the Grafana Deployment it came from
    label_key: str
    label_value: str
    namespaces: tuple[str, ...] | None  # None = every namespace

    def watches(self, namespace: str) -> bool:
        return self.namespaces is None or namespace in self.namespaces


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
