"""Adding a router platform is one module plus its line in the registry: settings rules, detection and
dispatch all read `routers.registry.PLATFORMS`. Shown with a made-up platform (Alpine's softflowd under
OpenRC) that is nothing but a `SoftflowdPlatform` subclass with its own settings section (`alpine:`, a
pydantic model) and its own detection marker: its section is validated and named in errors, its settings
rule applied, the probe runs its marker and it is detected, and its converge (the shared lifecycle:
status, restart on change, wait) works, without touching any other module (settings.py included)."""
from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Annotated

import pytest
from pydantic import Field
from test_router_drivers import OK, FakeRouter

from netviz_pipeline import loading, routers, settings
from netviz_pipeline.render.softflowd import Command, options
from netviz_pipeline.resources.router import Result
from netviz_pipeline.routers import detection, registry
from netviz_pipeline.routers.platform import Instance, Marker, SoftflowdPlatform
from netviz_pipeline.settings import PlatformSection, SettingsError

CONF = "/etc/conf.d/softflowd"
PID = "/run/softflowd.pid"


class AlpineSettings(PlatformSection):
    """The router's `alpine:` section."""

    service: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")] = "softflowd"  # the OpenRC service


class Alpine(SoftflowdPlatform):
    name = "alpine"
    title = "Alpine (softflowd under OpenRC)"
    section, settings_model = "alpine", AlpineSettings
    markers = (Marker("alpine", "[ -e /etc/alpine-release ]"),)
    wait_seconds = 0.5  # the fake starts it at once; a failed start need not be awaited for long

    def settings_problems(self, r):
        return ["interface auto is not supported on alpine: name the interface"] if r.interface == "auto" else []

    def matches(self, facts):
        return facts["uname"] == "Linux" and facts["alpine"]

    def instance(self, session, s, r):
        return Instance(PID, ["softflowd", "-i", r.interface, *options(s, r)])

    def apply(self, session, s, r, out):
        want = f'SOFTFLOWD_OPTS="-i {r.interface} {" ".join(options(s, r))}"\n'
        if session.read_file(CONF) != want:
            session.write_file_atomic(CONF, want)
            out.actions.append(f"wrote {CONF}")
            out.changed = True

    def restart_command(self, r, running):
        service = self.section_of(r).service if self.section_of(r) else "softflowd"
        return Command(("rc-service", service, "restart"), "OpenRC restart")


@pytest.fixture
def alpine(monkeypatch):
    """The one registry line."""
    monkeypatch.setitem(registry.PLATFORMS, "alpine", Alpine())


@pytest.fixture
def one(raw):
    raw["routers"] = raw["routers"][:1]
    raw["routers"][0]["platform"] = "alpine"
    return raw


def test_settings_accept_a_registered_platform_and_apply_its_rules(alpine, one):
    assert loading.parse(one, check_host=False).routers[0].platform == "alpine"
    one["routers"][0]["interface"] = "auto"
    with pytest.raises(SettingsError) as e:
        loading.parse(one, check_host=False)
    assert e.value.errors == ["routers[0]: interface auto is not supported on alpine: name the interface"]


def test_its_settings_section_is_validated_by_its_model_and_typed(alpine, one):
    one["routers"][0]["alpine"] = {"service": "softflowd-lan"}
    r = loading.parse(one, check_host=False).routers[0]
    assert isinstance(r.alpine, AlpineSettings) and registry.get("alpine").section_of(r).service == "softflowd-lan"
    one["routers"][0]["alpine"] = {"service": "soft flowd", "sevice": "x"}
    one["routers"][0]["interface"] = "auto"  # a platform's rules see valid settings only: not reported yet
    with pytest.raises(SettingsError) as e:
        loading.parse(one, check_host=False)
    assert e.value.errors == [
        "routers[0].alpine.service: String should match pattern '^[a-z][a-z0-9_-]{0,31}$'",
        "routers[0].alpine.sevice: unknown key: remove it or fix the spelling (allowed keys: service)"]


def test_without_the_registry_line_its_section_is_an_unknown_key_and_its_name_no_platform(one):
    one["routers"][0]["alpine"] = {"service": "softflowd"}
    with pytest.raises(SettingsError) as e:
        loading.parse(one, check_host=False)
    allowed = ", ".join([*settings.Router.model_fields, "opnsense"])
    assert e.value.errors == [
        f"routers[0].alpine: unknown key: remove it or fix the spelling (allowed keys: {allowed})",
        "routers[0].platform: 'alpine' is not a supported platform: auto or one of freebsd, linux, opnsense, pfsense"]


def test_an_unregistered_platform_is_refused_with_the_choices(raw):
    raw["routers"][0]["platform"] = "alpine"
    with pytest.raises(SettingsError, match=r"routers\[0\]\.platform.*auto or one of freebsd, linux, opnsense, pfsense"):
        loading.parse(raw, check_host=False)


def test_settings_py_knows_no_platform():
    """The pure settings layer names no platform in its code (docstrings and comments give examples):
    the sections, the names and the rules are the registry's."""
    tree = ast.parse(Path(settings.__file__).read_text())
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef)) and ast.get_docstring(n) is not None}
    strings = [n.value.lower() for n in ast.walk(tree)
               if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings]
    assert not [(name, s) for name in registry.PLATFORMS for s in strings if re.search(rf"\b{name}\b", s)]
    assert not {p.section for p in registry.PLATFORMS.values()} & set(settings.Router.model_fields)


def test_detection_runs_its_marker_and_finds_it(alpine):
    assert "[ -e /etc/alpine-release ] && echo alpine; " in detection.probe_command()
    assert detection.platform_from(detection.parse_probe("Linux\n@@\n@@\nalpine\n")) == "alpine"
    assert detection.parse_probe("Linux\n@@\n@@\ndebian\n")["alpine"] is False


def test_dispatch_finds_it(alpine, one):
    one["routers"][0]["alpine"] = {"service": "softflowd-lan"}
    s = loading.parse(one, check_host=False)
    r = s.routers[0]
    f = FakeRouter()

    def restart(argv, stdin):
        f.spawn(PID, ["/usr/sbin/softflowd", "-i", r.interface, *options(s, r)])
        return OK
    f.on("rc-service", "softflowd-lan", "restart", reply=restart)
    first = routers.converge(f, s, r)
    assert first.platform == "alpine" and first.restarted and first.status.healthy
    assert first.actions == [f"wrote {CONF}", "restarted softflowd (config changed)"]
    f.calls.clear()
    again = routers.converge(f, s, r)
    assert not again.changed and not any(c[0] == "rc-service" for c in f.calls)
    f.procs.clear()
    f.on("rc-service", "softflowd-lan", "restart", reply=Result(1, "", "* softflowd: not configured"))
    with pytest.raises(routers.RouterError, match="rc=1: \\* softflowd: not configured"):
        routers.converge(f, s, r)


def test_only_the_registry_imports_the_platform_modules():
    """The other half of "one module plus one registry line": nothing else in netviz_pipeline names a
    platform module (detection, dispatch and settings rules go through the registry)."""
    from test_layers import import_graph

    graph = import_graph("netviz_pipeline")
    platforms = {type(p).__module__ for p in registry.PLATFORMS.values()}
    importers = {m for m, targets in graph.items() for t in targets if t in platforms and m not in platforms}
    assert importers == {"netviz_pipeline.routers.registry"}, importers
