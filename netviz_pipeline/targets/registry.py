"""The Prometheus modes netviz supports. `prometheus.mode: auto` tries them in this order (each one's
`claim`, then each one's `discover`); settings validation, resolution and the administrator's grant all
read this one table: adding a mode is one module with a `PrometheusTarget` subclass and one line here."""
from __future__ import annotations

from .prometheus import PrometheusTarget
from .prometheus_chart import ChartTarget
from .prometheus_file import FileTarget
from .prometheus_operator import OperatorTarget

AUTO = "auto"
# Order matters under auto: an Operator in the cluster wins; then the chart or file the settings name.
MODES: dict[str, type[PrometheusTarget]] = {t.mode: t for t in (OperatorTarget, ChartTarget, FileTarget)}


def settings_problems(s) -> list[str]:
    """What is wrong with `prometheus.mode` in parsed settings (field-named, with the fix)."""
    mode = s.prometheus.mode
    if mode == AUTO:
        return []
    if mode not in MODES:
        return [f"prometheus.mode: {mode!r} is not a Prometheus mode: use one of {', '.join([AUTO, *MODES])}"]
    problem = MODES[mode].section_problem(s)
    return [problem] if problem else []
