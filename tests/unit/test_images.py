"""netviz_lab.images: recipes, cache keys, rootfs content and the import logic (no root, no containerd).

Names are patched in the submodule that uses them (builder, recipes, venv_pack): the package only re-exports."""
from __future__ import annotations

import io
import json
import shutil
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from netviz_lab import images, versions
from netviz_lab.images import builder, recipes, venv_pack
from netviz_lab.lab import Lab
from netviz_pipeline.render import goflow2 as render_goflow2
from netviz_pipeline.settings import Caretta, Flows, GoFlow2



@pytest.fixture
def lab(tmp_path) -> Lab:
    return Lab(root=tmp_path / "root", cache=tmp_path / "cache")


@pytest.fixture
def fixed_debian(monkeypatch):
    """Debian package versions pinned, so keys do not depend on this machine."""
    state = {"overrides": {}}

    def fake(packages):
        return {p: state["overrides"].get(p, "1.0-1") for p in sorted(set(packages))}

    monkeypatch.setattr(recipes, "debian_versions", fake)
    return state["overrides"]


def by_name(lab: Lab) -> dict[str, images.Recipe]:
    return {r.name: r for r in images.lab_recipes(lab)}


def keys(lab: Lab) -> dict[str, str]:
    return {n: r.key for n, r in by_name(lab).items()}


def config(recipe: images.Recipe) -> dict[str, list[str]]:
    """`umoci config` options as option -> values (repeatable options collect)."""
    out: dict[str, list[str]] = {}
    args = list(recipe.config)
    while args:
        opt = args.pop(0)
        if "=" in opt:
            opt, _, value = opt.partition("=")
        else:
            value = args.pop(0)
        out.setdefault(opt, []).append(value)
    return out


# -- what is built ----------------------------------------------------------------------------------
def test_recipes_cover_the_images_the_product_references(lab, fixed_debian):
    refs = {r.ref for r in images.lab_recipes(lab)}
    product = {Caretta().image, GoFlow2().image, Flows().image}
    assert {images.normalize(ref) for ref in product} <= refs
    assert images.normalize(GoFlow2().image) == f"docker.io/netsampler/goflow2:{versions.GOFLOW2}"
    pipeline = by_name(lab)["netviz-pipeline"]
    assert refs - {pipeline.ref} == {"registry.k8s.io/pause:3.10", "docker.io/netsampler/goflow2:v2.2.1",
                                     "docker.io/library/python:3.12-alpine", "quay.io/groundcover/caretta:v0.0.16",
                                     "quay.io/prometheus/prometheus:v3.16.0",
                                     "quay.io/prometheus-operator/prometheus-config-reloader:v0.85.0",
                                     "quay.io/prometheus-operator/prometheus-operator:v0.85.0"}
    assert pipeline.ref == images.pipeline_image_ref(lab) == f"localhost/netviz-pipeline:0.1.0-{pipeline.key}"


def test_prometheus_module_versions_map_to_release_tags():
    assert images.prometheus_release("v0.316.0") == "v3.16.0"
    assert images.prometheus_release("v0.300.1") == "v3.0.1"
    with pytest.raises(images.ImageBuildError, match="v0.3xx.y"):
        images.prometheus_release("v2.53.0")


def test_normalize_matches_containerd_cri():
    assert images.normalize("python:3.12-alpine") == "docker.io/library/python:3.12-alpine"
    assert images.normalize("netsampler/goflow2:v2.2.1") == "docker.io/netsampler/goflow2:v2.2.1"
    assert images.normalize("quay.io/groundcover/caretta:v0.0.16") == "quay.io/groundcover/caretta:v0.0.16"
    assert images.normalize("localhost/x:1") == "localhost/x:1"


def test_build_order_puts_the_base_first(lab, fixed_debian):
    names = [r.name for r in images.lab_recipes(lab)]
    caretta = by_name(lab)["caretta"]
    assert caretta.base == "python" and names.index("python") < names.index("caretta")


def test_tarball_names_carry_version_and_key(lab, fixed_debian):
    r = by_name(lab)["goflow2"]
    assert r.tarball(lab.cache) == lab.cache / "images" / f"goflow2-{versions.GOFLOW2}-{r.key}.tar"
    assert len(r.key) == 12 and int(r.key, 16) >= 0


def test_image_configs_reproduce_upstream(lab, fixed_debian):
    r = by_name(lab)
    pause = config(r["pause"])
    assert pause["--config.entrypoint"] == ["/pause"] and pause["--config.user"] == ["65535:65535"]
    flow = config(r["goflow2"])
    assert flow["--config.user"] == ["flow"]  # a NAME, as upstream: runAsNonRoot needs a numeric runAsUser
    assert flow["--config.entrypoint"] == ["./goflow2"]
    assert "--config.workingdir" not in flow
    assert flow["--config.env"] == [images.PATH_ENV]
    py = config(r["python"])
    assert "--config.user" not in py and py["--config.cmd"] == ["python3"]
    assert py["--config.env"] == [images.PATH_ENV, "LANG=C.UTF-8"]
    (label,) = py["--config.label"]
    assert label.startswith("io.netviz.lab.substitute=Debian python3 ") and "(glibc)" in label
    assert label.endswith("standing in for python:3.12-alpine (no registry here)")
    car = config(r["caretta"])
    assert car["--config.workingdir"] == ["/app"]  # upstream WORKDIR /app, CMD ./caretta, no USER
    assert car["--clear"] == ["config.cmd"] and car["--config.cmd"] == ["/bin/sh", "-c", "./caretta"]
    assert "--config.user" not in car
    assert car["--config.label"] == ["io.netviz.lab.standin=netviz lab Caretta stand-in, not Caretta "
                                     "(this kernel has no kprobes)"]


# -- cache keys -------------------------------------------------------------------------------------
def test_cache_key_is_stable(lab, fixed_debian):
    assert keys(lab) == keys(lab)


def test_cache_key_follows_goflow2_version(lab, fixed_debian, monkeypatch):
    before = keys(lab)
    monkeypatch.setattr(versions, "GOFLOW2", "v9.9.9")
    after = keys(lab)
    assert after["goflow2"] != before["goflow2"]
    assert by_name(lab)["goflow2"].ref == "docker.io/netsampler/goflow2:v9.9.9"
    assert {n: k for n, k in after.items() if n != "goflow2"} == {n: k for n, k in before.items() if n != "goflow2"}


def test_cache_key_follows_debian_versions(lab, fixed_debian):
    before = keys(lab)
    fixed_debian["libssl3"] = "3.0.99-1"  # python links it; so does the image built on top of python
    after = keys(lab)
    assert after["python"] != before["python"] and after["caretta"] != before["caretta"]
    assert after["goflow2"] == before["goflow2"] and after["pause"] == before["pause"]
    fixed_debian["busybox-static"] = "1:9.9-1"
    assert keys(lab)["goflow2"] != before["goflow2"]
    fixed_debian["iproute2"] = "9.9-1"
    assert keys(lab)["caretta"] != after["caretta"]
    fixed_debian["gcc-12"] = "99"
    assert keys(lab)["pause"] != before["pause"]


def test_cache_key_follows_standin_content(lab, fixed_debian, monkeypatch, tmp_path):
    before = keys(lab)
    copy = tmp_path / "caretta_standin.py"
    copy.write_bytes(images.STANDIN.read_bytes() + b"\n# changed\n")
    monkeypatch.setattr(recipes, "STANDIN", copy)
    after = keys(lab)
    assert after["caretta"] != before["caretta"]
    assert {n: k for n, k in after.items() if n != "caretta"} == {n: k for n, k in before.items() if n != "caretta"}


def test_cache_key_follows_pause_source_and_recipe_version(lab, fixed_debian, monkeypatch):
    before = keys(lab)
    monkeypatch.setattr(recipes, "PAUSE_C", recipes.PAUSE_C + "\n/* changed */\n")
    assert keys(lab)["pause"] != before["pause"]
    monkeypatch.setattr(recipes, "RECIPE_VERSION", recipes.RECIPE_VERSION + "-next")
    assert all(keys(lab)[n] != before[n] for n in before)


def test_every_recipe_lists_the_packages_its_key_covers(lab, fixed_debian):
    for r in images.lab_recipes(lab):
        covered = {k.removeprefix("deb:") for k in r.inputs if k.startswith("deb:")}
        base = by_name(lab)[r.base].packages if r.base else ()
        assert set(r.packages) <= covered | set(base), r.name


# -- rootfs content ---------------------------------------------------------------------------------
def _passwd(path: Path) -> dict[str, list[str]]:
    return {line.split(":")[0]: line.split(":") for line in path.read_text().splitlines()}


@pytest.mark.skipif(not Path("/bin/busybox").exists(), reason="busybox-static not installed")
def test_goflow2_rootfs_users_and_shell(tmp_path):
    fake = tmp_path / "goflow2-fake"
    fake.write_text("#!/bin/sh\n")
    rootfs = images.Rootfs(tmp_path / "rootfs")
    recipes._populate_goflow2(fake)(rootfs)
    users = _passwd(rootfs.path("/etc/passwd"))
    assert users["flow"][2:4] == ["100", "65533"] and users["flow"][5] == "/"  # adduser -S -D -H -h / flow
    assert users["nobody"][2] == "65534" and users["root"][2] == "0"
    groups = _passwd(rootfs.path("/etc/group"))
    assert groups["nogroup"][2] == "65533" and groups["nobody"][2] == "65534"
    # the pipeline runs the container by number as the image's own user
    uid, gid = getattr(render_goflow2, "GOFLOW2_UID", 100), getattr(render_goflow2, "GOFLOW2_GID", 65533)
    assert (users["flow"][2], users["flow"][3]) == (str(uid), str(gid))
    for applet in ("sh", "mkfifo", "rm", "ls", "cat", "sleep", "echo", "wget", "id", "ps", "kill", "mkdir",
                   "test", "["):
        assert rootfs.path(f"/bin/{applet}").readlink() == Path("/bin/busybox"), applet
    assert rootfs.path("/goflow2").stat().st_mode & 0o111
    assert rootfs.path("/tmp").stat().st_mode & 0o7777 == 0o1777
    assert rootfs.host_files == {"/bin/busybox"}  # the goflow2 binary is not from a Debian package


def test_python_passwd_has_the_flowagg_user():
    # the aggregator container runs as FLOWAGG_UID (nobody); the substitute's /etc/passwd has it
    users = {line.split(":")[0]: line.split(":") for line in images.PYTHON_PASSWD.splitlines()}
    assert users["nobody"][2] == str(render_goflow2.FLOWAGG_UID) and users["root"][2] == "0"
    assert set(users) == {"root", "nobody"}


def test_stdlib_drop_list():
    for name in ("test", "idlelib", "tkinter", "turtledemo", "ensurepip", "__pycache__", "lib2to3"):
        assert name in images.STDLIB_DROP
    assert images.DYNLOAD_DROP.match("_testcapi.cpython-311-x86_64-linux-gnu.so")
    assert not images.DYNLOAD_DROP.match("_ssl.cpython-311-x86_64-linux-gnu.so")


def test_place_reproduces_symlinks(tmp_path, monkeypatch):
    """/lib -> usr/lib style links are recreated in the image, and the file lands at the real path."""
    host = tmp_path / "host"
    (host / "usr/lib/x").mkdir(parents=True)
    (host / "usr/lib/x/libfoo.so.1.2").write_text("elf")
    (host / "usr/lib/x/libfoo.so.1").symlink_to("libfoo.so.1.2")
    (host / "lib").symlink_to("usr/lib")
    rootfs = images.Rootfs(tmp_path / "rootfs")
    # run place() on host paths below tmp_path: the image mirrors them under rootfs/<tmp_path>
    rootfs.place(str(host / "lib/x/libfoo.so.1"))
    mirror = rootfs.path(str(host))
    assert (mirror / "lib").readlink() == Path("usr/lib")
    assert (mirror / "usr/lib/x/libfoo.so.1").readlink() == Path("libfoo.so.1.2")
    assert (mirror / "usr/lib/x/libfoo.so.1.2").read_text() == "elf"
    assert rootfs.host_files == {str(host / "usr/lib/x/libfoo.so.1.2")}


def test_merged_usr_aliases():
    assert "/usr/lib/x86_64-linux-gnu/libc.so.6" in builder._aliases("/lib/x86_64-linux-gnu/libc.so.6")
    assert "/bin/ip" in builder._aliases("/usr/bin/ip")


# -- pause ------------------------------------------------------------------------------------------
@pytest.mark.skipif(not shutil.which("gcc"), reason="no gcc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_pause_exits_0_on_stop_signals(tmp_path, sig):
    src = tmp_path / "pause.c"
    src.write_text(images.PAUSE_C)
    binary = tmp_path / "pause"
    subprocess.run(["gcc", "-Os", '-DPAUSE_VERSION="test"', "-o", str(binary), str(src)], check=True)
    proc = subprocess.Popen([str(binary)], stderr=subprocess.DEVNULL)
    time.sleep(0.2)
    assert proc.poll() is None  # it blocks
    proc.send_signal(sig)
    assert proc.wait(timeout=5) == 0


# -- cache and import logic -------------------------------------------------------------------------
def test_ensure_images_is_a_noop_when_cached(lab, fixed_debian, monkeypatch):
    for r in images.lab_recipes(lab):
        r.tarball(lab.cache).parent.mkdir(parents=True, exist_ok=True)
        r.tarball(lab.cache).write_bytes(b"cached")
    monkeypatch.setattr(builder, "_build", lambda *a, **k: pytest.fail("rebuilt a cached image"))
    got = images.ensure_images(lab)
    assert [i.ref for i in got] == [r.ref for r in images.lab_recipes(lab)]
    assert all(i.tarball.exists() for i in got)


def _layout_tar(path: Path, digest: str, tag: str) -> Path:
    index = {"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                                "digest": digest, "size": 1,
                                                "annotations": {"org.opencontainers.image.ref.name": tag}}]}
    data = json.dumps(index).encode()
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("index.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


def test_import_only_what_is_missing_or_different(tmp_path, monkeypatch):
    a = images.Image("docker.io/library/python:3.12-alpine", _layout_tar(tmp_path / "a.tar", "sha256:aaa", "3.12-alpine"))
    b = images.Image("registry.k8s.io/pause:3.10", _layout_tar(tmp_path / "b.tar", "sha256:bbb", "3.10"))
    c = images.Image("quay.io/groundcover/caretta:v0.0.16", _layout_tar(tmp_path / "c.tar", "sha256:ccc", "v0.0.16"))
    store = {a.ref: "sha256:aaa", b.ref: "sha256:old"}  # a current, b stale, c missing
    calls = []

    def fake_ctr(address, namespace, *args):
        calls.append(args)
        if args[:2] == ("images", "check"):
            rows = [f"{ref} application/vnd.oci.image.manifest.v1+json {d} complete (2/2) 1.0 MiB/1.0 MiB true"
                    for ref, d in store.items()]
            return "REF TYPE DIGEST STATUS SIZE UNPACKED\n" + "\n".join(rows) + "\n"
        assert args[:4] == ("images", "import", "--base-name", args[3]) and namespace == "k8s.io"
        tar = Path(args[4])
        img = next(i for i in (a, b, c) if i.tarball == tar)
        assert args[3] == img.ref.rsplit(":", 1)[0]
        store[img.ref] = images.manifest_digest(tar)
        return ""

    monkeypatch.setattr(builder, "_ctr", fake_ctr)
    assert images.import_images("/run/x.sock", [a, b, c]) == [b.ref, c.ref]
    calls.clear()
    assert images.import_images("/run/x.sock", [a, b, c]) == []
    assert all(call[:2] == ("images", "check") for call in calls)


def test_present_images_ignores_incomplete_or_not_unpacked(monkeypatch):
    out = ("REF TYPE DIGEST STATUS SIZE UNPACKED\n"
           "x:1 application/vnd.oci.image.manifest.v1+json sha256:1 complete (2/2) 1 MiB/1 MiB true\n"
           "y:1 application/vnd.oci.image.manifest.v1+json sha256:2 incomplete (1/2) 1 MiB/2 MiB false\n"
           "z:1 application/vnd.oci.image.manifest.v1+json sha256:3 complete (2/2) 1 MiB/1 MiB false\n")
    monkeypatch.setattr(builder, "_ctr", lambda *a: out)
    assert images.present_images("/run/x.sock") == {"x:1": "sha256:1"}


# -- the pipeline's own image -----------------------------------------------------------------------
def _dist(site: Path, name: str, version: str, files: list[str], requires: list[str] = (),
          scripts: dict[str, str] | None = None) -> None:
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" +
                                   "".join(f"Requires-Dist: {r}\n" for r in requires))
    if scripts:
        (info / "entry_points.txt").write_text("[console_scripts]\n" + "".join(f"{k} = {v}\n" for k, v in scripts.items()))
    rows = [*files, f"{info.name}/METADATA", f"{info.name}/RECORD,,"]
    (info / "RECORD").write_text("".join(f"{r},sha256=x,1\n" if not r.endswith(",,") else r + "\n" for r in rows))


@pytest.fixture
def project(tmp_path) -> Path:
    """A project like this one (pyproject, code, dashboards, workspace) with a venv holding runtime and
    test-only distributions."""
    repo = tmp_path / "project"
    (repo / "netviz_pipeline").mkdir(parents=True)
    (repo / "netviz_pipeline/__init__.py").write_text("X = 1\n")
    (repo / "netviz_pipeline/__pycache__").mkdir()
    (repo / "netviz_pipeline/__pycache__/__init__.cpython-311.pyc").write_bytes(b"stale")
    (repo / "dashboards").mkdir()
    (repo / "dashboards/a.json").write_text("{}")
    (repo / "workspace.yaml").write_text("load_from: []\n")
    (repo / "pyproject.toml").write_text(
        '[project]\nname = "netviz"\nversion = "0.1.0"\n'
        'dependencies = ["dagster==1.0", "dagster-webserver==1.0", "requests[socks]==2.0", '
        '"tomli==2.0; python_version < \'3.0\'"]\n'
        '[project.optional-dependencies]\ntest = ["pytest==9.0"]\n')
    site = repo / ".venv" / images.PIPELINE_VENV_SITE
    _dist(site, "dagster", "1.0", ["dagster/__init__.py", "dagster/tests/test_x.py", "dagster/__pycache__/x.cpython-311.pyc",
                                   "dagster/_x.cpython-311-x86_64-linux-gnu.so", "../../../bin/dagster"],
          requires=["PyYAML>=5", 'pytest; extra == "test"'],
          scripts={"dagster": "dagster._cli:main", "dagster-daemon": "dagster._daemon.cli:main"})
    _dist(site, "dagster-webserver", "1.0", ["dagster_webserver/__init__.py", "dagster_webserver/webapp/build/a.js",
                                             "dagster_webserver/webapp/build/a.js.map"],
          requires=["dagster==1.0"], scripts={"dagster-webserver": "dagster_webserver.cli:main"})
    _dist(site, "PyYAML", "6.0", ["yaml/__init__.py"])
    _dist(site, "requests", "2.0", ["requests/__init__.py"],
          requires=['PySocks!=1.5.7; extra == "socks"', 'chardet; python_version < "3"'])
    _dist(site, "PySocks", "1.7", ["socks.py"])
    _dist(site, "pytest", "9.0", ["pytest/__init__.py"], requires=["pluggy"])
    _dist(site, "pluggy", "1.0", ["pluggy/__init__.py"])
    _dist(site, "kubernetes", "37.0", ["kubernetes/__init__.py", "kubernetes/aio/__init__.py"])
    return repo


def test_pipeline_plan_copies_the_runtime_distributions_only(project):
    plan = images.pipeline_plan(project)
    assert not plan.problem
    assert plan.dists == ("dagster==1.0", "dagster-webserver==1.0", "PySocks==1.7", "PyYAML==6.0", "requests==2.0")
    assert "dagster/__init__.py" in plan.files and "dagster/_x.cpython-311-x86_64-linux-gnu.so" in plan.files
    assert "dagster_webserver/webapp/build/a.js" in plan.files
    for dropped in ("dagster/tests/test_x.py", "dagster/__pycache__/x.cpython-311.pyc", "../../../bin/dagster",
                    "dagster_webserver/webapp/build/a.js.map", "pytest/__init__.py", "pluggy/__init__.py"):
        assert dropped not in plan.files
    assert dict(plan.scripts) == {"dagster": "dagster._cli:main", "dagster-daemon": "dagster._daemon.cli:main",
                                  "dagster-webserver": "dagster_webserver.cli:main"}
    assert plan.version == "0.1.0"
    assert images.pipeline_files("kubernetes/__init__.py,,\nkubernetes/aio/api.py,,\n") == ["kubernetes/__init__.py"]


def test_pipeline_key_follows_sources_and_venv(project, monkeypatch, lab, fixed_debian):
    plan = venv_pack.pipeline_plan
    monkeypatch.setattr(venv_pack, "pipeline_plan", lambda: plan(project))
    before = keys(lab)
    assert keys(lab) == before  # unchanged trees: the cached image is reused
    r = by_name(lab)["netviz-pipeline"]
    assert r.ref == f"localhost/netviz-pipeline:0.1.0-{r.key}" and r.on_demand and r.base == "python"
    (project / "netviz_pipeline/__pycache__/__init__.cpython-311.pyc").write_bytes(b"other bytecode")
    assert keys(lab) == before  # bytecode is not an input
    (project / "netviz_pipeline/__init__.py").write_text("X = 2\n")
    changed = keys(lab)
    assert changed["netviz-pipeline"] != before["netviz-pipeline"]
    assert {n: k for n, k in changed.items() if n != "netviz-pipeline"} == \
           {n: k for n, k in before.items() if n != "netviz-pipeline"}
    (project / "dashboards/a.json").write_text('{"title": "x"}')
    assert keys(lab)["netviz-pipeline"] != changed["netviz-pipeline"]
    changed = keys(lab)
    record = next((project / ".venv" / images.PIPELINE_VENV_SITE).glob("PyYAML-*.dist-info")) / "RECORD"
    record.write_text(record.read_text() + "yaml/_yaml.cpython-311-x86_64-linux-gnu.so,sha256=y,2\n")  # reinstalled
    assert keys(lab)["netviz-pipeline"] != changed["netviz-pipeline"]
    changed = keys(lab)
    fixed_debian["libstdc++6"] = "99"
    assert keys(lab)["netviz-pipeline"] != changed["netviz-pipeline"]


def test_pipeline_plan_without_a_usable_venv_fails_the_build_not_the_lab(project, tmp_path):
    plan = images.pipeline_plan(project, venv=tmp_path / "no-venv")
    assert "no such directory" in plan.problem and plan.inputs["venv"].startswith("unusable")
    with pytest.raises(images.ImageBuildError, match="no such directory"):
        venv_pack.populator(plan, images.HOST_PYTHON, images.HOST_STDLIB)(images.Rootfs(tmp_path / "rootfs"))
    shutil.rmtree(next((project / ".venv" / images.PIPELINE_VENV_SITE).glob("PyYAML-*.dist-info")))
    plan = images.pipeline_plan(project)
    assert "PyYAML (needed by dagster) is not installed" in plan.problem


def test_pipeline_tag_and_launchers():
    assert images.pipeline_tag("0.1.0", "0123456789ab") == "0.1.0-0123456789ab"
    text = images.launcher("dagster-daemon", "dagster._daemon.cli:main")
    assert text.startswith("#!/usr/local/bin/python3\n")
    assert "from dagster._daemon.cli import main\n" in text and "sys.exit(main())" in text
    compile(text, "dagster-daemon", "exec")


def test_pipeline_image_config(lab, fixed_debian):
    r = by_name(lab)["netviz-pipeline"]
    cfg = config(r)
    assert cfg["--config.workingdir"] == ["/app"]
    assert cfg["--config.env"] == [images.PATH_ENV, "LANG=C.UTF-8", "PYTHONUNBUFFERED=1", "DAGSTER_HOME=/var/lib/dagster"]
    assert "--config.entrypoint" not in cfg and "--config.user" not in cfg  # the Deployment gives command and user
    assert set(cfg["--clear"]) == {"config.labels", "config.env", "config.cmd"}  # not the substitute's label
    assert cfg["--config.cmd"][0] == "dagster-webserver"
    smoke = "\n".join(" ".join(cmd) for cmd in r.smoke)
    assert "import netviz_pipeline.definitions" in smoke and "dagster-daemon --help" in smoke
    assert set(r.packages) >= {"libgcc-s1", "libstdc++6", *by_name(lab)["python"].packages}


def test_ensure_images_replaces_superseded_pipeline_builds(lab, fixed_debian, monkeypatch):
    all_recipes = by_name(lab)
    for r in all_recipes.values():
        if r.name != "netviz-pipeline":
            r.tarball(lab.cache).parent.mkdir(parents=True, exist_ok=True)
            r.tarball(lab.cache).write_bytes(b"cached")
    old = lab.cache / "images" / "netviz-pipeline-0.1.0-aaaaaaaaaaaa-aaaaaaaaaaaa.tar"
    old.write_bytes(b"previous source")
    built = []
    monkeypatch.setattr(builder.os, "geteuid", lambda: 0)
    monkeypatch.setattr(builder, "_build", lambda r, by, cache, out: (built.append(r.name), out.write_bytes(b"new")))
    # `up` need not wait for it
    assert all(not i.on_demand for i in images.ensure_images(lab, build_on_demand=False)) and built == []
    images.ensure_images(lab)
    assert built == ["netviz-pipeline"] and not old.exists()
    assert all(r.tarball(lab.cache).exists() for r in all_recipes.values())  # the other images' tarballs stay
