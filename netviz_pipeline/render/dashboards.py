"""One ConfigMap per dashboard JSON in `dashboards/`, labelled for Grafana's dashboard sidecar
(the label key/value and namespace come from settings, matching the sidecar's LABEL/LABEL_VALUE)."""
from __future__ import annotations

import json
from pathlib import Path

from ..settings import Settings
from . import labels

DASHBOARD_DIR = Path(__file__).resolve().parents[2] / "dashboards"
MAX_CONFIGMAP_BYTES = 1_000_000  # etcd object limit ~1 MiB; leave room for metadata


def configmap_name(stem: str) -> str:
    return f"netviz-dashboard-{stem.lower().replace('_', '-')}"


def dashboard_configmaps(s: Settings, directory: Path = DASHBOARD_DIR) -> list[dict]:
    """ConfigMaps sorted by file name. Raises ValueError for a file that is not a usable dashboard."""
    g = s.grafana
    out = []
    for path in sorted(directory.glob("*.json")):
        text = path.read_text()
        try:
            dash = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path.name}: not valid JSON ({e})") from None
        if not isinstance(dash, dict) or not dash.get("uid") or not dash.get("title"):
            raise ValueError(f"{path.name}: a dashboard needs a uid and a title")
        if "__inputs" in dash:
            raise ValueError(f"{path.name}: exported with __inputs; the sidecar cannot resolve them")
        if len(text.encode()) > MAX_CONFIGMAP_BYTES:
            raise ValueError(f"{path.name}: too large for a ConfigMap")
        out.append({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": configmap_name(path.stem), "namespace": g.dashboards_namespace,
                                 "labels": labels("netviz", "dashboard") | {g.sidecar_label_key: g.sidecar_label_value}},
                    "data": {path.name: text}})
    return out
