"""The image builder: OCI-layout images made with umoci from a staged rootfs, no docker, no registry.

Generic machinery, no image in particular (those are recipes.py): a `Recipe` says what an image is made
from (`inputs`, hashed into its cache key), which Debian packages it may copy files from, how to populate
its rootfs, its `umoci config` and the smoke commands run chrooted in the finished rootfs. `ensure`
builds what is not cached yet, each image as an OCI-layout tarball `<cache>/images/<name>-<tag>-<key>.tar`,
in a temporary directory renamed into place; `import_images` imports them into a containerd with
`ctr images import --base-name <repo>`.

The cache key covers every input the recipe lists; a build fails if it copies a host file owned by a
Debian package its recipe does not list (`_check_packages`), so the Debian versions in the key cover
every copied file. File mtimes and all timestamps are fixed (`EPOCH`), so the same inputs give the same
layer and manifest digests.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

EPOCH = 0  # mtime of every file, and the created time of configs and history entries
EPOCH_RFC3339 = "1970-01-01T00:00:00Z"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# busybox applets installed as /bin/<name> -> /bin/busybox (alpine-like; not ip/nsenter: the Caretta
# image has the real ones and nothing should shadow them)
BUSYBOX_APPLETS = (
    "sh", "ash", "[", "[[", "test", "echo", "printf", "cat", "ls", "mkdir", "rm", "rmdir", "cp", "mv", "ln",
    "chmod", "chown", "touch", "mkfifo", "sleep", "kill", "ps", "id", "whoami", "env", "pwd", "true", "false",
    "grep", "sed", "awk", "head", "tail", "tr", "cut", "sort", "uniq", "wc", "tee", "xargs", "find", "stat",
    "date", "hostname", "uname", "wget", "nc", "nslookup", "ping", "top", "timeout", "readlink", "basename",
    "dirname", "du", "df", "mount", "tar", "gzip", "gunzip", "vi", "less",
)


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

    @property
    def version(self) -> str:
        """The recipe code's version (its `recipe` input, recipes.RECIPE_VERSION): named in the image's history."""
        return self.inputs.get("recipe", "")

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



# -- building ---------------------------------------------------------------------------------------
def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    """Run a build command; its error output becomes an ImageBuildError."""
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
            run(["umoci", "init", "--layout", str(layout)])
            run(["umoci", "new", "--image", f"{layout}:{recipe.tag}"])
            start = f"{layout}:{recipe.tag}"
        run(["umoci", "unpack", "--image", start, str(bundle)])
        rootfs = Rootfs(bundle / "rootfs")
        recipe.populate(rootfs)
        _check_packages(recipe, rootfs)
        _smoke(recipe, rootfs.root)
        _normalise_mtimes(rootfs.root)
        image = f"{layout}:{recipe.tag}"
        run(["umoci", "repack", "--image", image, "--history.created", EPOCH_RFC3339,
              "--history.created_by", f"netviz_lab.images {recipe.name} (recipe {recipe.version}, key {recipe.key})",
              str(bundle)])
        if recipe.base and by_name[recipe.base].tag != recipe.tag:
            run(["umoci", "rm", "--image", start])
        run(["umoci", "config", "--image", image, "--no-history", "--created", EPOCH_RFC3339, *recipe.config])
        run(["umoci", "gc", "--layout", str(layout)])
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


def ensure(recipes: Sequence[Recipe], cache: Path, build_on_demand: bool = True) -> list[Image]:
    """Build the images of `recipes` (in build order: a base before the images that extend it) not
    cached under `cache` yet (in a temporary directory, renamed into place), return all.
    Idempotent; when everything is cached it only checks files.
    `build_on_demand=False`: only the recipes not marked `on_demand`, built and returned."""
    by_name = {r.name: r for r in recipes}
    all_recipes = [r for r in by_name.values() if build_on_demand or not r.on_demand]
    images = [Image(r.ref, r.tarball(cache), r.on_demand) for r in all_recipes]
    if all(img.tarball.exists() for img in images):
        return images
    if os.geteuid() != 0:
        raise ImageBuildError("building the lab images needs root (umoci unpack, chroot); missing: " +
                              ", ".join(str(i.tarball) for i in images if not i.tarball.exists()))
    directory = cache / "images"
    directory.mkdir(parents=True, exist_ok=True)
    with _locked(directory):
        for stale in directory.glob(".build-*"):  # a crashed build (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        for r in all_recipes:
            out = r.tarball(cache)
            if out.exists():
                continue
            _build(r, by_name, cache, out)
            for old in directory.glob(f"{r.name}-{r.stale_tags or r.tag}-*.tar"):  # superseded builds of this image
                if old != out:
                    old.unlink()
    return images


# -- importing --------------------------------------------------------------------------------------
def _ctr(address: str, namespace: str, *args: str) -> str:
    return run(["ctr", "--address", address, "-n", namespace, *args]).stdout


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
