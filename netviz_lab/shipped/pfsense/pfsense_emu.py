#!/usr/bin/python3
"""netviz-lab pfSense emulation: pfSsh.php, php, pkg, pfSense-upgrade and the router boot, in one file.

Installed in the pfSense router as /usr/local/libexec/netviz-pfsense/pfsense_emu.py; the commands are
symlinks to it and it dispatches on the name it was called by. Stdlib only (runs with /usr/bin/python3
inside the router's chroot). What is reproduced, and from which upstream file, is documented in
netviz_lab/shipped/pfsense/__init__.py. Paths can be re-rooted with NETVIZ_PFSENSE_ROOT/_ETC/_USR_LOCAL so the
host can prepare the router's files ("factory-setup") and tests can run it outside the router.
"""
from __future__ import annotations

import glob
import json
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

CONFIG = "/cf/conf/config.xml"
RCFILEPREFIX = "/usr/local/etc/rc.d/"
PKGDB = "/var/db/pkg/netviz-emu.json"
EMU_DIR = "/usr/local/libexec/netviz-pfsense"
PRODUCT = "pfSense"
PKG_PREFIX = "pfSense-pkg-"
INCLUDE_PATH = [".", "/etc/inc", "/usr/local/pfSense/include", "/usr/local/www", "/usr/local/pkg"]

# The one package the lab can install: pfSense-pkg-softflowd (net-mgmt/pfSense-pkg-softflowd).
SOFTFLOWD = {
    "name": "softflowd", "pkg": "pfSense-pkg-softflowd", "version": "1.2.6_1", "dep": ("softflowd", "1.1.0_1"),
    "descr": "Network flow probe that exports NetFlow (v1, v5, v9 and IPFIX).",
    "configurationfile": "softflowd.xml", "include_file": "/usr/local/pkg/softflowd.inc",
    "service": {"name": "softflowd", "rcfile": "softflowd.sh", "executable": "softflowd",
                "description": "Netflow export daemon"},
}

SOFTFLOWD_WRAPPER = f"""#!/bin/bash
# /usr/local/bin/softflowd of pfSense-pkg-softflowd, emulated by netviz-lab: the Debian softflowd 1.1.0
# binary with the libpcap immediate-mode shim preloaded (FreeBSD's BPF has no zero-timeout trap, so the
# emulated pfSense must not show it either) and its compiled-in privsep chroot directory created.
# softflowd refuses to start while the pid in its pid file exists. The rc script's `killall -9` returns
# before the old process is gone, and a SIGKILLed softflowd can take over a second to exit here (packet
# socket teardown), so wait for a dying predecessor (no cmdline any more), up to 10 s; a live one is left
# alone after 0.5 s and softflowd refuses to start, as it would on pfSense.
[ -e /var/run/softflowd/chroot/etc/protocols ] || install -D -p /etc/protocols /var/run/softflowd/chroot/etc/protocols
prev=; pidfile=
for a in "$@"; do [ "$prev" = -p ] && pidfile=$a; prev=$a; done
old=$( [ -n "$pidfile" ] && cat "$pidfile" 2>/dev/null )
i=0
while [ -n "$old" ] && [ -d "/proc/$old" ] && [ $i -lt 200 ]; do
    if [ $i -ge 10 ] && [ -n "$(tr -d '\\0' < "/proc/$old/cmdline" 2>/dev/null)" ]; then break; fi
    sleep 0.05; i=$((i + 1))
done
export LD_PRELOAD={EMU_DIR}/libpcap-immediate.so
exec -a /usr/local/bin/softflowd /usr/sbin/softflowd "$@"
"""


def P(path: str) -> str:
    """Map a path of the emulated box to the real file (identity inside the router)."""
    for prefix, var in (("/usr/local", "NETVIZ_PFSENSE_USR_LOCAL"), ("/etc", "NETVIZ_PFSENSE_ETC")):
        if os.environ.get(var) and (path == prefix or path.startswith(prefix + "/")):
            return os.environ[var] + path[len(prefix):]
    return os.environ.get("NETVIZ_PFSENSE_ROOT", "") + path


def write_file(path: str, text: str, mode: int = 0o644) -> None:
    real = P(path)
    os.makedirs(os.path.dirname(real), exist_ok=True)
    tmp = f"{real}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, real)


def unlink_if_exists(path: str) -> None:
    try:
        os.unlink(P(path))
    except FileNotFoundError:
        pass


# -- config.xml ---------------------------------------------------------------------------------------
class Config:
    """config.xml held in memory as pfSense's global $config; only write_config() persists it."""

    def __init__(self) -> None:
        self.tree = ET.parse(P(CONFIG))
        self.root = self.tree.getroot()

    def node(self, keys: list, create: bool = False) -> ET.Element | None:
        el = self.root
        i = 0
        while i < len(keys):
            tag = keys[i]
            idx = keys[i + 1] if i + 1 < len(keys) and isinstance(keys[i + 1], int) else None
            matches = el.findall(tag)
            want = idx if idx is not None else 0
            if want < len(matches):
                el = matches[want]
            elif create and want == len(matches):
                el = ET.SubElement(el, tag)
            else:
                return None
            i += 2 if idx is not None else 1
        return el

    def set(self, keys: list, value: str) -> None:
        el = self.node(keys, create=True)
        for child in list(el):
            el.remove(child)
        el.text = value

    def unset(self, keys: list) -> None:
        target = self.node(keys)
        parent_keys = keys[:-2] if isinstance(keys[-1], int) else keys[:-1]
        parent = self.node(parent_keys) if parent_keys else self.root
        if target is not None and parent is not None and target in list(parent):
            parent.remove(target)

    def write(self, desc: str = "Unknown") -> None:
        rev = self.node(["revision"], create=True)
        for tag, val in (("time", str(int(time.time()))), ("description", desc), ("username", "root@netviz-lab")):
            (rev.find(tag) if rev.find(tag) is not None else ET.SubElement(rev, tag)).text = val
        ET.indent(self.tree, space="\t")
        tmp = P(CONFIG) + ".tmp"
        self.tree.write(tmp, encoding="unicode", xml_declaration=True)
        os.replace(tmp, P(CONFIG))
        unlink_if_exists("/tmp/config.cache")

    # pfSense helpers
    def get_real_interface(self, friendly: str) -> str | None:
        real = self.root.findtext(f"interfaces/{friendly}/if") if re.fullmatch(r"[A-Za-z0-9_]+", friendly) else None
        return real or None

    def softflowd_settings(self) -> dict[str, str]:
        el = self.node(["installedpackages", "softflowd", "config", 0])
        return {} if el is None else {c.tag: (c.text or "") for c in el}

    def packages(self) -> list[ET.Element]:
        return self.root.findall("installedpackages/package")

    def find_service(self, name: str) -> ET.Element | None:
        for s in self.root.findall("installedpackages/service"):
            if (s.findtext("name") or "").lower() == name.lower():
                return s
        return None


# -- service-utils.inc --------------------------------------------------------------------------------
def mwexec(cmd: str) -> int:
    return subprocess.run(["/bin/sh", "-c", cmd], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode


def mwexec_bg(cmd: str) -> None:
    """pfSense: `/usr/sbin/daemon -f <cmd>` (detached, output discarded, caller does not wait)."""
    subprocess.Popen(["/bin/sh", "-c", cmd], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, start_new_session=True)


def is_process_running(name: str) -> bool:
    """`pgrep -anx name`; the router has its own PID namespace, so only its processes count."""
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as f:
                data = f.read()
        except OSError:
            continue
        comm = data[data.index("(") + 1:data.rindex(")")]
        state = data[data.rindex(")") + 2:].split()[0]
        if comm == name[:15] and state not in ("Z", "X"):
            return True
    return False


def write_rcfile(file: str, start: str, stop: str) -> None:
    text = "#!/bin/sh\n"
    text += f"# This file was automatically generated\n# by the {PRODUCT} service handler.\n\n"
    text += f"rc_start() {{\n\t{start}\n}}\n\n"
    text += f"rc_stop() {{\n\t{stop}\n}}\n\n"
    text += "case $1 in\n\tstart)\n\t\trc_start\n\t\t;;\n\tstop)\n\t\trc_stop\n\t\t;;\n\trestart)\n\t\trc_stop\n\t\trc_start\n\t\t;;\nesac\n\n"
    write_file(RCFILEPREFIX + file, text, 0o755)


def start_service(cfg: Config, name: str) -> None:
    s = cfg.find_service(name)
    if s is not None and s.findtext("rcfile"):
        rc = (s.findtext("prefix") or RCFILEPREFIX) + s.findtext("rcfile")
        if os.path.exists(P(rc)):
            mwexec_bg(f"{rc} start")


def stop_service(cfg: Config, name: str) -> None:
    s = cfg.find_service(name)
    if s is None:
        return
    if s.findtext("rcfile"):
        rc = (s.findtext("prefix") or RCFILEPREFIX) + s.findtext("rcfile")
        if os.path.exists(P(rc)):
            mwexec(f"{rc} stop")
        return
    if s.findtext("executable"):
        mwexec(f"/usr/bin/killall {sh_quote(s.findtext('executable'))}")


def is_service_running(cfg: Config, name: str) -> bool:
    s = cfg.find_service(name)
    if s is not None:
        exe = s.findtext("executable")
        return bool(exe) and is_process_running(exe)
    return is_process_running(name)


def restart_service(cfg: Config, name: str) -> None:
    if is_service_running(cfg, name):
        stop_service(cfg, name)
    start_service(cfg, name)


def sh_quote(s: str) -> str:
    """PHP escapeshellarg()."""
    return "'" + s.replace("'", "'\\''") + "'"


def is_numericint(v: str | None) -> bool:
    return v is not None and re.fullmatch(r"[0-9]+", v) is not None


# -- softflowd.inc ------------------------------------------------------------------------------------
def sync_package_softflowd(cfg: Config, booting: bool = False) -> None:
    """Port of sync_package_softflowd() (pfSense-pkg-softflowd files/usr/local/pkg/softflowd.inc)."""
    cf = cfg.softflowd_settings()
    interface_list = cf.get("interface", "").split(",")
    host = cf.get("host", "")
    if host not in ("", "0") and interface_list and cf.get("enable") != "off":
        host = f"[{host}]" if ":" in host else host
        start = "/usr/bin/killall -9 softflowd"
        if_index = 1
        for friendly in interface_list:
            if not friendly:
                continue
            real = cfg.get_real_interface(friendly)
            if not real:
                continue
            start += "\n\t/usr/local/bin/softflowd "
            start += " -i " + sh_quote(f"{if_index}:{real}")
            if_index += 1
            start += " -n " + sh_quote(f"{host}:{cf.get('port', '')}")
            if is_numericint(cf.get("maxflows")):
                start += " -m " + sh_quote(cf["maxflows"])
            if is_numericint(cf.get("hoplimit")):
                start += " -L " + sh_quote(cf["hoplimit"])
            if is_numericint(cf.get("sample")) and int(cf["sample"]) > 0:
                start += " -s " + sh_quote(cf["sample"])
            if cf.get("version", "") != "":
                start += " -v " + sh_quote(cf["version"])
            if cf.get("flowtracking", "") != "":
                start += " -T " + sh_quote(cf["flowtracking"])
            if cf.get("flowtimestamp", "") not in ("", "omit"):
                start += " -A " + sh_quote(cf["flowtimestamp"])
            for field, name in (("timeout-general", "general"), ("timeout-maxlife", "maxlife"),
                                ("timeout-expint", "expint"), ("timeout-tcp", "tcp"), ("timeout-tcp-rst", "tcp.rst"),
                                ("timeout-tcp-fin", "tcp.fin"), ("timeout-udp", "udp")):
                if is_numericint(cf.get(field)):
                    start += " -t " + sh_quote(f"{name}={cf[field]}")
            start += " -p " + sh_quote(f"/var/run/softflowd.{real}.pid")
            start += " -c " + sh_quote(f"/var/run/softflowd.{real}.ctl")
        write_rcfile("softflowd.sh", start, "/usr/bin/killall -9 softflowd")
        if not booting:  # "Only try to restart if not booting"
            if is_service_running(cfg, "softflowd"):
                restart_service(cfg, "softflowd")
            else:
                start_service(cfg, "softflowd")
    else:
        stop_service(cfg, "softflowd")
        unlink_if_exists(RCFILEPREFIX + "softflowd.sh")


# -- pkg-utils.inc ------------------------------------------------------------------------------------
def sync_package(cfg: Config, name: str, booting: bool = False) -> None:
    if any(p.findtext("name") == name for p in cfg.packages()) and name == "softflowd":
        if os.path.exists(P(SOFTFLOWD["include_file"])):
            sync_package_softflowd(cfg, booting)


def pkg_db() -> dict:
    try:
        with open(P(PKGDB)) as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def save_pkg_db(db: dict) -> None:
    write_file(PKGDB, json.dumps(db, indent=1))


def install_softflowd_package() -> None:
    """What `pkg install pfSense-pkg-softflowd` + its post-install (install_package_xml) do."""
    sf = SOFTFLOWD
    write_file("/usr/local/bin/softflowd", SOFTFLOWD_WRAPPER, 0o755)
    if not os.path.lexists(P("/usr/local/sbin/softflowctl")):
        os.makedirs(P("/usr/local/sbin"), exist_ok=True)
        os.symlink("/usr/sbin/softflowctl", P("/usr/local/sbin/softflowctl"))
    stub = "<?php\n/* netviz-lab emulation: the logic lives in {}; see netviz_lab/shipped/pfsense/__init__.py */\n?>\n"
    write_file("/usr/local/pkg/softflowd.inc", stub.format(f"{EMU_DIR}/pfsense_emu.py (sync_package_softflowd)"))
    write_file("/usr/local/pkg/softflowd.xml", stub.format(f"{EMU_DIR}/pfsense_emu.py (SOFTFLOWD)"))
    write_file(f"/usr/local/share/{sf['pkg']}/info.xml",
               f"<pfsensepkgs><package><name>{sf['name']}</name><version>{sf['version']}</version></package></pfsensepkgs>\n")
    db = pkg_db()
    db[sf["pkg"]] = {"version": sf["version"], "comment": "pfSense package softflowd"}
    db[sf["dep"][0]] = {"version": sf["dep"][1], "comment": "Flow-based network traffic analyser"}
    save_pkg_db(db)
    cfg = Config()
    pkgs = cfg.node(["installedpackages"], create=True)
    for p in cfg.packages():
        if p.findtext("name") == sf["name"]:
            pkgs.remove(p)
    p = ET.SubElement(pkgs, "package")
    for tag in ("name", "descr", "version", "configurationfile", "include_file"):
        ET.SubElement(p, tag).text = sf[tag]
    ET.SubElement(p, "internal_name").text = sf["name"]
    if cfg.find_service(sf["name"]) is None:
        svc = ET.SubElement(pkgs, "service")
        for tag, val in sf["service"].items():
            ET.SubElement(svc, tag).text = val
    cfg.write(f"Intermediate config write during package install for {sf['name']}.")
    sync_package_softflowd(cfg)  # custom_php_resync_config_command
    cfg.write(f"Installed {sf['name']} package.")


def remove_softflowd_package() -> None:
    sf = SOFTFLOWD
    cfg = Config()
    stop_service(cfg, sf["name"])
    unlink_if_exists(RCFILEPREFIX + "softflowd.sh")
    pkgs = cfg.node(["installedpackages"], create=True)
    for el in cfg.packages():
        if el.findtext("name") == sf["name"]:
            pkgs.remove(el)
    svc = cfg.find_service(sf["name"])
    if svc is not None:
        pkgs.remove(svc)
    cfg.write(f"Removed {sf['name']} package.")  # settings under installedpackages/softflowd are kept
    for path in ("/usr/local/bin/softflowd", "/usr/local/sbin/softflowctl", "/usr/local/pkg/softflowd.inc",
                 "/usr/local/pkg/softflowd.xml", f"/usr/local/share/{sf['pkg']}/info.xml"):
        unlink_if_exists(path)
    db = pkg_db()
    db.pop(sf["pkg"], None)
    db.pop(sf["dep"][0], None)
    save_pkg_db(db)


# -- commands -----------------------------------------------------------------------------------------
def cmd_pfsense_upgrade(args: list[str]) -> int:
    """/usr/local/sbin/pfSense-upgrade: only -i/-r of pfSense-pkg-softflowd (there is no repository)."""
    install = args[args.index("-i") + 1] if "-i" in args[:-1] else None
    remove = args[args.index("-r") + 1] if "-r" in args[:-1] else None
    target = install or remove
    if target is None:
        print("Usage: pfSense-upgrade [-y] [-i pkg_name | -r pkg_name]  (netviz-lab emulation)", file=sys.stderr)
        return 1
    if target != SOFTFLOWD["pkg"]:
        print(f"pkg-static: No packages available to {'install' if install else 'remove'} matching "
              f"'{target}' have been found in the repositories", file=sys.stderr)
        return 1
    if install:
        print(f">>> Installing {target}... ", end="", flush=True)
        install_softflowd_package()
    else:
        if target not in pkg_db():
            print(f"{target} is not installed", file=sys.stderr)
            return 1
        print(f">>> Removing {target}... ", end="", flush=True)
        remove_softflowd_package()
    print("done.")
    return 0


def cmd_pkg(args: list[str]) -> int:
    """/usr/local/sbin/pkg: `pkg info [-e] [name]` only."""
    db = pkg_db()
    if not args or args[0] != "info":
        print("pkg: netviz-lab emulation supports only `pkg info [-e] [pkg]`", file=sys.stderr)
        return 64
    rest = args[1:]
    quiet = "-e" in rest
    names = [a for a in rest if not a.startswith("-")]
    if not names:
        for n in sorted(db):
            print(f"{n + '-' + db[n]['version']:<32} {db[n]['comment']}")
        return 0
    code = 0
    for n in names:
        if n in db:
            if not quiet:
                print(f"{n}-{db[n]['version']}\nName           : {n}\nVersion        : {db[n]['version']}\n"
                      f"Comment        : {db[n]['comment']}")
        else:
            code = 1 if quiet else 70
            if not quiet:
                print(f"pkg: No package(s) matching {n}", file=sys.stderr)
    return code


class Php:
    """Just enough PHP for the pfSense CLI idioms that configure and sync a package; anything else is
    a fatal error (exit 255), never a silent success."""

    PROVIDES = {
        "config.inc": {"parse_config", "write_config"},
        "functions.inc": {"parse_config", "write_config", "start_service", "stop_service", "restart_service",
                          "is_service_running"},
        "service-utils.inc": {"parse_config", "write_config", "start_service", "stop_service", "restart_service",
                              "is_service_running"},
        "pkg-utils.inc": {"parse_config", "write_config", "start_service", "stop_service", "restart_service",
                          "is_service_running", "sync_package", "resync_all_package_configs"},
        "softflowd.inc": {"parse_config", "write_config", "start_service", "stop_service", "restart_service",
                          "is_service_running", "sync_package_softflowd"},
    }
    STRING = r"""'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*\""""
    LITERAL = rf"(?:{STRING}|-?\d+|true|false|null)"

    def __init__(self, where: str = "Command line code") -> None:
        self.where = where
        self.functions: set[str] = set()
        self._cfg: Config | None = None

    @property
    def cfg(self) -> Config:
        if self._cfg is None:
            self._cfg = Config()
        return self._cfg

    def fatal(self, msg: str) -> int:
        print(f"PHP Fatal error:  {msg} in {self.where}", file=sys.stderr)
        return 255

    @staticmethod
    def value(lit: str) -> str:
        if lit[0] in "'\"":
            return re.sub(r"\\(.)", r"\1", lit[1:-1])
        return {"true": "1", "false": "", "null": ""}.get(lit, lit)

    @staticmethod
    def statements(code: str) -> list[str]:
        code = re.sub(r"<\?php|\?>", " ", code)
        code = re.sub(r"/\*.*?\*/", " ", code, flags=re.S)
        out, cur, quote, i = [], "", None, 0
        while i < len(code):
            ch = code[i]
            if quote:
                cur += ch
                if ch == "\\" and i + 1 < len(code):
                    cur += code[i + 1]
                    i += 1
                elif ch == quote:
                    quote = None
            elif ch in "'\"":
                quote = ch
                cur += ch
            elif ch == "#" or code.startswith("//", i):
                while i < len(code) and code[i] != "\n":
                    i += 1
                continue
            elif ch == ";":
                out.append(cur.strip())
                cur = ""
            else:
                cur += ch
            i += 1
        if cur.strip():
            out.append(cur.strip())
        return [s for s in out if s]

    def keys(self, subscripts: str) -> list:
        keys: list = []
        for lit in re.findall(rf"\[\s*({self.LITERAL})\s*\]", subscripts):
            v = self.value(lit)
            keys.append(int(v) if re.fullmatch(r"\d+", lit) else v)
        return keys

    def include(self, name: str) -> int:
        candidates = [name] if name.startswith("/") else [f"{d}/{name}" for d in INCLUDE_PATH]
        for c in candidates:
            if os.path.isfile(P(c)):
                self.functions |= self.PROVIDES.get(os.path.basename(c), set())
                return 0
        return self.fatal(f"Uncaught Error: Failed opening required '{name}' "
                          f"(include_path='{':'.join(INCLUDE_PATH)}')")

    def run(self, code: str) -> int:
        for st in self.statements(code):
            rc = self.statement(st)
            if rc:
                return rc
        return 0

    def statement(self, st: str) -> int:
        lit, subs = self.LITERAL, r"((?:\[\s*" + self.LITERAL + r"\s*\])+)"
        if m := re.fullmatch(rf"(?:require|require_once|include|include_once)\s*\(?\s*({self.STRING})\s*\)?", st):
            return self.include(self.value(m.group(1)))
        if re.fullmatch(r"global\s+\$\w+(\s*,\s*\$\w+)*", st):
            return 0
        if m := re.fullmatch(rf"echo\s+({lit})", st):
            print(self.value(m.group(1)), end="")
            return 0
        if m := re.fullmatch(rf"\$config{subs}\s*=\s*({lit})", st):
            self.cfg.set(self.keys(m.group(1)), self.value(m.group(2)))
            return 0
        if m := re.fullmatch(rf"unset\s*\(\s*\$config{subs}\s*\)", st):
            self.cfg.unset(self.keys(m.group(1)))
            return 0
        if m := re.fullmatch(rf"(?:\$config\s*=\s*)?(\w+)\s*\(\s*((?:{lit}\s*(?:,\s*{lit}\s*)*)?)\)", st):
            func = m.group(1)
            args = [self.value(a) for a in re.findall(lit, m.group(2))]
            return self.call(func, args)
        return self.fatal(f"netviz-lab PHP emulation cannot run `{st}` (see netviz_lab/shipped/pfsense/__init__.py)")

    def call(self, func: str, args: list[str]) -> int:
        if func not in self.functions:
            return self.fatal(f"Uncaught Error: Call to undefined function {func}()")
        if func == "parse_config":
            self._cfg = Config()
        elif func == "write_config":
            self.cfg.write(args[0] if args else "Unknown")
        elif func == "sync_package_softflowd":
            sync_package_softflowd(self.cfg)
        elif func == "sync_package":
            sync_package(self.cfg, args[0] if args else "")
        elif func == "resync_all_package_configs":
            for p in self.cfg.packages():
                sync_package(self.cfg, p.findtext("name") or "")
        elif func in ("start_service", "stop_service", "restart_service", "is_service_running"):
            globals()[func](self.cfg, args[0] if args else "")
        return 0


def cmd_php(args: list[str]) -> int:
    """/usr/local/bin/php: `php -r CODE`, `php [-f] FILE`, `php -v`, or code on stdin."""
    if args and args[0] in ("-v", "--version"):
        print("PHP 8.2.11 (cli) (netviz-lab emulation: only the pfSense package-sync idioms)")
        return 0
    if args and args[0] == "-r" and len(args) > 1:
        return Php().run(args[1])
    if args and args[0] == "-f":
        args = args[1:]
    if args:
        try:
            with open(P(args[0]) if args[0].startswith("/") else args[0]) as f:
                return Php(args[0]).run(f.read())
        except FileNotFoundError:
            print(f"Could not open input file: {args[0]}", file=sys.stderr)
            return 1
    return Php("Standard input code").run(sys.stdin.read())


def playback_svc(args: list[str]) -> int:
    if not args:
        print("Usage: playback svc <action> <service name> [service-specific options]\n")
        return 0
    action, name = args[0], (args[1] if len(args) > 1 else "")
    cfg = Config()
    savemsg = ""
    if action in ("start", "stop", "restart"):
        print(f"Attempting to issue {action} to {name} service...")
        {"start": start_service, "stop": stop_service, "restart": restart_service}[action](cfg, name)
        savemsg = f"{name} has been {action}ed." if action != "stop" else f"{name} has been stopped."
    elif action == "status":
        savemsg = f"Service {name} is running." if is_service_running(cfg, name) else f"Service {name} is stopped."
    print(f"\n{savemsg}")
    return 0


def playback_installpkg(args: list[str]) -> int:
    name = args[0] if args else ""
    name = name[len(PKG_PREFIX):] if name.startswith(PKG_PREFIX) else name
    print(f'Installing package "{name}"... ', end="", flush=True)
    res = subprocess.run(["/usr/local/sbin/pfSense-upgrade", "-y", "-i", PKG_PREFIX + name],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print("Done." if res.returncode == 0 else "Failed.")
    return 0


def playback_uninstallpkg(args: list[str]) -> int:
    name = args[0] if args else ""
    name = name[len(PKG_PREFIX):] if name.startswith(PKG_PREFIX) else name
    print(f'Removing package "{name}"... ', end="", flush=True)
    res = subprocess.run(["/usr/local/sbin/pfSense-upgrade", "-y", "-r", PKG_PREFIX + name],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print("done." if res.returncode == 0 else "Failed.")
    return 0


def playback_listpkg(args: list[str]) -> int:
    pkgs = Config().packages()
    if not pkgs:
        print("No packages installed")
        return 0
    print("Installed packages:")
    for p in pkgs:
        line = f"{(p.findtext('name') or '') + '-' + (p.findtext('version') or ''):<30} {p.findtext('descr') or ''}"
        print(line if len(line) <= 80 else line[:77] + "...")
    return 0


PLAYBACKS = {"svc": playback_svc, "installpkg": playback_installpkg, "uninstallpkg": playback_uninstallpkg,
             "listpkg": playback_listpkg}


def cmd_pfssh(args: list[str]) -> int:
    """/usr/local/sbin/pfSsh.php: `playback <script> [args]`, or a shell on stdin whose PHP lines run at
    each `exec` line (as in the docs: lines..., `exec;`, `exit`)."""
    if args and args[0] == "playback":
        if len(args) < 2 or args[1] not in PLAYBACKS:
            print("Could not locate playback file.")
            return 0
        return PLAYBACKS[args[1]](args[2:])
    php, buf = Php("pfSsh.php"), []
    for line in sys.stdin:
        s = line.strip()
        if s in ("exec", "exec;"):
            php.run("\n".join(buf))
            buf = []
        elif s in ("exit", "exit;", "quit"):
            break
        elif s.startswith("playback "):
            parts = s.split()
            if parts[1] in PLAYBACKS:
                PLAYBACKS[parts[1]](parts[2:])
        else:
            buf.append(line)
    return 0


def cmd_boot() -> int:
    """pfSense boot, as far as packages go: /etc/rc.conf is deleted, then rc.start_packages: every
    installed package is synced with platform_booting() true (rc file written, not started) and its
    service started; other executable /usr/local/etc/rc.d/*.sh are started too."""
    if os.path.lexists(P("/etc/rc.conf")):
        os.unlink(P("/etc/rc.conf"))
        print("boot: removed /etc/rc.conf (pfSense has no rc.conf)")
    cfg = Config()
    rcfiles = set(glob.glob(P(RCFILEPREFIX) + "*.sh"))
    for p in cfg.packages():
        name = p.findtext("name") or ""
        sync_package(cfg, name, booting=True)
        start_service(cfg, name)
        rcfiles.discard(P(RCFILEPREFIX + name.lower() + ".sh"))
    for rc in sorted(rcfiles):
        if os.access(rc, os.X_OK):
            mwexec_bg(f"{rc} start")
    return 0


def cmd_factory_setup(args: list[str]) -> int:
    """Host side, at lab setup: a factory-fresh pfSense (idempotent: an existing config.xml is kept)."""
    opts = dict(zip(args[::2], args[1::2]))
    write_file("/etc/version", "2.7.2-RELEASE\n")
    write_file("/etc/platform", "pfSense\n")
    for inc in ("config.inc", "config.lib.inc", "globals.inc", "util.inc", "functions.inc", "interfaces.inc",
                "pkg-utils.inc", "service-utils.inc", "pfsense-utils.inc"):
        write_file(f"/etc/inc/{inc}", f"<?php\n/* netviz-lab emulation stub; see {EMU_DIR}/pfsense_emu.py */\n?>\n")
    os.makedirs(P(RCFILEPREFIX), exist_ok=True)
    os.makedirs(os.path.dirname(P(PKGDB)), exist_ok=True)
    if not os.path.exists(P(CONFIG)):
        os.makedirs(os.path.dirname(P(CONFIG)), exist_ok=True)
        root = ET.Element("pfsense")
        ET.SubElement(root, "version").text = "23.3"
        system = ET.SubElement(root, "system")
        ET.SubElement(system, "hostname").text = opts.get("--hostname", "pfSense")
        ET.SubElement(system, "domain").text = "lab.arpa"
        ET.SubElement(system, "enablesshd").text = "enabled"
        ifs = ET.SubElement(root, "interfaces")
        for friendly, descr in (("wan", "WAN"), ("lan", "LAN")):
            el = ET.SubElement(ifs, friendly)
            ET.SubElement(el, "enable")
            ET.SubElement(el, "if").text = opts[f"--{friendly}-if"]
            ET.SubElement(el, "descr").text = descr
            ET.SubElement(el, "ipaddr").text = opts[f"--{friendly}-ip"]
            ET.SubElement(el, "subnet").text = opts.get("--prefix", "24")
        if opts.get("--lan-host-ip"):  # a DHCP static mapping, as a person adds one (Services > DHCP Server)
            sm = ET.SubElement(ET.SubElement(ET.SubElement(root, "dhcpd"), "lan"), "staticmap")
            ET.SubElement(sm, "mac").text = "02:00:c6:12:03:0a"
            ET.SubElement(sm, "ipaddr").text = opts["--lan-host-ip"]
            ET.SubElement(sm, "hostname").text = opts["--lan-host-name"]
            ET.SubElement(sm, "descr").text = "netviz lab LAN host"
        ET.SubElement(root, "installedpackages")
        tree = ET.ElementTree(root)
        with open(P(CONFIG) + ".tmp", "w") as f:
            tree.write(f, encoding="unicode", xml_declaration=True)
        os.replace(P(CONFIG) + ".tmp", P(CONFIG))
        Config().write("netviz-lab factory default configuration")
    return 0


def main() -> int:
    prog = os.path.basename(sys.argv[0])
    args = sys.argv[1:]
    if prog == "pfSsh.php":
        return cmd_pfssh(args)
    if prog == "php":
        return cmd_php(args)
    if prog == "pkg":
        return cmd_pkg(args)
    if prog == "pfSense-upgrade":
        return cmd_pfsense_upgrade(args)
    if args and args[0] == "boot":
        return cmd_boot()
    if args and args[0] == "factory-setup":
        return cmd_factory_setup(args[1:])
    print("usage: pfsense_emu.py boot | factory-setup ... (or call it as pfSsh.php, php, pkg, pfSense-upgrade)",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
