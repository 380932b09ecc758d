"""make bench: how fast netviz converges, how it scales, what it costs (issue 6), on the running lab.

Every figure is measured in the same run as its baseline, on the same lab:

(a) import and Dagster overhead: `python -c "import netviz_pipeline"`; for each CLI run, wall time of
    `dagster job execute` minus the run's own duration (process start, imports, code location, instance)
    and the run's duration minus the sum of its step times (the in-process executor between steps).
(b) cold deploy (what the pipeline created deleted first: namespaces caretta and goflow2, the dashboard
    ConfigMaps in monitoring, ClusterRole/Binding caretta, the netviz-* scrape jobs and file_sd targets;
    softflowd on the routers is left configured: kubectl has no equivalent of that step) and converged
    re-run of netviz_deploy through the CLI with the lab's settings and the RBAC-restricted kubeconfig,
    against `kubectl apply --server-side` of the same rendered manifests + `kubectl rollout status` of the
    DaemonSet and the Deployment (same kubeconfig, fresh kubectl cache). Per-step times from the run's
    event log; API requests counted by the API server (APF dispatch counter of the `global-default` flow
    schema, which only the netviz-pipeline user hits in the lab: every lab component is system:masters or
    a kube-system service account); Prometheus queries counted by Prometheus (`prometheus_http_requests_total`).
(c) packet on the wire -> flow visible in Prometheus: the canary (HTTP from the Linux router's LAN
    canary address to its WAN host), until netviz_flow_talker_bytes_total{src,dst} grows; N rounds.
(d) exporter stopped -> freshness check failing: softflowd killed on the Linux router, the
    flow_freshness sensor ticked every second with a 12 s NetFlow window until netflow_arriving fails
    for it; then router_softflowd restores it.
(e) sensor tick with 1, 10 and 50 exporters (extra routers point at the two lab routers' addresses, so
    every exporter is healthy; the sensor only queries Prometheus per router, it never contacts them).
(f) DaemonSet rollout verification with 3, 50 and 500 kwok nodes (plus the 2 real ones, where the
    Caretta stand-in really runs; kwok pods run nothing): the caretta asset + caretta_rollout check
    materialised in-process vs `kubectl rollout status`, from a deleted DaemonSet; and the verification
    of an already rolled-out DaemonSet (time, API requests).
(g) memory: peak RSS of the dagster CLI process (wait4) and of the flow aggregator in the lab (VmHWM).

Prints a table and writes it to bench-results/bench.txt (and the raw figures to bench.json).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import dagster as dg  # noqa: E402
import yaml  # noqa: E402

from netviz_lab import cluster as lab_cluster  # noqa: E402
from netviz_lab import clusterapi  # noqa: E402
from netviz_lab import settings as lab_settings  # noqa: E402
from netviz_lab.lab import Lab  # noqa: E402
from netviz_lab.router import router_pids  # noqa: E402
from netviz_lab.supervisor import read_state  # noqa: E402
from netviz_lab.topology import LINUX_ROUTER  # noqa: E402

DAGSTER = str(Path(sys.executable).with_name("dagster"))
PROM = "http://127.0.0.1:9090"
APF_SCHEMA = "global-default"  # the netviz-pipeline user's flow schema (see the docstring)
# Steps that do what `kubectl apply --server-side` + `kubectl rollout status` do (apply + rollout wait).
SAME_WORK = ("caretta", "caretta_caretta_rollout", "goflow2", "goflow2_goflow2_rollout", "caretta_dashboard",
             "goflow2_dashboard")


# -- measurement helpers -------------------------------------------------------------------------------
def median(xs):
    return statistics.median(xs) if xs else float("nan")


def p90(xs):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(0.9 * (len(xs) - 1)))] if xs else float("nan")


def _metric_sum(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


class Counters:
    """Real request counts, read from the servers: API server (APF dispatches of the pipeline user's
    flow schema) and Prometheus (HTTP API queries)."""

    def __init__(self, lab: Lab):
        b = lab_cluster.bundle(lab)
        self.ctx = lab_cluster.tls_context(b.ca.cert, b["admin"])

    def api(self) -> float:
        text = lab_cluster.http_get(f"{lab_cluster.server_url()}/metrics", self.ctx, timeout=20)
        return _metric_sum(text, "apiserver_flowcontrol_dispatched_requests_total", flow_schema=APF_SCHEMA)

    @staticmethod
    def prom() -> float:
        text = lab_cluster.http_get(f"{PROM}/metrics", timeout=10)
        return sum(_metric_sum(text, "prometheus_http_requests_total", handler=h)
                   for h in ("/api/v1/query", "/api/v1/query_range", "/api/v1/targets"))

    def snap(self) -> tuple[float, float]:
        return self.api(), self.prom()


@contextmanager
def counted(c: Counters, out: dict):
    a0, p0 = c.snap()
    t0 = time.monotonic()
    try:
        yield out
    finally:
        out["seconds"] = time.monotonic() - t0
        a1, p1 = c.snap()
        out["api_calls"], out["prom_queries"] = int(a1 - a0), int(p1 - p0)


def prom_value(expr: str) -> float:
    url = f"{PROM}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url, timeout=10) as r:
        res = json.loads(r.read())["data"]["result"]
    return float(res[0]["value"][1]) if res else 0.0


def proc_status(pid: int, key: str) -> int:
    """A /proc/<pid>/status field in KiB (VmRSS, VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


# -- settings ----------------------------------------------------------------------------------------------
def write_settings(lab: Lab, path: Path, *, routers: int | None = None, netflow_window: int | None = None) -> Path:
    cfg = lab_settings.settings(lab)
    if routers is not None:
        base = cfg["routers"]
        cfg["routers"] = [dict(base[i % len(base)], name=f"{base[i % len(base)]['name']}-{i}" if i >= len(base)
                               else base[i]["name"]) for i in range(routers)]
    # Every section deploys or reads with the same 5 s scrape (the figures assume it): the netviz jobs
    # carry their own interval, so a section whose settings differed from the deployed ones measured
    # another system (a 12 s freshness window over a 15 s scrape never saw two samples).
    cfg["prometheus"]["scrape_interval_seconds"] = 5
    if netflow_window is not None:
        cfg["checks"]["freshness"] = {"netflow_max_age_seconds": netflow_window, "caretta_max_age_seconds": 20}
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def load(path: Path):
    from netviz_pipeline import loading

    return loading.load(path)


# -- lab state -------------------------------------------------------------------------------------------
def admin(lab: Lab):
    return clusterapi.dynamic(lab)


def _delete(res, name: str, namespace: str | None = None) -> None:
    from kubernetes.dynamic.exceptions import NotFoundError

    try:
        res.delete(name=name, namespace=namespace, body={"propagationPolicy": "Background"})
    except NotFoundError:
        pass


def _gone(res, name: str, namespace: str | None = None) -> bool:
    from kubernetes.dynamic.exceptions import NotFoundError

    try:
        res.get(name=name, namespace=namespace)
        return False
    except NotFoundError:
        return True


def wait_until(pred, timeout: float, what: str, interval: float = 0.2) -> float:
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"{what} not reached within {timeout:.0f}s")
        time.sleep(interval)
    return time.monotonic() - t0


def reset_deployment(lab: Lab, s) -> float:
    """Delete what netviz_deploy creates (routers left configured). Returns seconds taken."""
    from netviz_pipeline.render.dashboards import configmap_name
    from netviz_pipeline.render.scrape import _is_ours

    t0 = time.monotonic()
    dc = admin(lab)
    ns = dc.resources.get(api_version="v1", kind="Namespace")
    for n in (s.caretta.namespace, s.goflow2.namespace):
        _delete(ns, n)
    cms = dc.resources.get(api_version="v1", kind="ConfigMap")
    for stem in ("caretta", "goflow2"):
        _delete(cms, configmap_name(stem), s.grafana.dashboards_namespace)
    for kind in ("ClusterRoleBinding", "ClusterRole"):
        _delete(dc.resources.get(api_version="rbac.authorization.k8s.io/v1", kind=kind), "caretta")
    f = s.prometheus.file
    cfg = yaml.safe_load(f.config_path.read_text())
    jobs = cfg.get("scrape_configs") or []
    if any(_is_ours(j) for j in jobs):
        cfg["scrape_configs"] = [j for j in jobs if not _is_ours(j)]
        f.config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
            urllib.request.Request(s.prometheus.reload_url, method="POST"), timeout=30).read()
    for p in f.targets_dir.glob("netviz-*.json"):
        p.unlink()
    wait_until(lambda: all(_gone(ns, n) for n in (s.caretta.namespace, s.goflow2.namespace)), 300,
               "namespaces deleted")
    time.sleep(1.0)  # let the kubelets stop the pods' containers
    # the administrator's one-time step (namespaces, Caretta's cluster RBAC, the pipeline's grant): the
    # pipeline only verifies these, so a cold deploy starts from an installed, empty cluster
    clusterapi.install(lab)
    return time.monotonic() - t0


# -- kubectl baseline --------------------------------------------------------------------------------------
class Kubectl:
    def __init__(self, lab: Lab, kubeconfig: Path, home: Path):
        self.bin = str(lab.bin("kubectl"))
        self.env = {**os.environ, "KUBECONFIG": str(kubeconfig), "HOME": str(home),
                    "KUBECACHEDIR": str(home / "cache")}

    def run(self, *args: str, timeout: float = 600) -> float:
        t0 = time.monotonic()
        res = subprocess.run([self.bin, *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        if res.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {res.stdout[-500:]} {res.stderr[-1500:]}")
        return time.monotonic() - t0


def rendered_manifests(lab: Lab, s) -> list[dict]:
    """Exactly what netviz_deploy applies to the cluster (render.* with the lab settings, without the
    install objects, which the pipeline only verifies)."""
    from netviz_pipeline.assets.goflow2 import node_for_address
    from netviz_pipeline.render import caretta as rc
    from netviz_pipeline.render import goflow2 as rg
    from netviz_pipeline.render.dashboards import dashboard_configmaps
    from netviz_pipeline.render.install import is_install_object

    nodes = admin(lab).resources.get(api_version="v1", kind="Node").get().to_dict()["items"]
    objs = rc.render(s) + rg.render(s, node_name=node_for_address(nodes, s.cluster.node_address)) + \
        dashboard_configmaps(s)
    return [o for o in objs if not is_install_object(o)]  # installed by the administrator, for both


def kubectl_deploy(k: Kubectl, manifest: Path, s, c: Counters) -> dict:
    out: dict = {}
    with counted(c, out):
        out["apply"] = k.run("apply", "--server-side", "--field-manager=bench", "-f", str(manifest))
        out["rollout_ds"] = k.run("rollout", "status", "daemonset/caretta", "-n", s.caretta.namespace,
                                  "--timeout=300s")
        out["rollout_deploy"] = k.run("rollout", "status", "deployment/goflow2", "-n", s.goflow2.namespace,
                                      "--timeout=300s")
    return out


# -- pipeline through the CLI --------------------------------------------------------------------------------
def run_cli(job: str, config: Path, home: Path, c: Counters) -> dict:
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "NETVIZ_CONFIG": str(config), "DAGSTER_HOME": str(home)}
    log = home / f"{job}-{time.time_ns()}.log"
    out: dict = {}
    with counted(c, out), open(log, "w") as logf:
        p = subprocess.Popen([DAGSTER, "job", "execute", "-m", "netviz_pipeline", "-j", job], env=env,
                             stdout=logf, stderr=subprocess.STDOUT, cwd=ROOT)
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise RuntimeError(f"{job} failed ({p.returncode}); log {log}:\n" + log.read_text()[-3000:])
    out["wall"] = out["seconds"]
    out["maxrss_mib"] = ru.ru_maxrss / 1024
    with dg.DagsterInstance.from_config(str(home)) as inst:
        run = inst.get_runs(limit=1)[0]
        rs = inst.get_run_stats(run.run_id)
        steps = {st.step_key: st.end_time - st.start_time for st in inst.get_run_step_stats(run.run_id)}
    out["run"] = rs.end_time - rs.start_time
    out["steps"] = steps
    out["steps_sum"] = sum(steps.values())
    out["outside_run"] = out["wall"] - out["run"]  # process start, imports, definitions, instance, run record
    out["between_steps"] = out["run"] - out["steps_sum"]  # executor: events, resources, step starts
    out["same_work"] = sum(v for k, v in steps.items() if k in SAME_WORK)
    return out


def import_time(code: str, n: int = 3) -> float:
    ts = []
    for _ in range(n):
        t0 = time.monotonic()
        subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env={**os.environ, "NETVIZ_CONFIG": "/nonexistent"})
        ts.append(time.monotonic() - t0)
    return median(ts)


# -- sections ------------------------------------------------------------------------------------------------
def bench_deploy(lab: Lab, work: Path, c: Counters, repeat: int) -> dict:
    cfg = write_settings(lab, work / "netviz.yaml")
    s = load(cfg)
    manifest = work / "manifests.yaml"
    manifest.write_text(yaml.safe_dump_all(rendered_manifests(lab, s), sort_keys=False))
    res: dict = {"kubectl_cold": [], "kubectl_conv": [], "cli_cold": [], "cli_conv": [], "reset": []}
    for i in range(repeat):
        res["reset"].append(reset_deployment(lab, s))
        k = Kubectl(lab, lab.pipeline_kubeconfig, Path(tempfile.mkdtemp(dir=work, prefix="kubectl-")))
        print(f"  [{i + 1}/{repeat}] kubectl cold ...", flush=True)
        res["kubectl_cold"].append(kubectl_deploy(k, manifest, s, c))
        res["kubectl_conv"].append(kubectl_deploy(k, manifest, s, c))
        res["reset"].append(reset_deployment(lab, s))
        home = work / f"dagster-{i}"
        print(f"  [{i + 1}/{repeat}] netviz_deploy cold ...", flush=True)
        res["cli_cold"].append(run_cli("netviz_deploy", cfg, home, c))
        print(f"  [{i + 1}/{repeat}] netviz_deploy converged ...", flush=True)
        res["cli_conv"].append(run_cli("netviz_deploy", cfg, home, c))
    return res


def scrape_as(config: Path) -> None:
    """Prometheus scrapes the netviz jobs as these settings say (their interval), whatever ran before."""
    from netviz_pipeline.assets.prometheus import prometheus_scrape_config
    from netviz_pipeline.definitions import defs

    os.environ["NETVIZ_CONFIG"] = str(config)
    try:
        with dg.instance_for_test() as inst:
            res = defs.resolve_job_def("netviz_deploy").execute_in_process(
                asset_selection=[prometheus_scrape_config.key], instance=inst, raise_on_error=False)
        if not res.success:
            raise RuntimeError("prometheus_scrape_config failed: the section would measure another system")
    finally:
        os.environ.pop("NETVIZ_CONFIG", None)


def bench_canary(lab: Lab, work: Path, rounds: int, lost_after: float = 15.0) -> dict:
    from netviz_pipeline.freshness import current_talker_query, flow_record_age_query

    s = load(write_settings(lab, work / "netviz.yaml"))
    scrape_as(work / "netviz.yaml")
    # the current aggregator only: series of pods deleted by the resets linger for 5 min
    q = current_talker_query(LINUX_ROUTER.canary_host, LINUX_ROUTER.wan_host)
    # steady state: GoFlow2 decodes the Linux router's records (it has its v9 template)
    age = flow_record_age_query(LINUX_ROUTER.mgmt_ip)
    wait_until(lambda: 0 < (prom_value(age) or 1e9) < 10, 120, "flow records from the Linux router", 1)
    lat, lost = [], 0
    for i in range(rounds):
        while True:
            before = prom_value(q)
            t0 = time.monotonic()
            subprocess.run(s.checks.canary_command, check=True, capture_output=True, timeout=30)
            try:
                wait_until(lambda: prom_value(q) > before, lost_after, "canary flow in Prometheus", interval=0.1)
                break
            except TimeoutError:
                lost += 1
                if lost > rounds:
                    raise
        lat.append(time.monotonic() - t0)
        time.sleep(0.7 + (i % 5) * 0.9)  # spread the sends over the scrape interval
    return {"latencies": lat, "median": median(lat), "p90": p90(lat), "lost": lost, "query": q}


def sensor_tick(instance, cursor=None):
    from netviz_pipeline.definitions import defs
    from netviz_pipeline.sensors import flow_freshness

    with dg.build_sensor_context(instance=instance, resources=dict(defs.resources), cursor=cursor) as ctx:
        return flow_freshness(ctx)


def bench_sensor(lab: Lab, work: Path, c: Counters, ticks: int) -> dict:
    out = {}
    with dg.instance_for_test() as inst:
        for n in (1, 10, 50):
            os.environ["NETVIZ_CONFIG"] = str(write_settings(lab, work / f"sensor-{n}.yaml", routers=n))
            sensor_tick(inst)  # warm: imports, discovery cache
            times, calls, queries, ok = [], [], [], True
            for _ in range(ticks):
                r: dict = {}
                with counted(c, r):
                    result = sensor_tick(inst)
                times.append(r["seconds"])
                calls.append(r["api_calls"])
                queries.append(r["prom_queries"])
                ev = {e.check_name: e for e in result.asset_events}["netflow_arriving"]
                ok = ok and ev.passed and len(ev.metadata) == n
            out[n] = {"median": median(times), "max": max(times), "api_calls": median(calls),
                      "prom_queries": median(queries), "all_fresh": ok}
    os.environ.pop("NETVIZ_CONFIG", None)
    return out


def softflowd_pids(router) -> list[int]:
    out = []
    for pid in router_pids(router):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "softflowd":
                out.append(pid)
        except OSError:
            pass
    return out


def bench_exporter_stop(lab: Lab, work: Path, window: int = 12, tick_s: float = 1.0) -> dict:
    from netviz_pipeline.assets.routers import router_softflowd
    from netviz_pipeline.definitions import defs

    scrape_as(write_settings(lab, work / "fresh.yaml", netflow_window=window))
    os.environ["NETVIZ_CONFIG"] = str(work / "fresh.yaml")
    subject = "router:edge-linux"

    def linux_fresh(result) -> bool:
        """GoFlow2 counted its datagrams in the window: the sensor's finding reads "flowing: <n> NetFlow
        datagrams ..." (health.exporter_finding: cause, then reason)."""
        ev = {e.check_name: e for e in result.asset_events}["netflow_arriving"]
        return str(ev.metadata[subject].value).startswith("flowing: ")

    out = {"window": window, "tick": tick_s}
    try:
        with dg.instance_for_test() as inst:
            wait_until(lambda: linux_fresh(sensor_tick(inst)), 90, "edge-linux fresh before the stop", interval=tick_s)
            pids = softflowd_pids(LINUX_ROUTER)
            if not pids:
                raise RuntimeError("softflowd not running on the Linux router")
            t0 = time.monotonic()
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
            wait_until(lambda: not linux_fresh(sensor_tick(inst)), 120, "freshness check failing", interval=tick_s)
            out["detect"] = time.monotonic() - t0
            t1 = time.monotonic()
            res = defs.resolve_job_def("netviz_deploy").execute_in_process(
                asset_selection=[router_softflowd.key], instance=inst, raise_on_error=False)
            out["restore_run"] = time.monotonic() - t1
            out["restored"] = res.success and bool(softflowd_pids(LINUX_ROUTER))
            wait_until(lambda: linux_fresh(sensor_tick(inst)), 120, "edge-linux fresh again", interval=tick_s)
            out["fresh_again"] = time.monotonic() - t0
    finally:
        os.environ.pop("NETVIZ_CONFIG", None)
    return out


def aggregator_memory(lab: Lab) -> dict:
    """VmRSS/VmHWM of the flow aggregator container (python3 .../flowagg.py), seen from the host."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "flowagg.py" in cmd and "python" in cmd.split(" ", 1)[0]:
            p = int(pid)
            return {"pid": p, "rss_mib": proc_status(p, "VmRSS") / 1024, "hwm_mib": proc_status(p, "VmHWM") / 1024,
                    "records": prom_value('sum(netviz_flow_records_total{job="netviz-flows"})'),
                    "series": prom_value('sum(netviz_flow_series{job="netviz-flows"})')}
    return {}


def caretta_pods(dc, ns: str) -> int:
    return len(dc.resources.get(api_version="v1", kind="Pod").get(namespace=ns, label_selector="app=caretta").items)


def delete_daemonset(lab: Lab, ns: str) -> float:
    dc = admin(lab)
    ds = dc.resources.get(api_version="apps/v1", kind="DaemonSet")
    t0 = time.monotonic()
    _delete(ds, "caretta", ns)
    wait_until(lambda: _gone(ds, "caretta", ns) and caretta_pods(dc, ns) == 0, 600, "caretta pods deleted", 0.5)
    return time.monotonic() - t0


def bench_scale(lab: Lab, work: Path, c: Counters, sizes: list[int]) -> dict:
    from netviz_pipeline.assets.caretta import caretta
    from netviz_pipeline.definitions import defs
    from netviz_pipeline.render import caretta as rc
    from netviz_pipeline.resources.cluster import ClusterResource
    from netviz_pipeline.resources.config import NetvizConfig

    cfg = write_settings(lab, work / "netviz.yaml")
    s = load(cfg)
    ns = s.caretta.namespace
    ds_manifest = work / "caretta-ds.yaml"
    ds_manifest.write_text(yaml.safe_dump(rc.daemonset(s), sort_keys=False))
    k = Kubectl(lab, lab.pipeline_kubeconfig, Path(tempfile.mkdtemp(dir=work, prefix="kubectl-scale-")))
    k.run("get", "daemonsets", "-n", ns)  # warm kubectl's discovery cache, as for a user
    os.environ["NETVIZ_CONFIG"] = str(cfg)
    out = {}
    try:
        for n in sizes:
            print(f"  {n} nodes ...", flush=True)
            delete_daemonset(lab, ns)
            t0 = time.monotonic()
            clusterapi.ensure_nodes(lab, n)
            row: dict = {"nodes_ready": time.monotonic() - t0}
            # kubectl: apply the DaemonSet, then rollout status (a watch)
            kc: dict = {}
            with counted(c, kc):
                kc["apply"] = k.run("apply", "--server-side", "--field-manager=bench", "-f", str(ds_manifest))
                kc["rollout"] = k.run("rollout", "status", "daemonset/caretta", "-n", ns, "--timeout=600s")
            kconv: dict = {}
            with counted(c, kconv):
                k.run("rollout", "status", "daemonset/caretta", "-n", ns, "--timeout=60s")
            row["kubectl"], row["kubectl_converged"] = kc, kconv
            delete_daemonset(lab, ns)
            # the pipeline: materialise caretta + caretta_rollout in-process
            pl: dict = {}
            with dg.instance_for_test() as inst, counted(c, pl):
                res = defs.resolve_job_def("netviz_deploy").execute_in_process(
                    asset_selection=[caretta.key], instance=inst, raise_on_error=False)
                pl["steps"] = {st.step_key: st.end_time - st.start_time
                               for st in inst.get_run_step_stats(res.run_id)}
                pl["success"] = res.success
            pl["checks"] = {e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data.passed
                            for e in res.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}
            row["pipeline"] = pl
            # verification of the rolled-out DaemonSet: one fresh resource, as a verify run would
            conv: dict = {}
            with counted(c, conv):
                cluster = ClusterResource(config=NetvizConfig(config_path=str(cfg)))
                r, _, pods = cluster.wait_rollout("DaemonSet", "caretta", ns)
            conv["ready"], conv["pods"] = r.ready, len(pods)
            row["pipeline_converged"] = conv
            out[n] = row
    finally:
        os.environ.pop("NETVIZ_CONFIG", None)
    return out


# -- report ----------------------------------------------------------------------------------------------------
def machine() -> str:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    return (f"{cpu}, {os.cpu_count()} vCPU, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') >> 30} GiB, "
            f"Linux {platform.release()}, Python {platform.python_version()}")


def table(r: dict) -> list[tuple[str, str]]:
    rows = [("machine", r["machine"])]
    if "import" in r:
        rows.append(("import netviz_pipeline (python -c, median of 3)", f"{r['import']['netviz_pipeline']:.2f}s "
                     f"(bare python {r['import']['python']:.2f}s, import dagster {r['import']['dagster']:.2f}s)"))
    if "deploy" in r:
        d = r["deploy"]
        m = lambda rows_, key: median([x[key] for x in rows_])  # noqa: E731
        for kind, cli, kub in (("cold", "cli_cold", "kubectl_cold"), ("converged", "cli_conv", "kubectl_conv")):
            c, k = d[cli], d[kub]
            rows.append((f"{kind} deploy: netviz_deploy CLI wall (median of {len(c)})",
                         f"{m(c, 'wall'):.1f}s [{', '.join('%.1f' % x['wall'] for x in c)}]; "
                         f"{m(c, 'api_calls'):.0f} API requests, {m(c, 'prom_queries'):.0f} Prometheus queries"))
            rows.append((f"{kind} deploy: kubectl apply --server-side + rollout status",
                         f"{m(k, 'seconds'):.1f}s [{', '.join('%.1f' % x['seconds'] for x in k)}] (apply "
                         f"{m(k, 'apply'):.1f}s, DaemonSet {m(k, 'rollout_ds'):.1f}s, Deployment "
                         f"{m(k, 'rollout_deploy'):.1f}s); {m(k, 'api_calls'):.0f} API requests"))
            rows.append((f"{kind} deploy: same work (apply+rollout steps) / kubectl",
                         f"{m(c, 'same_work'):.1f}s / {m(k, 'seconds'):.1f}s = "
                         f"{m(c, 'same_work') / m(k, 'seconds'):.2f}x; whole job / kubectl = "
                         f"{m(c, 'wall') / m(k, 'seconds'):.2f}x"))
            rows.append((f"{kind} deploy: Dagster overhead",
                         f"outside the run (process start, imports, definitions, instance) {m(c, 'outside_run'):.1f}s; "
                         f"executor between steps {m(c, 'between_steps'):.2f}s; steps {m(c, 'steps_sum'):.1f}s; "
                         f"peak RSS {m(c, 'maxrss_mib'):.0f} MiB"))
            steps = {}
            for x in c:
                for key, v in x["steps"].items():
                    steps.setdefault(key, []).append(v)
            rows.append((f"{kind} deploy: per step (median s)",
                         ", ".join(f"{key} {median(v):.2f}" for key, v in sorted(steps.items(), key=lambda kv: -median(kv[1])))))
    if "canary" in r:
        cn = r["canary"]
        rows.append((f"packet on the wire -> visible in Prometheus ({len(cn['latencies'])} canary rounds)",
                     f"median {cn['median']:.1f}s, p90 {cn['p90']:.1f}s, max {max(cn['latencies']):.1f}s "
                     f"(bound: softflowd tcp.fin 1s + expint 1s + scrape 5s + query)"))
    if "exporter_stop" in r:
        e = r["exporter_stop"]
        rows.append(("exporter stopped -> freshness check failing",
                     f"{e['detect']:.1f}s (window {e['window']}s, scrape 5s, tick {e['tick']:.0f}s: bound "
                     f"{e['window'] + 5 + e['tick']:.0f}s + last export); router_softflowd run restores in "
                     f"{e['restore_run']:.1f}s, fresh again {e['fresh_again']:.1f}s after the kill"))
    if "sensor" in r:
        for n, v in r["sensor"].items():
            rows.append((f"sensor tick, {n} exporter(s)",
                         f"median {v['median'] * 1000:.0f} ms (max {v['max'] * 1000:.0f}); "
                         f"{v['prom_queries']:.0f} Prometheus queries, {v['api_calls']:.0f} API requests; "
                         f"all fresh: {v['all_fresh']}"))
    if "scale" in r:
        for n, v in r["scale"].items():
            pl, kc = v["pipeline"], v["kubectl"]
            st = pl["steps"]
            rows.append((f"DaemonSet rollout, {n} kwok nodes",
                         f"pipeline: caretta step {st.get('caretta', 0):.2f}s + caretta_rollout "
                         f"{st.get('caretta_caretta_rollout', 0):.2f}s, {pl['api_calls']} API requests "
                         f"(check passed: {all(pl['checks'].values()) and bool(pl['checks'])}); kubectl: apply "
                         f"{kc['apply']:.2f}s + rollout status {kc['rollout']:.2f}s, {kc['api_calls']} API requests"))
            pc, kv = v["pipeline_converged"], v["kubectl_converged"]
            rows.append((f"verify rolled-out DaemonSet, {n} kwok nodes",
                         f"pipeline wait_rollout {pc['seconds'] * 1000:.0f} ms, {pc['api_calls']} API requests "
                         f"({pc['pods']} pods); kubectl rollout status {kv['seconds'] * 1000:.0f} ms, "
                         f"{kv['api_calls']} API requests"))
    if "memory" in r:
        mm = r["memory"]
        if "deploy" in r:
            rows.append(("peak RSS, dagster CLI (netviz_deploy cold / converged)",
                         f"{median([x['maxrss_mib'] for x in r['deploy']['cli_cold']]):.0f} / "
                         f"{median([x['maxrss_mib'] for x in r['deploy']['cli_conv']]):.0f} MiB"))
        if mm:
            rows.append(("flow aggregator in the lab, under the lab's traffic",
                         f"RSS {mm['rss_mib']:.1f} MiB, peak {mm['hwm_mib']:.1f} MiB after {mm['records']:.0f} "
                         f"records, {mm['series']:.0f} series (10M distinct pairs: see make bench-flows)"))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="import,deploy,canary,sensor,exporter,memory,scale",
                    help="comma-separated sections")
    ap.add_argument("--repeat", type=int, default=2, help="cold/converged deploy cycles")
    ap.add_argument("--canary-rounds", type=int, default=10)
    ap.add_argument("--ticks", type=int, default=5)
    ap.add_argument("--nodes", default="3,50,500")
    ap.add_argument("--out", type=Path, default=ROOT / "bench-results" / "bench.txt")
    a = ap.parse_args()
    only = set(a.only.split(","))
    lab = Lab()
    if read_state(lab).get("phase") != "ready":
        print("the lab is not up: run `python -m netviz_lab up` (or make bench)", file=sys.stderr)
        return 2
    nodes = [int(x) for x in a.nodes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="netviz-bench-"))
    c = Counters(lab)
    r: dict = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    print(f"machine: {r['machine']}", flush=True)
    try:
        if "import" in only:
            print("(a) import times ...", flush=True)
            r["import"] = {"python": import_time("pass"), "dagster": import_time("import dagster"),
                           "netviz_pipeline": import_time("import netviz_pipeline")}
        if "deploy" in only:
            print("(b) cold and converged deploy vs kubectl ...", flush=True)
            r["deploy"] = bench_deploy(lab, work, c, a.repeat)
        if "canary" in only:
            print("(c) packet -> Prometheus ...", flush=True)
            r["canary"] = bench_canary(lab, work, a.canary_rounds)
        if "sensor" in only:
            print("(e) sensor ticks with 1/10/50 exporters ...", flush=True)
            r["sensor"] = bench_sensor(lab, work, c, a.ticks)
        if "exporter" in only:
            print("(d) exporter stopped -> freshness failing ...", flush=True)
            r["exporter_stop"] = bench_exporter_stop(lab, work)
        if "memory" in only:
            r["memory"] = aggregator_memory(lab)
        if "scale" in only:
            print(f"(f) DaemonSet rollout with {nodes} nodes ...", flush=True)
            try:
                r["scale"] = bench_scale(lab, work, c, nodes)
            finally:
                print(f"  back to {lab.nodes} kwok nodes ...", flush=True)
                delete_daemonset(lab, load(write_settings(lab, work / "netviz.yaml")).caretta.namespace)
                clusterapi.ensure_nodes(lab, lab.nodes)
                # leave the lab deployed as before: caretta back on the real nodes only
                run_cli("netviz_deploy", work / "netviz.yaml", work / "dagster-final", c)
    except BaseException:
        print(f"failed; logs and settings kept in {work}; figures so far in {a.out.with_suffix('.partial.json')}",
              file=sys.stderr)
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.with_suffix(".partial.json").write_text(json.dumps(r, indent=1, default=str))
        raise
    shutil.rmtree(work, ignore_errors=True)
    rows = table(r)
    width = max(len(k) for k, _ in rows)
    text = "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows) + "\n"
    print("\n" + text)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(f"# make bench, {r['date']}\n" + text)
    a.out.with_suffix(".json").write_text(json.dumps(r, indent=1, default=str))
    a.out.with_suffix(".partial.json").unlink(missing_ok=True)
    print(f"written to {a.out} (raw: {a.out.with_suffix('.json')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
