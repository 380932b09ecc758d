"""Loading settings as the pipeline uses them: settings.py's pure parser, then the rules that live with
their implementation (each router platform's: name, own section, rules; routers/registry.py; each
Prometheus mode's: name, its section; targets/registry.py; the alerts' names, render/alerts.py).

Why a module of its own: settings.py must not import code that does I/O (SSH, HTTP, Kubernetes, Dagster),
and a platform's rules belong with its platform, which does. This is the one place both meet.
"""
from __future__ import annotations

import os
from typing import Any

from .render import alerts
from .routers import registry as router_platforms
from .targets import registry as prometheus_modes
from .settings import Settings, SettingsError, parse_settings, read_settings


def load(path: str | os.PathLike | None = None, *, check_host: bool = True) -> Settings:
    """Load and validate the settings file (argument, else env NETVIZ_CONFIG), every rule applied."""
    data, source = read_settings(path)
    return parse(data, check_host=check_host, source=source)


def parse(data: Any, *, check_host: bool = True, source: str = "settings") -> Settings:
    """Validate already-parsed settings data, every rule applied; SettingsError names every problem at
    once. check_host=False skips file/env existence checks (see settings.parse_settings)."""
    try:
        s = parse_settings(data, check_host=check_host, source=source)
    except SettingsError as e:  # add what the implementations' rules find in the parts that do parse
        more = [p for p in router_platforms.raw_problems(data, check_host=check_host) if p not in e.errors]
        if not more:
            raise
        raise SettingsError(e.errors + more, source) from None
    return apply_rules(s, check_host=check_host, source=source)


def apply_rules(s: Settings, *, check_host: bool = True, source: str = "settings") -> Settings:
    """The rules that live with their implementation, applied to parsed settings: each registry's check
    adds its problems to one list (one SettingsError for all) and may return the settings with its typed
    parts in place: the router platforms (routers/registry.py) and the Prometheus modes
    (targets/registry.py)."""
    problems: list[str] = []
    try:
        s = router_platforms.apply_rules(s, check_host=check_host, source=source)
    except SettingsError as e:
        problems += e.errors
    problems += prometheus_modes.settings_problems(s)
    problems += alerts.settings_problems(s)
    if problems:
        raise SettingsError(problems, source)
    return s
