"""Every panel query of a Grafana dashboard, ready to run against Prometheus.

Why: the common failure of every comparable tool is "installed, but the dashboard is empty". The
end-to-end check runs each query this module extracts (with Grafana's built-in variables filled in,
and the dashboard's own variables at what a fresh user sees by default) and checks it returns data of
the right shape (labels the panel needs, e.g. node-graph fields).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

NODE_GRAPH_FIELDS = {"nodes": ("id", "title"), "edges": ("id", "source", "target")}
_LEGEND_LABEL = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_VARIABLE = re.compile(r"\$\{?(__[a-z_]+|[A-Za-z_][A-Za-z0-9_]*)(?::[a-z]+)?\}?")
_REGEX_SPECIAL = re.compile(r"([$^*{}\[\]'+?.()|])")
_ALL = "$__all"


@dataclass(frozen=True)
class PanelQuery:
    panel_title: str
    panel_type: str
    ref_id: str
    expr: str
    instant: bool
    format: str  # "time_series" | "table"
    required_labels: tuple[str, ...]  # labels every result series must carry for the panel to render
    # The dashboard's variables as a fresh user gets them (dashboard_variables): what `substitute`
    # fills in, so the query runs unattended. A variable whose default cannot be known maps to None.
    variables: tuple[tuple[str, str | None], ...] = ()

    def ready(self, **builtins: int) -> str:
        """The query with every variable filled in (`substitute`'s keyword arguments for the built-ins)."""
        return substitute(self.expr, variables=dict(self.variables), **builtins)


def load_dashboard(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


def _panels(panels: list[dict]):
    for p in panels or []:
        yield p
        yield from _panels(p.get("panels", []))  # collapsed rows nest their panels


def _regex_escape(value: str) -> str:
    """As Grafana's Prometheus data source escapes a value of a multi-value or include-All variable
    (prometheusSpecialRegexEscape): a regex inside a PromQL string, so each escape is doubled."""
    return _REGEX_SPECIAL.sub(r"\\\\\1", value.replace("\\", "\\" * 4))


def _plain_escape(value: str) -> str:
    """As Grafana escapes a single-value variable (prometheusRegularEscape): for a PromQL string."""
    return value.replace("\\", "\\" * 2).replace("'", "\\\\'")


def _default(var: dict) -> str | None:
    """The value a query sees for `var` when the dashboard opens fresh, or None when only a person
    (or a live option list) could say."""
    current = var.get("current") or {}
    value = current.get("value")
    values = [value] if isinstance(value, str) else list(value or [])
    if var.get("type") == "custom" and not values:
        chosen = [o["value"] for o in var.get("options") or [] if o.get("selected")]
        first = [v.strip() for v in str(var.get("query", "")).split(",") if v.strip()][:1]
        values = chosen or first
    if var.get("includeAll") and (not values or _ALL in values):
        # Grafana's own All (no allValue) is a regex of the options it queried live: not knowable here
        return var.get("allValue") or None
    if not values:
        return None
    if len(values) == 1 and not var.get("multi") and not var.get("includeAll"):
        return _plain_escape(str(values[0]))
    escaped = [_regex_escape(str(v)) for v in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def dashboard_variables(dashboard: dict) -> dict[str, str | None]:
    """name -> value of each template variable (templating.list) at its default: includeAll at All ->
    its allValue; otherwise its saved current value (several -> "(a|b)", Grafana's multi-value form
    for a `=~"$var"` matcher); a custom variable without one -> its selected, else first, option.
    Datasource variables are left out: they choose the data source, never appear in an expression."""
    out = {}
    for var in (dashboard.get("templating") or {}).get("list") or []:
        if var.get("type") != "datasource" and var.get("name"):
            out[var["name"]] = _default(var)
    return out


def panel_queries(dashboard: dict) -> list[PanelQuery]:
    """All non-hidden Prometheus targets in panel order."""
    variables = tuple(dashboard_variables(dashboard).items())
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
                                  t.get("format", "time_series"), required, variables))
    return out


def substitute(expr: str, range_seconds: int = 900, rate_interval_seconds: int = 60,
               interval_seconds: int = 15, variables: dict[str, str | None] | None = None) -> str:
    """Fill Grafana's built-in variables as Grafana would, and the dashboard's own from `variables`
    (name -> value, from `dashboard_variables`); any other variable, or one whose default is None, is
    an error (the check cannot know what the user would pick)."""
    values = {"__range": f"{range_seconds}s", "__range_s": str(range_seconds),
              "__range_ms": str(range_seconds * 1000), "__rate_interval": f"{rate_interval_seconds}s",
              "__interval": f"{interval_seconds}s", "__interval_ms": str(interval_seconds * 1000)}
    own = variables or {}

    def repl(m: re.Match) -> str:
        name = m.group(1)
        if name in values:
            return values[name]
        if name not in own:
            raise ValueError(f"query uses ${name}, which the dashboard does not define; cannot run it unattended")
        if own[name] is None:
            raise ValueError(f"query uses ${name}, whose default the dashboard does not fix; cannot run it unattended")
        return own[name]
    # label_replace's "$1" is not a variable: only match $ followed by a letter or underscore
    return _VARIABLE.sub(repl, expr)
