from __future__ import annotations

import shlex
import subprocess
import xml.etree.ElementTree as ET

import pytest

from netviz_pipeline.render import softflowd as sf
from netviz_pipeline.routers import freebsd, linux, opnsense, pfsense, registry

PFSENSE_XML = """<?xml version="1.0"?>
<pfsense>
\t<version>23.3</version>
\t<!-- keep me -->
\t<installedpackages>
\t\t<package><name>softflowd</name></package>
\t\t<haproxy><config><enable>yes</enable></config></haproxy>
\t\t<softflowd><config><enable>off</enable><interface>wan</interface><host>10.0.0.9</host><port>2055</port>
\t\t<sample>0</sample><flowtracking>full</flowtracking></config></softflowd>
\t</installedpackages>
</pfsense>
"""


def test_debian_conf_exact(settings):
    r = settings.routers[0]
    assert linux.debian_conf(settings, r) == (
        "# managed by netviz-pipeline; changes are overwritten\n"
        "interface='lan0'\n"
        "options='-n 198.18.0.1:32055 -v 9 -t maxlife=60 -t expint=1 -t tcp.fin=1 -t tcp.rst=1 -t tcp=300 "
        "-t udp=15 -t icmp=5 -t general=60'\n")


def test_debian_conf_is_valid_shell_with_two_variables(settings):
    conf = linux.debian_conf(settings, settings.routers[0])
    out = subprocess.run(["sh", "-c", conf + 'printf "%s\\n%s" "$interface" "$options"'],
                         capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "lan0" and out[1].startswith("-n 198.18.0.1:32055 -v 9")
    assert "-p" not in shlex.split(out[1])  # the unit adds -p/-c itself


def test_ipv6_collector_is_bracketed(make, raw):
    raw["routers"][0]["collector_address"] = "2001:db8::1"
    s = make(routers=raw["routers"])
    assert sf.collector(s, s.routers[0]) == "[2001:db8::1]:32055"


def test_linux_commands_are_argv_lists(settings):
    cmds = linux.linux_commands()
    assert cmds["mkdir"].argv == ("mkdir", "-p", "/etc/softflowd", "/run/softflowd")
    assert cmds["installed"].shell == "dpkg-query -W '-f=${Status}' softflowd"
    assert shlex.split(cmds["restart"].shell)[:2] == ["sh", "-c"]


def test_pfsense_fields(settings):
    f = pfsense.pfsense_fields(settings, settings.routers[1])
    assert f["enable"] == "enabled" and f["interface"] == "lan" and f["host"] == "198.18.0.1"
    assert f["port"] == "32055" and f["version"] == "9"
    assert f["timeout-maxlife"] == "60" and f["timeout-tcp-fin"] == "1" and f["timeout-expint"] == "1"


def test_pfsense_edit_changes_only_our_fields(settings):
    fields = pfsense.pfsense_fields(settings, settings.routers[1])
    new, changed = pfsense.edit_pfsense_config(PFSENSE_XML, fields)
    assert changed
    root = ET.fromstring(new)
    cfg = root.find("installedpackages/softflowd/config")
    assert {k: cfg.findtext(k) for k in fields} == fields
    assert cfg.findtext("sample") == "0" and cfg.findtext("flowtracking") == "full"  # untouched
    assert root.findtext("installedpackages/haproxy/config/enable") == "yes"
    assert root.findtext("installedpackages/package/name") == "softflowd"
    assert root.findtext("version") == "23.3" and "<!-- keep me -->" in new


def test_pfsense_edit_is_idempotent(settings):
    fields = pfsense.pfsense_fields(settings, settings.routers[1])
    once, _ = pfsense.edit_pfsense_config(PFSENSE_XML, fields)
    twice, changed = pfsense.edit_pfsense_config(once, fields)
    assert not changed and twice == once


def test_pfsense_edit_creates_missing_section(settings):
    fields = pfsense.pfsense_fields(settings, settings.routers[1])
    new, changed = pfsense.edit_pfsense_config("<pfsense><system/></pfsense>", fields)
    assert changed and ET.fromstring(new).findtext("installedpackages/softflowd/config/host") == "198.18.0.1"


def test_pfsense_edit_rejects_other_xml():
    with pytest.raises(ValueError, match="not a pfSense config.xml"):
        pfsense.edit_pfsense_config("<opnsense/>", {"enable": "enabled"})


def test_pfsense_php_sets_fields_writes_config_and_syncs(settings):
    fields = pfsense.pfsense_fields(settings, settings.routers[1])
    php = pfsense.pfsense_php_apply(fields)
    for k, v in fields.items():
        assert f"$config['installedpackages']['softflowd']['config'][0]['{k}'] = '{v}';" in php
    assert "write_config(" in php and "sync_package_softflowd();" in php and "rc.conf" not in php
    cmd = pfsense.pfsense_commands(fields)["apply"]
    assert cmd.argv == ("/usr/local/bin/php",) and cmd.stdin == php


def test_freebsd_sysrc(settings, raw, make):
    raw["routers"][0].update(platform="freebsd", interface="em0")
    s = make(routers=raw["routers"])
    v = freebsd.freebsd_sysrc(s, s.routers[0], current_interfaces="igb0")
    assert v == {"softflowd_enable": "YES", "softflowd_interfaces": "igb0 em0",
                 "softflowd_em0_collector": "198.18.0.1:32055",
                 "softflowd_em0_timeouts": "-t maxlife=60 -t expint=1 -t tcp.fin=1 -t tcp.rst=1 -t tcp=300 "
                                           "-t udp=15 -t icmp=5 -t general=60",
                 "softflowd_em0_extra_args": "-v 9"}
    assert "softflowd_flags" not in v
    assert freebsd.freebsd_sysrc(s, s.routers[0], current_interfaces="em0")["softflowd_interfaces"] == "em0"
    argv = freebsd.freebsd_commands(v, "em0")["sysrc"].argv
    assert argv[0] == "sysrc" and "softflowd_em0_extra_args=-v 9" in argv


def test_freebsd_rejects_interface_names_rc_cannot_eval(raw, make):
    raw["routers"][0].update(platform="freebsd", interface="em0.10")
    s = make(routers=raw["routers"])
    with pytest.raises(ValueError, match="rc script"):
        freebsd.freebsd_sysrc(s, s.routers[0])


def test_opnsense_body_and_change_detection(settings):
    body = opnsense.setconfig_body(settings, settings.routers[1])
    assert body == {"netflow": {"capture": {"interfaces": "lan", "version": "v9", "targets": "198.18.0.1:32055"},
                                "activeTimeout": "60", "inactiveTimeout": "15"}}
    current = {"netflow": {"capture": {
        "interfaces": {"lan": {"value": "LAN", "selected": 1}, "wan": {"value": "WAN", "selected": 0}},
        "version": {"v5": {"value": "v5", "selected": 0}, "v9": {"value": "v9", "selected": 1}},
        "targets": "198.18.0.1:32055"}, "activeTimeout": "60", "inactiveTimeout": "15"}}
    assert not opnsense.needs_change(current, body)
    current["netflow"]["capture"]["interfaces"]["wan"]["selected"] = 1
    assert opnsense.needs_change(current, body)
    assert opnsense.needs_change({}, body)


def test_the_registry_wants_a_concrete_platform_and_tries_appliances_before_freebsd():
    with pytest.raises(ValueError, match="unknown router platform 'auto': one of pfsense, opnsense, freebsd, linux"):
        registry.get("auto")
    assert registry.get("linux") is linux.PLATFORM
    names = list(registry.PLATFORMS)
    assert names.index("pfsense") < names.index("freebsd") and names.index("opnsense") < names.index("freebsd")


def test_unsafe_values_never_rendered():
    with pytest.raises(ValueError):
        sf.checked("lan0'; reboot; '")
