"""The lab CLI's guards (pure logic: no lab is started)."""
from __future__ import annotations

import pytest

from netviz_lab import __main__ as cli


@pytest.mark.parametrize("command", ["up", "down"])
def test_commands_that_change_the_machine_say_root_is_needed(monkeypatch, command):
    monkeypatch.setattr(cli.os, "geteuid", lambda: 1000)
    with pytest.raises(SystemExit) as exc:
        cli.main([command])
    assert "needs root" in str(exc.value) and "sudo" in str(exc.value)


def test_kwok_nodes_must_not_be_negative():
    with pytest.raises(SystemExit):
        cli.main(["up", "--nodes", "-1"])
