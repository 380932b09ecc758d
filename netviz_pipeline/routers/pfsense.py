"""pfSense: the softflowd package, configured in config.xml (NEVER rc.conf, which pfSense deletes).

Why through config.xml + the package sync: that is the only persistence pfSense supports. The
package's sync_package_softflowd() writes /usr/local/etc/rc.d/softflowd.sh (one softflowd per
interface, `-p /var/run/softflowd.<real if>.pid`), and pfSense's boot runs it. We compare the
downloaded config.xml with our fields first, so a converged router gets no write_config (no new
config revision) and no restart. The package supports one collector host:port for all interfaces;
the fields we set (render.softflowd.pfsense_fields) are ours, the others are left alone.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING

from ..render.softflowd import Command, checked
from ..resources.router import Result, RouterError
from .common import RouterOutcome, Session
from .hostnames import NameSource
from .platform import Instance, Marker, SoftflowdPlatform

if TYPE_CHECKING:
    from ..settings import Router, Settings

CONFIG = "/cf/conf/config.xml"
RCFILE = "/usr/local/etc/rc.d/softflowd.sh"
PFSSH = "/usr/local/sbin/pfSsh.php"
INTERFACE_NAME = re.compile(r"wan|lan|opt[0-9]{1,3}")  # what the package takes (pfSense's names, not devices)


# -- desired state (pure) ----------------------------------------------------------------------
def pfsense_fields(s: Settings, r: Router) -> dict[str, str]:
    """Fields of installedpackages/softflowd/config[0] we own; all others are left alone."""
    ip, port = s.collector(r)
    t = r.timeouts
    return {"enable": "enabled", "interface": r.interface, "host": ip, "port": str(port),
            "version": str(r.netflow_version), "timeout-maxlife": str(t.maxlife),
            "timeout-expint": str(t.expint), "timeout-tcp-fin": str(t.tcp_fin), "timeout-tcp-rst": str(t.tcp_rst),
            "timeout-tcp": str(t.tcp), "timeout-udp": str(t.udp), "timeout-general": str(t.general)}


def desired_args(s: Settings, r: Router, real_if: str) -> list[str]:
    """The argv the package's rc script runs for our fields (compared with the live process)."""
    ip, port = s.collector(r)
    host = f"[{ip}]" if ":" in ip else ip
    t = r.timeouts
    return ["softflowd", "-i", real_if, "-n", f"{host}:{port}", "-v", str(r.netflow_version),
            *(x for name, v in (("general", t.general), ("maxlife", t.maxlife), ("expint", t.expint),
                                ("tcp", t.tcp), ("tcp.rst", t.tcp_rst), ("tcp.fin", t.tcp_fin), ("udp", t.udp))
              for x in ("-t", f"{name}={v}"))]


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
    lines = [f"$config['installedpackages']['softflowd']['config'][0]['{checked(k)}'] = '{checked(v)}';"
             for k, v in fields.items()]
    return (_PHP_PRELUDE + "\n".join(lines) + "\n"
            "write_config('netviz-pipeline: softflowd export settings');\n"
            "sync_package_softflowd();\necho 'applied';\n")


def pfsense_php_sync() -> str:
    """PHP that re-runs the package sync without changing config.xml (rc file stale vs. config)."""
    return _PHP_PRELUDE + "sync_package_softflowd();\necho 'synced';\n"


def pfsense_commands(fields: dict[str, str]) -> dict[str, Command]:
    return {
        "installed": Command(("pkg", "info", "-e", "pfSense-pkg-softflowd"), "is the package installed"),
        "install": Command((PFSSH, "playback", "installpkg", "softflowd"), "install the pfSense package"),
        "apply": Command(("/usr/local/bin/php",), "persist settings in config.xml and sync",
                         stdin=pfsense_php_apply(fields)),
        "sync": Command(("/usr/local/bin/php",), "re-sync the package (rewrite rc script, restart)",
                        stdin=pfsense_php_sync()),
        "start": Command((PFSSH, "playback", "svc", "start", "softflowd"), "start every instance"),
    }


def real_interface(xml_text: str, friendly: str, router: str) -> str:
    """pfSense name (lan, optN) -> device (vtnet1, igb0) from config.xml's <interfaces>."""
    root = ET.fromstring(xml_text)
    real = (root.findtext(f"interfaces/{friendly}/if") or "").strip()
    if not real:
        names = ", ".join(el.tag for el in root.findall("interfaces/*")) or "none"
        raise RouterError(f"router {router}: pfSense has no interface {friendly!r} (config.xml has: {names})")
    return real


def current_fields(xml_text: str) -> dict[str, str]:
    el = ET.fromstring(xml_text).find("installedpackages/softflowd/config")
    return {} if el is None else {c.tag: (c.text or "") for c in el}


# -- live router -------------------------------------------------------------------------------
def _config(session: Session, r: Router) -> str:
    text = session.read_file(CONFIG)
    if text is None:
        raise RouterError(f"router {r.name}: {CONFIG} not found: is this pfSense?")
    return text


class PfSense(SoftflowdPlatform):
    name = "pfsense"
    # static mappings and resolver overrides first (a person chose those names), then live leases
    # (Kea, pfSense's newer DHCP backend; ISC dhcpd runs chrooted in /var/dhcpd), then hosts
    name_sources = (NameSource(CONFIG, "pfsense"),
                    NameSource("/var/lib/kea/dhcp4.leases", "kea"),
                    NameSource("/var/dhcpd/var/db/dhcpd.leases", "isc"),
                    NameSource("/etc/hosts", "hosts"))
    title = "pfSense (softflowd package, config.xml)"
    wait_seconds = 20  # the package starts softflowd in the background (mwexec_bg)
    # /etc/platform says "pfSense" (a generic fact of the probe); pfSsh.php is pfSense's own shell
    markers = (Marker("pfssh", f"[ -e {PFSSH} ]"),)

    def settings_problems(self, r: Router) -> list[str]:
        if r.interface != "auto" and not INTERFACE_NAME.fullmatch(r.interface):
            return [f"interface {r.interface!r}: pfSense's softflowd package takes the pfSense interface name "
                    "(lan, wan, optN), not the device name"]
        return []

    def matches(self, facts: dict) -> bool:
        return "pfsense" in facts["platform_file"].lower() or facts["pfssh"]

    def resolve(self, session: Session, r: Router) -> Router:
        return r if r.interface != "auto" else r.model_copy(update={"interface": "lan"})

    def instance(self, session: Session, s: Settings, r: Router) -> Instance:
        real = real_interface(_config(session, r), r.interface, r.name)
        return Instance(f"/var/run/softflowd.{real}.pid", desired_args(s, r, real),
                        {"interface_device": real, "rc_script": RCFILE})

    def install(self, session: Session, r: Router, out: RouterOutcome) -> None:
        cmds = pfsense_commands({})
        if session.run(cmds["installed"].argv).rc == 0:
            return
        res = session.run(cmds["install"].argv, timeout=900)  # pfSsh.php exits 0 even when it failed
        if session.run(cmds["installed"].argv).rc != 0:
            raise RouterError(f"router {r.name}: `{cmds['install'].shell}` did not install pfSense-pkg-softflowd: "
                              f"{(res.out + res.err).strip()[-400:]} (does the router reach the pfSense package "
                              "repository? System > Package Manager shows the error)")
        out.actions.append("installed pfSense-pkg-softflowd (pfSsh.php playback installpkg)")
        out.changed = True

    def apply(self, session: Session, s: Settings, r: Router, out: RouterOutcome) -> None:
        """Our fields into config.xml through write_config; the package sync it runs restarts softflowd."""
        xml_text = _config(session, r)
        real = real_interface(xml_text, r.interface, r.name)
        fields = pfsense_fields(s, r)
        have = current_fields(xml_text)
        differs = {k: (have.get(k), v) for k, v in fields.items() if have.get(k) != v}
        out.details.update(interface=r.interface, interface_device=real, fields=fields)
        if not differs:
            return
        cmd = pfsense_commands(fields)["apply"]
        session.check(cmd.argv, stdin=cmd.stdin, what="write config.xml and sync softflowd")
        after = current_fields(_config(session, r))
        still = sorted(k for k, v in fields.items() if after.get(k) != v)
        if still:
            raise RouterError(f"router {r.name}: config.xml still lacks {', '.join(still)} after write_config")
        out.actions.append("set installedpackages/softflowd/config[0] "
                           f"({', '.join(sorted(differs))}) via write_config, package sync restarted softflowd")
        out.details["changed_fields"] = {k: {"was": a, "now": b} for k, (a, b) in differs.items()}
        out.changed = out.restarted = True

    def restart_command(self, r: Router, running: bool) -> Command:
        """Running but different: re-sync the package (rewrites the rc script from config.xml, restarts
        every instance). Stopped: start it as pfSense's service page does."""
        return pfsense_commands({})["sync" if running else "start"]

    def restart_action(self, r: Router, why: str, running: bool) -> str:
        return (f"re-synced the package: running softflowd differed ({why})" if running
                else "started softflowd (pfSsh.php playback svc start)")

    def not_started(self, r: Router, command: Command, res: Result) -> str:
        return self.not_running(r) + f" (`{command.why}` said rc={res.rc}: {(res.err or res.out).strip()[-400:]})"

    def not_running(self, r: Router) -> str:
        return (f"router {r.name}: softflowd is not running after the package sync; check {RCFILE} and "
                f"`pfSsh.php playback svc status softflowd`")


PLATFORM = PfSense()
