"""Soak (issue 12): the single-host service on the lab with default settings, one router made quiet
(its LAN sends nothing), for --minutes (default 60). Counts the health sensor's verdicts per router
and the remediation runs: a quiet link must raise no alarm. Also samples the memory and CPU of
dagster-webserver and dagster-daemon (with the code servers they start), idle and during a deploy
launched through the webserver. Needs the lab up (`python -m netviz_lab up`); writes
bench-results/soak.json.

    .venv/bin/python benchmarks/soak.py [--minutes 60] [--quiet nvz-pfsense]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from netviz_lab import router as lab_router  # noqa: E402
from netviz_lab import settings as lab_settings  # noqa: E402
from netviz_lab.lab import Lab  # noqa: E402

PORT = 3077
CLK = os.sysconf("SC_CLK_TCK")


def service(*args: str, env: dict) -> str:
    return subprocess.run([sys.executable, "-m", "netviz_pipeline.service", *args], env=env, check=True,
                          capture_output=True, text=True).stdout


def group(pid: int) -> list[int]:
    """The process and everything in its process group (the code servers it spawned)."""
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if os.getpgid(int(p.name)) == pid:
                    out.append(int(p.name))
            except OSError:
                pass
    return out


def usage(pid: int) -> tuple[float, dict[int, float]]:
    """(RSS MiB summed over the process group, CPU seconds per process in it)."""
    rss, cpu = 0.0, {}
    for p in group(pid):
        try:
            status = Path(f"/proc/{p}/status").read_text()
            stat = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        rss += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0) / 1024
        cpu[p] = (int(stat[11]) + int(stat[12])) / CLK
    return rss, cpu


def sample(pids: dict[str, int], seconds: float) -> dict:
    """Peak RSS and mean CPU (% of one core) per service over `seconds`. CPU is summed per process from
    its first to its last sight, so run workers that start and exit meanwhile count too."""
    peak = {n: 0.0 for n in pids}
    first: dict[str, dict[int, float]] = {n: {} for n in pids}
    last: dict[str, dict[int, float]] = {n: {} for n in pids}
    t0 = time.monotonic()
    while True:
        for n, p in pids.items():
            rss, cpu = usage(p)
            peak[n] = max(peak[n], rss)
            for q, c in cpu.items():
                first[n].setdefault(q, c if time.monotonic() - t0 < 0.5 else 0.0)  # new process: from 0
                last[n][q] = c
        if time.monotonic() - t0 >= seconds:
            break
        time.sleep(1)
    dt = time.monotonic() - t0
    return {n: {"rss_peak_mib": round(peak[n], 1),
                "cpu_pct": round(100 * sum(last[n][q] - first[n][q] for q in last[n]) / dt, 1)} for n in pids}


def gql(query: str, **variables) -> dict:
    return requests.post(f"http://127.0.0.1:{PORT}/graphql", json={"query": query, "variables": variables},
                         timeout=30).json()["data"]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--quiet", default="nvz-pfsense", help="lab router whose LAN goes quiet")
    a = ap.parse_args()
    lab = Lab()
    quiet = lab_router.router_by_name(a.quiet)
    work = Path(tempfile.mkdtemp(prefix="netviz-soak-"))
    settings = work / "netviz.yaml"
    settings.write_text(lab_settings.render(lab))
    home = work / "dagster"
    env = {**os.environ, "DAGSTER_HOME": str(home), "NETVIZ_CONFIG": str(settings)}
    service("init", env=env)
    print(service("start", "--port", str(PORT), env=env), flush=True)
    results: dict = {"minutes": a.minutes, "quiet_router": a.quiet}
    try:
        pids = {n: int((home / "netviz-service" / "run" / f"{n}.pid").read_text()) for n in ("webserver", "daemon")}
        results["idle"] = sample(pids, 60)
        launched = gql("""mutation($p: ExecutionParams!) { launchRun(executionParams: $p) {
            ... on LaunchRunSuccess { run { runId } } } }""", p={"selector": {
            "repositoryLocationName": "netviz", "repositoryName": "__repository__", "jobName": "netviz_deploy"},
            "runConfigData": {}})
        run_id = launched["launchRun"]["run"]["runId"]
        t0 = time.monotonic()
        results["deploy"] = sample(pids, 45)
        while gql('query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }', id=run_id)[
                "runOrError"]["status"] not in ("SUCCESS", "FAILURE"):
            time.sleep(2)
        results["deploy_seconds"] = round(time.monotonic() - t0, 1)
        lab_router.set_traffic(lab, quiet, paused=True)
        soak_start = time.time()
        print(f"{quiet.name} quiet; soaking {a.minutes} min", flush=True)
        time.sleep(a.minutes * 60)
        soak_end = time.time()
        results["soak_idle"] = sample(pids, 30)
    finally:
        lab_router.set_traffic(lab, quiet, paused=False)
        print(service("stop", env=env), flush=True)
    results.update(verdicts(home, soak_start, soak_end))
    out = ROOT / "bench-results" / "soak.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=1, sort_keys=True))
    print(json.dumps(results, indent=1, sort_keys=True))
    return 0 if results["failed_evaluations"] == 0 and results["remediation_runs"] == 0 else 1


def verdicts(home: Path, start: float, end: float) -> dict:
    """netflow_arriving evaluations the daemon's sensor recorded during the soak, and remediation runs."""
    os.environ["DAGSTER_HOME"] = str(home)
    import dagster as dg
    from dagster._core.definitions.asset_checks.asset_check_spec import AssetCheckKey

    inst = dg.DagsterInstance.get()
    key = AssetCheckKey(dg.AssetKey("router_softflowd"), "netflow_arriving")
    records = [r for r in inst.event_log_storage.get_asset_check_execution_history(key, limit=100000)
               if start <= r.create_timestamp <= end]
    causes: dict[str, dict[str, int]] = {}
    failed = 0
    for r in records:
        data = r.event.dagster_event.event_specific_data
        failed += not data.passed
        for subject, value in data.metadata.items():
            cause = str(value.value).split(":", 1)[0]
            causes.setdefault(subject, {}).setdefault(cause, 0)
            causes[subject][cause] += 1
    runs = inst.get_run_records(filters=dg.RunsFilter(tags={"netviz/remediation": "true"}))
    return {"evaluations": len(records), "failed_evaluations": failed, "causes": causes,
            "remediation_runs": sum(start <= r.create_timestamp.timestamp() <= end for r in runs)}


if __name__ == "__main__":
    sys.exit(main())
