"""Pure pod-spec logic of the pod runner (no I/O), so it can be unit-tested without a lab.

kwok only *pretends* to run pods. The pod runner (podrunner.py) plays kubelet + kube-proxy for them and
must interpret pod specs the way a container runtime would: which local program stands in for an image,
the argv (command/args/$(VAR) expansion, image entrypoint when command is empty), the environment
(value, fieldRef, configMapKeyRef, service links) and the NAT rules kube-proxy would install. Objects
are plain dicts as the API server returns them (camelCase keys).
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from .topology import NODE_IP, NFT_TABLE, POD_NETNS_PREFIX, POD_VETH_PREFIX

CARETTA_STANDIN = "caretta-standin"  # pseudo executable, resolved by the runner to [sys.executable, -m, ...]
PAUSE = ("/usr/bin/sleep", "infinity")  # what the pause image's /pause does: block until killed
SYSTEM_PYTHON = "/usr/bin/python3"
SYSTEM_SH = "/bin/sh"


class SpecError(ValueError):
    """The pod cannot be run here; `reason` becomes the Kubernetes Event reason."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


# -- images ----------------------------------------------------------------------------------------
def parse_image(image: str) -> tuple[str, str]:
    """`docker.io/library/python:3.12-alpine@sha256:..` -> ("python", "3.12-alpine"); tag "latest" if none."""
    ref = image.split("@", 1)[0]
    name, tag = ref, "latest"
    if ":" in ref.rsplit("/", 1)[-1]:
        name, tag = ref.rsplit(":", 1)
    for prefix in ("docker.io/", "index.docker.io/", "registry-1.docker.io/"):
        if name.startswith(prefix):
            name = name[len(prefix):]
    if name.startswith("library/"):
        name = name[len("library/"):]
    return name, tag


@dataclass(frozen=True)
class ImageProfile:
    """What the lab knows about an image: its ENTRYPOINT/CMD/WORKDIR/USER and local executables."""

    kind: str  # goflow2 | python | caretta
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    workdir: str
    user: tuple[int, int] | None  # (uid, gid) of the image's USER, None = root
    executables: dict[str, str] = field(default_factory=dict)  # argv[0] in the image -> local program
    # Files of the image's WORKDIR (name -> local program). There is no image rootfs: when a container
    # runs in the image's WORKDIR, the runner gives it a directory holding these instead, so relative
    # paths from a shell (`exec ./goflow2` in `sh -c`) resolve as they would in the image.
    workdir_files: dict[str, str] = field(default_factory=dict)


def map_image(image: str, goflow2_bin: str, goflow2_version: str) -> ImageProfile:
    """Map an image to a local program, or raise SpecError (never fake a version we did not build)."""
    repo, tag = parse_image(image)
    if repo == "netsampler/goflow2":
        if tag != goflow2_version:
            raise SpecError("LabUnknownImage", f"no local build of goflow2 {tag} (the lab builds {goflow2_version})")
        # Dockerfile: alpine, `adduser -S flow` (uid 100, group nogroup 65533), binary at /goflow2,
        # ENTRYPOINT ["./goflow2"], default WORKDIR /.
        exe = {"./goflow2": goflow2_bin, "/goflow2": goflow2_bin, "goflow2": goflow2_bin,
               "sh": SYSTEM_SH, "/bin/sh": SYSTEM_SH}
        return ImageProfile("goflow2", ("./goflow2",), (), "/", (100, 65533), exe, {"goflow2": goflow2_bin})
    if repo == "python" or repo.endswith("/python"):
        exe = {"sh": SYSTEM_SH, "/bin/sh": SYSTEM_SH}
        for name in ("python", "python3", f"python{tag.split('-')[0]}"):
            for path in ("", "/usr/local/bin/", "/usr/bin/"):
                exe[path + name] = SYSTEM_PYTHON
        return ImageProfile("python", (), ("python3",), "/", None, exe)
    if repo.rsplit("/", 1)[-1] == "pause" and repo.split("/", 1)[0] in ("registry.k8s.io", "k8s.gcr.io", "gcr.io"):
        # The pod sandbox image: a static binary that blocks until signalled (USER 65535:65535).
        return ImageProfile("pause", ("/pause",), (), "/", (65535, 65535), {"/pause": PAUSE[0]})
    if repo == "quay.io/groundcover/caretta":
        # Caretta cannot run here (no kprobes): a stand-in with the same metrics schema runs instead.
        return ImageProfile("caretta", ("/app/caretta",), (), "/app", None,
                            {"/app/caretta": CARETTA_STANDIN, "./caretta": CARETTA_STANDIN,
                             "caretta": CARETTA_STANDIN})
    raise SpecError("LabUnknownImage", f"image {image!r} has no local equivalent in the lab; not run")


# -- $(VAR) expansion (k8s.io/kubernetes third_party/forked/golang/expansion) ---------------------
_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes $(VAR) expansion: defined vars are replaced, `$$` escapes, unknown refs stay as-is."""

    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env[name] if name in env else m.group(0)

    return _REF.sub(sub, value)


def workdir_for(container: dict, profile: ImageProfile) -> tuple[str, dict[str, str]]:
    """(working directory, files to provide in it): the image's WORKDIR files only when the container
    runs in the image's WORKDIR (an explicit other workingDir is used as is)."""
    workdir = container.get("workingDir") or profile.workdir
    return workdir, (dict(profile.workdir_files) if workdir == profile.workdir else {})


def resolve_argv(container: dict, profile: ImageProfile, env: dict[str, str]) -> list[str]:
    """The argv a container runtime would exec, with argv[0] mapped to the local program.

    command set -> command + args (image CMD ignored); only args -> ENTRYPOINT + args;
    neither -> ENTRYPOINT + CMD.
    """
    command = [expand(c, env) for c in container.get("command") or []]
    args = [expand(a, env) for a in container.get("args") or []]
    if command:
        argv = command + args
    elif args:
        argv = list(profile.entrypoint) + args
    else:
        argv = list(profile.entrypoint) + list(profile.cmd)
    if not argv:
        raise SpecError("LabUnsupportedCommand", f"container {container.get('name')}: nothing to run")
    local = profile.executables.get(argv[0])
    if local is None:
        raise SpecError("LabUnsupportedCommand",
                        f"container {container.get('name')}: executable {argv[0]!r} of image "
                        f"{container.get('image')} has no local equivalent (known: {sorted(profile.executables)})")
    if profile.kind == "pause":
        return list(PAUSE)  # pause's own flags (-v) do not matter
    return [local, *argv[1:]]


# -- environment -------------------------------------------------------------------------------------
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def field_ref(pod: dict, path: str) -> str:
    meta, spec, status = pod.get("metadata", {}), pod.get("spec", {}), pod.get("status", {})
    simple = {
        "metadata.name": meta.get("name"), "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"), "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"), "status.podIP": status.get("podIP"),
        "status.hostIP": status.get("hostIP"),
        "status.podIPs": ",".join(p["ip"] for p in status.get("podIPs") or []),
        "status.hostIPs": ",".join(p["ip"] for p in status.get("hostIPs") or []),
    }
    if path in simple:
        return simple[path] or ""
    m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if m:
        return (meta.get(m.group(1)) or {}).get(m.group(2), "")
    raise SpecError("LabContainerConfigError", f"unsupported fieldRef {path}")


def service_link_env(services: list[dict], namespace: str) -> dict[str, str]:
    """Docker-link style variables kubelet injects (enableServiceLinks): <NAME>_SERVICE_HOST etc.

    Services of the pod's namespace, plus `kubernetes` from `default` (kubelet always adds it).
    """
    env: dict[str, str] = {}
    for svc in services:
        meta, spec = svc["metadata"], svc.get("spec", {})
        ip = spec.get("clusterIP")
        if not ip or ip == "None":
            continue
        if meta["namespace"] != namespace and not (meta["namespace"] == "default" and meta["name"] == "kubernetes"):
            continue
        ports = spec.get("ports") or []
        if not ports:
            continue
        prefix = meta["name"].upper().replace("-", "_")
        env[f"{prefix}_SERVICE_HOST"] = ip
        env[f"{prefix}_SERVICE_PORT"] = str(ports[0]["port"])
        for p in ports:
            if p.get("name"):
                env[f"{prefix}_SERVICE_PORT_{p['name'].upper().replace('-', '_')}"] = str(p["port"])
        first = ports[0]
        proto = first.get("protocol", "TCP").lower()
        env[f"{prefix}_PORT"] = f"{proto}://{ip}:{first['port']}"
        for p in ports:
            pr = p.get("protocol", "TCP")
            base = f"{prefix}_PORT_{p['port']}_{pr}"
            env[base] = f"{pr.lower()}://{ip}:{p['port']}"
            env[f"{base}_PROTO"] = pr.lower()
            env[f"{base}_PORT"] = str(p["port"])
            env[f"{base}_ADDR"] = ip
    return env


def build_env(pod: dict, container: dict, configmaps: dict[str, dict], secrets: dict[str, dict],
              services: list[dict], profile: ImageProfile, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The container's environment: image env, service links, envFrom, env (in kubelet's order).

    `configmaps`/`secrets` map name -> object of the pod's namespace. Missing non-optional references
    raise SpecError(LabContainerConfigError), as kubelet reports CreateContainerConfigError.
    """
    spec = pod.get("spec", {})
    env: dict[str, str] = {"PATH": BASE_PATH, "HOSTNAME": pod["metadata"]["name"]}
    if profile.kind == "python":
        env |= {"LANG": "C.UTF-8"}
    if spec.get("enableServiceLinks", True):
        env |= service_link_env(services, pod["metadata"]["namespace"])
    else:
        env |= {k: v for k, v in service_link_env(services, "default").items() if k.startswith("KUBERNETES_")}
    for src in container.get("envFrom") or []:
        prefix = src.get("prefix", "")
        if "configMapRef" in src:
            ref = src["configMapRef"]
            obj = configmaps.get(ref["name"])
            if obj is None and not ref.get("optional"):
                raise SpecError("LabContainerConfigError", f"configmap {ref['name']!r} not found")
            env |= {prefix + k: v for k, v in ((obj or {}).get("data") or {}).items()}
        elif "secretRef" in src:
            ref = src["secretRef"]
            obj = secrets.get(ref["name"])
            if obj is None and not ref.get("optional"):
                raise SpecError("LabContainerConfigError", f"secret {ref['name']!r} not found")
            env |= {prefix + k: _b64(v) for k, v in ((obj or {}).get("data") or {}).items()}
    for var in container.get("env") or []:
        name = var["name"]
        if "valueFrom" not in var:
            env[name] = expand(var.get("value", ""), env)
            continue
        vf = var["valueFrom"]
        if "fieldRef" in vf:
            env[name] = field_ref(pod, vf["fieldRef"]["fieldPath"])
        elif "configMapKeyRef" in vf or "secretKeyRef" in vf:
            is_cm = "configMapKeyRef" in vf
            ref = vf["configMapKeyRef" if is_cm else "secretKeyRef"]
            obj = (configmaps if is_cm else secrets).get(ref["name"])
            data = (obj or {}).get("data") or {}
            if ref["key"] not in data:
                if ref.get("optional"):
                    continue
                what = "configmap" if is_cm else "secret"
                raise SpecError("LabContainerConfigError", f"{what} {ref['name']!r} key {ref['key']!r} not found")
            env[name] = data[ref["key"]] if is_cm else _b64(data[ref["key"]])
        elif "resourceFieldRef" in vf:
            env[name] = _resource_field(container, vf["resourceFieldRef"])
        else:
            raise SpecError("LabContainerConfigError", f"unsupported valueFrom for {name}: {sorted(vf)}")
    if extra:
        env |= extra
    return env


def _b64(value: str) -> str:
    import base64

    return base64.b64decode(value).decode()


def _resource_field(container: dict, ref: dict) -> str:
    res = ref["resource"]  # e.g. limits.memory
    kind, _, name = res.partition(".")
    value = ((container.get("resources") or {}).get(kind) or {}).get(name)
    return str(value) if value is not None else "0"


# -- names -------------------------------------------------------------------------------------------
def pod_hash(namespace: str, name: str) -> str:
    """Short stable id of a pod: names its netns and host veth (IFNAMSIZ is 15 incl. the prefix)."""
    return hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()[:10]


def pod_netns(namespace: str, name: str) -> str:
    return POD_NETNS_PREFIX + pod_hash(namespace, name)


def pod_veth(namespace: str, name: str) -> str:
    return POD_VETH_PREFIX + pod_hash(namespace, name)


def container_fingerprint(container: dict) -> str:
    """Changes when a container must be restarted (kubelet restarts a container whose spec changed)."""
    import json

    return hashlib.sha256(json.dumps(container, sort_keys=True).encode()).hexdigest()[:16]


def backoff(restarts: int, cap: float = 30.0) -> float:
    """CrashLoopBackOff-ish delay before restart number `restarts` (1-based): 1, 2, 4, ... cap."""
    return min(cap, 2.0 ** max(0, restarts - 1))


# -- kube-proxy --------------------------------------------------------------------------------------
def selector_matches(selector: dict | None, labels: dict | None) -> bool:
    """Service selectors are equality-only; an empty/absent selector selects nothing (manual endpoints)."""
    if not selector:
        return False
    labels = labels or {}
    return all(labels.get(k) == v for k, v in selector.items())


def target_port(port: dict, pod: dict) -> int | None:
    """Resolve a Service port's targetPort (number or container port name) for one pod."""
    tp = port.get("targetPort", port["port"])
    if isinstance(tp, int) or (isinstance(tp, str) and tp.isdigit()):
        return int(tp)
    for c in pod.get("spec", {}).get("containers", []):
        for cp in c.get("ports") or []:
            if cp.get("name") == tp and cp.get("protocol", "TCP") == port.get("protocol", "TCP"):
                return int(cp["containerPort"])
    return None


@dataclass(frozen=True)
class NatRule:
    comment: str
    daddr: str
    proto: str  # tcp | udp
    dport: int
    endpoints: tuple[tuple[str, int], ...]  # (podIP, port), sorted


def nat_rules(services: list[dict], pods: list[dict], node_ip: str = NODE_IP) -> list[NatRule]:
    """DNAT rules kube-proxy would install for ClusterIPs and NodePorts of `pods` (the runnable ones).

    No masquerade: the backend sees the client's real address (GoFlow2 reports the exporter as `router`).
    """
    rules: list[NatRule] = []
    for svc in sorted(services, key=lambda s: (s["metadata"]["namespace"], s["metadata"]["name"])):
        meta, spec = svc["metadata"], svc.get("spec", {})
        backends = [p for p in pods if p["metadata"]["namespace"] == meta["namespace"]
                    and selector_matches(spec.get("selector"), p["metadata"].get("labels"))
                    and p.get("status", {}).get("podIP")]
        for port in spec.get("ports") or []:
            proto = port.get("protocol", "TCP").lower()
            if proto not in ("tcp", "udp"):
                continue
            eps = []
            for pod in backends:
                tp = target_port(port, pod)
                if tp is not None:
                    eps.append((pod["status"]["podIP"], tp))
            if not eps:
                continue
            eps_t = tuple(sorted(eps))
            name = f"{meta['namespace']}/{meta['name']}:{port.get('name') or port['port']}"
            cip = spec.get("clusterIP")
            if cip and cip != "None":
                rules.append(NatRule(name, cip, proto, int(port["port"]), eps_t))
            if spec.get("type") in ("NodePort", "LoadBalancer") and port.get("nodePort"):
                rules.append(NatRule(name + " nodePort", node_ip, proto, int(port["nodePort"]), eps_t))
    return rules


def stale_udp_targets(old: list[NatRule], new: list[NatRule]) -> list[tuple[str, int]]:
    """(address, port) of UDP services whose backends changed, appeared or went away.

    A UDP "connection" that keeps sending (softflowd to the NetFlow NodePort) keeps its conntrack
    entry, and with it the DNAT to the pod it first reached, for as long as it sends: after the pod
    is replaced, every datagram would still go to the old pod IP. kube-proxy deletes those entries
    when a UDP service's endpoints change; so does the pod runner (`conntrack -D`)."""
    def udp(rules):
        return {(r.daddr, r.dport): r.endpoints for r in rules if r.proto == "udp"}

    before, after = udp(old), udp(new)
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


def render_nft(rules: list[NatRule], table: str = NFT_TABLE, chain: str = "nodeports") -> str:
    """One atomic nft transaction: flush the chain and rewrite it (random load balancing like kube-proxy)."""
    lines = [f"flush chain ip {table} {chain}"]
    for r in rules:
        match = f"ip daddr {r.daddr} {r.proto} dport {r.dport}"
        if len(r.endpoints) == 1:
            ip, port = r.endpoints[0]
            action = f"dnat to {ip}:{port}"
        else:
            entries = ", ".join(f"{i} : {ip} . {port}" for i, (ip, port) in enumerate(r.endpoints))
            action = f"dnat to numgen random mod {len(r.endpoints)} map {{ {entries} }}"
        lines.append(f"add rule ip {table} {chain} {match} {action} comment \"{r.comment}\"")
    return "\n".join(lines) + "\n"
