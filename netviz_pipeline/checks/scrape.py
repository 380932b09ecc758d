"""Is scraping healthy, and is the collector up; are the alert rules loaded.

One rule for "is scraping healthy", asked by the `scrape_targets_up` check during a run and by the
sensor between runs: every netviz job is in Prometheus's loaded config with a healthy target per
running pod. The GoFlow2 pod's jobs answer "is the collector up" instead when its Deployment serves
nothing (deleted, scaled to zero): a job without pods has no targets at all, and re-running the
scrape config would not bring the collector back.
"""
from __future__ import annotations

from ..findings import Finding
from ..readiness import serving
from ..render import alerts
from ..render import goflow2 as goflow2_render
from ..render.scrape import GOFLOW2_JOB, pod_jobs
from ..resources.prometheus import PrometheusError, PrometheusResource
from ..settings import Settings
from ..targets.prometheus import PrometheusTarget


DOWN_CONFIRM_S = 25.0  # the sensor ticks every 30 s: the next tick confirms


def running_pods(kube, s: Settings) -> dict[str, int]:
    """job -> pods of its app serving now (readiness.serving: one list per app). Not phase Running alone:
    pods on a lost node keep it, and their targets are down for a reason no scrape config can fix."""
    counts: dict[tuple[str, str], int] = {}
    out = {}
    for job, ns, app, _ in pod_jobs(s):
        if (ns, app) not in counts:
            counts[(ns, app)] = sum(map(serving, kube.list("v1", "Pod", ns, label_selector=f"app={app}")))
        out[job] = counts[(ns, app)]
    return out


def collector_problem(kube, s: Settings) -> str | None:
    """Why the GoFlow2 Deployment serves nothing (deleted, scaled to zero, no ready pod), or None."""
    where = f"Deployment {s.goflow2.namespace}/{goflow2_render.NAME}"
    live = kube.get("apps/v1", "Deployment", goflow2_render.NAME, s.goflow2.namespace)
    if live is None:
        return f"{where} is gone"
    if not ((live.get("status") or {}).get("availableReplicas") or 0):
        return f"{where} has no available pod (spec.replicas {(live.get('spec') or {}).get('replicas')})"
    return None


def scrape_findings(s: Settings, targets: list[dict], running: dict[str, int], collector: str | None,
                    prometheus: PrometheusTarget | None, pending_ok: bool = False) -> list[Finding]:
    """[scrape, collector] (collector left out while its job is not loaded) from Prometheus's active targets and the running pods per job.
    `pending_ok`: a target Prometheus has not scraped yet (a pod that just started) is not a problem
    (the sensor's view; a check waits for its first scrape instead). Details of `scrape`: `problems`
    (list) and `targets` (job -> what is up)."""
    goflow2_ns = s.goflow2.namespace
    collector_jobs = {job for job, ns, app, _ in pod_jobs(s) if ns == goflow2_ns and app == "goflow2"}
    goflow2 = [t for t in targets if t.get("labels", {}).get("job") == GOFLOW2_JOB]
    collector_up = any(t.get("health") == "up" for t in goflow2) and not collector
    unknown = not goflow2 and not collector  # its job is not loaded: a scrape problem, nothing known of the pod
    problems, table, collector_errors, down_only = [], {}, [], True
    for job, *_ in pod_jobs(s):
        mine = [t for t in targets if t.get("labels", {}).get("job") == job]
        up = [t for t in mine if t.get("health") == "up" or (pending_ok and t.get("health") == "unknown")]
        want = running.get(job, 0)
        table[job] = f"{len(up)} up of {len(mine)} targets, {want} running pods"
        errors = sorted({t.get("lastError", "") for t in mine if t.get("health") == "down"} - {""})
        if job in collector_jobs and not collector_up and not unknown:
            collector_errors += errors  # one pod: the collector's own finding says it
        elif not mine:
            down_only = False
            problems.append(f"{job}: no running pods to scrape" if want == 0 else
                            f"{job}: not in Prometheus's loaded config yet"
                            + (prometheus.missing_config(s) if prometheus else ""))
        elif len(up) < want:
            problems.append(f"{job}: {len(up)}/{want} targets up" + (f" ({'; '.join(errors)[:300]})" if errors else ""))
    # Targets down (not missing) are watched for a tick before a re-run: a node being lost or a pod being
    # replaced takes them down too, and neither is the scrape config's to fix.
    out = [Finding("scrape", not problems, "; ".join(problems) or "every netviz job has a healthy target per "
                   "running pod", {"problems": problems, "targets": table},
                   confirm_after_s=DOWN_CONFIRM_S if down_only else 0.0)]
    if not unknown:
        out.append(Finding("collector", collector_up, "GoFlow2 metrics target up" if collector_up else
                           f"GoFlow2 metrics target down: {collector or '; '.join(collector_errors) or 'no healthy target'}"))
    return out


def scrape_health(s: Settings, prom: PrometheusResource, kube, prometheus: PrometheusTarget | None,
                  pending_ok: bool = False) -> list[Finding]:
    """`scrape_findings` read live: Prometheus's targets, the pods, the GoFlow2 Deployment."""
    try:
        targets = prom.targets()
    except PrometheusError as exc:
        return [Finding("scrape", False, str(exc), {"problems": [str(exc)], "targets": {}})]
    return scrape_findings(s, targets, running_pods(kube, s), collector_problem(kube, s), prometheus, pending_ok)


def rules_health(s: Settings, prom: PrometheusResource, prometheus: PrometheusTarget) -> Finding:
    """Prometheus has loaded the `netviz` group with every alert we render, none failing to evaluate.
    Details: `problems` (list), and when Prometheus answered `alerts` (name -> state) and `files`."""
    want = alerts.alert_names(s)
    try:
        groups = prom.rules()
    except PrometheusError as exc:
        return Finding("alert_rules", False, str(exc), {"problems": [str(exc)]})
    ours = [g for g in groups if g.get("name") == alerts.GROUP]
    loaded = {r.get("name", ""): r for g in ours for r in g.get("rules") or []}
    table = {n: r.get("state", "") for n, r in loaded.items()}
    problems = [f"{n}: {r.get('lastError') or 'evaluation failed'}" for n, r in loaded.items() if r.get("health") == "err"]
    missing = [n for n in want if n not in loaded]
    if missing:
        problems.insert(0, f"alert rules not loaded in group {alerts.GROUP!r}: {', '.join(missing)}"
                           + prometheus.missing_rules(s))
    return Finding("alert_rules", not problems, "; ".join(problems) or f"all {len(want)} netviz alerts loaded",
                   {"problems": problems, "alerts": table, "files": sorted({g.get("file", "") for g in ours})})
