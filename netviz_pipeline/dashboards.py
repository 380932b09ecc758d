"""Every panel query of a Grafana dashboard, ready to run against Prometheus.

Why: the common failure of every comparable tool is "installed, but the dashboard is empty". The
end-to-end check runs each query this module extracts (with Grafana's built-in variables filled in)
and checks it returns data of the right shape (labels the panel needs, e.g. node-graph fields).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

NODE_GRAPH_FIELDS = {"nodes": ("id", "title"), "edges": ("id", "source", "target")}
_LEGEND_LABEL = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_VARIABLE = re.compile(r"\$\{?(__[a-z_]+|[A-Za-z_][A-Za-z0-9_]*)(?::[a-z]+)?\}?")


@dataclass(frozen=True)
class PanelQuery:
    panel_title: str
    panel_type: str
    ref_id: str
    expr: str
    instant: bool
    format: str  # "time_series" | "table"
    required_labels: tuple[str, ...]  # labels every result series must carry for the panel to render


def load_dashboard(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


def _panels(panels: list[dict]):
    for p in panels or []:
        yield p
        yield from _panels(p.get("panels", []))  # collapsed rows nest their panels


def panel_queries(dashboard: dict) -> list[PanelQuery]:
    """All non-hidden Prometheus targets in panel order."""
    out = []
    for p in _panels(dashboard.get("panels", [])):
        for t in p.get("targets") or []:
            if t.get("hide") or not t.get("expr"):
                continue
            ref = t.get("refId", "A")
            if p.get("type") == "nodeGraph" and ref in NODE_GRAPH_FIELDS:
                required = NODE_GRAPH_FIELDS[ref]
            elif "vector(" in t["expr"]:  # `or vector(0)` fallback: a bare 0 series has no labels
                required = ()
            else:
                required = tuple(dict.fromkeys(_LEGEND_LABEL.findall(t.get("legendFormat", ""))))
            instant = bool(t.get("instant")) and not t.get("range")
            out.append(PanelQuery(p.get("title", ""), p.get("type", ""), ref, t["expr"], instant,
                                  t.get("format", "time_series"), required))
    return out


def substitute(expr: str, range_seconds: int = 900, rate_interval_seconds: int = 60,
               interval_seconds: int = 15) -> str:
    """Fill Grafana's built-in variables as Grafana would; any other variable is an error (the
    check cannot know what the user would pick)."""
    values = {"__range": f"{range_seconds}s", "__range_s": str(range_seconds),
              "__range_ms": str(range_seconds * 1000), "__rate_interval": f"{rate_interval_seconds}s",
              "__interval": f"{interval_seconds}s", "__interval_ms": str(interval_seconds * 1000)}

    def repl(m: re.Match) -> str:
        if m.group(1) not in values:
            raise ValueError(f"query uses dashboard variable ${m.group(1)}; cannot run it unattended")
        return values[m.group(1)]
    # label_replace's "$1" is not a variable: only match $ followed by a letter or underscore
    return _VARIABLE.sub(repl, expr)
