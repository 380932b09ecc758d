"""What every Prometheus mode provides (the interface), and what they share.

A mode is a variant like a router platform: one module (`prometheus_<mode>.py`) with a
`PrometheusTarget` subclass, and one line in `registry.py`. A target is resolved once per run or
sensor tick (`targets.resolve`) and carries everything that depends on the mode:
- `claim` / `discover`: whether `prometheus.mode: auto` picks it (settings first, then the cluster);
- `apply`: the scrape jobs and alert rules written where this Prometheus reads them, and the rollback
  when Prometheus refuses them;
- `scrape_objects`: what `apply` writes (pure, for reviews and tests);
- `sync_seconds`: how long a written config takes to be loaded, which every check waits for;
- `grants`: the namespaced RBAC the pipeline needs for it (an administrator applies it);
- `missing_config` / `missing_rules`: what to tell a person when Prometheus has not loaded it.
Modules here do their I/O through the resources they are handed (cluster, Prometheus API); they
raise `ApplyError`, and the asset turns it into a Dagster failure.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from ..settings import Settings

# The kubelet copies a changed ConfigMap or Secret into a pod on its sync period (1 min by default),
# then the reloader sidecar reloads Prometheus: measured in the lab, 40-100 s from write to targets.
KUBELET_SYNC_SECONDS = 90
KUBELET_SYNC_WHY = ("the kubelet copies a changed config into the Prometheus pod on its sync period, about a "
                    "minute, then the reloader sidecar reloads Prometheus")


class ApplyError(RuntimeError):
    """Nothing usable was applied; the message says what was undone and what to do."""


class Lister(Protocol):
    """What resolution reads from the cluster (resources.kube.Kube has it)."""

    def list(self, api_version: str, kind: str, namespace: str | None = None, **kw) -> list[dict]: ...


@dataclass(frozen=True)
class Grant:
    """Namespaced rules the pipeline's identity needs for a purpose (render/install.py renders them)."""

    namespace: str
    purpose: str
    rules: tuple[dict, ...] = field(hash=False)


@dataclass(frozen=True)
class Applied:
    """What `apply` did: `outcomes` of server-side applies, or `changed` files; notes for a person."""

    outcomes: tuple = ()
    changed: tuple[str, ...] = ()
    summary: str = ""
    notes: dict[str, str] = field(default_factory=dict, hash=False)  # name -> Markdown
    paths: dict[str, str] = field(default_factory=dict, hash=False)  # name -> file path


@dataclass(frozen=True)
class PrometheusTarget:
    """Base of every mode. Subclasses are frozen dataclasses holding what they resolved."""

    mode: ClassVar[str]
    sync_seconds: ClassVar[int] = 0

    # -- resolution ----------------------------------------------------------------------------
    @classmethod
    def from_settings(cls, s: Settings) -> PrometheusTarget:
        """The target when the settings name this mode; raises ApplyError-free ValueError naming the
        missing section (`section_problem` is checked when the settings are loaded)."""
        raise NotImplementedError

    @classmethod
    def section_problem(cls, s: Settings) -> str | None:
        """Why settings naming this mode cannot use it (a missing section), or None."""
        return None

    @classmethod
    def claim(cls, s: Settings, kube: Lister | None) -> PrometheusTarget | None:
        """Under `auto`, first pass in registry order: this mode when the settings or the cluster say so."""
        return None

    @classmethod
    def discover(cls, s: Settings, kube: Lister | None) -> PrometheusTarget | None:
        """Under `auto`, second pass: this mode found by scanning the cluster (raise SettingsError when
        the scan cannot choose)."""
        return None

    @classmethod
    def may_become(cls, s: Settings, kube: Lister | None) -> PrometheusTarget | None:
        """Under `auto`, for the administrator's grant: this mode if auto could pick it, now or once
        what it needs is installed."""
        return cls.claim(s, kube)

    # -- what it writes ------------------------------------------------------------------------
    def scrape_objects(self, s: Settings, exporters: list[str] | None = None) -> list[dict]:
        raise NotImplementedError

    def apply(self, s: Settings, cluster, prom, exporters: list[str]) -> Applied:
        raise NotImplementedError

    def grants(self, s: Settings) -> list[Grant]:
        return []

    # -- what to tell a person -----------------------------------------------------------------
    def missing_config(self, s: Settings) -> str:
        """Appended to "job not in Prometheus's loaded config yet"."""
        return f" ({KUBELET_SYNC_WHY})" if self.sync_seconds else ""

    def missing_rules(self, s: Settings) -> str:
        """Appended to "alert rules not loaded"."""
        return ""

    def pod_problem(self, s: Settings) -> str | None:
        """Why the pipeline cannot use this mode from inside a pod (the in-cluster service), or None."""
        return None

    def __str__(self) -> str:
        return self.mode
