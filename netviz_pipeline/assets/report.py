"""Metadata a person can read in the Dagster UI: what changed, rollout tables, waiting reasons."""
from __future__ import annotations

from typing import Iterable

import dagster as dg

from ..readiness import Readiness
from ..resources.kube import ApplyOutcome


_TYPES = {bool: "bool", int: "int", float: "float"}


def table(rows: list[dict]) -> dg.MetadataValue:
    """A Dagster table (sortable in the UI, numbers kept as numbers); columns typed from the first row."""
    first = rows[0] if rows else {}
    schema = dg.TableSchema(columns=[dg.TableColumn(k, _TYPES.get(type(v), "string")) for k, v in first.items()])
    return dg.MetadataValue.table(records=[dg.TableRecord(r) for r in rows], schema=schema)


def apply_metadata(outcomes: Iterable[ApplyOutcome]) -> dict[str, dg.MetadataValue]:
    outcomes = list(outcomes)
    changed = [o for o in outcomes if o.action in ("created", "updated", "adopted")]
    rows = [{"object": o.ref, "action": o.action,
             "changed fields / reason": o.reason or ", ".join(o.changes[:8]) + (" …" if len(o.changes) > 8 else "")}
            for o in outcomes]
    return {
        "objects": dg.MetadataValue.int(len(outcomes)),
        "changed": dg.MetadataValue.int(len(changed)),
        "skipped": dg.MetadataValue.int(sum(o.action == "skipped" for o in outcomes)),
        "summary": dg.MetadataValue.text(
            f"{len(changed)} of {len(outcomes)} objects changed" if changed
            else f"converged: none of {len(outcomes)} objects changed"),
        "apply": table(rows),
    }


def rollout_metadata(r: Readiness, obj: dict | None, pods: list[dict]) -> dict[str, dg.MetadataValue]:
    rows = [{"pod": p["metadata"]["name"], "node": (p.get("spec") or {}).get("nodeName", ""),
             "phase": (p.get("status") or {}).get("phase", ""), "IP": (p.get("status") or {}).get("podIP", "")}
            for p in sorted(pods, key=lambda p: p["metadata"]["name"])]
    status = (obj or {}).get("status") or {}
    return {
        "ready": dg.MetadataValue.bool(r.ready),
        "message": dg.MetadataValue.text(r.message),
        "waiting_reasons": dg.MetadataValue.text("; ".join(r.reasons) or "none"),
        "status": dg.MetadataValue.json({k: v for k, v in status.items() if k != "conditions"}),
        "pods": table(rows),
    }


def finding_result(f, severity=dg.AssetCheckSeverity.ERROR) -> dg.AssetCheckResult:
    """A check result from a checks/ Finding: its verdict, its reason, its figures (JSON-able scalars)."""
    meta = {k: v for k, v in f.details.items() if isinstance(v, (str, int, float, bool))}
    return dg.AssetCheckResult(passed=f.healthy, severity=severity, description=f.reason,
                               metadata=meta | {"reason": dg.MetadataValue.text(f.reason)})
