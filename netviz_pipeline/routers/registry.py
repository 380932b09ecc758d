"""The router platforms netviz supports, in detection order. Settings rules (platform names, each
platform's own section and rules: `apply_rules`, run by loading.py after parsing), detection (markers,
`matches`) and dispatch (converge, status, restart) all read this one table: adding a platform is one
module with a `PLATFORM` and one line here."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from ..settings import Router, Settings, SettingsError, format_errors, unknown_key, validation_context
from . import freebsd, linux, opnsense, pfsense
from .platform import Platform

# pfSense and OPNsense are FreeBSD too (uname says so): their markers must be tried before plain FreeBSD.
PLATFORMS: dict[str, Platform] = {p.name: p for p in (pfsense.PLATFORM, opnsense.PLATFORM, freebsd.PLATFORM,
                                                      linux.PLATFORM)}


def get(name: str) -> Platform:
    try:
        return PLATFORMS[name]
    except KeyError:
        raise ValueError(f"unknown router platform {name!r}: one of {', '.join(PLATFORMS)}") from None


# -- settings rules ------------------------------------------------------------------------------
def apply_rules(s: Settings, *, check_host: bool = True, source: str = "settings") -> Settings:
    """The settings with each router's platform checked and its platform's section typed.

    For every router: its platform is auto or registered (the error lists the choices); keys beyond the
    settings' own router fields are registered platforms' sections (any other is an unknown key), each
    validated with its platform's model; then the platform's own rules (`settings_problems`). Raises
    SettingsError naming every problem of every router, at the paths settings.py uses (routers[0].platform,
    routers[0].opnsense.key_env, routers[0]: ...); returns a copy, `s` is left as it was."""
    problems, routers = [], []
    for i, r in enumerate(s.routers):
        found, typed = _check(i, r.platform, r.model_extra or {}, r, check_host)
        problems += found
        routers.append(r.model_copy(update=typed) if typed else r)
    if problems:
        raise SettingsError(problems, source)
    return s.model_copy(update={"routers": routers})


def raw_problems(data: Any, *, check_host: bool = True) -> list[str]:
    """What apply_rules would say about the routers of settings data the settings parser refused (so one
    refusal names every problem): each router mapping is checked as far as it parses on its own."""
    routers = data.get("routers") if isinstance(data, dict) else None
    out: list[str] = []
    for i, raw in enumerate(routers if isinstance(routers, list) else []):
        if not isinstance(raw, dict):
            continue
        try:
            router = Router.model_validate(raw, context=validation_context(check_host))
        except ValidationError:
            router = None  # its own problems are the settings parser's; keys and sections are still checked
        extras = {k: v for k, v in raw.items() if isinstance(k, str) and k not in Router.model_fields}
        out += _check(i, raw.get("platform", "auto"), extras, router, check_host)[0]
    return out


def _check(i: int, platform: Any, extras: Mapping[str, Any], router: Router | None,
           check_host: bool) -> tuple[list[str], dict[str, BaseModel]]:
    """One router's platform settings -> (problems, typed sections by key)."""
    at = ("routers", i)
    sections = {p.section: p for p in PLATFORMS.values() if p.section}
    problems = [unknown_key(at + (k,), [*Router.model_fields, *sections]) for k in extras if k not in sections]
    known = isinstance(platform, str) and platform in PLATFORMS
    if isinstance(platform, str) and platform != "auto" and not known:
        problems.append(f"routers[{i}].platform: {platform!r} is not a supported platform: auto or one of "
                        f"{', '.join(sorted(PLATFORMS))}")
    typed: dict[str, BaseModel] = {}
    for key, owner in sections.items():
        if extras.get(key) is None:
            continue
        try:
            typed[key] = owner.settings_model.model_validate(extras[key], context=validation_context(check_host))
        except ValidationError as e:
            problems += format_errors(e, at + (key,), owner.settings_model)
    if router is not None and known and not problems:  # as before: a platform's rules see valid fields only
        problems += [f"routers[{i}]: {p}" for p in PLATFORMS[platform].settings_problems(router.model_copy(update=typed))]
    return problems, typed
