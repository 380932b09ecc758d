"""Node checks before rolling out Caretta's eBPF agent: from Node objects (`caretta_preflight`), and
from what the preflight probe read on each node (`probe_findings`; render/preflight_probe.py).

Why: Caretta fails in ways that look like "installed but empty": OOM-kill at start on kernels
>= 6.1 (its two 1,000,000-entry BPF maps, ~200 MiB, are charged to the pod's memory cgroup;
caretta #62/#78), no BTF on old or Docker Desktop/WSL kernels (#58), MEMLOCK errors on old ones (#59),
and a kernel built without kprobes (CONFIG_KPROBES unset), where its probe cannot attach at all. Node
objects do not show kernel config; only a look on the node does.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from kubernetes.utils import parse_quantity

MIN_KERNEL = (4, 14)  # below this the eBPF features Caretta uses are missing
BTF_LIKELY = (5, 4)  # distros ship /sys/kernel/btf/vmlinux from about here on
MEMCG_CHARGE = (6, 1)  # BPF map memory is charged to the loading pod's cgroup
MIN_LIMIT_MIB_MEMCG = 450  # ~200 MiB of maps + agent heap and Kubernetes informer caches
_NO_BTF_HINTS = ("linuxkit", "microsoft-standard", "-wsl")


@dataclass(frozen=True)
class Finding:
    severity: str  # "error" | "warning" | "info"
    node: str
    message: str
    check: str = ""  # "kprobes": the one error `caretta.preflight: standin` goes ahead on


def mebibytes(quantity: str) -> float:
    """A Kubernetes memory quantity ("512Mi", "1G") in MiB; ValueError when it is none."""
    return float(parse_quantity(quantity) / 2**20)


def parse_kernel_version(text: str | None) -> tuple[int, int, int] | None:
    """'6.1.0-18-amd64' -> (6, 1, 0); '5.10.162+' -> (5, 10, 162); junk -> None."""
    m = re.match(r"\s*(\d+)\.(\d+)(?:\.(\d+))?", text or "")
    return (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)) if m else None


def _node_info(node: dict) -> tuple[str, str, str]:
    meta = node.get("metadata") or {}
    info = (node.get("status") or {}).get("nodeInfo") or (node.get("status") or {}).get("node_info") or {}
    kernel = info.get("kernelVersion", info.get("kernel_version", ""))
    os_name = info.get("operatingSystem", info.get("operating_system", "linux"))
    return meta.get("name", "?"), kernel or "", os_name or "linux"


def caretta_preflight(nodes: list[dict], memory_limit: str) -> list[Finding]:
    limit_mib = mebibytes(memory_limit)
    out: list[Finding] = []
    for node in nodes:
        name, kernel, os_name = _node_info(node)
        if os_name != "linux":
            out.append(Finding("info", name, f"{os_name} node: Caretta is not scheduled there (nodeSelector)"))
            continue
        version = parse_kernel_version(kernel)
        if version is None:
            out.append(Finding("warning", name, f"kernel version {kernel!r} unknown: cannot check eBPF support"))
            continue
        if version[:2] < MIN_KERNEL:
            out.append(Finding("error", name, f"kernel {kernel} is older than 4.14: Caretta's eBPF probes cannot load"))
            continue
        if version[:2] < BTF_LIKELY or any(h in kernel.lower() for h in _NO_BTF_HINTS):
            out.append(Finding("warning", name, f"kernel {kernel} likely has no BTF (/sys/kernel/btf/vmlinux): "
                                                "Caretta may fail to load"))
        if version[:2] >= MEMCG_CHARGE and limit_mib < MIN_LIMIT_MIB_MEMCG:
            out.append(Finding("error", name, f"kernel {kernel} charges Caretta's BPF maps (~200 MiB) to the pod: "
                                              f"memory limit {memory_limit} will be OOM-killed at start; set "
                                              f"caretta.resources.memory_limit to at least {MIN_LIMIT_MIB_MEMCG}Mi"))
    return out


def nodes_fingerprint(nodes: list[dict]) -> str:
    """sha256 of the sorted "node=bootID" of the linux nodes: a probe's answer holds while it is unchanged
    (a reboot or a new kernel changes the boot ID; a node added or removed changes the set)."""
    lines = []
    for node in nodes:
        name, _, os_name = _node_info(node)
        if os_name == "linux":
            lines.append(f"{name}={((node.get('status') or {}).get('nodeInfo') or {}).get('bootID', '')}")
    return hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest()


def no_kprobes(node: str, kernel: str) -> Finding:
    return Finding("error", node, f"kernel {kernel} has no kprobes (CONFIG_KPROBES unset): Caretta's probe (a kprobe "
                                  "on tcp_data_queue) cannot attach; its map stays empty", "kprobes")


def probe_findings(results: dict[str, dict | str | None], nodes: list[dict]) -> list[Finding]:
    """What the probe found per linux node. A result is the probe's answer (a dict), or why the node
    was not probed (a str; None or absent: no probe pod ran there). A node that passes has none."""
    out: list[Finding] = []
    for node in nodes:
        name, _, os_name = _node_info(node)
        if os_name != "linux":
            continue
        r = results.get(name)
        if not isinstance(r, dict):
            why = r or "no probe pod ran there (a taint Caretta's DaemonSet does not tolerate, or the node is not ready)"
            out.append(Finding("warning", name, f"not probed: {why}; kprobes and BTF unchecked"))
            continue
        kernel = r.get("kernel") or "?"
        if r.get("kprobes") is False:
            out.append(no_kprobes(name, kernel))
        elif r.get("kprobes") is None:
            out.append(Finding("warning", name, f"kernel {kernel}: kprobes unknown ({r.get('source')})"))
        if r.get("btf") is False:
            out.append(Finding("warning", name, f"kernel {kernel} has no BTF (/sys/kernel/btf/vmlinux): "
                                                "Caretta may fail to load"))
    return out


def recorded_findings(no_kprobes_nodes: list[str], nodes: list[dict]) -> list[Finding]:
    """The kprobes errors an earlier probe recorded, for nodes unchanged since (same boot IDs)."""
    kernels = {name: kernel for name, kernel, _ in map(_node_info, nodes)}
    return [no_kprobes(n, kernels.get(n) or "?") for n in no_kprobes_nodes]


def blocks_rollout(findings: list[Finding], mode: str) -> bool:
    """mode 'block': any error stops the rollout; 'warn': findings are reported only; 'standin': the
    operator runs a stand-in where Caretta cannot: errors other than missing kprobes still block."""
    errors = [f for f in findings if f.severity == "error"]
    if mode == "standin":
        return any(f.check != "kprobes" for f in errors)
    return mode == "block" and bool(errors)


def overridden(findings: list[Finding], mode: str) -> list[str]:
    """Nodes without kprobes that `standin` went ahead on (sorted; empty in other modes)."""
    if mode != "standin":
        return []
    return sorted({f.node for f in findings if f.check == "kprobes" and f.severity == "error"})
