"""The recipes: the container images the product references, each a small declarative `Recipe`.

A real kubelet (containerd + runc) finds images only in containerd's content store, and this machine
has no registry to pull from. So each image the product references is built locally (builder.py), under
its upstream name, from one pinned source each, cached as an OCI-layout tarball keyed by its version and
a hash of its recipe inputs, and imported with `ctr images import --base-name <repo>`:

| ref | what it is |
|---|---|
| `registry.k8s.io/pause:3.10` | our own static C `pause` (netviz_lab/shipped/pause.c), user 65535:65535 as upstream |
| `docker.io/netsampler/goflow2:<GOFLOW2>` | the lab's goflow2 build on busybox-static; upstream config: `User: flow` (a name), `Entrypoint: ["./goflow2"]`, no WorkingDir |
| `docker.io/library/python:3.12-alpine` | SUBSTITUTE: Debian's python3.11 (glibc) + stdlib + busybox, labelled `io.netviz.lab.substitute` |
| `quay.io/groundcover/caretta:v0.0.16` | STAND-IN: the python substitute + `caretta_standin.py` (netviz_lab/shipped/) + nsenter/ss/ip/stdbuf, upstream WORKDIR `/app`, `CMD ./caretta`, user root; labelled `io.netviz.lab.standin` |
| `quay.io/prometheus/prometheus:<tag>`, `quay.io/prometheus-operator/{prometheus-config-reloader,prometheus-operator}:<tag>` | the lab's builds on busybox, `USER nobody`, upstream entrypoints (on demand) |
| `localhost/netviz-pipeline:0.1.0-<key>` | netviz itself (on demand; `pipeline_image_ref`): the python substitute + .venv's runtime distributions (compiled), `dagster`/`dagster-webserver`/`dagster-daemon` launchers, `netviz_pipeline`, `workspace.yaml` and `dashboards/` in WORKDIR `/app`, user root (venv_pack.py) |

Caretta's upstream Dockerfile (groundcover-com/caretta, tag v0.0.16): `FROM alpine:3.17`, `WORKDIR /app`,
the binary copied to `/app/caretta`, `VOLUME /sys/kernel/debug`, `CMD ./caretta` (shell form, so
`["/bin/sh", "-c", "./caretta"]`), no ENTRYPOINT, no USER (root). `/app/caretta` here is a /bin/sh script
that starts the stand-in.

The cache key covers every input: the recipe code version, the pinned image/binary versions, the Debian
package versions (dpkg-query) of every package whose files an image copies (a build fails if it copies a
file owned by a package its recipe does not list), the stand-in's content and the pause source (their
contents, not their paths).
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Callable, Mapping

from .. import shipped, versions
from ..lab import Lab
from . import venv_pack
from .builder import (PATH_ENV, Image, ImageBuildError, Recipe, Rootfs, cache_key, debian_versions, ensure, ldd,
                      sha256_text)
from .venv_pack import PIPELINE_APP, PIPELINE_HOME, PIPELINE_SITE, PipelinePlan

# Bump when the recipes below change in a way the other inputs do not capture.
RECIPE_VERSION = "1"

Pick = Callable[[tuple[str, ...]], Mapping[str, str]]  # Debian packages -> their `deb:<name>` key inputs

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
# What the copied extension modules link against beyond the python image's libraries (grpcio,
# pydantic_core, cryptography, ... need libgcc_s / libstdc++).
PIPELINE_PKGS = ("libgcc-s1", "libstdc++6")


# -- pause ------------------------------------------------------------------------------------------
PAUSE_TAG = "3.10"
PAUSE_C = shipped.PAUSE_C.read_text()  # its content is a key input


def _populate_pause(rootfs: Rootfs) -> None:
    src = rootfs.root.parent / "pause.c"
    src.write_text(PAUSE_C)
    binary = rootfs.path("pause")
    subprocess.run(["gcc", "-static", "-Os", "-s", f'-DPAUSE_VERSION="{PAUSE_TAG}"', "-o", str(binary), str(src)],
                   check=True, capture_output=True, text=True)
    src.unlink()
    binary.chmod(0o755)


def _pause_recipe(common: dict, pick: Pick) -> Recipe:
    return Recipe(
        name="pause", ref=f"registry.k8s.io/pause:{PAUSE_TAG}",
        inputs=common | {"tag": PAUSE_TAG, "pause.c": sha256_text(PAUSE_C)} | pick(PAUSE_PKGS),
        packages=PAUSE_PKGS, populate=_populate_pause,
        config=("--config.entrypoint", "/pause", "--config.user", "65535:65535"))


# -- goflow2 ----------------------------------------------------------------------------------------
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


def _goflow2_recipe(lab: Lab, common: dict, pick: Pick) -> Recipe:
    goflow2 = lab.bin("goflow2")
    return Recipe(
        name="goflow2", ref=f"docker.io/netsampler/goflow2:{versions.GOFLOW2}",
        inputs=common | {"goflow2": versions.GOFLOW2, "binary": goflow2.name} | pick(BUSYBOX_PKGS),
        packages=BUSYBOX_PKGS, populate=_populate_goflow2(goflow2),
        config=("--config.user", "flow", "--config.entrypoint", "./goflow2", "--config.env", PATH_ENV),
        smoke=(("/bin/sh", "-c", "id flow | grep -q 'uid=100(flow) gid=65533(nogroup)'"),))


# -- the python substitute --------------------------------------------------------------------------
PYTHON_TAG = "3.12-alpine"
SUBSTITUTE_LABEL = "io.netviz.lab.substitute"
HOST_PYTHON = "/usr/bin/python3.11"
HOST_STDLIB = "/usr/lib/python3.11"
PYTHON_PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/sbin/nologin\n"
PYTHON_GROUP = "root:x:0:root\nnogroup:x:65533:\nnobody:x:65534:\n"
# Python stdlib parts the image leaves out (tests, GUIs, build-time files; the C test extensions).
STDLIB_DROP = {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "__pycache__", "lib2to3",
               "config-3.11-x86_64-linux-gnu"}
DYNLOAD_DROP = re.compile(r"^(_test|_ctypes_test|_xxtestfuzz|xxlimited|_xxsubinterpreters)")
PYTHON_SMOKE = "import json, http.server, ssl, socket, urllib.request, ctypes, hashlib, subprocess, threading"


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


def _python_recipe(common: dict, pick: Pick, py_version: str) -> Recipe:
    return Recipe(
        name="python", ref=f"docker.io/library/python:{PYTHON_TAG}",
        inputs=common | {"tag": PYTHON_TAG} | pick(PYTHON_PKGS),
        packages=PYTHON_PKGS, populate=_populate_python,
        config=("--config.cmd", "python3", "--config.env", PATH_ENV, "--config.env", "LANG=C.UTF-8",
                "--config.label", f"{SUBSTITUTE_LABEL}=Debian python3 {py_version} (glibc), standing in for "
                                  f"python:{PYTHON_TAG} (no registry here)"),
        smoke=(("/usr/local/bin/python3", "-B", "-c", PYTHON_SMOKE),))


# -- the Caretta stand-in ---------------------------------------------------------------------------
CARETTA_TAG = "v0.0.16"
STANDIN_LABEL = "io.netviz.lab.standin"
STANDIN_TEXT = "netviz lab Caretta stand-in, not Caretta (this kernel has no kprobes)"
STANDIN = shipped.CARETTA_STANDIN  # its content is a key input
CARETTA_TOOLS = ("/usr/bin/nsenter", "/usr/bin/ss", "/usr/sbin/ip", "/usr/bin/stdbuf")
STDBUF_LIB = "/usr/libexec/coreutils/libstdbuf.so"
CARETTA_TOOLS_SMOKE = (
    "import shutil, subprocess\n"
    "for cmd in (['nsenter', '--version'], ['ss', '-V'], ['ip', '-V'], ['stdbuf', '-oL', 'true']):\n"
    "    assert shutil.which(cmd[0]).startswith('/usr/'), shutil.which(cmd[0])\n"
    "    subprocess.run(cmd, check=True, capture_output=True)\n")  # no /dev in a bare chroot


def _populate_caretta(rootfs: Rootfs) -> None:
    for tool in CARETTA_TOOLS:
        rootfs.place_with_libs(tool)
    rootfs.place_with_libs(STDBUF_LIB)
    rootfs.dir("/app")
    rootfs.install(STANDIN, "/app/caretta_standin.py", mode=0o644, host=False)
    rootfs.write("/app/caretta", "#!/bin/sh\n# netviz lab: Caretta stand-in (this kernel has no kprobes)\n"
                                 'exec python3 -u /app/caretta_standin.py "$@"\n', mode=0o755)


def _caretta_recipe(common: dict, pick: Pick, python: Recipe) -> Recipe:
    return Recipe(
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


# -- Prometheus and the Operator --------------------------------------------------------------------
# quay.io/prometheus/busybox's users, which Prometheus's and the Operator's images run on (USER nobody)
PROM_PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n"
PROM_GROUP = "root:x:0:\nnogroup:x:65534:\n"
PROM_EXAMPLE_CONFIG = ("global:\n  scrape_interval: 15s\nscrape_configs:\n  - job_name: prometheus\n"
                       "    static_configs:\n      - targets: ['localhost:9090']\n")


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


def _prometheus_recipes(lab: Lab, common: dict, pick: Pick) -> list[Recipe]:
    """Prometheus 3 and the Operator's two images, from the lab's own builds (build-lab-bins.sh)."""
    busybox = pick(BUSYBOX_PKGS)
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
# The pipeline's own image: the python substitute + the pipeline's code and venv (venv_pack.py). Built
# on demand like the Prometheus images; its tag is the project version plus the cache key, so every change
# of the code or the venv gives a new ref and a Deployment can never start a stale image under an old one.
PIPELINE_NAME = "netviz-pipeline"
PIPELINE_REPO = "localhost/netviz-pipeline"
PIPELINE_PORT = 3000
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


def pipeline_tag(version: str, key: str) -> str:
    """`0.1.0` + the cache key: a new ref for every new content."""
    return f"{version}-{key}"


def _pipeline_smoke(cmd: str) -> tuple[str, ...]:
    """`cmd` in /app with a throw-away DAGSTER_HOME and HOME, removed after (the rootfs is packed next)."""
    return ("/bin/sh", "-c", f"{PIPELINE_SMOKE_PRELUDE}{cmd}; rc=$?; rm -rf /tmp/netviz-smoke; exit $rc")


def _pipeline_recipe(common: dict, pick: Pick, base: Recipe, plan: PipelinePlan) -> Recipe:
    inputs = common | plan.inputs | {"base": f"{base.name}-{base.key}"} | pick(PIPELINE_PKGS)
    tag = pipeline_tag(plan.version, cache_key(inputs))
    smoke = _pipeline_smoke
    return Recipe(
        name=PIPELINE_NAME, ref=f"{PIPELINE_REPO}:{tag}", inputs=inputs,
        packages=PIPELINE_PKGS + base.packages, populate=venv_pack.populator(plan, HOST_PYTHON, HOST_STDLIB),
        base=base.name,
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


# -- all of them ------------------------------------------------------------------------------------
def lab_recipes(lab: Lab) -> list[Recipe]:
    """The images, in build order (a base before the images that extend it)."""
    deb = debian_versions(BUSYBOX_PKGS + PAUSE_PKGS + PYTHON_PKGS + CARETTA_PKGS + PIPELINE_PKGS)

    def pick(pkgs: tuple[str, ...]) -> dict[str, str]:
        return {f"deb:{p}": deb[p] for p in pkgs}

    common = {"recipe": RECIPE_VERSION}
    python = _python_recipe(common, pick, deb["python3.11-minimal"])
    return [_pause_recipe(common, pick), _goflow2_recipe(lab, common, pick), python,
            _caretta_recipe(common, pick, python), *_prometheus_recipes(lab, common, pick),
            _pipeline_recipe(common, pick, python, venv_pack.pipeline_plan())]


def pipeline_image_ref(lab: Lab) -> str:
    """`localhost/netviz-pipeline:<version>-<key>`: the ref the in-cluster webserver and daemon run."""
    return next(r.ref for r in lab_recipes(lab) if r.name == PIPELINE_NAME)


def ensure_images(lab: Lab, build_on_demand: bool = True) -> list[Image]:
    """Build the lab's images not cached yet (builder.ensure), return all. Idempotent; when everything
    is cached it only reads versions and checks files.
    `build_on_demand=False`: only the images `up` imports, built and returned (the pipeline's image
    is rebuilt after every source change: ~1 min that `up` need not wait for)."""
    return ensure(lab_recipes(lab), lab.cache, build_on_demand)
