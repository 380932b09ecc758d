"""Pod volumes without a container filesystem: materialise them on disk, bind-mount them privately.

There is no image rootfs, so a container's process runs on the host filesystem inside its own mount
namespace (`unshare --mount --propagation slave`), where each volume directory is bind-mounted at the
container's mountPath. The host filesystem is not changed by the mounts. A mountPath must already exist
on the host, or lie under a scratch root (/tmp, /run, /var/run, /etc/netviz-*) where the runner creates
the empty mountpoint; anything else is refused with a clear Event (creating e.g. /data or /etc/goflow2
on the host would pollute it). Slave propagation keeps /run/netns live inside the container (the
Caretta stand-in enters pod namespaces created after it started).

ConfigMap/Secret/projected/downwardAPI volumes use kubelet's AtomicWriter layout (`..<ts>` dir,
`..data` symlink, one symlink per key), so a refresh swaps content atomically and a bind-mounted
directory sees the new files — just as apps that watch `..data` expect. subPath mounts do not update
(same as kubelet).
"""
from __future__ import annotations

import base64
import os
import shlex
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .podspec import SpecError, field_ref

SCRATCH_ROOTS = ("/tmp", "/run", "/etc/netviz-")
PROJECTED_KINDS = ("configMap", "secret", "projected", "downwardAPI")  # kubelet mounts these read-only


@dataclass
class Sources:
    """Lookups the runner provides (namespace-scoped): name -> object or None; token(sa, audience, ttl)."""

    configmap: Callable[[str], dict | None]
    secret: Callable[[str], dict | None]
    token: Callable[[str, str | None, int], str]


def volume_kind(volume: dict) -> str:
    for kind in ("configMap", "secret", "emptyDir", "hostPath", "projected", "downwardAPI"):
        if kind in volume:
            return kind
    other = sorted(k for k in volume if k != "name")
    raise SpecError("LabVolumeUnsupported", f"volume {volume['name']!r} of type {other} is not supported")


def _keyed(data: dict[str, bytes], items: list[dict] | None, default_mode: int, what: str,
           optional: bool) -> dict[str, tuple[bytes, int]]:
    if items:
        out = {}
        for it in items:
            if it["key"] not in data:
                if optional:
                    continue
                raise SpecError("LabVolumeError", f"{what}: key {it['key']!r} not found")
            out[it["path"]] = (data[it["key"]], it.get("mode", default_mode))
        return out
    return {k: (v, default_mode) for k, v in data.items()}


def _cm_data(obj: dict | None) -> dict[str, bytes]:
    obj = obj or {}
    data = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
    data |= {k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()}
    return data


def _secret_data(obj: dict | None) -> dict[str, bytes]:
    return {k: base64.b64decode(v) for k, v in ((obj or {}).get("data") or {}).items()}


def volume_files(volume: dict, pod: dict, src: Sources) -> dict[str, tuple[bytes, int]]:
    """Files (relative path -> (content, mode)) of a configMap/secret/projected/downwardAPI volume."""
    kind = volume_kind(volume)
    spec = volume[kind]
    mode = spec.get("defaultMode", 0o644)
    if kind == "configMap":
        obj = src.configmap(spec["name"])
        if obj is None and not spec.get("optional"):
            raise SpecError("LabVolumeError", f"configmap {spec['name']!r} not found")
        return _keyed(_cm_data(obj), spec.get("items"), mode, f"configmap {spec['name']}", spec.get("optional", False))
    if kind == "secret":
        obj = src.secret(spec["secretName"])
        if obj is None and not spec.get("optional"):
            raise SpecError("LabVolumeError", f"secret {spec['secretName']!r} not found")
        return _keyed(_secret_data(obj), spec.get("items"), mode, f"secret {spec['secretName']}",
                      spec.get("optional", False))
    if kind == "downwardAPI":
        return _downward(spec.get("items") or [], pod, mode)
    files: dict[str, tuple[bytes, int]] = {}
    for s in spec.get("sources") or []:  # projected
        if "configMap" in s:
            cm = s["configMap"]
            obj = src.configmap(cm["name"])
            if obj is None and not cm.get("optional"):
                raise SpecError("LabVolumeError", f"configmap {cm['name']!r} not found")
            files |= _keyed(_cm_data(obj), cm.get("items"), mode, f"configmap {cm['name']}", cm.get("optional", False))
        elif "secret" in s:
            sec = s["secret"]
            obj = src.secret(sec["name"])
            if obj is None and not sec.get("optional"):
                raise SpecError("LabVolumeError", f"secret {sec['name']!r} not found")
            files |= _keyed(_secret_data(obj), sec.get("items"), mode, f"secret {sec['name']}",
                            sec.get("optional", False))
        elif "downwardAPI" in s:
            files |= _downward(s["downwardAPI"].get("items") or [], pod, mode)
        elif "serviceAccountToken" in s:
            t = s["serviceAccountToken"]
            sa = pod["spec"].get("serviceAccountName") or "default"
            token = src.token(sa, t.get("audience"), int(t.get("expirationSeconds", 3600)))
            files[t["path"]] = (token.encode(), 0o600 if mode == 0o644 else mode)
        else:
            raise SpecError("LabVolumeUnsupported", f"projected source {sorted(s)} is not supported")
    return files


def _downward(items: list[dict], pod: dict, mode: int) -> dict[str, tuple[bytes, int]]:
    out = {}
    for it in items:
        if "fieldRef" not in it:
            raise SpecError("LabVolumeUnsupported", f"downwardAPI item {it.get('path')}: only fieldRef supported")
        path = it["fieldRef"]["fieldPath"]
        if path in ("metadata.labels", "metadata.annotations"):
            d = pod["metadata"].get(path.split(".")[1]) or {}
            value = "\n".join(f'{k}="{v}"' for k, v in sorted(d.items()))
        else:
            value = field_ref(pod, path)
        out[it["path"]] = (value.encode(), it.get("mode", mode))
    return out


# -- kubelet AtomicWriter layout -------------------------------------------------------------------
def read_current(target: Path) -> dict[str, tuple[bytes, int]]:
    data = target / "..data"
    out: dict[str, tuple[bytes, int]] = {}
    if not data.is_dir():
        return out
    for root, _dirs, names in os.walk(data, followlinks=False):
        for n in names:
            p = Path(root) / n
            out[str(p.relative_to(data))] = (p.read_bytes(), p.stat().st_mode & 0o7777)
    return out


def atomic_write(target: Path, files: dict[str, tuple[bytes, int]]) -> bool:
    """Write `files` into `target` like kubelet; returns False when nothing changed."""
    target.mkdir(parents=True, exist_ok=True)
    if (target / "..data").is_dir() and read_current(target) == files:
        return False
    ts = target / (time.strftime("..%Y_%m_%d_%H_%M_%S.") + str(time.monotonic_ns() % 10**9))
    ts.mkdir(mode=0o755)
    for rel, (content, mode) in files.items():
        p = ts / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content)
        p.chmod(mode)
    old = os.readlink(target / "..data") if (target / "..data").is_symlink() else None
    tmp = target / "..data_tmp"
    if tmp.is_symlink():
        tmp.unlink()
    os.symlink(ts.name, tmp)
    os.replace(tmp, target / "..data")
    top = {rel.split("/", 1)[0] for rel in files}
    for name in top:
        link = target / name
        if not link.is_symlink():
            os.symlink(f"..data/{name}", link)
    for entry in target.iterdir():
        if entry.name.startswith(".."):
            continue
        if entry.is_symlink() and entry.name not in top:
            entry.unlink()
    if old and (target / old).is_dir():
        shutil.rmtree(target / old)
    return True


# -- mounts ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool


def _nearest_existing(path: str) -> str:
    p = Path(path)
    while not p.exists():
        p = p.parent
    return os.path.realpath(p)


def prepare_mountpoint(mount: Mount) -> None:
    """Make sure the mountpoint exists, creating it only under the scratch roots (see module doc)."""
    src_is_dir = os.path.isdir(mount.source)
    if os.path.lexists(mount.target):
        if src_is_dir != os.path.isdir(mount.target):
            raise SpecError("LabMountUnsupported",
                            f"mountPath {mount.target}: host path exists with a different file type")
        return
    anchor = _nearest_existing(mount.target)
    rel = os.path.relpath(mount.target, _nearest_existing_lexical(mount.target))
    real_target = os.path.normpath(os.path.join(anchor, rel))
    if not any(real_target == r or real_target.startswith(r if r.endswith("-") else r + "/") for r in SCRATCH_ROOTS):
        raise SpecError("LabMountUnsupported",
                        f"mountPath {mount.target} does not exist on the lab host and is not under "
                        f"{', '.join(SCRATCH_ROOTS)}; the lab has no container filesystem to create it in "
                        f"(use an existing directory or one under a scratch root)")
    if src_is_dir:
        os.makedirs(real_target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(real_target), exist_ok=True)
        Path(real_target).touch()


def _nearest_existing_lexical(path: str) -> str:
    p = Path(path)
    while not p.exists():
        p = p.parent
    return str(p)


def launch_argv(netns: str | None, hostname: str, mounts: list[Mount], workdir: str,
                user: tuple[int, int] | None, argv: list[str]) -> list[str]:
    """argv that enters the pod netns, gets a private mount+UTS namespace, mounts, then execs.

    The final process keeps the Popen pid (nsenter, unshare and sh all exec), so the runner can
    signal and wait on the container process directly.
    """
    script = [f"hostname {shlex.quote(hostname[:63])}"]
    for m in mounts:
        if os.path.normpath(m.source) == os.path.normpath(m.target):
            continue  # hostPath mounted at its own path (Caretta's /proc): already visible
        s, t = shlex.quote(m.source), shlex.quote(m.target)
        script.append(f"mount --bind {s} {t}")
        if m.read_only:
            script.append(f"mount -o remount,bind,ro {t}")
    script.append(f"cd {shlex.quote(workdir)} 2>/dev/null || cd /")
    script.append("unset OLDPWD")  # set by `cd`; not part of the container's environment
    exe = 'exec "$@"'
    if user is not None:
        exe = f"exec setpriv --reuid={user[0]} --regid={user[1]} --clear-groups \"$@\""
    script.append(exe)
    body = "\n".join(script)
    inner = ["unshare", "--mount", "--uts", "--propagation", "slave", "--", "/bin/sh", "-ec", body, "sh", *argv]
    return (["nsenter", f"--net=/run/netns/{netns}", "--"] if netns else []) + inner
