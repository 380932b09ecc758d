"""The pipeline's own code and virtualenv, packed into an image's rootfs (the netviz-pipeline image).

The image (recipes.py) is the python substitute + the runtime part of the project's venv + the code
location, so its webserver and daemon can run as pods (netviz_pipeline.render.service_k8s). `pipeline_plan`
resolves what goes in from the project and its venv: the distributions the project's dependencies need,
transitively (what `pip install .` installs, not `.[test]`), each one's files from its RECORD (tests,
bytecode and a few large unused parts left out), the console scripts the image gets launchers for, and
the cache-key inputs (the project's sources and every RECORD's digest). `populator` copies that into a
rootfs and byte-compiles it with the image's own interpreter.
"""
from __future__ import annotations

import csv
import functools
import hashlib
import importlib.metadata
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping

from .builder import ImageBuildError, Rootfs, ldd, run, sha256_text

# This checkout (netviz_lab/images/venv_pack.py -> the repository), whose sources and .venv the image packs.
REPO = Path(__file__).resolve().parents[2]
PIPELINE_RECIPE_VERSION = "1"  # bump when the pipeline recipe changes in a way its inputs do not capture
PIPELINE_VENV = REPO / ".venv"
PIPELINE_VENV_SITE = "lib/python3.11/site-packages"  # the image's python is 3.11: so must the venv's be
# Debian's python3.11 (prefix /usr) puts this site dir on sys.path and reads its .pth files
PIPELINE_SITE = "/usr/local/lib/python3.11/dist-packages"
PIPELINE_APP = "/app"
PIPELINE_APP_FILES = ("netviz_pipeline", "dashboards", "workspace.yaml")  # copied to /app
PIPELINE_HOME = "/var/lib/dagster"  # DAGSTER_HOME, as netviz_pipeline.render.service_k8s mounts it
PIPELINE_SCRIPTS = ("dagster", "dagster-daemon", "dagster-webserver")
# Left out of the distributions: tests directories, bytecode (compiled again for the image's python),
# kubernetes' asyncio twin of its client (41 MB; nothing imports kubernetes.aio) and the webserver UI's
# source maps (only a browser's developer tools fetch them).
PIPELINE_DROP = re.compile(r"(^|/)(__pycache__|tests)/|\.pyc$|^kubernetes/aio/|^dagster_webserver/webapp/build/.*\.map$")


@dataclass(frozen=True)
class PipelinePlan:
    """What the pipeline image is made from: resolved once per lab_recipes() call."""
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



def launcher(name: str, entry_point: str) -> str:
    """A console script as pip writes it, for the image's python (the venv's point at the venv)."""
    module, _, attr = entry_point.partition(":")
    head = attr.split(".")[0]
    return (f"#!/usr/local/bin/python3\n# netviz image: the `{name}` console script ({entry_point})\n"
            f"import sys\nfrom {module.strip()} import {head.strip()}\n"
            f"if __name__ == \"__main__\":\n    sys.exit({attr.strip()}())\n")


def _compile(rootfs: Rootfs, python: str, directory: str, mode: str) -> None:
    """Byte-compile `directory` of the image with the image's own interpreter (`python`, the same Debian binary):
    the pod's root filesystem is read-only, so without this every process (webserver, daemon, code
    servers, each run's worker) would compile dagster again at start (~5 s). Hash-based pycs: the
    normalised mtimes cannot invalidate them; checked-hash where the source might be mounted over."""
    run([python, "-m", "compileall", "-q", "-j", "0", "--invalidation-mode", mode,
          "-d", directory, str(rootfs.path(directory))])


def populator(plan: PipelinePlan, python: str, stdlib: str) -> Callable[[Rootfs], None]:
    """The rootfs step of the pipeline image, on a base that has `python` (the host's interpreter, also
    the image's) and its standard library at `stdlib`, left uncompiled by the base."""
    def populate(rootfs: Rootfs) -> None:
        if plan.problem:
            raise ImageBuildError(f"netviz-pipeline: {plan.problem}")
        for rel in plan.files:
            rootfs.install(plan.site / rel, f"{PIPELINE_SITE}/{rel}", host=False)
        # every library the extension modules need (libc & co. are in the base already); a library a
        # wheel bundles (e.g. confluent_kafka.libs/librdkafka, found through its $ORIGIN rpath) is one of
        # plan.files, installed above at the same place relative to the site
        site = plan.site.resolve()
        for rel in plan.files:
            if rel.endswith(".so") or ".so." in rel:
                for lib in ldd(str(plan.site / rel)):
                    if not Path(lib).resolve().is_relative_to(site):
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
        _compile(rootfs, python, PIPELINE_SITE, "unchecked-hash")
        _compile(rootfs, python, stdlib, "unchecked-hash")  # the base leaves the stdlib uncompiled
        _compile(rootfs, python, PIPELINE_APP, "checked-hash")
    return populate
