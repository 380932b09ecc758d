"""The resolution stage: settings as loaded + what the cluster shows -> one frozen value every caller uses.

`resolve(settings, kube)` returns `Resolved`: the settings (their grafana section as the cluster's
Grafana sidecar shows it), the Prometheus target (a variant per mode, see prometheus.py and
registry.py; `auto` is decided here and nowhere else) and the Grafana target. The cluster resource
resolves once per run or sensor tick, so every step of it sees the same answer; `admin` and the
service recipe call the same function. `for_install` is the administrator's variant: under `auto` it
keeps every mode auto could pick, so the grant still fits when the cluster changes.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..settings import Settings, SettingsError
from . import grafana
from .prometheus import Lister, PrometheusTarget
from .registry import AUTO, MODES


@dataclass(frozen=True)
class Resolved:
    settings: Settings
    prometheus: PrometheusTarget | None  # None: auto found nothing to use (`prometheus_problem` says why)
    grafana: grafana.GrafanaTarget
    prometheus_problem: str = ""

    def require_prometheus(self) -> PrometheusTarget:
        """The Prometheus target; raises SettingsError when auto found none (steps that write to it)."""
        if self.prometheus is None:
            raise SettingsError([self.prometheus_problem])
        return self.prometheus


@dataclass(frozen=True)
class ForInstall:
    settings: Settings
    prometheus: tuple[PrometheusTarget, ...]
    grafana: grafana.GrafanaTarget


class _Once:
    """Each (apiVersion, kind) listed at most once during one resolution."""

    def __init__(self, kube: Lister):
        self._kube, self._seen = kube, {}

    def list(self, api_version: str, kind: str, namespace: str | None = None, **kw) -> list[dict]:
        key = (api_version, kind, namespace, tuple(sorted(kw.items())))
        if key not in self._seen:
            self._seen[key] = self._kube.list(api_version, kind, namespace, **kw)
        return self._seen[key]


def prometheus_target(s: Settings, kube: Lister | None) -> PrometheusTarget:
    """The mode the settings name, or under `auto` the first mode that claims it (registry order), then
    the first one a scan of the cluster discovers. Raises SettingsError when auto finds nothing."""
    mode = s.prometheus.mode
    if mode != AUTO:
        return MODES[mode].from_settings(s)
    for step in ("claim", "discover"):
        for variant in MODES.values():
            found = getattr(variant, step)(s, kube)
            if found is not None:
                return found
    raise SettingsError([f"prometheus.mode: auto found no Prometheus to use ({_looked_for(kube)}): set "
                         f"prometheus.mode and its section (one of {', '.join(MODES)})"])


def _looked_for(kube: Lister | None) -> str:
    return ("no Prometheus resource, no chart-shaped Prometheus server Deployment, and neither a prometheus.file "
            "nor a prometheus.chart section") if kube is not None else "without a cluster to ask, and the settings " \
        "have neither a prometheus.file nor a prometheus.chart section"


def resolve_grafana(s: Settings, kube: Lister | None) -> grafana.GrafanaTarget:
    return grafana.resolve(s, grafana.find_sidecar(kube.list("apps/v1", "Deployment")) if kube is not None else None)


def resolve(s: Settings, kube: Lister | None) -> Resolved:
    """See the module docstring. `kube` None: from the settings alone (a recipe printed offline)."""
    kube = _Once(kube) if kube is not None else None
    g = resolve_grafana(s, kube)
    try:
        return Resolved(grafana.apply_to(s, g), prometheus_target(s, kube), g)
    except SettingsError as exc:  # the Grafana side and the checks that do not write to Prometheus go on
        return Resolved(grafana.apply_to(s, g), None, g, str(exc))


def for_install(s: Settings, kube: Lister | None) -> ForInstall:
    """What the administrator grants: the named mode, or under auto every mode auto could pick."""
    kube = _Once(kube) if kube is not None else None
    g = resolve_grafana(s, kube)
    if s.prometheus.mode != AUTO:
        prom = (MODES[s.prometheus.mode].from_settings(s),)
    else:
        prom = tuple(t for t in (v.may_become(s, kube) for v in MODES.values()) if t is not None)
    return ForInstall(grafana.apply_to(s, g), prom, g)
