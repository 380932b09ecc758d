"""Node checks before rolling out Caretta's eBPF agent, from Node objects only (no node access).

Why: Caretta fails in ways that look like "installed but empty": OOM-kill at start on kernels
>= 6.1 (its two 1,000,000-entry BPF maps, ~200 MiB, are charged to the pod's memory cgroup;
caretta #62/#78), no BTF on old or Docker Desktop/WSL kernels (#58), MEMLOCK errors on old ones (#59).
"""
from __future__ import annotations

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


def blocks_rollout(findings: list[Finding], mode: str) -> bool:
    """mode 'block': any error stops the rollout; 'warn': findings are reported only."""
    return mode == "block" and any(f.severity == "error" for f in findings)
