"""The FreeBSD and OPNsense drivers against the shapes their projects publish (no such router runs here).

Facts relied on, read from the projects' own files (restated below as data; no code copied):

FreeBSD, port net-mgmt/softflowd (freebsd/freebsd-ports; files/softflowd.in at commit 5eb5c0fd84e6, the
stored version with `%%PREFIX%%/bin/softflowd`; upstream main differs only by the dropped `$FreeBSD$`
line, as a merge of upstream/main into camachat/freebsd-ports 7cc12431 shows. Makefile: PORTVERSION
1.0.0 from irino/softflowd, USE_RC_SUBR=${PORTNAME}, PLIST bin/softflowd bin/softflowctl; FreshPorts
lists 1.0.0_1):
- rc script /usr/local/etc/rc.d/softflowd, rcvar softflowd_enable, command /usr/local/bin/softflowd.
- With no second argument it runs itself once per word of softflowd_interfaces ("profiles"); with one
  (`service softflowd start em1`) it handles that profile only.
- Per profile it reads softflowd_<p>_collector (required: empty -> "ERROR: You must specify a collector
  to send data to.", exit 1), softflowd_<p>_timeouts (default "-t maxlife=300"), softflowd_<p>_max_states
  (default 16000), softflowd_<p>_extra_args (default: softflowd_extra_args from rc.conf), each through
  `eval ...${softflowd_${profile}_x:-default}`, so <p> must be usable in a shell variable name and an
  empty value means the default. The script resets softflowd_timeouts/_max_states after load_rc_config,
  so only the per-profile variables count for those two.
- pidfile /var/run/softflowd.<p>.pid, control socket /var/run/softflowd.<p>.ctl, and
  command_args "-i <p> -n <collector> -m <max_states> -p <pidfile> -c <ctlfile> <timeouts> <extra_args>";
  rc.subr runs `command ${softflowd_flags} command_args` through sh, so values are split on blanks.
- stop is `softflowctl -c <ctlfile> shutdown`.
sysrc (freebsd/freebsd-src usr.sbin/sysrc/sysrc, 09711ccb): `-e` prints NAME="value" (SEP '="' and a
closing quote, value not escaped), `-n` the value alone, `-i` skips unknown names (exit status 1, no
line); names must be shell variable names.

OPNsense, built-in NetFlow (opnsense/core tag 26.7.2 = 3fa8a4cfb5e5, files unchanged at f95e81516e,
27.1.a-161): models/OPNsense/Diagnostics/Netflow.xml (+ Netflow.php), controllers/OPNsense/Diagnostics/
Api/NetflowController.php, Base/ApiControllerBase.php, Base/BaseModel.php, Base/FieldTypes/{BaseField,
BaseListField,BaseSetField,InterfaceField,OptionField,IPPortField,IntegerField,BooleanField}.php,
etc/rc.d/netflow, service/templates/OPNsense/Netflow/{netflow.conf,rc.conf.d}, Diagnostics/ACL/ACL.xml.
- Routes /api/diagnostics/netflow/<action> -> NetflowController::<action>Action: isEnabled, getconfig
  (GET only; else []), setconfig (needs POST field "netflow"), reconfigure (POST -> {"status": "ok"},
  else {"status": "error"}), status, cacheStats, reset. A JSON body is read only with Content-Type
  application/json (or application/json;charset=utf-8).
- Model (mount //OPNsense/Netflow): capture.interfaces, capture.egress_only (InterfaceField, multiple:
  enabled interface identifiers lan/wan/optN), capture.version (OptionField v5|v9, required, default v9),
  capture.targets (IPPortField AsList: "a.b.c.d:port" or "[v6]:port", comma-joined), collect.enable
  (BooleanField "0"/"1"), activeTimeout (1..86400, default 1800), inactiveTimeout (1..86400, default 15).
- setconfig: setNodes takes only the model's keys (others silently ignored; a list where a value is
  expected throws); with collect.enable=1 it appends 127.0.0.1:2056 to targets; then
  {"result": "saved"} or {"result": "failed", "validations": {"netflow.<field path>": message}}.
- getconfig: {"netflow": nodes}; list fields as {key: {"value": descr, "selected": 0|1}} over all
  options; an AsList field as one entry per comma-separated item, all selected, so an EMPTY targets is
  {"": {"value": "", "selected": 1}}; scalars as strings.
- status: {"status": "active", "collectors": "<n>"} or {"status": "inactive"}; exporting needs both
  interfaces and targets (rc.conf.d template: netflow_enable only then).

What this proves and does not: the drivers agree with those files. Not that a FreeBSD or OPNsense
release behaves as its files say, nor the SSH/TLS paths to one: no such router ran here.
"""
from __future__ import annotations

import base64
import ipaddress
import json
import re

import pytest
import requests

from netviz_pipeline.resources.router import Result, RouterError
from netviz_pipeline.routers import common, freebsd, opnsense
from netviz_pipeline.routers.opnsense import OPNsenseClient

# == FreeBSD: the port's rc script, as facts =======================================================
RC_SCRIPT = "softflowd"  # USE_RC_SUBR=${PORTNAME}
PACKAGE = "softflowd"  # PORTNAME
COMMAND = "/usr/local/bin/softflowd"
CTL = "/usr/local/bin/softflowctl"
RCVAR = "softflowd_enable"
PROFILES = "softflowd_interfaces"
PER_PROFILE_DEFAULT = {"collector": None, "timeouts": "-t maxlife=300", "max_states": "16000",
                       "extra_args": "$softflowd_extra_args"}
PIDFILE = "/var/run/softflowd.{p}.pid"
CTLFILE = "/var/run/softflowd.{p}.ctl"
# command_args in the script's order; "*" = the value is split on blanks by sh
ARGV = ("-i", "{p}", "-n", "{collector}", "-m", "{max_states}", "-p", "{pidfile}", "-c", "{ctlfile}",
        "*timeouts", "*extra_args")
SHELL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def checkyesno(value: str | None) -> bool:  # rc.subr: YES/TRUE/ON/1, any case
    return (value or "").lower() in ("yes", "true", "on", "1")


def rc_reads(profile: str) -> set[str]:
    return {RCVAR, PROFILES, "softflowd_extra_args", "softflowd_flags"} | {
        f"softflowd_{profile}_{k}" for k in PER_PROFILE_DEFAULT}


def rc_argv(rc: dict[str, str], profile: str) -> list[str]:
    """The argv `service softflowd start <profile>` gives softflowd, derived as the script does it."""
    if not SHELL_NAME.fullmatch(f"softflowd_{profile}_collector"):
        raise ValueError("the script's eval cannot name this profile's variables")
    val = {}
    for key, default in PER_PROFILE_DEFAULT.items():
        v = rc.get(f"softflowd_{profile}_{key}", "")
        if not v and default is not None:
            v = rc.get("softflowd_extra_args", "") if default.startswith("$") else default
        val[key] = v
    if not val["collector"]:
        raise RuntimeError("ERROR: You must specify a collector to send data to.")
    val.update(p=profile, pidfile=PIDFILE.format(p=profile), ctlfile=CTLFILE.format(p=profile))
    args = [COMMAND, *rc.get("softflowd_flags", "").split()]
    for a in ARGV:
        args += val[a[1:]].split() if a.startswith("*") else [a.format(**val)]
    return args


@pytest.fixture
def bsd(make, raw):
    def _bsd(interface="em1", **over):
        raw["routers"][0].update(platform="freebsd", interface=interface, **over)
        s = make(routers=raw["routers"])
        return s, s.routers[0]
    return _bsd


def test_every_rc_variable_the_driver_sets_is_one_the_port_script_reads(bsd):
    s, r = bsd()
    rc = freebsd.freebsd_sysrc(s, r, "em0")
    assert set(rc) <= rc_reads("em1"), set(rc) - rc_reads("em1")
    assert "softflowd_flags" not in rc and "softflowd_extra_args" not in rc  # globals stay the user's
    assert checkyesno(rc[RCVAR]) and rc[PROFILES].split() == ["em0", "em1"]  # boot starts both profiles
    assert rc["softflowd_em1_collector"] and " " not in rc["softflowd_em1_collector"]  # one -n word
    assert all(SHELL_NAME.fullmatch(k) for k in rc)  # sysrc refuses other names


@pytest.mark.parametrize("address", ["198.18.0.9", "2001:db8::9"])
def test_the_argv_the_port_script_builds_from_the_drivers_variables_is_converged(bsd, address):
    s, r = bsd(collector_address=address, collector_port=2055)
    argv = rc_argv(freebsd.freebsd_sysrc(s, r), "em1")
    where = freebsd.PLATFORM.instance(None, s, r)
    assert common.args_drift(where.want_args, argv) == []
    parsed = common.parse_softflowd_args(argv)
    assert where.pidfile == parsed["pidfile"] == PIDFILE.format(p="em1")  # the driver reads the script's file
    assert parsed["ctlsock"] == CTLFILE.format(p="em1")  # so `softflowctl statistics` reaches it
    assert parsed["collectors"] == [f"[{address}]:2055" if ":" in address else f"{address}:2055"]


def test_the_comparison_bites_when_the_script_would_fall_back_to_its_defaults(bsd):
    s, r = bsd()
    rc = freebsd.freebsd_sysrc(s, r)
    want = freebsd.PLATFORM.instance(None, s, r).want_args
    no_timeouts = {k: v for k, v in rc.items() if not k.endswith("_timeouts")}
    assert "timeout maxlife: running 300, want 60" in common.args_drift(want, rc_argv(no_timeouts, "em1"))
    no_extra = {k: v for k, v in rc.items() if not k.endswith("_extra_args")}
    assert any(d.startswith("version: running 5") for d in common.args_drift(want, rc_argv(no_extra, "em1")))


@pytest.mark.parametrize("name", ["vlan0.100", "lagg-0"])
def test_interfaces_the_script_cannot_eval_are_refused(bsd, name):
    s, r = bsd(interface=name)
    with pytest.raises(ValueError):
        rc_argv({}, name)
    with pytest.raises(ValueError, match="rc script"):
        freebsd.freebsd_sysrc(s, r)


def test_commands_name_the_ports_package_script_and_profile():
    c = freebsd.freebsd_commands({}, "em1")
    assert c["install"].argv[-1] == c["installed"].argv[-1] == PACKAGE
    for k in ("start", "restart"):
        assert c[k].argv[:2] == ("service", RC_SCRIPT) and c[k].argv[3] == "em1"


def sysrc_e(rc: dict[str, str], names) -> str:
    return "".join(f'{n}="{rc[n]}"\n' for n in names if n in rc)  # sysrc -e: NAME="value"


def test_parse_sysrc_e_reads_what_sysrc_prints_for_the_drivers_values(bsd):
    s, r = bsd(collector_address="2001:db8::9")
    rc = freebsd.freebsd_sysrc(s, r, "em0 igb0")
    assert freebsd.parse_sysrc_e(sysrc_e(rc, rc)) == rc
    assert freebsd.parse_sysrc_e('softflowd_em1_extra_args=""\n') == {"softflowd_em1_extra_args": ""}


class PortFreeBSD:
    """A FreeBSD session whose sysrc, service and ps behave as the facts above say."""

    name = "freebsd-port"

    def __init__(self, rc: dict[str, str] | None = None):
        self.rc, self.files, self.procs, self.calls, self.next_pid = dict(rc or {}), {}, {}, [], 500

    def run(self, argv, *, stdin=None, timeout=None):
        argv = tuple(argv)
        self.calls.append(argv)
        if argv[:3] == ("sh", "-c", common.PROCESS_OF_PIDFILE):  # the pid file's first line, then `ps -p` of it
            text = self.read_file(argv[4])
            pid = text.split("\n", 1)[0].strip() if text is not None else None
            return Result(0, f"{pid}\n" + (self.run(("ps", "-p", pid)).out if pid and pid.isdigit() else ""), "") \
                if pid is not None else Result(0, "", "")
        if argv[:1] == ("ps",):
            p = self.procs.get(int(argv[-1]))
            return Result(0, f"{argv[-1]} Mon Mar  2 10:00:00 2026 {' '.join(p)}\n" if p else "", "")  # ps: unquoted
        if argv == ("pkg", "info", "-e", PACKAGE):
            return Result(0, "", "")
        if argv[:1] == ("sysrc",):
            return self.sysrc(list(argv[1:]))
        if argv[:2] == ("service", RC_SCRIPT) and len(argv) == 4:
            return self.service(argv[2], argv[3])
        return Result(127, "", f"no such command here: {argv}")

    def check(self, argv, *, stdin=None, timeout=None, what=""):
        res = self.run(argv, stdin=stdin, timeout=timeout)
        if res.rc:
            raise RouterError(f"{what}: {res.err}")
        return res

    def read_file(self, path):
        return self.files.get(path)

    def write_file_atomic(self, path, text, mode=0o644):
        raise AssertionError("the FreeBSD driver writes through sysrc only")

    def sysrc(self, args):
        flags = [a for a in args if a.startswith("-")]
        names = [a for a in args if not a.startswith("-")]
        assert all(SHELL_NAME.fullmatch(n.split("=", 1)[0]) for n in names)
        if any("=" in n for n in names):
            out = ""
            for n in names:
                k, v = n.split("=", 1)
                out += f"{k}: {self.rc.get(k, '')} -> {v}\n"
                self.rc[k] = v
            return Result(0, out, "")
        rc = 0 if all(n in self.rc for n in names) else 1
        if "-n" in flags:
            return Result(rc, "".join(f"{self.rc[n]}\n" for n in names if n in self.rc), "")
        if "-e" in flags:
            return Result(rc, sysrc_e(self.rc, names), "")
        return Result(rc, "".join(f"{n}: {self.rc[n]}\n" for n in names if n in self.rc), "")

    def running(self, profile):
        text = self.files.get(PIDFILE.format(p=profile), "").strip()
        return int(text) if text.isdigit() and int(text) in self.procs else None

    def service(self, action, profile):
        if action in ("stop", "restart"):
            pid = self.running(profile)
            if pid is None and action == "stop":
                return Result(1, "", f"{CTL}: connect: No such file or directory")
            self.procs.pop(pid, None)
        if action in ("start", "restart"):
            if not checkyesno(self.rc.get(RCVAR)):
                return Result(0, f"Cannot 'start' softflowd. Set {RCVAR} to YES in /etc/rc.conf\n", "")
            if self.running(profile):
                return Result(1, "", f"softflowd already running? (pid={self.running(profile)}).")
            try:
                argv = rc_argv(self.rc, profile)
            except RuntimeError as e:
                return Result(1, str(e), "")
            self.next_pid += 1
            self.procs[self.next_pid] = argv
            self.files[PIDFILE.format(p=profile)] = f"{self.next_pid}\n"
            return Result(0, "Starting softflowd.\n", "")
        return Result(0, "", "")


def test_converge_on_the_ports_rc_script_then_nothing_to_do(bsd):
    s, r = bsd()
    f = PortFreeBSD({"softflowd_enable": "YES", "softflowd_interfaces": "em0", "softflowd_em0_collector": "10.0.0.5:2055"})
    out = freebsd.PLATFORM.converge(f, s, r)
    assert out.changed and out.restarted and out.status.healthy, out
    assert ("service", RC_SCRIPT, "start", "em1") in f.calls
    assert f.rc["softflowd_interfaces"] == "em0 em1" and f.rc["softflowd_em0_collector"] == "10.0.0.5:2055"
    assert out.status.details["pidfile"] == PIDFILE.format(p="em1") and out.status.processes[0].args[0] == COMMAND
    pids = out.status.pids
    f.calls.clear()
    again = freebsd.PLATFORM.converge(f, s, r)
    assert not again.changed and again.actions == [] and again.status.pids == pids
    assert not any(c[0] == "service" or (c[0] == "sysrc" and "=" in "".join(c[1:])) for c in f.calls)


def test_a_process_started_by_hand_with_other_flags_is_restarted_by_the_script(bsd):
    s, r = bsd()
    f = PortFreeBSD()
    freebsd.PLATFORM.converge(f, s, r)
    pid = next(iter(f.procs))
    f.procs[pid] = [a.replace("maxlife=60", "maxlife=300") for a in f.procs[pid]]
    out = freebsd.PLATFORM.converge(f, s, r)
    assert out.restarted and ("service", RC_SCRIPT, "restart", "em1") in f.calls
    assert "timeout maxlife" in out.actions[-1] and out.status.healthy and out.status.pids != [pid]


# == OPNsense: the NetFlow model and API, as facts ================================================
ACTIONS = {"isEnabled": None, "getconfig": "GET", "setconfig": "POST", "reconfigure": "POST", "status": None,
           "cacheStats": None, "reset": "POST"}  # None: any method
ROUTE = re.compile(r"/api/(?P<module>[a-z]+)/(?P<controller>[a-z]+)/(?P<action>[A-Za-z]+)")
JSON_TYPES = ("application/json", "application/json;charset=utf-8")
MODEL = {"capture": {"interfaces": "interfaces", "egress_only": "interfaces", "version": ("v5", "v9"),
                     "targets": "ipport_list"},
         "collect": {"enable": ("0", "1")},
         "activeTimeout": (1, 86400, "Active timeout needs to be an integer value between 1 and 86400."),
         "inactiveTimeout": (1, 86400, "Inactive timeout needs to be an integer value between 1 and 86400.")}
DEFAULTS = {"capture.interfaces": "", "capture.egress_only": "", "capture.version": "v9", "capture.targets": "",
            "collect.enable": "0", "activeTimeout": "1800", "inactiveTimeout": "15"}
LOCAL_TARGET = "127.0.0.1:2056"
IFACES = {"lan": ("LAN", "1"), "wan": ("WAN", "1"), "opt1": ("DMZ", "1"), "opt2": ("OLD", "")}  # (descr, enable)


def ipport_ok(value: str) -> bool:
    """IPPortField (no address family, port required): a.b.c.d:port or [v6]:port."""
    def port(p):
        return p.isdigit() and 1 <= int(p) <= 65535
    parts = value.split(":")
    if len(parts) == 2 and port(parts[1]):
        try:
            if ipaddress.ip_address(parts[0]).version == 4:
                return True
        except ValueError:
            pass
    pieces = [x for x in re.split(r"\[([^\]]+)\]", value) if x]
    if len(pieces) == 2 and ":" in pieces[1] and port(pieces[1].strip(": ")):
        try:
            return ipaddress.ip_address(pieces[0]).version == 6
        except ValueError:
            return False
    return False


def options(kind) -> dict[str, str]:
    if kind == "interfaces":  # InterfaceField filter <enable>/^(?!0).*$/: a missing enable reads "0"
        return {k: d for k, (d, en) in IFACES.items() if not (en or "0").startswith("0")}
    return {k: k for k in kind}


class PublishedOPNsense:
    """OPNsense's netflow API and model as the facts above say: routes, methods, setNodes, the field
    validations and their messages, the getconfig node shapes, reconfigure and status."""

    def __init__(self, **values):
        self.cfg = dict(DEFAULTS) | {k.replace("__", "."): v for k, v in values.items()}
        self.active, self.calls, self.saved = False, [], 0

    def call(self, method, path, body=None):
        m = ROUTE.fullmatch(path)
        assert m and (m["module"], m["controller"]) == ("diagnostics", "netflow"), path
        action = m["action"]
        assert action in ACTIONS, f"NetflowController has no {action}Action"
        self.calls.append((method, action))
        if action == "getconfig":
            return {"netflow": self.nodes()} if method == "GET" else []
        if action == "setconfig":
            assert method == "POST"
            return self.setconfig(body or {})
        if action == "reconfigure":
            if method != "POST":
                return {"status": "error"}
            self.active = bool(self.cfg["capture.interfaces"] and self.cfg["capture.targets"])
            return {"status": "ok"}
        if action == "status":
            if self.active:
                return {"status": "active", "collectors": str(len(self.cfg["capture.interfaces"].split(",")))}
            return {"status": "inactive"}
        raise AssertionError(action)

    def nodes(self) -> dict:
        out: dict = {}
        for path, value in self.cfg.items():
            *parent, leaf = path.split(".")
            spec = MODEL[parent[0]][leaf] if parent else MODEL[leaf]
            node = out.setdefault(parent[0], {}) if parent else out
            if spec == "ipport_list":
                node[leaf] = {e: {"value": e, "selected": 1} for e in value.split(",")}
            elif spec == "interfaces" or (isinstance(spec, tuple) and path == "capture.version"):
                chosen = value.split(",")
                node[leaf] = {k: {"value": d, "selected": int(k in chosen)} for k, d in options(spec).items()}
            else:
                node[leaf] = value
        return out

    def setconfig(self, body: dict) -> dict:
        if "netflow" not in body:
            return {"result": "failed"}
        new = dict(self.cfg)

        def set_nodes(tree, data, prefix=""):
            for key, spec in tree.items():
                if key not in data:
                    continue
                if isinstance(spec, dict):
                    set_nodes(spec, data[key], f"{prefix}{key}.")
                elif isinstance(data[key], (dict, list)):
                    raise AssertionError(f"Invalid input type for {key}: expected a single value")
                else:
                    new[prefix + key] = str(data[key]).strip() if spec == "ipport_list" else str(data[key])
        set_nodes(MODEL, body["netflow"])
        if new["collect.enable"] == "1" and LOCAL_TARGET not in new["capture.targets"]:
            new["capture.targets"] = ",".join(x for x in (new["capture.targets"], LOCAL_TARGET) if x)
        errors = {}
        for path, value in new.items():
            if value == self.cfg[path]:
                continue  # the model validates changed fields only
            *parent, leaf = path.split(".")
            spec = MODEL[parent[0]][leaf] if parent else MODEL[leaf]
            if spec == "ipport_list" and value:
                bad = next((v for v in value.split(",") if not ipport_ok(v)), None)
                if bad is not None:
                    errors[path] = f'"{bad}" is invalid. Invalid IP-port combination.'
            elif spec == "interfaces" and value:
                bad = [v for v in value.split(",") if v not in options(spec)]
                if bad:
                    errors[path] = "\n".join(f"Option [{v}] not in list." for v in bad)
            elif isinstance(spec, tuple) and len(spec) == 3:
                lo, hi, msg = spec
                if not (value.lstrip("-").isdigit() and lo <= int(value) <= hi):
                    errors[path] = msg
            elif isinstance(spec, tuple) and value not in spec:
                errors[path] = "Option [%s] not in list."
        missing = [e for e in new["capture.egress_only"].split(",") if e and e not in new["capture.interfaces"].split(",")]
        if missing:
            errors["capture.interfaces"] = f"WAN interfaces missing in listening interfaces: {', '.join(missing)}"
        if errors:
            return {"result": "failed", "validations": {f"netflow.{k}": v for k, v in errors.items()}}
        self.cfg, self.saved = new, self.saved + 1
        return {"result": "saved"}


@pytest.fixture
def opn(make, raw, monkeypatch):
    monkeypatch.setenv("OPN_KEY", "key")
    monkeypatch.setenv("OPN_SECRET", "secret")

    def _opn(**over):
        raw["routers"] = [raw["routers"][0] | {"platform": "opnsense", "interface": "auto",
                                               "opnsense": {"key_env": "OPN_KEY", "secret_env": "OPN_SECRET"}} | over]
        s = make(routers=raw["routers"])
        return s, s.routers[0]
    return _opn


def test_the_drivers_endpoints_are_the_published_controllers_actions():
    for method, path in opnsense.API.values():
        m = ROUTE.fullmatch(path)
        assert m and (m["module"], m["controller"]) == ("diagnostics", "netflow"), path
        assert m["action"] in ACTIONS, path
        assert ACTIONS[m["action"]] in (None, method), (path, method)


@pytest.mark.parametrize("over", [{}, {"collector_address": "2001:db8::9", "collector_port": 2055},
                                  {"interface": "opt1", "netflow_version": 5,
                                   "timeouts": {"maxlife": 604800, "udp": 0}}])
def test_setconfig_body_uses_the_models_fields_and_value_formats(opn, over):
    s, r = opn(**over)
    body = opnsense.setconfig_body(s, opnsense.OPNsense._resolve(r))
    assert list(body) == ["netflow"]

    def walk(tree, data):
        for key, value in data.items():
            assert key in tree, f"{key} is not a field of OPNsense's Netflow model (setNodes drops it)"
            if isinstance(tree[key], dict):
                walk(tree[key], value)
            else:
                assert isinstance(value, str), (key, value)  # a list here makes setNodes throw
    walk(MODEL, body["netflow"])
    cap = body["netflow"]["capture"]
    assert cap["version"] in MODEL["capture"]["version"]
    assert all(ipport_ok(t) for t in cap["targets"].split(","))
    assert set(cap["interfaces"].split(",")) <= set(options("interfaces"))
    for key in ("activeTimeout", "inactiveTimeout"):
        lo, hi, _ = MODEL[key]
        assert lo <= int(body["netflow"][key]) <= hi


def test_converge_from_factory_defaults_then_nothing_to_do(opn):
    """A new OPNsense has no targets: getconfig shows that as the key "" selected. Sending it back
    (",198.18.0.1:32055") is refused by the model; the driver must treat it as no entry."""
    s, r = opn()
    api = PublishedOPNsense()
    assert api.nodes()["capture"]["targets"] == {"": {"value": "", "selected": 1}}
    out = opnsense.PLATFORM.converge(None, s, r, client=api)
    assert out.changed and out.restarted and out.status.healthy, out
    assert api.cfg["capture.targets"] == "198.18.0.1:32055" and api.cfg["capture.interfaces"] == "lan"
    assert api.cfg["activeTimeout"] == "60" and api.cfg["inactiveTimeout"] == "15"
    assert out.status.version == "9" and out.status.collector == "198.18.0.1:32055" and out.status.interfaces == ["lan"]
    api.calls.clear()
    again = opnsense.PLATFORM.converge(None, s, r, client=api)
    assert not again.changed and again.actions == [] and again.status.healthy
    assert [a for _, a in api.calls] == ["getconfig", "status", "getconfig"]


def test_converge_keeps_the_users_targets_interfaces_and_local_capture(opn):
    s, r = opn()
    api = PublishedOPNsense(capture__interfaces="opt1,wan", capture__egress_only="wan",
                            capture__targets=f"10.0.0.5:2055,{LOCAL_TARGET}", collect__enable="1",
                            capture__version="v5", activeTimeout="1800")
    out = opnsense.PLATFORM.converge(None, s, r, client=api)
    assert out.status.healthy and api.saved == 1
    assert api.cfg["capture.interfaces"].split(",") == ["lan", "opt1", "wan"]
    assert set(api.cfg["capture.targets"].split(",")) == {"10.0.0.5:2055", LOCAL_TARGET, "198.18.0.1:32055"}
    assert api.cfg["capture.version"] == "v9" and api.cfg["collect.enable"] == "1"
    assert not opnsense.PLATFORM.converge(None, s, r, client=api).changed


def test_a_refused_setconfig_names_the_field_and_the_models_message(opn):
    s, r = opn(interface="em1")  # a device name; OPNsense wants the identifier (lan, optN)
    api = PublishedOPNsense()
    with pytest.raises(RouterError) as e:
        opnsense.PLATFORM.converge(None, s, r, client=api)
    msg = str(e.value)
    assert "netflow.capture.interfaces: Option [em1] not in list." in msg and "identifier" in msg, msg
    assert "{" not in msg and api.saved == 0 and ("POST", "reconfigure") not in api.calls
    bad = opnsense.refused("r", {"result": "failed", "validations": {
        "netflow.activeTimeout": MODEL["activeTimeout"][2]}})
    assert bad == f"router r: OPNsense refused the netflow settings: netflow.activeTimeout: {MODEL['activeTimeout'][2]}"
    assert "did not save" in opnsense.refused("r", {"result": "failed"})


def test_status_reads_the_published_status_and_config_shapes(opn):
    s, r = opn()
    api = PublishedOPNsense(capture__interfaces="lan", capture__targets="198.18.0.1:32055", activeTimeout="60")
    st = opnsense.PLATFORM.status(None, s, r, client=api)
    assert not st.running and st.drift == [] and st.details["api_status"] == {"status": "inactive"}
    api.call("POST", "/api/diagnostics/netflow/reconfigure")
    st = opnsense.PLATFORM.status(None, s, r, client=api)
    assert st.running and st.healthy and st.version == "9"
    api.cfg.update({"capture.version": "v5", "inactiveTimeout": "300", "capture.targets": ""})
    drift = opnsense.PLATFORM.status(None, s, r, client=api).drift
    assert drift == ["targets: - lack 198.18.0.1:32055", "version: running v5, want v9",
                     "inactiveTimeout: running 300, want 15"], drift


class Wire(requests.adapters.BaseAdapter):
    """requests' transport, answering as OPNsense's API layer does."""

    def __init__(self, status: int, answer):
        super().__init__()
        self.status, self.answer, self.sent = status, answer, []

    def send(self, request, **kw):
        self.sent.append(request)
        resp = requests.Response()
        resp.status_code, resp.url, resp.request = self.status, request.url, request
        resp._content = json.dumps(self.answer).encode()
        resp.headers["Content-Type"] = "application/json; charset=UTF-8"
        return resp

    def close(self):
        pass


def client_with(r, status, answer):
    wire, sess = Wire(status, answer), requests.Session()
    sess.mount("https://", wire)
    return OPNsenseClient(r, session=sess), wire


def test_the_client_sends_a_body_the_api_layer_parses(opn):
    s, r = opn()
    api, wire = client_with(r, 200, {"result": "saved"})
    body = opnsense.setconfig_body(s, opnsense.OPNsense._resolve(r))
    assert api.call(*opnsense.API["set"], body) == {"result": "saved"}
    req = wire.sent[0]
    assert req.method == "POST" and req.url == "https://198.18.0.2/api/diagnostics/netflow/setconfig"
    assert req.headers["Content-Type"].replace(" ", "").lower() in JSON_TYPES
    assert json.loads(req.body) == body
    assert req.headers["Authorization"] == "Basic " + base64.b64encode(b"key:secret").decode()
    api.call(*opnsense.API["get"])
    assert wire.sent[1].method == "GET" and wire.sent[1].body is None


def test_the_client_points_at_the_key_and_the_acl_when_authentication_fails(opn):
    s, r = opn()
    api, _ = client_with(r, 401, {"status": 401, "message": "Authentication Failed"})
    with pytest.raises(RouterError, match="API key.*Diagnostics: Netflow"):  # ACL "Diagnostics: Netflow configuration"
        api.call(*opnsense.API["get"])
