"""Adding a router platform is one module plus its line in the registry: settings validation, detection
and dispatch all read `routers.registry.PLATFORMS`. Shown with a made-up platform (Alpine's softflowd
under OpenRC) that is nothing but a `SoftflowdPlatform` subclass: its settings rule, its detection and
its converge (the shared lifecycle: status, restart on change, wait) work without touching any other
module."""
from __future__ import annotations

import pytest
from test_router_drivers import OK, FakeRouter

from netviz_pipeline import routers
from netviz_pipeline.render.softflowd import Command, options
from netviz_pipeline.resources.router import Result
from netviz_pipeline.routers import detection, registry
from netviz_pipeline.routers.platform import Instance, SoftflowdPlatform
from netviz_pipeline.settings import SettingsError, parse_settings

CONF = "/etc/conf.d/softflowd"
PID = "/run/softflowd.pid"


class Alpine(SoftflowdPlatform):
    name = "alpine"
    title = "Alpine (softflowd under OpenRC)"

    def settings_problems(self, r):
        return ["interface auto is not supported on alpine: name the interface"] if r.interface == "auto" else []

    def matches(self, facts):
        return facts["uname"] == "Linux" and facts["platform_file"] == "alpine"

    def instance(self, session, s, r):
        return Instance(PID, ["softflowd", "-i", r.interface, *options(s, r)])

    def apply(self, session, s, r, out):
        want = f'SOFTFLOWD_OPTS="-i {r.interface} {" ".join(options(s, r))}"\n'
        if session.read_file(CONF) != want:
            session.write_file_atomic(CONF, want)
            out.actions.append(f"wrote {CONF}")
            out.changed = True

    def restart_command(self, r, running):
        return Command(("rc-service", "softflowd", "restart"), "OpenRC restart")


@pytest.fixture
def alpine(monkeypatch):
    monkeypatch.setitem(registry.PLATFORMS, "alpine", Alpine())


def test_settings_accept_a_registered_platform_and_apply_its_rules(alpine, raw):
    raw["routers"] = raw["routers"][:1]
    raw["routers"][0]["platform"] = "alpine"
    assert parse_settings(raw, check_host=False).routers[0].platform == "alpine"
    raw["routers"][0]["interface"] = "auto"
    with pytest.raises(SettingsError, match=r"routers\[0\].*interface auto is not supported on alpine"):
        parse_settings(raw, check_host=False)


def test_an_unregistered_platform_is_refused_with_the_choices(raw):
    raw["routers"][0]["platform"] = "alpine"
    with pytest.raises(SettingsError, match=r"routers\[0\]\.platform.*auto or one of freebsd, linux, opnsense, pfsense"):
        parse_settings(raw, check_host=False)


def test_detection_and_dispatch_find_it(alpine, raw):
    assert detection.platform_from(detection.parse_probe("Linux\n@@\nalpine\n@@\n")) == "alpine"
    raw["routers"] = raw["routers"][:1]
    raw["routers"][0]["platform"] = "alpine"
    s = parse_settings(raw, check_host=False)
    r = s.routers[0]
    f = FakeRouter()

    def restart(argv, stdin):
        f.spawn(PID, ["/usr/sbin/softflowd", "-i", r.interface, *options(s, r)])
        return OK
    f.on("rc-service", "softflowd", "restart", reply=restart)
    first = routers.converge(f, s, r)
    assert first.platform == "alpine" and first.restarted and first.status.healthy
    assert first.actions == [f"wrote {CONF}", "restarted softflowd (config changed)"]
    f.calls.clear()
    again = routers.converge(f, s, r)
    assert not again.changed and not any(c[0] == "rc-service" for c in f.calls)
    f.procs.clear()
    f.on("rc-service", "softflowd", "restart", reply=Result(1, "", "* softflowd: not configured"))
    with pytest.raises(routers.RouterError, match="rc=1: \\* softflowd: not configured"):
        routers.converge(f, s, r)
