"""The Caretta preflight probe: a short-lived DaemonSet that asks each node's kernel what Node objects
cannot tell, whether it has kprobes (Caretta's probe is a kprobe on tcp_data_queue) and BTF.

Each pod prints one JSON line and then sleeps until the caretta asset deletes the DaemonSet. It runs
the python image the aggregators run (`image`, on the admission policy's list) unprivileged, with
nothing from the host mounted: /proc/config.gz, /proc/kallsyms and /sys/kernel/btf/vmlinux are
readable from any container, and every other way to the node is shut (Pod Security "restricted").

`probe_result` and `_probe_main` are shipped as source (`SCRIPT`): stdlib only, Python >= 3.9.
"""
from __future__ import annotations

import inspect
import json

from ..settings import Settings
from . import caretta, labels

NAME = "caretta-preflight"
SELECTOR = {"app": NAME}
UID = 65534  # nobody: the python image would run as root otherwise


def probe_result(kallsyms_text: str | None, config_text: str | None, btf_exists: bool, kernel: str,
                 node: str) -> dict:
    """What one node's kernel says. Evidence for kprobes, best first: the kernel's own config
    (CONFIG_KPROBES=y or not: decisive either way); else its symbol table, which lists
    register_kprobe only when kprobes are built in (names are listed even where addresses are
    hidden); else unknown (None)."""
    import re

    if config_text is not None:
        kprobes, source = bool(re.search(r"^CONFIG_KPROBES=y\s*$", config_text, re.M)), "/proc/config.gz"
    elif kallsyms_text is not None:
        found = re.search(r"^\S+\s+\S\s+register_kprobe(?:\s|$)", kallsyms_text, re.M)
        kprobes, source = found is not None, "/proc/kallsyms"
    else:
        kprobes, source = None, "neither /proc/config.gz nor /proc/kallsyms readable"
    return {"kernel": kernel, "kprobes": kprobes, "btf": btf_exists, "source": source, "node": node}


def _probe_main() -> None:
    """In the probe pod: print the result, then wait to be deleted (a DaemonSet restarts what exits)."""
    import gzip
    import json
    import os
    import signal
    import sys
    import time

    def read(path, opener=open):
        try:
            with opener(path, "rt") as f:
                return f.read()
        except (OSError, ValueError, EOFError):  # absent, unreadable, or not gzip/text
            return None

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # PID 1 ignores SIGTERM without a handler
    config = read("/proc/config.gz", gzip.open)
    kallsyms = read("/proc/kallsyms") if config is None else None
    print(json.dumps(probe_result(kallsyms, config, os.path.exists("/sys/kernel/btf/vmlinux"),
                                  os.uname().release, os.environ.get("NODE_NAME", ""))), flush=True)
    while True:
        time.sleep(3600)


# the annotations import keeps `str | None` in the shipped signature valid on Python 3.9
SCRIPT = "\n\n".join(["from __future__ import annotations", inspect.getsource(probe_result),
                       inspect.getsource(_probe_main), "_probe_main()\n"])


def parse_answer(log: str) -> dict | None:
    """The probe's JSON line from a pod's log (the last one that parses); None: not printed yet."""
    for line in reversed(log.splitlines()):
        try:
            answer = json.loads(line)
        except ValueError:
            continue
        if isinstance(answer, dict) and "kprobes" in answer:
            return answer
    return None


def image(s: Settings) -> str:
    """The kafka aggregators' image with the kafka transport (the FIFO sidecar's is not on the admission
    policy's list then), else the FIFO sidecar's: an image the nodes already run or will."""
    return s.flows.kafka.image if s.flows.enabled and s.flows.transport == "kafka" else s.flows.image


def daemonset(s: Settings) -> dict:
    """One probe pod on every node Caretta's DaemonSet would run on (same nodeSelector, tolerations)."""
    container = {
        "name": "probe", "image": image(s), "imagePullPolicy": "IfNotPresent",
        "command": ["python3", "-c", SCRIPT],
        "env": [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"cpu": "200m", "memory": "64Mi"}},
        "securityContext": {"runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID,
                            "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
    }
    pod = {
        "serviceAccountName": "default", "automountServiceAccountToken": False,
        "securityContext": {"runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "nodeSelector": dict(caretta.NODE_SELECTOR),
        "tolerations": [dict(t) for t in caretta.TOLERATIONS],
        "terminationGracePeriodSeconds": 5,
        "containers": [container],
    }
    return {"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": NAME, "namespace": s.caretta.namespace, "labels": labels(NAME, "preflight")},
            "spec": {"selector": {"matchLabels": SELECTOR},
                     "template": {"metadata": {"labels": labels(NAME, "preflight")}, "spec": pod}}}
