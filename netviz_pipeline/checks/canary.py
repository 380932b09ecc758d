"""Is canary traffic sent now seen as its own top-talker flow within the deadline: the configured command
runs (in a pod through the API's exec when `checks.canary_pod` is set, else on the pipeline's host), and
the pair's byte counter must grow in Prometheus."""
from __future__ import annotations

import subprocess
import time

from .. import freshness
from ..findings import Finding
from ..resources.prometheus import PrometheusResource
from ..settings import Settings
from . import poll

# Sent again while unseen: a flow exported before GoFlow2 has the exporter's v9 template (a collector
# that just started) is dropped, and softflowd re-sends templates only every 16 packets.
RESEND_S = 5.0


def run_canary(s: Settings, kube) -> str:
    """Send the canary traffic; returns where it ran. Raises with its output when it fails."""
    c = s.checks
    if c.canary_pod:
        pod, rc, out = kube.exec_in_pod(c.canary_pod.namespace, c.canary_pod.label_selector, c.canary_command,
                                        c.canary_pod.container, timeout=c.deadline_seconds)
        where = f"pod {c.canary_pod.namespace}/{pod}"
    else:
        res = subprocess.run(c.canary_command, capture_output=True, text=True, timeout=c.deadline_seconds)
        rc, out, where = res.returncode, res.stdout + res.stderr, "the pipeline's host"
    if rc != 0:
        raise RuntimeError(f"canary command exited {rc} in {where}: {out.strip()[-500:]}")
    return where


def canary_finding(s: Settings, prom: PrometheusResource, kube) -> Finding:
    """Subject `canary`. Details: `bytes_counted`, `sends`, `sent_from`, `waited_s`; or `error` when the
    command itself failed."""
    c = s.checks
    q = freshness.current_talker_query(str(c.canary_source), str(c.canary_destination))
    before = freshness.value(prom.query(q))
    try:
        where = run_canary(s, kube)
    except Exception as exc:  # noqa: BLE001 - reported as the check's failure
        return Finding("canary", False, str(exc), {"error": str(exc)})
    sent = last = time.monotonic()
    sends = 1

    def seen() -> Finding:
        nonlocal last, sends
        v = freshness.value(prom.query(q))
        if v <= before and time.monotonic() - last >= RESEND_S:
            try:
                run_canary(s, kube)
                sends += 1
            except Exception:  # noqa: BLE001 - the first send worked; keep waiting for it
                pass
            last = time.monotonic()
        return Finding("canary", v > before, f"{v - before:.0f} bytes counted for the canary's flow", {"bytes": v})

    f = poll(seen, timeout=c.deadline_seconds, interval=0.5)
    waited = round(time.monotonic() - sent, 1) if f.healthy else float(c.deadline_seconds)
    return Finding("canary", f.healthy, f.reason, {"bytes_counted": f.details["bytes"] - before, "sends": sends,
                                                    "sent_from": where, "waited_s": waited})
