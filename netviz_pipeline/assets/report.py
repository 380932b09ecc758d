"""Metadata a person can read in the Dagster UI: what changed, rollout tables, waiting reasons."""
from __future__ import annotations

from typing import Iterable

import dagster as dg

from ..readiness import Readiness
from ..resources.kube import ApplyOutcome


def apply_metadata(outcomes: Iterable[ApplyOutcome]) -> dict[str, dg.MetadataValue]:
    outcomes = list(outcomes)
    changed = [o for o in outcomes if o.action in ("created", "updated", "adopted")]
    rows = ["| object | action | changed fields / reason |", "|---|---|---|"]
    for o in outcomes:
        detail = o.reason or ", ".join(o.changes[:8]) + (" …" if len(o.changes) > 8 else "")
        rows.append(f"| {o.ref} | {o.action} | {detail} |")
    return {
        "objects": dg.MetadataValue.int(len(outcomes)),
        "changed": dg.MetadataValue.int(len(changed)),
        "skipped": dg.MetadataValue.int(sum(o.action == "skipped" for o in outcomes)),
        "summary": dg.MetadataValue.text(
            f"{len(changed)} of {len(outcomes)} objects changed" if changed
            else f"converged: none of {len(outcomes)} objects changed"),
        "apply": dg.MetadataValue.md("\n".join(rows)),
    }


def rollout_metadata(r: Readiness, obj: dict | None, pods: list[dict]) -> dict[str, dg.MetadataValue]:
    rows = ["| pod | node | phase | IP |", "|---|---|---|---|"]
    for p in sorted(pods, key=lambda p: p["metadata"]["name"]):
        st = p.get("status") or {}
        rows.append(f"| {p['metadata']['name']} | {(p.get('spec') or {}).get('nodeName', '')} | "
                    f"{st.get('phase', '')} | {st.get('podIP', '')} |")
    status = (obj or {}).get("status") or {}
    return {
        "ready": dg.MetadataValue.bool(r.ready),
        "message": dg.MetadataValue.text(r.message),
        "waiting_reasons": dg.MetadataValue.text("; ".join(r.reasons) or "none"),
        "status": dg.MetadataValue.json({k: v for k, v in status.items() if k != "conditions"}),
        "pods": dg.MetadataValue.md("\n".join(rows)),
    }
