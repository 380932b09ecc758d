"""Desired NetFlow exporter state per router platform, plus the commands that apply it.

Why per platform: Debian runs one softflowd per `/etc/softflowd/<instance>.conf`; pfSense deletes a
hand-made rc.conf and only persists the softflowd package's config.xml section; plain FreeBSD uses
rc vars set with sysrc; OPNsense has its own NetFlow (ng_netflow) behind an API. Everything here is
pure: commands are argv lists (joined with shlex for SSH), built only from validated settings.
"""
from __future__ import annotations

import ipaddress
import json
import re
import shlex
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from ..settings import Router, Settings, Timeouts

INSTANCE = "netviz"
DEBIAN_CONF = f"/etc/softflowd/{INSTANCE}.conf"
DEBIAN_CTL = f"/run/softflowd/{INSTANCE}.ctl"
_TIMEOUT_NAMES = (("maxlife", "maxlife"), ("expint", "expint"), ("tcp_fin", "tcp.fin"), ("tcp_rst", "tcp.rst"),
                  ("tcp", "tcp"), ("udp", "udp"), ("icmp", "icmp"), ("general", "general"))
_SAFE = re.compile(r"[A-Za-z0-9._:=\[\] -]*")  # what may appear inside a quoted config value


@dataclass(frozen=True)
class Command:
    argv: tuple[str, ...]
    why: str
    stdin: str | None = None

    @property
    def shell(self) -> str:
        return shlex.join(self.argv)


def _checked(value: str) -> str:
    if not _SAFE.fullmatch(value):  # settings validation makes this unreachable; keep it anyway
        raise ValueError(f"refusing to render unsafe value {value!r}")
    return value


def collector(s: Settings, r: Router) -> str:
    ip, port = s.collector(r)
    return f"[{ip}]:{port}" if ipaddress.ip_address(ip).version == 6 else f"{ip}:{port}"


def timeout_args(t: Timeouts) -> list[str]:
    out = []
    for attr, name in _TIMEOUT_NAMES:
        out += ["-t", f"{name}={getattr(t, attr)}"]
    return out


def options(s: Settings, r: Router) -> list[str]:
    """softflowd arguments other than -i/-p/-c (which the platform's service script adds)."""
    return ["-n", collector(s, r), "-v", str(r.netflow_version), *timeout_args(r.timeouts)]


# ---------------------------------------------------------------- Debian / Linux
def debian_conf(s: Settings, r: Router) -> str:
    """Content of /etc/softflowd/netviz.conf (sourced as shell by the package's unit/init script)."""
    return ("# managed by netviz-pipeline; changes are overwritten\n"
            f"interface='{_checked(r.interface)}'\n"
            f"options='{_checked(' '.join(options(s, r)))}'\n")


def linux_commands() -> dict[str, Command]:
    restart = (f"if [ -d /run/systemd/system ]; then systemctl enable softflowd@{INSTANCE} && "
               f"systemctl restart softflowd@{INSTANCE}; else /etc/init.d/softflowd restart; fi")
    return {
        "installed": Command(("dpkg-query", "-W", "-f=${Status}", "softflowd"), "is the package installed"),
        "install": Command(("env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-q", "softflowd"),
                           "install Debian's softflowd"),
        "mkdir": Command(("mkdir", "-p", "/etc/softflowd", "/run/softflowd"), "config and control dirs"),
        "restart": Command(("sh", "-c", restart), "(re)start our instance with the new config"),
        "statistics": Command(("softflowctl", "-c", DEBIAN_CTL, "statistics"), "is it running and exporting"),
        "expire_all": Command(("softflowctl", "-c", DEBIAN_CTL, "expire-all"), "export every tracked flow now"),
    }


# ---------------------------------------------------------------- pfSense (package config in config.xml)
def pfsense_fields(s: Settings, r: Router) -> dict[str, str]:
    """Fields of installedpackages/softflowd/config[0] we own; all others are left alone."""
    ip, port = s.collector(r)
    t = r.timeouts
    return {"enable": "enabled", "interface": r.interface, "host": ip, "port": str(port),
            "version": str(r.netflow_version), "timeout-maxlife": str(t.maxlife),
            "timeout-expint": str(t.expint), "timeout-tcp-fin": str(t.tcp_fin), "timeout-tcp-rst": str(t.tcp_rst),
            "timeout-tcp": str(t.tcp), "timeout-udp": str(t.udp), "timeout-general": str(t.general)}


def _child(parent: ET.Element, tag: str) -> ET.Element:
    found = parent.find(tag)
    return found if found is not None else ET.SubElement(parent, tag)


def edit_pfsense_config(xml_text: str, fields: dict[str, str]) -> tuple[str, bool]:
    """Set `fields` in installedpackages/softflowd/config[0] of a pfSense config.xml.

    Returns (text, changed). Unchanged input comes back byte-for-byte. A changed file is
    re-serialised: other elements and comments are kept, CDATA sections become escaped text
    (equivalent XML). Prefer `pfsense_php_apply` to apply on a live box (keeps pfSense's config
    cache, backups and history); use this for dry runs and diffs of a downloaded config.xml."""
    parser = ET.XMLParser(target=ET.TreeBuilder(insert_comments=True))
    root = ET.fromstring(xml_text, parser=parser)
    if root.tag != "pfsense":
        raise ValueError(f"not a pfSense config.xml (root element is <{root.tag}>)")
    config = _child(_child(_child(root, "installedpackages"), "softflowd"), "config")
    changed = False
    for name, value in fields.items():
        el = _child(config, name)
        if (el.text or "") != value:
            el.text, changed = value, True
    if not changed:
        return xml_text, False
    decl = '<?xml version="1.0"?>\n' if xml_text.lstrip().startswith("<?xml") else ""
    return decl + ET.tostring(root, encoding="unicode") + "\n", True


def pfsense_php_apply(fields: dict[str, str]) -> str:
    """PHP (fed to `php -q` on stdin, no shell quoting involved) that merges our fields into the
    package config, writes config.xml through pfSense's own API and re-syncs the package only when
    something changed. Prints `changed` or `unchanged`. Needs pfSense >= 2.7 (config_*_path)."""
    blob = json.dumps(fields, sort_keys=True).replace("\\", "\\\\").replace("'", "\\'")
    return ("<?php\n"
            'require_once("config.inc");\nrequire_once("util.inc");\n'
            'require_once("/usr/local/pkg/softflowd.inc");\n'
            f"$want = json_decode('{blob}', true);\n"
            "$path = 'installedpackages/softflowd/config/0';\n"
            "$cur = config_get_path($path, []);\n"
            "$new = array_merge(is_array($cur) ? $cur : [], $want);\n"
            "if ($new === $cur) { echo \"unchanged\\n\"; exit(0); }\n"
            "config_set_path($path, $new);\n"
            "write_config('netviz-pipeline: softflowd export settings');\n"
            "sync_package_softflowd();\n"
            "echo \"changed\\n\";\n")


def pfsense_commands(fields: dict[str, str]) -> dict[str, Command]:
    pb = "/usr/local/sbin/pfSsh.php"
    return {
        "installed": Command(("pkg", "info", "-e", "pfSense-pkg-softflowd"), "is the package installed"),
        "install": Command((pb, "playback", "installpkg", "softflowd"), "install the pfSense package"),
        "apply": Command(("/usr/local/bin/php", "-q"), "persist settings in config.xml and sync",
                         stdin=pfsense_php_apply(fields)),
        "restart": Command((pb, "playback", "svc", "restart", "softflowd"), "restart every instance"),
        "status": Command((pb, "playback", "svc", "status", "softflowd"), "is it running"),
    }


def pfsense_ctl(real_if: str) -> str:
    """Control socket of the package's per-interface instance (real device name, e.g. vtnet1)."""
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,15}", real_if):
        raise ValueError(f"{real_if!r} is not an interface name")
    return f"/var/run/softflowd.{real_if}.ctl"


# ---------------------------------------------------------------- plain FreeBSD (rc vars via sysrc)
def freebsd_sysrc(s: Settings, r: Router, current_interfaces: str = "") -> dict[str, str]:
    """rc.conf variables for the port's rc script (there is no softflowd_flags). Interfaces already
    listed by the user are kept. The script evals softflowd_<if>_*, so <if> must be a shell name."""
    if not re.fullmatch(r"[A-Za-z0-9_]+", r.interface):
        raise ValueError(f"FreeBSD's rc script cannot handle interface {r.interface!r} ('.' or '-' in the name)")
    ifs = current_interfaces.split()
    if r.interface not in ifs:
        ifs.append(r.interface)
    p = f"softflowd_{r.interface}_"
    return {"softflowd_enable": "YES", "softflowd_interfaces": " ".join(ifs),
            p + "collector": collector(s, r), p + "timeouts": " ".join(timeout_args(r.timeouts)),
            p + "extra_args": f"-v {r.netflow_version}"}


def freebsd_commands(variables: dict[str, str], interface: str) -> dict[str, Command]:
    return {
        "installed": Command(("pkg", "info", "-e", "softflowd"), "is the package installed"),
        "install": Command(("pkg", "install", "-y", "softflowd"), "install from FreeBSD packages"),
        "current_interfaces": Command(("sysrc", "-n", "-i", "softflowd_interfaces"), "interfaces set by the user"),
        "sysrc": Command(("sysrc", *(f"{k}={_checked(v)}" for k, v in variables.items())), "persist rc vars"),
        "restart": Command(("service", "softflowd", "restart", interface), "restart our interface's instance"),
        "expire_all": Command(("softflowctl", "-c", f"/var/run/softflowd.{interface}.ctl", "expire-all"),
                              "export every tracked flow now"),
    }


# ---------------------------------------------------------------- OPNsense (built-in NetFlow API)
OPNSENSE_API = {"get": ("GET", "/api/diagnostics/netflow/getconfig"),
                "set": ("POST", "/api/diagnostics/netflow/setconfig"),
                "reconfigure": ("POST", "/api/diagnostics/netflow/reconfigure"),
                "status": ("GET", "/api/diagnostics/netflow/status")}


def opnsense_setconfig_body(s: Settings, r: Router) -> dict:
    """Body for setconfig. ng_netflow has only active/inactive timeouts: maxlife and udp map there."""
    return {"netflow": {
        "capture": {"interfaces": r.interface, "version": f"v{r.netflow_version}", "targets": collector(s, r)},
        "activeTimeout": str(max(1, r.timeouts.maxlife)),
        "inactiveTimeout": str(max(1, r.timeouts.udp)),
    }}


def _flatten(value) -> str:
    """getconfig returns selects as {key: {value, selected}}; setconfig takes comma-joined keys."""
    if isinstance(value, dict):
        return ",".join(sorted(k for k, v in value.items() if isinstance(v, dict) and int(v.get("selected", 0))))
    return str(value)


def opnsense_needs_change(current: dict, body: dict) -> bool:
    """Compare a getconfig response with our setconfig body (only the fields we send)."""
    def walk(cur, want) -> bool:
        if isinstance(want, dict):
            return any(walk((cur or {}).get(k) if isinstance(cur, dict) else None, v) for k, v in want.items())
        return _flatten(cur if cur is not None else "") != ",".join(sorted(str(want).split(",")))
    return walk(current, body)


def desired(s: Settings, r: Router, platform: str) -> dict:
    """A JSON-safe summary of the desired exporter state (for metadata and drift reports)."""
    if platform == "linux":
        return {"path": DEBIAN_CONF, "content": debian_conf(s, r)}
    if platform == "pfsense":
        return {"config.xml": "installedpackages/softflowd/config[0]", "fields": pfsense_fields(s, r)}
    if platform == "freebsd":
        return {"sysrc": freebsd_sysrc(s, r)}
    if platform == "opnsense":
        return {"setconfig": opnsense_setconfig_body(s, r)}
    raise ValueError(f"unknown platform {platform!r} (detect it first when settings say 'auto')")
