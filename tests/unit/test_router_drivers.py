"""Router drivers without a router: quoting, detection, parsing, desired-vs-running comparison, and
each platform's converge against a scripted fake session (idempotence: second run writes nothing)."""
from __future__ import annotations

import re
import shlex

import pytest

from netviz_pipeline.resources.router import Result, RouterError, quote_argv
from netviz_pipeline.routers import common, detection, freebsd, linux, opnsense, pfsense
from netviz_pipeline import loading

OK = Result(0, "", "")


# -- quoting ---------------------------------------------------------------------------------------
def test_quote_argv_round_trips_through_a_shell():
    argv = ["printf", "%s|", "a b", "it's", "$HOME", "`id`", "x;rm -rf /", "*"]
    line = quote_argv(argv)
    assert shlex.split(line) == argv
    assert "'$HOME'" in line and "'`id`'" in line


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "x\x00", "hi!"])
def test_quote_argv_refuses_newlines_nul_and_bang(bad):
    with pytest.raises(ValueError):
        quote_argv(["echo", bad])


def test_quote_argv_refuses_empty_and_non_strings():
    with pytest.raises(ValueError):
        quote_argv([])
    with pytest.raises(TypeError):
        quote_argv(["echo", 3])


# -- detection -------------------------------------------------------------------------------------
@pytest.mark.parametrize("out,platform", [
    ("Linux\n@@\npfSense\n@@\npfssh\n", "pfsense"),  # the lab's emulated pfSense runs on Linux
    ("FreeBSD\n@@\npfSense\n@@\npfssh\n", "pfsense"),
    ("FreeBSD\n@@\n@@\npfssh\n", "pfsense"),
    ("FreeBSD\n@@\n@@\nopnsense\n", "opnsense"),
    ("FreeBSD\n@@\n@@\n", "freebsd"),
    ("Linux\n@@\n@@\ndebian\n", "linux"),
    ("Linux\n@@\n@@\ndebian\nsystemd\n", "linux"),
])
def test_platform_detection(out, platform):
    assert detection.platform_from(detection.parse_probe(out)) == platform


def test_detection_refuses_non_debian_linux_and_unknown():
    with pytest.raises(RouterError, match="debian_version"):
        detection.platform_from(detection.parse_probe("Linux\n@@\n@@\n"))
    with pytest.raises(RouterError, match="unsupported"):
        detection.platform_from(detection.parse_probe("Darwin\n@@\n@@\n"))


def test_probe_is_one_line_of_sh():
    probe = detection.probe_command()
    assert "\n" not in probe and "!" not in probe
    quote_argv(["sh", "-c", probe])


def test_the_probe_is_two_generic_facts_plus_each_platforms_markers():
    """The markers live with their platforms; the probe is theirs plus two generic facts (as before the move)."""
    assert detection.probe_command() == (
        "uname -s; echo @@; cat /etc/platform 2>/dev/null; echo @@; "
        "[ -e /usr/local/sbin/pfSsh.php ] && echo pfssh; [ -d /usr/local/opnsense ] && echo opnsense; "
        "[ -e /etc/debian_version ] && echo debian; [ -d /run/systemd/system ] && echo systemd; true")
    assert set(detection.parse_probe("FreeBSD\n@@\n@@\n")) == {"uname", "platform_file", "pfssh", "opnsense",
                                                                 "debian", "systemd"}


# -- parsing ---------------------------------------------------------------------------------------
PS = "  4242 Wed Nov 26 05:43:01 2025 /usr/sbin/softflowd -p /run/softflowd/netviz.pid -i lan0 -n 198.18.0.1:32055\n"


def test_parse_ps_line():
    p = common.parse_ps_line(PS)
    assert p.pid == 4242 and p.started == "Wed Nov 26 05:43:01 2025" and p.args[0] == "/usr/sbin/softflowd"
    assert common.parse_ps_line("garbage") is None


def test_parse_softflowd_args_pfsense_style():
    args = ["/usr/local/bin/softflowd", "-i", "1", "vtnet1", "-n", "198.18.0.1:2055", "-v", "9", "-t", "maxlife=60",
            "-tudp=15", "-p", "/var/run/softflowd.vtnet1.pid", "-c", "/var/run/softflowd.vtnet1.ctl", "-N"]
    p = common.parse_softflowd_args(args)
    assert p["interfaces"] == ["vtnet1"] and p["collectors"] == ["198.18.0.1:2055"] and p["version"] == "9"
    assert p["timeouts"] == {"maxlife": "60", "udp": "15"} and p["pidfile"].endswith("vtnet1.pid")


def test_args_drift_ignores_order_and_paths_but_not_target_or_timeouts(settings):
    r = settings.routers[0]
    want = linux.desired_args(settings, r)
    shuffled = [want[0], *want[5:], "-c", "/elsewhere.ctl", "-i", "lan0", "-p", "/x.pid"]
    assert common.args_drift(want, shuffled) == []
    other = [a.replace("198.18.0.1:32055", "10.0.0.9:2055") for a in want]
    assert common.args_drift(want, other) == ["collectors: running 10.0.0.9:2055, want 198.18.0.1:32055"]
    no_v = [a for i, a in enumerate(want) if a != "-v" and (i == 0 or want[i - 1] != "-v")]
    assert any(d.startswith("version: running 5") for d in common.args_drift(want, no_v))
    slow = [a.replace("tcp.fin=1", "tcp.fin=300") for a in want]
    assert common.args_drift(want, slow) == ["timeout tcp.fin: running 300, want 1"]


def test_interface_detection_parsers():
    ip = ("1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever\n"
          "2: mgmt0    inet 198.18.0.2/24 scope global mgmt0\\\n"
          "3: lan0@if4    inet 198.18.1.1/24 scope global lan0\\\n")
    assert common.interface_holding(common.parse_ip_addr(ip), "198.18.1.1", "r") == "lan0"
    ifc = ("em0: flags=8843<UP> metric 0 mtu 1500\n\tinet 192.0.2.1 netmask 0xffffff00 broadcast 192.0.2.255\n"
           "igb1: flags=8843<UP> metric 0 mtu 1500\n\tinet6 fe80::1%igb1 prefixlen 64\n"
           "\tinet 10.1.0.1 netmask 0xffffff00\n")
    assert common.parse_ifconfig(ifc) == [("em0", "192.0.2.1"), ("igb1", "fe80::1"), ("igb1", "10.1.0.1")]
    with pytest.raises(RouterError, match="no interface holds lan_address 10.9.9.9"):
        common.interface_holding(common.parse_ifconfig(ifc), "10.9.9.9", "r")


@pytest.mark.parametrize("sfd,pcap,need", [
    ("1.1.0-1+b1", "1.10.3-1", True),  # Debian 12: the trap
    ("1.1.0-1", "1.10.4-4.1", True),
    ("1.1.0-1", "1.9.1-3", False),
    ("1.2.0-1", "1.10.3-1", False),  # a release with immediate mode would not need it
    (None, None, True),
])
def test_needs_immediate_shim(sfd, pcap, need):
    assert linux.needs_immediate_shim(sfd, pcap) is need


def test_parse_versions():
    assert linux.parse_versions("softflowd 1.1.0-1+b1\nlibpcap0.8 1.10.3-1\nlibpcap0.8t64 \n") == {
        "softflowd": "1.1.0-1+b1", "libpcap0.8": "1.10.3-1"}


def test_parse_sysrc_e():
    out = 'softflowd_enable="YES"\nsoftflowd_em0_timeouts="-t maxlife=60 -t expint=1"\n'
    assert freebsd.parse_sysrc_e(out) == {"softflowd_enable": "YES",
                                          "softflowd_em0_timeouts": "-t maxlife=60 -t expint=1"}


# -- settings: interface auto ----------------------------------------------------------------------
def test_interface_auto_needs_lan_address_on_linux(raw):
    raw["routers"][0]["interface"] = "auto"
    with pytest.raises(ValueError, match="lan_address"):
        loading.parse(raw)
    raw["routers"][0]["lan_address"] = "198.18.1.1"
    assert loading.parse(raw).routers[0].lan_address == "198.18.1.1"
    del raw["routers"][1]["interface"]  # pfSense: auto = lan
    assert loading.parse(raw).routers[1].interface == "auto"


# -- a scripted router -----------------------------------------------------------------------------
class FakeRouter:
    """A session whose commands are answered by handlers keyed by argv prefix; files in a dict."""

    name = "fake"

    def __init__(self, files: dict | None = None):
        self.files = dict(files or {})
        self.calls: list[tuple] = []
        self.writes: list[str] = []
        self.handlers: list[tuple[tuple, object]] = []
        self.procs: dict[int, dict] = {}
        self.next_pid = 100

    def on(self, *prefix, reply=OK):
        self.handlers.insert(0, (prefix, reply))

    def run(self, argv, *, stdin=None, timeout=None):
        argv = tuple(argv)
        quote_argv(argv)
        self.calls.append(argv)
        if argv[:3] == ("sh", "-c", common.PROCESS_OF_PIDFILE):  # the pid file's first line, then `ps -p` of it
            text = self.read_file(argv[4])
            pid = text.split("\n", 1)[0].strip() if text is not None else None
            return Result(0, f"{pid}\n" + (self.run(("ps", "-p", pid)).out if pid and pid.isdigit() else ""), "") \
                if pid is not None else Result(0, "", "")
        if argv[:1] == ("ps",):
            p = self.procs.get(int(argv[-1]))
            return Result(0, f"{argv[-1]} Wed Nov 26 05:43:01 2025 {' '.join(p['args'])}\n" if p else "", "")
        for prefix, reply in self.handlers:
            if argv[:len(prefix)] == prefix:
                return reply(argv, stdin) if callable(reply) else reply
        return Result(127, "", f"fake: no handler for {argv}")

    def check(self, argv, *, stdin=None, timeout=None, what=""):
        res = self.run(argv, stdin=stdin, timeout=timeout)
        if res.rc:
            raise RouterError(f"{what}: {res.err}")
        return res

    def read_file(self, path):
        return self.files.get(path)

    def write_file_atomic(self, path, text, mode=0o644):
        self.files[path] = text
        self.writes.append(path)

    def spawn(self, pidfile: str, args: list[str], env: str = "") -> int:
        for pid, p in list(self.procs.items()):
            if p["pidfile"] == pidfile:
                del self.procs[pid]
        self.next_pid += 1
        self.procs[self.next_pid] = {"pidfile": pidfile, "args": args, "env": env}
        self.files[pidfile] = f"{self.next_pid}\n"
        return self.next_pid


def fake_debian(shim_tools: bool = True) -> FakeRouter:
    f = FakeRouter()
    f.on("dpkg-query", "-W", "-f=${Status}", reply=Result(0, "install ok installed", ""))
    f.on("dpkg-query", "-W", "-f=${Package} ${Version}\\n", reply=Result(1, "softflowd 1.1.0-1+b1\nlibpcap0.8 1.10.3-1\n", ""))
    f.on("test", "-d", "/run/systemd/system", reply=Result(1, "", ""))
    f.on("test", "-s", linux.SHIM_SO, reply=lambda a, i: Result(0 if linux.SHIM_SO in f.files else 1, "", ""))
    f.on("test", "-e", "/usr/include/pcap/pcap.h", reply=Result(0 if shim_tools else 1, "", ""))
    f.on("sh", "-c", "command -v cc || command -v gcc", reply=Result(0, "/usr/bin/cc\n" if shim_tools else "", ""))
    f.on("mkdir")
    f.on("/usr/bin/cc", reply=lambda a, i: (f.files.__setitem__(a[a.index("-o") + 1], "ELF"), OK)[1])
    f.on("mv", "-f", reply=lambda a, i: (f.files.__setitem__(a[3], f.files.pop(a[2])), OK)[1])
    f.on("cat", reply=lambda a, i: Result(0, next((p["env"] for pid, p in f.procs.items()
                                                    if a[1] == f"/proc/{pid}/environ"), ""), ""))

    def restart(argv, stdin):
        conf = f.files[linux.DEBIAN_CONF]
        iface = re.search(r"^interface='(.*)'$", conf, re.M).group(1)
        opts = re.search(r"^options='(.*)'$", conf, re.M).group(1).split()
        pre = re.search(r"^export LD_PRELOAD='(.*)'$", conf, re.M)
        f.spawn(linux.DEBIAN_PID, ["/usr/sbin/softflowd", "-p", linux.DEBIAN_PID, "-c", linux.DEBIAN_CTL, "-i", iface, *opts],
                env=f"PATH=/bin\x00LD_PRELOAD={pre.group(1)}\x00" if pre else "PATH=/bin\x00")
        return OK
    f.on(*linux.linux_commands()["restart"].argv, reply=restart)
    return f


def test_linux_converge_then_converged(settings):
    f = fake_debian()
    r = settings.routers[0]
    first = linux.PLATFORM.converge(f, settings, r)
    assert first.changed and first.restarted and not first.warnings
    conf = f.files[linux.DEBIAN_CONF]
    assert conf == linux.debian_conf(settings, r, ld_preload=linux.SHIM_SO) and "export LD_PRELOAD=" in conf
    assert f.files[linux.SHIM_SO] == "ELF" and f.files[linux.SHIM_SRC].startswith("/*")
    assert first.status.healthy and first.status.details["shim_preloaded"]
    assert first.status.collector == "198.18.0.1:32055"
    pid = first.status.pids
    f.writes.clear()
    second = linux.PLATFORM.converge(f, settings, r)
    assert not second.changed and not second.restarted and second.actions == [] and f.writes == []
    assert second.status.pids == pid


def test_linux_restarts_a_stale_process_without_rewriting(settings):
    f = fake_debian()
    r = settings.routers[0]
    linux.PLATFORM.converge(f, settings, r)
    pid = next(iter(f.procs))
    f.procs[pid]["args"] = [a.replace("32055", "9995") for a in f.procs[pid]["args"]]
    f.writes.clear()
    out = linux.PLATFORM.converge(f, settings, r)
    assert out.restarted and f.writes == [] and "collectors" in out.actions[-1]
    assert out.status.pids != [pid]


def test_linux_without_compiler_configures_and_says_what_to_install(settings):
    f = fake_debian(shim_tools=False)
    out = linux.PLATFORM.converge(f, settings, settings.routers[0])
    assert out.status.running and "export LD_PRELOAD" not in f.files[linux.DEBIAN_CONF]
    assert len(out.warnings) == 1 and "apt-get install gcc libpcap-dev" in out.warnings[0]


def test_linux_auto_interface(make, raw):
    raw["routers"][0].update(interface="auto", lan_address="198.18.1.1")
    s = make(routers=raw["routers"])
    f = fake_debian()
    f.on("ip", "-o", "addr", "show", reply=Result(0, "2: mgmt0    inet 198.18.0.2/24 x\n3: lan0    inet 198.18.1.1/24 x\n", ""))
    out = linux.PLATFORM.converge(f, s, s.routers[0])
    assert out.details["interface"] == "lan0" and "interface='lan0'" in f.files[linux.DEBIAN_CONF]


PF_XML = """<?xml version="1.0"?>
<pfsense><interfaces><wan><if>vtnet0</if></wan><lan><if>vtnet1</if></lan></interfaces>
<installedpackages><package><name>softflowd</name></package></installedpackages></pfsense>
"""


def fake_pfsense() -> FakeRouter:
    f = FakeRouter({pfsense.CONFIG: PF_XML})
    f.on("pkg", "info", "-e", "pfSense-pkg-softflowd")
    f.on("/usr/local/sbin/pfSsh.php", "playback", "svc", "start", "softflowd")

    def php(argv, stdin):  # what write_config + sync_package_softflowd do, for our fields
        fields = dict(re.findall(r"\['config'\]\[0\]\['([^']+)'\] = '([^']*)';", stdin))
        if fields:
            f.files[pfsense.CONFIG] = pfsense.edit_pfsense_config(f.files[pfsense.CONFIG], fields)[0]
        cf = pfsense.current_fields(f.files[pfsense.CONFIG])
        t = [x for k, n in (("timeout-general", "general"), ("timeout-maxlife", "maxlife"), ("timeout-expint", "expint"),
                            ("timeout-tcp", "tcp"), ("timeout-tcp-rst", "tcp.rst"), ("timeout-tcp-fin", "tcp.fin"),
                            ("timeout-udp", "udp")) if k in cf for x in ("-t", f"{n}={cf[k]}")]
        f.spawn("/var/run/softflowd.vtnet1.pid", ["/usr/local/bin/softflowd", "-i", "1", "vtnet1", "-n",
                f"{cf['host']}:{cf['port']}", "-v", cf["version"], *t, "-p", "/var/run/softflowd.vtnet1.pid"])
        return Result(0, "applied", "")
    f.on("/usr/local/bin/php", reply=php)
    return f


def test_pfsense_converge_writes_config_xml_never_rc_conf(settings):
    f = fake_pfsense()
    r = settings.routers[1]
    out = pfsense.PLATFORM.converge(f, settings, r)
    assert out.changed and out.restarted and out.status.healthy
    assert pfsense.current_fields(f.files[pfsense.CONFIG]) == pfsense.pfsense_fields(settings, r)
    assert not any("rc.conf" in " ".join(c) for c in f.calls) and "/etc/rc.conf" not in f.files
    assert out.status.details["interface_device"] == "vtnet1"
    pid = out.status.pids
    f.calls.clear()
    again = pfsense.PLATFORM.converge(f, settings, r)
    assert not again.changed and again.actions == [] and again.status.pids == pid
    assert not any(c[0] == "/usr/local/bin/php" for c in f.calls)


def test_pfsense_starts_a_stopped_exporter_without_writing(settings):
    f = fake_pfsense()
    r = settings.routers[1]
    pfsense.PLATFORM.converge(f, settings, r)
    f.procs.clear()

    def start(argv, stdin):
        return f.handlers[[p for p, _ in f.handlers].index(("/usr/local/bin/php",))][1](argv, "")
    f.on("/usr/local/sbin/pfSsh.php", "playback", "svc", "start", "softflowd", reply=start)
    out = pfsense.PLATFORM.converge(f, settings, r)
    assert out.restarted and out.actions == ["started softflowd (pfSsh.php playback svc start)"]


def test_pfsense_php_is_portable_and_quoted(settings):
    php = pfsense.pfsense_php_apply(pfsense.pfsense_fields(settings, settings.routers[1]))
    assert "$config['installedpackages']['softflowd']['config'][0]['host'] = '198.18.0.1';" in php
    assert "write_config(" in php and "sync_package_softflowd();" in php and "rc.conf" not in php
    with pytest.raises(ValueError):
        pfsense.pfsense_php_apply({"host": "1.2.3.4'; system('id'); '"})


def test_freebsd_converge(make, raw):
    raw["routers"][0].update(platform="freebsd", interface="em1")
    s = make(routers=raw["routers"])
    r = s.routers[0]
    f = FakeRouter()
    rc: dict[str, str] = {"softflowd_interfaces": "em0"}
    f.on("pkg", "info", "-e", "softflowd")
    f.on("sysrc", "-n", "-i", "softflowd_interfaces", reply=lambda a, i: Result(0, rc.get(a[3], "") + "\n", ""))
    f.on("sysrc", "-e", "-i", reply=lambda a, i: Result(0, "".join(f'{k}="{rc[k]}"\n' for k in a[3:] if k in rc), ""))

    def sysrc(argv, stdin):
        rc.update(dict(x.split("=", 1) for x in argv[1:]))
        return OK
    f.on("sysrc", "softflowd_enable=YES", reply=sysrc)

    def service(argv, stdin):
        f.spawn("/var/run/softflowd.em1.pid", ["/usr/local/sbin/softflowd", "-i", "em1", "-n",
                rc["softflowd_em1_collector"], "-m", "16000", *rc["softflowd_em1_timeouts"].split(),
                *rc["softflowd_em1_extra_args"].split()])
        return OK
    f.on("service", "softflowd", reply=service)
    out = freebsd.PLATFORM.converge(f, s, r)
    assert out.changed and out.restarted and out.status.healthy
    assert rc["softflowd_interfaces"] == "em0 em1" and rc["softflowd_em1_collector"] == "198.18.0.1:32055"
    assert ("service", "softflowd", "start", "em1") in f.calls
    f.calls.clear()
    again = freebsd.PLATFORM.converge(f, s, r)
    assert not again.changed and not any(c[0] == "service" or c[1:2] == ("softflowd_enable=YES",) for c in f.calls)


class FakeApi:
    def __init__(self, cfg):
        self.cfg, self.calls, self.active = cfg, [], False

    def call(self, method, path, body=None):
        self.calls.append(path.rsplit("/", 1)[-1])
        if path.endswith("getconfig"):
            return self.cfg
        if path.endswith("setconfig"):
            cap = body["netflow"]["capture"]
            self.cfg = {"netflow": {"capture": {
                "interfaces": {i: {"value": i, "selected": 1} for i in cap["interfaces"].split(",")},
                "targets": {t: {"value": t, "selected": 1} for t in cap["targets"].split(",")},
                "version": {"v5": {"selected": 0}, "v9": {"selected": 1}}},
                "activeTimeout": body["netflow"]["activeTimeout"], "inactiveTimeout": body["netflow"]["inactiveTimeout"]}}
            return {"result": "saved"}
        if path.endswith("reconfigure"):
            self.active = True
            return {"status": "ok"}
        return {"status": "active" if self.active else "inactive"}


def test_opnsense_converge_keeps_other_targets_and_is_idempotent(make, raw, monkeypatch):
    monkeypatch.setenv("OPN_KEY", "k")
    monkeypatch.setenv("OPN_SECRET", "s")
    raw["routers"] = [raw["routers"][0] | {"platform": "opnsense", "interface": "auto",
                                           "opnsense": {"key_env": "OPN_KEY", "secret_env": "OPN_SECRET"}}]
    s = make(routers=raw["routers"])
    api = FakeApi({"netflow": {"capture": {"interfaces": {"lan": {"selected": 0}, "opt1": {"selected": 1}},
                                           "targets": {"10.0.0.5:2055": {"selected": 1}},
                                           "version": {"v9": {"selected": 1}}},
                               "activeTimeout": "1800", "inactiveTimeout": "15"}})
    out = opnsense.PLATFORM.converge(None, s, s.routers[0], client=api)
    assert out.changed and out.restarted and out.status.running
    cap = out.details["setconfig"]["netflow"]["capture"]
    assert cap["targets"] == "10.0.0.5:2055,198.18.0.1:32055" and cap["interfaces"] == "lan,opt1"
    api.calls.clear()
    again = opnsense.PLATFORM.converge(None, s, s.routers[0], client=api)
    assert not again.changed and "setconfig" not in api.calls and "reconfigure" not in api.calls
