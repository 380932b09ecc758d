"""Desired NetFlow exporter state per router platform, plus the commands that apply it.

Why per platform: Debian runs one softflowd per `/etc/softflowd/<instance>.conf`; pfSense deletes a
hand-made rc.conf and only persists the softflowd package's config.xml section; plain FreeBSD uses
rc vars set with sysrc; OPNsense has its own NetFlow (ng_netflow) behind an API. Everything here is
pure: commands are argv lists (joined with shlex for SSH), built only from validated settings.
"""
from __future__ import annotations

import ipaddress
import re
import shlex
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from ..settings import Router, Settings, Timeouts

INSTANCE = "netviz"
DEBIAN_CONF = f"/etc/softflowd/{INSTANCE}.conf"
DEBIAN_CTL = f"/run/softflowd/{INSTANCE}.ctl"
DEBIAN_PID = f"/run/softflowd/{INSTANCE}.pid"
# The libpcap immediate-mode shim (router_assets/pcap_immediate.c), built on the router.
SHIM_DIR = "/usr/local/lib/netviz"
SHIM_SO = f"{SHIM_DIR}/libpcap-immediate.so"
SHIM_SRC = f"{SHIM_DIR}/pcap_immediate.c"
SHIM_STAMP = f"{SHIM_SO}.sha256"
SYSTEMD_DROPIN = f"/etc/systemd/system/softflowd@{INSTANCE}.service.d/netviz-pcap-immediate.conf"
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


def _checked_path(value: str) -> str:
    if not re.fullmatch(r"/[A-Za-z0-9._/-]+", value):
        raise ValueError(f"refusing to render unsafe path {value!r}")
    return value


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
def debian_conf(s: Settings, r: Router, ld_preload: str | None = None) -> str:
    """Content of /etc/softflowd/netviz.conf (sourced as shell by the package's sysvinit script, an
    EnvironmentFile for its systemd unit). `ld_preload`: an `export LD_PRELOAD=` line for the
    sysvinit script, which sources this file right before starting the daemon (under systemd use
    systemd_dropin() instead: an EnvironmentFile is not shell)."""
    text = ("# managed by netviz-pipeline; changes are overwritten\n"
            f"interface='{_checked(r.interface)}'\n"
            f"options='{_checked(' '.join(options(s, r)))}'\n")
    if ld_preload:
        text += ("# libpcap >= 1.10 trap: preload the immediate-mode shim (see pcap_immediate.c)\n"
                 f"export LD_PRELOAD='{_checked_path(ld_preload)}'\n")
    return text


def systemd_dropin(ld_preload: str) -> str:
    """Drop-in for softflowd@netviz.service that preloads the shim (Debian with systemd)."""
    return ("# managed by netviz-pipeline: libpcap immediate-mode shim (see pcap_immediate.c)\n"
            f"[Service]\nEnvironment=LD_PRELOAD={_checked_path(ld_preload)}\n")


def linux_commands() -> dict[str, Command]:
    # Only our instance: the user's other /etc/softflowd/*.conf instances are left running. Without
    # systemd, not /etc/init.d/softflowd: Debian 12's script passes `--pid_file` to start-stop-daemon
    # (which only knows --pidfile) and starts nothing; this does what it means to (= the unit's
    # ExecStart), sourcing our conf as that script does (so `export LD_PRELOAD=` applies).
    pid, ctl, conf = DEBIAN_PID, DEBIAN_CTL, DEBIAN_CONF
    sysv = (f"start-stop-daemon --stop --quiet --oknodo --retry TERM/5/KILL/2 --pidfile {pid} "
            f"--exec /usr/sbin/softflowd; mkdir -p /run/softflowd/chroot/etc && "
            f"{{ [ -e /run/softflowd/chroot/etc/protocols ] || cp -p /etc/protocols /run/softflowd/chroot/etc/; }} && "
            f"( interface=; options=; . {conf}; [ -n \"$interface\" ] && exec start-stop-daemon --start --quiet "
            f"--pidfile {pid} --exec /usr/sbin/softflowd -- -i \"$interface\" -p {pid} -c {ctl} $options )")
    restart = (f"if [ -d /run/systemd/system ]; then systemctl daemon-reload && systemctl enable "
               f"softflowd@{INSTANCE} && systemctl restart softflowd@{INSTANCE}; else {sysv}; fi")
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


_PHP_PRELUDE = ('<?php\nrequire_once("config.inc");\nrequire_once("functions.inc");\n'
                'require_once("/usr/local/pkg/softflowd.inc");\nglobal $config;\n$config = parse_config(true);\n')


def pfsense_php_apply(fields: dict[str, str]) -> str:
    """PHP (fed to `php` on stdin, no shell quoting involved) that sets our fields in the package
    config, writes config.xml through pfSense's write_config (backup + history) and runs the
    package sync, which rewrites /usr/local/etc/rc.d/softflowd.sh and restarts softflowd.

    Only the classic `$config[...] = '...'` idiom is used (works on pfSense 2.4 to 2.7 and is what
    the lab's pfSense emulation understands); the caller runs it only when config.xml differs.
    Values are validated settings (IPs, numbers, interface names), single-quoted."""
    lines = [f"$config['installedpackages']['softflowd']['config'][0]['{_checked(k)}'] = '{_checked(v)}';"
             for k, v in fields.items()]
    return (_PHP_PRELUDE + "\n".join(lines) + "\n"
            "write_config('netviz-pipeline: softflowd export settings');\n"
            "sync_package_softflowd();\necho 'applied';\n")


def pfsense_php_sync() -> str:
    """PHP that re-runs the package sync without changing config.xml (rc file stale vs. config)."""
    return _PHP_PRELUDE + "sync_package_softflowd();\necho 'synced';\n"


def pfsense_commands(fields: dict[str, str]) -> dict[str, Command]:
    pb = "/usr/local/sbin/pfSsh.php"
    return {
        "installed": Command(("pkg", "info", "-e", "pfSense-pkg-softflowd"), "is the package installed"),
        "install": Command((pb, "playback", "installpkg", "softflowd"), "install the pfSense package"),
        "apply": Command(("/usr/local/bin/php",), "persist settings in config.xml and sync",
                         stdin=pfsense_php_apply(fields)),
        "sync": Command(("/usr/local/bin/php",), "re-sync the package (rewrite rc script, restart)",
                        stdin=pfsense_php_sync()),
        "start": Command((pb, "playback", "svc", "start", "softflowd"), "start every instance"),
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
