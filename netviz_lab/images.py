"""The container images the product references, built here with umoci: no docker, no registry.

A real kubelet (containerd + runc) finds images only in containerd's content store, and this machine
has no registry to pull from. So each image the product references is built locally, under its
upstream name, from one pinned source each, cached as an OCI-layout tarball keyed by its version and a
hash of its recipe inputs, and imported with `ctr images import --base-name <repo>`:

| ref | what it is |
|---|---|
| `registry.k8s.io/pause:3.10` | our own static C `pause` (below), user 65535:65535 as upstream |
| `docker.io/netsampler/goflow2:<GOFLOW2>` | the lab's goflow2 build on busybox-static; upstream config: `User: flow` (a name), `Entrypoint: ["./goflow2"]`, no WorkingDir |
| `docker.io/library/python:3.12-alpine` | SUBSTITUTE: Debian's python3.11 (glibc) + stdlib + busybox, labelled `io.netviz.lab.substitute` |
| `quay.io/groundcover/caretta:v0.0.16` | STAND-IN: the python substitute + `caretta_standin.py` + nsenter/ss/ip/stdbuf, upstream WORKDIR `/app`, `CMD ./caretta`, user root; labelled `io.netviz.lab.standin` |
| `localhost/netviz-pipeline:0.1.0-<key>` | netviz itself (on demand; `pipeline_image_ref`): the python substitute + .venv's runtime distributions (compiled), `dagster`/`dagster-webserver`/`dagster-daemon` launchers, `netviz_pipeline`, `workspace.yaml` and `dashboards/` in WORKDIR `/app`, user root |

Caretta's upstream Dockerfile (groundcover-com/caretta, tag v0.0.16): `FROM alpine:3.17`, `WORKDIR /app`,
the binary copied to `/app/caretta`, `VOLUME /sys/kernel/debug`, `CMD ./caretta` (shell form, so
`["/bin/sh", "-c", "./caretta"]`), no ENTRYPOINT, no USER (root). `/app/caretta` here is a /bin/sh script
that starts the stand-in.

The cache key covers every input: the recipe code version, the pinned image/binary versions, the Debian
package versions (dpkg-query) of every package whose files an image copies (a build fails if it copies a
file owned by a package its recipe does not list), the stand-in's content and the pause source. Builds
happen in a temporary directory and are renamed into place. File mtimes and all timestamps are fixed
(`EPOCH`), so the same inputs give the same layer and manifest digests.
"""
from __future__ import annotations

import contextlib
import csv
import fcntl
import functools
import hashlib
import importlib.metadata
import json
import os
import re
import shlex
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping

from . import versions
from .lab import Lab

# Bump when the recipes below change in a way the other inputs do not capture.
RECIPE_VERSION = "1"
EPOCH = 0  # mtime of every file, and the created time of configs and history entries
EPOCH_RFC3339 = "1970-01-01T00:00:00Z"

PAUSE_TAG = "3.10"
PYTHON_TAG = "3.12-alpine"
CARETTA_TAG = "v0.0.16"

PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SUBSTITUTE_LABEL = "io.netviz.lab.substitute"
STANDIN_LABEL = "io.netviz.lab.standin"
STANDIN_TEXT = "netviz lab Caretta stand-in, not Caretta (this kernel has no kprobes)"
STANDIN = Path(__file__).with_name("caretta_standin.py")
HOST_PYTHON = "/usr/bin/python3.11"
HOST_STDLIB = "/usr/lib/python3.11"

# busybox applets installed as /bin/<name> -> /bin/busybox (alpine-like; not ip/nsenter: the Caretta
# image has the real ones and nothing should shadow them)
BUSYBOX_APPLETS = (
    "sh", "ash", "[", "[[", "test", "echo", "printf", "cat", "ls", "mkdir", "rm", "rmdir", "cp", "mv", "ln",
    "chmod", "chown", "touch", "mkfifo", "sleep", "kill", "ps", "id", "whoami", "env", "pwd", "true", "false",
    "grep", "sed", "awk", "head", "tail", "tr", "cut", "sort", "uniq", "wc", "tee", "xargs", "find", "stat",
    "date", "hostname", "uname", "wget", "nc", "nslookup", "ping", "top", "timeout", "readlink", "basename",
    "dirname", "du", "df", "mount", "tar", "gzip", "gunzip", "vi", "less",
)
ALPINE_PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\n"
    "bin:x:1:1:bin:/bin:/sbin/nologin\n"
    "daemon:x:2:2:daemon:/sbin:/sbin/nologin\n"
    "nobody:x:65534:65534:nobody:/:/sbin/nologin\n"
)
ALPINE_GROUP = (
    "root:x:0:root\n"
    "bin:x:1:root,bin,daemon\n"
    "daemon:x:2:root,bin,daemon\n"
    "users:x:100:\n"
    "nogroup:x:65533:\n"
    "nobody:x:65534:\n"
)
# what `adduser -S -D -H -h / flow` adds on alpine (a system user in group nogroup)
FLOW_PASSWD_LINE = "flow:x:100:65533:Linux User,,,:/:/sbin/nologin\n"

PYTHON_PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/sbin/nologin\n"
PYTHON_GROUP = "root:x:0:root\nnogroup:x:65533:\nnobody:x:65534:\n"

# Python stdlib parts the image leaves out (tests, GUIs, build-time files; the C test extensions).
STDLIB_DROP = {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "__pycache__", "lib2to3",
               "config-3.11-x86_64-linux-gnu"}
DYNLOAD_DROP = re.compile(r"^(_test|_ctypes_test|_xxtestfuzz|xxlimited|_xxsubinterpreters)")
CARETTA_TOOLS_SMOKE = (
    "import shutil, subprocess\n"
    "for cmd in (['nsenter', '--version'], ['ss', '-V'], ['ip', '-V'], ['stdbuf', '-oL', 'true']):\n"
    "    assert shutil.which(cmd[0]).startswith('/usr/'), shutil.which(cmd[0])\n"
    "    subprocess.run(cmd, check=True, capture_output=True)\n")  # no /dev in a bare chroot
PYTHON_SMOKE = "import json, http.server, ssl, socket, urllib.request, ctypes, hashlib, subprocess, threading"

PAUSE_C = r"""/* pause: the sandbox's first process for the netviz lab's pause image (written for the lab).
 * Sleeps until SIGTERM or SIGINT, then exits 0. As PID 1 of a pod's shared PID namespace it also
 * reaps orphaned children whenever SIGCHLD arrives, so they never stay zombies. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t got_stop_signal;

static void handle_stop(int sig) {
    (void)sig;
    got_stop_signal = 1;
}

static void handle_child(int sig) {
    int saved_errno = errno;
    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
    errno = saved_errno;
}

static int install(int sig, void (*fn)(int), int flags) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = fn;
    sa.sa_flags = flags;
    sigfillset(&sa.sa_mask);
    return sigaction(sig, &sa, NULL);
}

int main(int argc, char **argv) {
    sigset_t blocked, waiting;
    if (argc > 1 && strcmp(argv[1], "-v") == 0) {
        puts("pause (netviz lab) " PAUSE_VERSION);
        return 0;
    }
    if (getpid() != 1)
        fputs("pause: warning: not PID 1, orphans elsewhere are not reaped here\n", stderr);
    /* Block the signals while installing handlers and between checks; sigsuspend unblocks them
     * atomically, so a signal arriving just before we wait is not lost. */
    sigemptyset(&blocked);
    sigaddset(&blocked, SIGTERM);
    sigaddset(&blocked, SIGINT);
    sigaddset(&blocked, SIGCHLD);
    if (sigprocmask(SIG_BLOCK, &blocked, &waiting) != 0 ||
        install(SIGTERM, handle_stop, 0) != 0 || install(SIGINT, handle_stop, 0) != 0 ||
        install(SIGCHLD, handle_child, SA_NOCLDSTOP | SA_RESTART) != 0) {
        perror("pause: signal setup");
        return 1;
    }
    sigdelset(&waiting, SIGTERM);
    sigdelset(&waiting, SIGINT);
    sigdelset(&waiting, SIGCHLD);
    while (!got_stop_signal)
        sigsuspend(&waiting);
    return 0;
}
"""


class ImageBuildError(RuntimeError):
    pass


@dataclass(frozen=True)
class Image:
    ref: str      # fully qualified, e.g. "docker.io/netsampler/goflow2:v2.2.1"
    tarball: Path  # cached OCI-layout tar, e.g. <cache>/images/goflow2-v2.2.1-<12 hex>.tar
    on_demand: bool = False  # see Recipe.on_demand


@dataclass(frozen=True)
class Recipe:
    name: str                 # cache file stem, e.g. "goflow2"
    ref: str                  # fully qualified reference, tag included
    inputs: Mapping[str, str]  # everything the image is made from; the cache key hashes it
    packages: tuple[str, ...]  # Debian packages whose files the image may copy (checked at build)
    populate: Callable[[Rootfs], None] = field(compare=False, repr=False)
    config: tuple[str, ...] = ()  # `umoci config` options
    base: str | None = None   # name of the recipe whose image this one adds a layer to
    smoke: tuple[tuple[str, ...], ...] = ()  # commands run chrooted in the finished rootfs
    on_demand: bool = False  # imported into the nodes only when asked (not at `up`: ~6 s per node)
    # tags whose older builds this one supersedes (their tarballs are deleted): default this tag; "*"
    # for an image whose tag itself changes with its content
    stale_tags: str | None = None

    @property
    def repo(self) -> str:
        return self.ref.rsplit(":", 1)[0]

    @property
    def tag(self) -> str:
        return self.ref.rsplit(":", 1)[1]

    @property
    def key(self) -> str:
        return cache_key(self.inputs)

    def tarball(self, cache: Path) -> Path:
        return cache / "images" / f"{self.name}-{self.tag}-{self.key}.tar"


def normalize(ref: str) -> str:
    """A reference as containerd's CRI stores it: `python:3.12-alpine` -> `docker.io/library/python:3.12-alpine`."""
    first, _, rest = ref.partition("/")
    if not rest:
        return f"docker.io/library/{ref}"
    if "." not in first and ":" not in first and first != "localhost":
        return f"docker.io/{ref}"
    return ref


def cache_key(inputs: Mapping[str, str]) -> str:
    return hashlib.sha256(json.dumps(dict(inputs), sort_keys=True).encode()).hexdigest()[:12]


def sha256_text(data: str | bytes) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def debian_versions(packages: Iterable[str]) -> dict[str, str]:
    """Installed version of each package ("absent" if not installed), one dpkg-query call."""
    pkgs = sorted(set(packages))
    out = subprocess.run(["dpkg-query", "-W", "-f", "${Package}\t${Version}\t${db:Status-Status}\n", *pkgs],
                         capture_output=True, text=True).stdout
    found = {}
    for line in out.splitlines():
        name, version, status = (line.split("\t") + ["", ""])[:3]
        if status == "installed" and version:
            found[name] = version
    return {p: found.get(p, "absent") for p in pkgs}


# -- packages the images copy files from ------------------------------------------------------------
BUSYBOX_PKGS = ("busybox-static",)
PAUSE_PKGS = ("gcc-12", "libc6-dev")
PYTHON_PKGS = BUSYBOX_PKGS + (
    "python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib",
    # what python3.11 and lib-dynload link against (Debian 12)
    "libc6", "zlib1g", "libexpat1", "libbz2-1.0", "liblzma5", "libcrypt1", "libssl3", "libffi8",
    "libsqlite3-0", "libuuid1", "libdb5.3", "libncursesw6", "libtinfo6", "libreadline8", "libnsl2",
    "libtirpc3", "libgssapi-krb5-2", "libkrb5-3", "libk5crypto3", "libkrb5support0", "libkeyutils1",
    "libcom-err2",
)
CARETTA_PKGS = (
    "util-linux", "iproute2", "coreutils",
    # what nsenter, ss, ip and stdbuf link against beyond the python image's libraries
    "libbpf1", "libbsd0", "libcap2", "libelf1", "libmd0", "libmnl0", "libpcre2-8-0", "libselinux1",
)
CARETTA_TOOLS = ("/usr/bin/nsenter", "/usr/bin/ss", "/usr/sbin/ip", "/usr/bin/stdbuf")
# quay.io/prometheus/busybox's users, which Prometheus's and the Operator's images run on (USER nobody)
PROM_PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n"
PROM_GROUP = "root:x:0:\nnogroup:x:65534:\n"
PROM_EXAMPLE_CONFIG = ("global:\n  scrape_interval: 15s\nscrape_configs:\n  - job_name: prometheus\n"
                       "    static_configs:\n      - targets: ['localhost:9090']\n")
STDBUF_LIB = "/usr/libexec/coreutils/libstdbuf.so"


# -- rootfs staging ---------------------------------------------------------------------------------
class Rootfs:
    """A rootfs being staged. Host files copied in are remembered for the package-ownership check."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.host_files: set[str] = set()

    def path(self, p: str) -> Path:
        return self.root / p.lstrip("/")

    def dir(self, p: str, mode: int = 0o755) -> None:
        d = self.path(p)
        d.mkdir(parents=True, exist_ok=True)
        d.chmod(mode)

    def write(self, p: str, text: str, mode: int = 0o644) -> None:
        f = self.path(p)
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
        f.chmod(mode)

    def symlink(self, p: str, target: str) -> None:
        link = self.path(p)
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        os.symlink(target, link)

    def install(self, src: str | Path, dest: str, mode: int | None = None, host: bool = True) -> None:
        """Copy the file `src` (symlinks followed) to `dest`; `host`: it comes from a Debian package."""
        out = self.path(dest)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, out, follow_symlinks=True)
        out.chmod(mode if mode is not None else os.stat(src).st_mode & 0o7777)
        if host:
            self.host_files.add(str(src))

    def place(self, host_path: str) -> None:
        """Copy a host file to the same path, reproducing the symlinks along the way (/lib -> usr/lib,
        /lib64/ld-linux-x86-64.so.2 -> /lib/x86_64-linux-gnu/...), so paths baked into binaries (the
        ELF interpreter) and the loader's default search path resolve in the image as on the host."""
        parts = Path(host_path).parts[1:]
        cur = Path("/")
        for i, part in enumerate(parts):
            cur = cur / part
            dest = self.path(str(cur))
            if cur.is_symlink():
                target = os.readlink(cur)
                if dest.is_symlink():
                    if os.readlink(dest) != target:
                        raise ImageBuildError(f"{cur}: symlink to {target} on the host, to {os.readlink(dest)} here")
                elif dest.exists():
                    raise ImageBuildError(f"{cur} is a symlink on the host but a real file/dir in the image")
                else:
                    self.symlink(str(cur), target)
                resolved = os.path.normpath(os.path.join(str(cur.parent), target))
                return self.place(os.path.join(resolved, *parts[i + 1:]))
            if i == len(parts) - 1:
                if not dest.exists():
                    self.install(cur, str(cur))
            elif not dest.is_dir():
                self.dir(str(cur))
        return None

    def place_with_libs(self, host_path: str, dest: str | None = None) -> None:
        """Install a host binary (symlinks followed) at `dest` (default: its own path) and every library
        `ldd` lists for it."""
        self.install(host_path, dest or host_path)
        for lib in ldd(host_path):
            self.place(lib)

    def busybox(self) -> None:
        self.install("/bin/busybox", "/bin/busybox", mode=0o755)
        for applet in BUSYBOX_APPLETS:
            self.symlink(f"/bin/{applet}", "/bin/busybox")
        self.symlink("/sbin/nologin", "/bin/busybox")
        self.symlink("/usr/bin/env", "/bin/busybox")  # `#!/usr/bin/env python3`

    def skeleton(self) -> None:
        for d in ("bin", "dev", "etc", "home", "proc", "run", "sbin", "sys", "usr/bin", "usr/sbin",
                  "usr/local/bin", "var", "var/tmp"):
            self.dir(d)
        self.dir("root", 0o700)
        self.dir("tmp", 0o1777)
        self.dir("var/tmp", 0o1777)


def ldd(path: str) -> list[str]:
    """Absolute paths of the shared libraries (and the loader) `path` needs; [] for a static binary."""
    res = subprocess.run(["ldd", path], capture_output=True, text=True)
    if res.returncode != 0:
        if "not a dynamic executable" in res.stdout + res.stderr:
            return []
        raise ImageBuildError(f"ldd {path}: {res.stderr.strip() or res.stdout.strip()}")
    libs = []
    for line in res.stdout.splitlines():
        line = line.strip()
        if "not found" in line:
            raise ImageBuildError(f"ldd {path}: {line}")
        m = re.match(r"\S+ => (/\S+)", line) or re.match(r"(/\S+) \(", line)
        if m:
            libs.append(m.group(1))
    return libs


def _aliases(p: str) -> list[str]:
    """The paths dpkg may have recorded for a file on a merged-/usr system."""
    out = [p, os.path.realpath(p)]
    for short in ("/lib64/", "/lib/", "/bin/", "/sbin/"):
        for q in list(out):
            if q.startswith(short):
                out.append("/usr" + q)
            elif q.startswith("/usr" + short):
                out.append(q[4:])
    return list(dict.fromkeys(out))


def owners(paths: Iterable[str]) -> dict[str, str]:
    """Debian package owning each host path (merged-/usr aliases tried), "" if none."""
    paths = sorted(set(paths))
    alias = {a: p for p in paths for a in _aliases(p)}
    out = subprocess.run(["dpkg", "-S", *alias], capture_output=True, text=True).stdout
    found: dict[str, str] = {}
    for line in out.splitlines():
        pkgs, sep, path = line.partition(": ")
        if sep and path in alias and "diversion" not in pkgs:
            found.setdefault(alias[path], pkgs.split(",")[0].strip().split(":")[0])
    return {p: found.get(p, "") for p in paths}


# -- recipes ----------------------------------------------------------------------------------------
def _populate_pause(rootfs: Rootfs) -> None:
    src = rootfs.root.parent / "pause.c"
    src.write_text(PAUSE_C)
    binary = rootfs.path("pause")
    subprocess.run(["gcc", "-static", "-Os", "-s", f'-DPAUSE_VERSION="{PAUSE_TAG}"', "-o", str(binary), str(src)],
                   check=True, capture_output=True, text=True)
    src.unlink()
    binary.chmod(0o755)


def _populate_goflow2(binary: Path) -> Callable[[Rootfs], None]:
    def populate(rootfs: Rootfs) -> None:
        if not binary.exists():
            raise ImageBuildError(f"{binary} is missing: run `make lab-deps` (netviz_lab/build-lab-bins.sh)")
        rootfs.skeleton()
        rootfs.busybox()
        rootfs.write("/etc/passwd", ALPINE_PASSWD + FLOW_PASSWD_LINE)
        rootfs.write("/etc/group", ALPINE_GROUP)
        rootfs.install(binary, "/goflow2", mode=0o755, host=False)
    return populate


def _copy_stdlib(rootfs: Rootfs) -> None:
    src, dest = Path(HOST_STDLIB), rootfs.path(HOST_STDLIB)

    def ignore(directory: str, names: list[str]) -> set[str]:
        drop = {n for n in names if n in STDLIB_DROP}
        if Path(directory).name == "lib-dynload":
            drop |= {n for n in names if DYNLOAD_DROP.match(n)}
        return drop

    shutil.copytree(src, dest, symlinks=True, ignore=ignore, dirs_exist_ok=True)
    # Links that leave the tree (sitecustomize.py -> /etc/python3.11/..., Debian's apport hook) are dropped.
    for link in [p for p in dest.rglob("*") if p.is_symlink()]:
        target = os.path.normpath(os.path.join(link.parent, os.readlink(link)))
        if not target.startswith(str(dest) + "/") or not os.path.exists(target):
            link.unlink()
    for so in sorted((dest / "lib-dynload").glob("*.so")):
        for lib in ldd(str(src / "lib-dynload" / so.name)):
            rootfs.place(lib)


def _populate_python(rootfs: Rootfs) -> None:
    rootfs.skeleton()
    rootfs.busybox()
    rootfs.write("/etc/passwd", PYTHON_PASSWD)
    rootfs.write("/etc/group", PYTHON_GROUP)
    # glibc (unlike alpine's musl) reads this; files is built into glibc 2.36
    rootfs.write("/etc/nsswitch.conf", "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n")
    rootfs.place_with_libs(HOST_PYTHON, "/usr/local/bin/python3.11")
    rootfs.symlink("/usr/local/bin/python3", "python3.11")
    rootfs.symlink("/usr/local/bin/python", "python3")
    _copy_stdlib(rootfs)


def _populate_caretta(rootfs: Rootfs) -> None:
    for tool in CARETTA_TOOLS:
        rootfs.place_with_libs(tool)
    rootfs.place_with_libs(STDBUF_LIB)
    rootfs.dir("/app")
    rootfs.install(STANDIN, "/app/caretta_standin.py", mode=0o644, host=False)
    rootfs.write("/app/caretta", "#!/bin/sh\n# netviz lab: Caretta stand-in (this kernel has no kprobes)\n"
                                 'exec python3 -u /app/caretta_standin.py "$@"\n', mode=0o755)


def prometheus_release(module_version: str) -> str:
    """github.com/prometheus/prometheus module v0.3xx.y is Prometheus 3.xx.y (its image tag v3.xx.y)."""
    m = re.fullmatch(r"v0\.3(\d\d)\.(\d+)", module_version)
    if not m:
        raise ImageBuildError(f"{module_version}: expected a Prometheus 3 module version v0.3xx.y")
    return f"v3.{int(m.group(1))}.{m.group(2)}"


def _populate_prometheus_family(binaries: dict[str, Path], prometheus: bool = False) -> Callable[[Rootfs], None]:
    """busybox + the binaries at /bin/<name>, like upstream's images (quay.io/prometheus/busybox base)."""
    def populate(rootfs: Rootfs) -> None:
        for binary in binaries.values():
            if not binary.exists():
                raise ImageBuildError(f"{binary} is missing: run `make lab-deps` (netviz_lab/build-lab-bins.sh)")
        rootfs.skeleton()
        rootfs.busybox()
        rootfs.write("/etc/passwd", PROM_PASSWD)
        rootfs.write("/etc/group", PROM_GROUP)
        for name, binary in binaries.items():
            rootfs.install(binary, f"/bin/{name}", mode=0o755, host=False)
        if prometheus:  # upstream: example config, /prometheus owned by nobody (its WORKDIR and VOLUME)
            rootfs.write("/etc/prometheus/prometheus.yml", PROM_EXAMPLE_CONFIG)
            rootfs.dir("/prometheus", 0o775)
            for d in ("/etc/prometheus", "/etc/prometheus/prometheus.yml", "/prometheus"):
                os.chown(rootfs.path(d), 65534, 65534)
    return populate


def _prometheus_recipes(lab: Lab, common: dict, busybox: dict) -> list[Recipe]:
    """Prometheus 3 and the Operator's two images, from the lab's own builds (build-lab-bins.sh)."""
    tag = prometheus_release(versions.PROMETHEUS)
    op = versions.PROMETHEUS_OPERATOR
    nobody = ("--config.user", "nobody", "--config.env", PATH_ENV)
    prom = Recipe(
        name="prometheus", ref=f"quay.io/prometheus/prometheus:{tag}",
        inputs=common | {"prometheus": versions.PROMETHEUS} | busybox, packages=BUSYBOX_PKGS,
        populate=_populate_prometheus_family({"prometheus": lab.bin("prometheus"), "promtool": lab.bin("promtool")},
                                             prometheus=True),
        config=(*nobody, "--config.entrypoint", "/bin/prometheus",
                "--config.cmd", "--config.file=/etc/prometheus/prometheus.yml",
                "--config.cmd", "--storage.tsdb.path=/prometheus",
                "--config.workingdir", "/prometheus", "--config.volume", "/prometheus",
                "--config.exposedports", "9090/tcp"),
        smoke=(("/bin/prometheus", "--version"), ("/bin/sh", "-c", "id nobody | grep -q 'uid=65534(nobody)'")),
        on_demand=True)
    out = [prom]
    for name, binary in (("prometheus-config-reloader", "prometheus-config-reloader"), ("prometheus-operator", "operator")):
        out.append(Recipe(
            name=name, ref=f"quay.io/prometheus-operator/{name}:{op}",
            inputs=common | {"prometheus-operator": op, "binary": binary} | busybox, packages=BUSYBOX_PKGS,
            populate=_populate_prometheus_family({binary: lab.bin(name)}),
            config=(*nobody, "--config.entrypoint", f"/bin/{binary}"),
            smoke=((f"/bin/{binary}", "--version"),), on_demand=True))
    return out


# -- netviz itself ----------------------------------------------------------------------------------
# The pipeline's own image: the python substitute + the runtime part of the project's venv + the code
# location, so its webserver and daemon can run as pods (netviz_pipeline.render.service_k8s). Built on
# demand like the Prometheus images; its tag is the project version plus the cache key, so every change
# of the code or the venv gives a new ref and a Deployment can never start a stale image under an old one.
REPO = Path(__file__).resolve().parent.parent
PIPELINE_NAME = "netviz-pipeline"
PIPELINE_REPO = "localhost/netviz-pipeline"
PIPELINE_RECIPE_VERSION = "1"  # bump when the pipeline recipe changes in a way its inputs do not capture
PIPELINE_VENV = REPO / ".venv"
PIPELINE_VENV_SITE = "lib/python3.11/site-packages"  # the image's python is 3.11: so must the venv's be
# Debian's python3.11 (prefix /usr) puts this site dir on sys.path and reads its .pth files
PIPELINE_SITE = "/usr/local/lib/python3.11/dist-packages"
PIPELINE_APP = "/app"
PIPELINE_APP_FILES = ("netviz_pipeline", "dashboards", "workspace.yaml")  # copied to /app
PIPELINE_HOME = "/var/lib/dagster"  # DAGSTER_HOME, as netviz_pipeline.render.service_k8s mounts it
PIPELINE_PORT = 3000
PIPELINE_SCRIPTS = ("dagster", "dagster-daemon", "dagster-webserver")
# What the copied extension modules link against beyond the python image's libraries (grpcio,
# pydantic_core, cryptography, ... need libgcc_s / libstdc++).
PIPELINE_PKGS = ("libgcc-s1", "libstdc++6")
# Left out of the distributions: tests directories, bytecode (compiled again for the image's python),
# kubernetes' asyncio twin of its client (41 MB; nothing imports kubernetes.aio) and the webserver UI's
# source maps (only a browser's developer tools fetch them).
PIPELINE_DROP = re.compile(r"(^|/)(__pycache__|tests)/|\.pyc$|^kubernetes/aio/|^dagster_webserver/webapp/build/.*\.map$")
PIPELINE_SMOKE_PRELUDE = ("export HOME=/tmp/netviz-smoke DAGSTER_HOME=/tmp/netviz-smoke PYTHONDONTWRITEBYTECODE=1; "
                          "mkdir -p /tmp/netviz-smoke && cd /app && ")
PIPELINE_IMPORT_SMOKE = (
    "import importlib, os, sys\n"
    f"assert {PIPELINE_SITE!r} in sys.path and {PIPELINE_APP!r} in sys.path, sys.path\n"
    "import netviz_pipeline.definitions\n"
    "import dagster_webserver.webapp, dagster._daemon.cli\n"
    f"for dirpath, dirs, files in os.walk({PIPELINE_SITE!r}):\n"  # every extension module: the ldd closure
    "    for f in files:\n"
    "        if f.endswith('.so'):\n"
    f"            rel = os.path.relpath(os.path.join(dirpath, f), {PIPELINE_SITE!r})\n"
    "            importlib.import_module(rel.split('.', 1)[0].replace('/', '.'))\n")


@dataclass(frozen=True)
class PipelinePlan:
    """What the pipeline image is made from: resolved once per recipes() call."""
    repo: Path                              # the project (pyproject.toml, netviz_pipeline/, ...)
    version: str                            # the project's version (pyproject)
    site: Path                              # the venv's site-packages
    files: tuple[str, ...]                  # site-packages-relative paths to copy
    scripts: Mapping[str, str]              # console script -> "module:attr"
    dists: tuple[str, ...]                  # "name==version", the runtime distributions (pip freeze)
    inputs: Mapping[str, str]               # cache key inputs
    problem: str = ""                       # why it cannot be built ("" = it can)


def _load_toml(path: Path) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10: dagster installs tomli
        import tomli as tomllib
    return tomllib.loads(path.read_text())


def _dist_infos(site: Path) -> dict[str, Path]:
    """Normalised distribution name -> its .dist-info directory in `site` (names from the directory
    names: no METADATA parsed)."""
    from packaging.utils import canonicalize_name

    out: dict[str, Path] = {}
    for entry in sorted(os.scandir(site), key=lambda e: e.name):
        if entry.name.endswith(".dist-info") and entry.is_dir():
            out.setdefault(canonicalize_name(entry.name[:-len(".dist-info")].rsplit("-", 1)[0]), Path(entry.path))
    return out


def runtime_distributions(site: Path, requirements: Iterable[str]) -> list[importlib.metadata.Distribution]:
    """The distributions installed in `site` that `requirements` need, transitively (extras and environment
    markers honoured): what `pip install .` installs, without `.[test]`'s pytest, hypothesis, ..."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    installed = _dist_infos(site)
    dists: dict[str, importlib.metadata.Distribution] = {}
    extras: dict[str, set[str]] = {}

    def add(req: Requirement, needed_by: str) -> None:
        name = canonicalize_name(req.name)
        if name in extras and set(req.extras) <= extras[name]:
            return
        extras.setdefault(name, set()).update(req.extras)
        if name not in installed:
            raise ImageBuildError(f"{req.name} (needed by {needed_by}) is not installed in {site}: run `make venv`")
        dist = dists.setdefault(name, importlib.metadata.PathDistribution(installed[name]))
        for line in dist.requires or []:
            sub = Requirement(line)
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in {"", *extras[name]}):
                add(sub, req.name)

    for line in requirements:
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            add(req, "pyproject.toml")
    return [dists[n] for n in sorted(dists)]


def pipeline_files(record: str) -> list[str]:
    """The files of a distribution (its RECORD's text) the image copies, relative to site-packages."""
    out = []
    for row in csv.reader(record.splitlines()):
        if not row:
            continue
        rel = row[0]
        if rel.startswith(("../", "/")):  # console scripts (venv bin/): the image gets its own launchers
            continue
        if not PIPELINE_DROP.search(rel):
            out.append(rel)
    return out


def _tree_files(root: Path, names: Iterable[str]) -> list[Path]:
    """The files `names` (files or directories under `root`), bytecode left out; sorted."""
    out = []
    for name in names:
        p = root / name
        files = [p] if p.is_file() else sorted(
            f for f in p.rglob("*") if f.is_file() and "__pycache__" not in f.parts and f.suffix != ".pyc")
        if not files:
            raise ImageBuildError(f"{p}: missing")
        out += files
    return out


def _tree_digest(root: Path, names: Iterable[str]) -> str:
    h = hashlib.sha256()
    for f in _tree_files(root, names):
        h.update(f.relative_to(root).as_posix().encode() + b"\0" + hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


@functools.lru_cache(maxsize=4)
def _venv_content(site: Path, requirements: tuple[str, ...], fingerprint: tuple) -> tuple:
    """(files, scripts, freeze, venv digest) of the runtime distributions; cached while `fingerprint`
    (every RECORD's identity: pip rewrites it on each install) stays the same."""
    files: list[str] = []
    scripts: dict[str, str] = {}
    freeze = []
    for d in runtime_distributions(site, requirements):
        record = d.read_text("RECORD")
        if record is None:
            raise ImageBuildError(f"{d.metadata['Name']} in {site}: no RECORD, cannot tell its files")
        files += pipeline_files(record)
        # RECORD has every installed file's sha256: a reinstall of the same version with other content counts
        freeze.append(f"{d.metadata['Name']}=={d.version} {sha256_text(record)}")
        scripts.update({ep.name: ep.value for ep in d.entry_points
                        if ep.group == "console_scripts" and ep.name in PIPELINE_SCRIPTS})
    return (tuple(files), scripts, tuple(f.split(" ")[0] for f in freeze), sha256_text("\n".join(freeze)))


def _venv_fingerprint(site: Path) -> tuple:
    out = []
    for name, info in _dist_infos(site).items():
        try:
            st = (info / "RECORD").stat()
            out.append((name, info.name, st.st_ino, st.st_size, st.st_mtime_ns))
        except FileNotFoundError:
            out.append((name, info.name))
    return tuple(out)


def pipeline_plan(repo: Path | None = None, venv: Path | None = None) -> PipelinePlan:
    """Resolve the image's content and cache-key inputs from the project and its venv. Never raises for
    a missing or unusable venv (the lab must still come up without this image): `problem` says why,
    and building is what fails. Defaults: this checkout and its .venv."""
    repo = repo or REPO
    venv = venv or (PIPELINE_VENV if repo == REPO else repo / ".venv")
    project = _load_toml(repo / "pyproject.toml")["project"]
    version = project["version"]
    inputs = {"pipeline": PIPELINE_RECIPE_VERSION, "project": version, "drop": PIPELINE_DROP.pattern}
    site = venv / PIPELINE_VENV_SITE
    try:
        inputs["source"] = _tree_digest(repo, (*PIPELINE_APP_FILES, "pyproject.toml"))
        if not site.is_dir():
            raise ImageBuildError(f"{site}: no such directory (the image's python is 3.11, so must the venv's be: "
                                  f"`make venv` with python3.11)")
        files, scripts, dists, digest = _venv_content(site, tuple(project.get("dependencies", [])),
                                                      _venv_fingerprint(site))
    except ImageBuildError as exc:
        return PipelinePlan(repo, version, site, (), {}, (), inputs | {"venv": f"unusable: {exc}"}, str(exc))
    missing = sorted(set(PIPELINE_SCRIPTS) - set(scripts))
    problem = f"console scripts {missing} not found in the venv's runtime distributions" if missing else ""
    return PipelinePlan(repo, version, site, files, dict(scripts), dists, inputs | {"venv": digest}, problem)


def pipeline_tag(version: str, key: str) -> str:
    """`0.1.0` + the cache key: a new ref for every new content."""
    return f"{version}-{key}"


def launcher(name: str, entry_point: str) -> str:
    """A console script as pip writes it, for the image's python (the venv's point at the venv)."""
    module, _, attr = entry_point.partition(":")
    head = attr.split(".")[0]
    return (f"#!/usr/local/bin/python3\n# netviz image: the `{name}` console script ({entry_point})\n"
            f"import sys\nfrom {module.strip()} import {head.strip()}\n"
            f"if __name__ == \"__main__\":\n    sys.exit({attr.strip()}())\n")


def _compile(rootfs: Rootfs, directory: str, mode: str) -> None:
    """Byte-compile `directory` of the image with the image's own interpreter (the same Debian binary):
    the pod's root filesystem is read-only, so without this every process (webserver, daemon, code
    servers, each run's worker) would compile dagster again at start (~5 s). Hash-based pycs: the
    normalised mtimes cannot invalidate them; checked-hash where the source might be mounted over."""
    _run([HOST_PYTHON, "-m", "compileall", "-q", "-j", "0", "--invalidation-mode", mode,
          "-d", directory, str(rootfs.path(directory))])


def _populate_pipeline(plan: PipelinePlan) -> Callable[[Rootfs], None]:
    def populate(rootfs: Rootfs) -> None:
        if plan.problem:
            raise ImageBuildError(f"{PIPELINE_NAME}: {plan.problem}")
        for rel in plan.files:
            rootfs.install(plan.site / rel, f"{PIPELINE_SITE}/{rel}", host=False)
        # every library the extension modules need (libc & co. are in the base already)
        for rel in plan.files:
            if rel.endswith(".so") or ".so." in rel:
                for lib in ldd(str(plan.site / rel)):
                    rootfs.place(lib)
        # like the venv's editable install: netviz_pipeline importable from anywhere, not only from /app
        rootfs.write(f"{PIPELINE_SITE}/netviz-app.pth", f"{PIPELINE_APP}\n")
        for name in PIPELINE_SCRIPTS:
            rootfs.write(f"/usr/local/bin/{name}", launcher(name, plan.scripts[name]), mode=0o755)
        for f in _tree_files(plan.repo, PIPELINE_APP_FILES):
            rootfs.install(f, f"{PIPELINE_APP}/{f.relative_to(plan.repo).as_posix()}", mode=0o644, host=False)
        rootfs.dir(PIPELINE_HOME)
        for top in (PIPELINE_SITE, PIPELINE_APP):  # directories as created by mkdir: make them 0755 whatever the umask
            for dirpath, _, _ in os.walk(rootfs.path(top)):
                os.chmod(dirpath, 0o755)
        _compile(rootfs, PIPELINE_SITE, "unchecked-hash")
        _compile(rootfs, HOST_STDLIB, "unchecked-hash")  # the base leaves the stdlib uncompiled
        _compile(rootfs, PIPELINE_APP, "checked-hash")
    return populate


def _pipeline_smoke(cmd: str) -> tuple[str, ...]:
    """`cmd` in /app with a throw-away DAGSTER_HOME and HOME, removed after (the rootfs is packed next)."""
    return ("/bin/sh", "-c", f"{PIPELINE_SMOKE_PRELUDE}{cmd}; rc=$?; rm -rf /tmp/netviz-smoke; exit $rc")


def _pipeline_recipe(common: dict, base: Recipe, debian: dict, plan: PipelinePlan) -> Recipe:
    inputs = common | plan.inputs | {"base": f"{base.name}-{base.key}"} | debian
    tag = pipeline_tag(plan.version, cache_key(inputs))
    smoke = _pipeline_smoke
    return Recipe(
        name=PIPELINE_NAME, ref=f"{PIPELINE_REPO}:{tag}", inputs=inputs,
        packages=PIPELINE_PKGS + base.packages, populate=_populate_pipeline(plan), base=base.name,
        # No ENTRYPOINT: the Deployment gives the command (dagster-webserver / dagster-daemon); the default
        # CMD is the webserver. User root (none set): the routers' SSH key comes from a Secret, mounted
        # root-owned 0400, and the settings refuse a group-readable key (as OpenSSH does), so the pod runs
        # as root with every capability dropped and a read-only root filesystem (service_k8s).
        config=("--clear=config.labels", "--clear=config.env", "--clear=config.cmd",
                "--config.env", PATH_ENV, "--config.env", "LANG=C.UTF-8", "--config.env", "PYTHONUNBUFFERED=1",
                "--config.env", f"DAGSTER_HOME={PIPELINE_HOME}", "--config.workingdir", PIPELINE_APP,
                "--config.cmd", "dagster-webserver", "--config.cmd", "-w", "--config.cmd", "workspace.yaml",
                "--config.cmd", "-h", "--config.cmd", "0.0.0.0", "--config.cmd", "-p",
                "--config.cmd", str(PIPELINE_PORT), "--config.exposedports", f"{PIPELINE_PORT}/tcp",
                "--config.label", "org.opencontainers.image.title=netviz",
                "--config.label", f"org.opencontainers.image.version={plan.version}"),
        smoke=(smoke(f"python3 -c {shlex.quote(PIPELINE_IMPORT_SMOKE)}"),
               smoke("dagster-daemon --help && dagster-webserver --help"),
               # the `dagster` launcher loading the code location as the daemon does (no NETVIZ_CONFIG needed)
               smoke("dagster definitions validate -w workspace.yaml")),
        on_demand=True, stale_tags="*")


def pipeline_image_ref(lab: Lab) -> str:
    """`localhost/netviz-pipeline:<version>-<key>`: the ref the in-cluster webserver and daemon run."""
    return next(r.ref for r in recipes(lab) if r.name == PIPELINE_NAME)


def recipes(lab: Lab) -> list[Recipe]:
    """The images, in build order (a base before the images that extend it)."""
    deb = debian_versions(BUSYBOX_PKGS + PAUSE_PKGS + PYTHON_PKGS + CARETTA_PKGS + PIPELINE_PKGS)
    pick = lambda pkgs: {f"deb:{p}": deb[p] for p in pkgs}  # noqa: E731
    common = {"recipe": RECIPE_VERSION}
    goflow2 = lab.bin("goflow2")
    pause = Recipe(
        name="pause", ref=f"registry.k8s.io/pause:{PAUSE_TAG}",
        inputs=common | {"tag": PAUSE_TAG, "pause.c": sha256_text(PAUSE_C)} | pick(PAUSE_PKGS),
        packages=PAUSE_PKGS, populate=_populate_pause,
        config=("--config.entrypoint", "/pause", "--config.user", "65535:65535"))
    flow = Recipe(
        name="goflow2", ref=f"docker.io/netsampler/goflow2:{versions.GOFLOW2}",
        inputs=common | {"goflow2": versions.GOFLOW2, "binary": goflow2.name} | pick(BUSYBOX_PKGS),
        packages=BUSYBOX_PKGS, populate=_populate_goflow2(goflow2),
        config=("--config.user", "flow", "--config.entrypoint", "./goflow2", "--config.env", PATH_ENV),
        smoke=(("/bin/sh", "-c", "id flow | grep -q 'uid=100(flow) gid=65533(nogroup)'"),))
    py_version = deb["python3.11-minimal"]
    python = Recipe(
        name="python", ref=f"docker.io/library/python:{PYTHON_TAG}",
        inputs=common | {"tag": PYTHON_TAG} | pick(PYTHON_PKGS),
        packages=PYTHON_PKGS, populate=_populate_python,
        config=("--config.cmd", "python3", "--config.env", PATH_ENV, "--config.env", "LANG=C.UTF-8",
                "--config.label", f"{SUBSTITUTE_LABEL}=Debian python3 {py_version} (glibc), standing in for "
                                  f"python:{PYTHON_TAG} (no registry here)"),
        smoke=(("/usr/local/bin/python3", "-B", "-c", PYTHON_SMOKE),))
    caretta = Recipe(
        name="caretta", ref=f"quay.io/groundcover/caretta:{CARETTA_TAG}",
        inputs=common | {"tag": CARETTA_TAG, "base": f"{python.name}-{python.key}",
                         "caretta_standin.py": sha256_text(STANDIN.read_bytes())} | pick(CARETTA_PKGS),
        packages=CARETTA_PKGS + PYTHON_PKGS, populate=_populate_caretta, base=python.name,
        # upstream: WORKDIR /app, CMD ./caretta (shell form), VOLUME /sys/kernel/debug, no USER
        config=("--clear=config.cmd", "--config.cmd", "/bin/sh", "--config.cmd", "-c", "--config.cmd", "./caretta",
                "--config.workingdir", "/app", "--config.volume", "/sys/kernel/debug",
                "--config.label", f"{STANDIN_LABEL}={STANDIN_TEXT}"),
        smoke=(("/usr/local/bin/python3", "-B", "-c",
                "import ast; ast.parse(open('/app/caretta_standin.py').read())"),
               # as the stand-in runs them: exec'd via PATH (Debian's busybox sh would prefer its applets)
               ("/usr/local/bin/python3", "-B", "-c", CARETTA_TOOLS_SMOKE)))
    return [pause, flow, python, caretta, *_prometheus_recipes(lab, common, pick(BUSYBOX_PKGS)),
            _pipeline_recipe(common, python, pick(PIPELINE_PKGS), pipeline_plan())]


# -- building ---------------------------------------------------------------------------------------
def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if res.returncode != 0:
        raise ImageBuildError(f"{' '.join(cmd)}: {(res.stderr or res.stdout).strip()}")
    return res


def _normalise_mtimes(root: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.utime(os.path.join(dirpath, name), (EPOCH, EPOCH), follow_symlinks=False)
    os.utime(root, (EPOCH, EPOCH))


def _check_packages(recipe: Recipe, rootfs: Rootfs) -> None:
    if not rootfs.host_files:
        return
    stray = {p: o for p, o in owners(rootfs.host_files).items() if o not in recipe.packages}
    if stray:
        raise ImageBuildError(f"{recipe.name}: copies files its cache key does not cover (add their packages "
                              f"to the recipe): " + ", ".join(f"{p} ({o or 'no package'})" for p, o in stray.items()))


def _smoke(recipe: Recipe, root: Path) -> None:
    env = {"PATH": PATH_ENV.split("=", 1)[1], "LANG": "C.UTF-8", "HOME": "/root"}
    for cmd in recipe.smoke:
        res = subprocess.run(["chroot", str(root), *cmd], capture_output=True, text=True, env=env)
        if res.returncode != 0:
            raise ImageBuildError(f"{recipe.name}: `{' '.join(cmd)}` fails in the image's rootfs: "
                                  f"{(res.stderr or res.stdout).strip()[-800:]}")


def _write_layout_tar(layout: Path, out: Path) -> None:
    """The layout's files at the tar root (oci-layout, index.json, blobs/), deterministic headers."""
    def norm(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = EPOCH
        info.mode = 0o755 if info.isdir() else 0o644
        return info

    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(layout.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(layout)), recursive=False, filter=norm)


def _extract(tar_path: Path, dest: Path) -> None:
    with tarfile.open(tar_path) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, filter="data")
        else:  # pragma: no cover - Python < 3.11.4
            tar.extractall(dest)


def manifest_digest(tarball: Path) -> str:
    """Digest of the (single) manifest in an OCI-layout tarball: what `ctr images ls` shows."""
    with tarfile.open(tarball) as tar:
        f = tar.extractfile("index.json")
        assert f is not None
        return json.load(f)["manifests"][0]["digest"]


def _build(recipe: Recipe, by_name: Mapping[str, Recipe], cache: Path, out: Path) -> None:
    work = Path(tempfile.mkdtemp(prefix=f".build-{recipe.name}-", dir=out.parent))
    try:
        layout, bundle = work / "oci", work / "bundle"
        if recipe.base:
            base = by_name[recipe.base]
            _extract(base.tarball(cache), layout)
            start = f"{layout}:{base.tag}"
        else:
            _run(["umoci", "init", "--layout", str(layout)])
            _run(["umoci", "new", "--image", f"{layout}:{recipe.tag}"])
            start = f"{layout}:{recipe.tag}"
        _run(["umoci", "unpack", "--image", start, str(bundle)])
        rootfs = Rootfs(bundle / "rootfs")
        recipe.populate(rootfs)
        _check_packages(recipe, rootfs)
        _smoke(recipe, rootfs.root)
        _normalise_mtimes(rootfs.root)
        image = f"{layout}:{recipe.tag}"
        _run(["umoci", "repack", "--image", image, "--history.created", EPOCH_RFC3339,
              "--history.created_by", f"netviz_lab.images {recipe.name} (recipe {RECIPE_VERSION}, key {recipe.key})",
              str(bundle)])
        if recipe.base and by_name[recipe.base].tag != recipe.tag:
            _run(["umoci", "rm", "--image", start])
        _run(["umoci", "config", "--image", image, "--no-history", "--created", EPOCH_RFC3339, *recipe.config])
        _run(["umoci", "gc", "--layout", str(layout)])
        index = json.loads((layout / "index.json").read_text())
        names = [m.get("annotations", {}).get("org.opencontainers.image.ref.name") for m in index["manifests"]]
        if names != [recipe.tag]:
            raise ImageBuildError(f"{recipe.name}: index.json names {names}, expected [{recipe.tag!r}]")
        tmp_tar = work / "image.tar"
        _write_layout_tar(layout, tmp_tar)
        os.replace(tmp_tar, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def _locked(directory: Path):
    with open(directory / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def ensure_images(lab: Lab, build_on_demand: bool = True) -> list[Image]:
    """Build the images not cached yet (in a temporary directory, renamed into place), return all.
    Idempotent; when everything is cached it only reads versions and checks files.
    `build_on_demand=False`: only the images `up` imports, built and returned (the pipeline's image
    is rebuilt after every source change: ~1 min that `up` need not wait for)."""
    by_name = {r.name: r for r in recipes(lab)}
    all_recipes = [r for r in by_name.values() if build_on_demand or not r.on_demand]
    images = [Image(r.ref, r.tarball(lab.cache), r.on_demand) for r in all_recipes]
    if all(img.tarball.exists() for img in images):
        return images
    if os.geteuid() != 0:
        raise ImageBuildError("building the lab images needs root (umoci unpack, chroot); missing: " +
                              ", ".join(str(i.tarball) for i in images if not i.tarball.exists()))
    directory = lab.cache / "images"
    directory.mkdir(parents=True, exist_ok=True)
    with _locked(directory):
        for stale in directory.glob(".build-*"):  # a crashed build (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        for r in all_recipes:
            out = r.tarball(lab.cache)
            if out.exists():
                continue
            _build(r, by_name, lab.cache, out)
            for old in directory.glob(f"{r.name}-{r.stale_tags or r.tag}-*.tar"):  # superseded builds of this image
                if old != out:
                    old.unlink()
    return images


# -- importing --------------------------------------------------------------------------------------
def _ctr(address: str, namespace: str, *args: str) -> str:
    return _run(["ctr", "--address", address, "-n", namespace, *args]).stdout


def present_images(ctr_address: str, namespace: str = "k8s.io") -> dict[str, str]:
    """ref -> manifest digest of the images complete in the content store and unpacked."""
    out = _ctr(ctr_address, namespace, "images", "check")
    found = {}
    for line in out.splitlines()[1:]:  # REF TYPE DIGEST STATUS SIZE UNPACKED
        parts = line.split()
        if len(parts) >= 4 and parts[3] == "complete" and parts[-1] == "true":
            found[parts[0]] = parts[2]
    return found


def import_images(ctr_address: str, images: list[Image], namespace: str = "k8s.io") -> list[str]:
    """Import into containerd the images not already there with the same digest; returns the refs
    imported. `--base-name <repo>` + the index's ref.name (the tag) gives `<repo>:<tag>`."""
    want = {img.ref: manifest_digest(img.tarball) for img in images}
    present = present_images(ctr_address, namespace)
    imported = []
    for img in images:
        if present.get(img.ref) == want[img.ref]:
            continue
        _ctr(ctr_address, namespace, "images", "import", "--base-name", img.ref.rsplit(":", 1)[0],
             str(img.tarball))
        imported.append(img.ref)
    if imported:
        present = present_images(ctr_address, namespace)
        wrong = [r for r in imported if present.get(r) != want[r]]
        if wrong:
            raise ImageBuildError(f"imported but not complete and unpacked in containerd with the expected "
                                  f"digest: {wrong}")
    return imported


def describe(img: Image) -> str:
    size = img.tarball.stat().st_size if img.tarball.exists() else 0
    return f"{img.ref:44} {size / 2**20:7.1f} MiB  {img.tarball}"
