"""Pod runner: kubelet + kube-proxy for the pods kwok only pretends to run (lab component).

kwok marks pods Running and gives them IPs but runs nothing, so nothing would answer on a pod IP.
This component's single service watches pods/services/configmaps with the admin kubeconfig and, for
each pod bound to a node, Running, with a podIP:
  - wires a pod network namespace (podnet.py) so the pod IP is reachable from the host and the lab;
  - materialises volumes and runs each container's *local equivalent* (podspec.map_image: the lab's
    goflow2 build, the system python3 for python images, the Caretta stand-in) in that namespace with
    the container's argv/env/mounts (podvolumes.py), restarting exits with backoff, logging to
    lab.logs/pods/<ns>_<pod>_<container>.log and reporting problems as Events (`LabUnknownImage`,
    `LabContainerExited`, ...) — pod status stays kwok's;
  - rewrites nft chain `nodeports` with the ClusterIP and NodePort DNAT rules kube-proxy would install
    (plain DNAT: backends see the real client address).
It also applies the demo workload (netviz_lab/demo/*.yaml) so pod-to-pod TCP exists for Caretta.

Scale benchmarks only: NETVIZ_LAB_CARETTA_STANDINS=N (or `up --caretta-standins N`) runs Caretta
stand-ins only for pods on kwok-node-0..N-1. Pods on the other nodes stay scheduled and Ready (kwok's
status) but nothing runs for them (no process, no pod network): 500 stand-ins at ~75 MB each would
exhaust the machine's memory. Unset (the default) runs every pod.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from . import podnet, podspec, podvolumes, versions
from .lab import Lab
from .proc import run
from .supervisor import Service

COMPONENT = "netviz-lab-podrunner"
FIELD_MANAGER = "netviz-lab"
DEMO_DIR = Path(__file__).with_name("demo")
RESYNC_SECONDS = 10.0
STOP_GRACE_CAP = 5.0  # lab cap on terminationGracePeriodSeconds
CARETTA_STANDINS_ENV = "NETVIZ_LAB_CARETTA_STANDINS"
CARETTA_REPO = "quay.io/groundcover/caretta"


def caretta_standin_limit() -> int | None:
    """How many nodes get a Caretta stand-in (scale benchmarks); None = every node (the default)."""
    v = os.environ.get(CARETTA_STANDINS_ENV, "").strip()
    return int(v) if v else None


def skip_for_scale(pod: dict, limit: int | None) -> bool:
    """True for a Caretta pod on kwok-node-<i> with i >= limit (not run: see the module docstring)."""
    if limit is None or not any(podspec.parse_image(c.get("image", ""))[0] == CARETTA_REPO
                                for c in pod["spec"].get("containers") or []):
        return False
    node = pod["spec"].get("nodeName", "")
    suffix = node.rsplit("-", 1)[-1]
    return node.startswith("kwok-node-") and suffix.isdigit() and int(suffix) >= limit


# -- component contract --------------------------------------------------------------------------
def _ready_file(lab: Lab) -> Path:
    return lab.pods_dir / "runner-ready.json"


def setup(lab: Lab) -> None:
    lab.pods_dir.mkdir(parents=True, exist_ok=True)
    (lab.logs / "pods").mkdir(parents=True, exist_ok=True)
    _ready_file(lab).unlink(missing_ok=True)


def services(lab: Lab) -> list[Service]:
    def ready() -> bool:
        f = _ready_file(lab)
        return f.exists() and json.loads(f.read_text()).get("ready", False)

    argv = [sys.executable, "-m", "netviz_lab.podrunner", "--root", str(lab.root), "--cache", str(lab.cache)]
    return [Service("podrunner", argv, env={"PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
                    ready=ready, ready_timeout=90)]


def teardown(lab: Lab) -> None:
    """State-free: kill every pod namespace's processes, delete namespaces, veths, volumes."""
    podnet.teardown_all()
    run(["nft", "flush", "chain", "ip", "netviz_lab", "nodeports"], check=False)
    shutil.rmtree(lab.pods_dir, ignore_errors=True)


def log_path(lab: Lab, namespace: str, pod: str, container: str) -> Path:
    return lab.logs / "pods" / f"{namespace}_{pod}_{container}.log"


def read_logs(lab: Lab, namespace: str, pod: str, container: str, tail: int | None = None) -> str:
    """`kubectl logs`-like: a container's stdout+stderr across restarts (last `tail` lines)."""
    try:
        text = log_path(lab, namespace, pod, container).read_text(errors="replace")
    except FileNotFoundError:
        return ""
    if tail is not None:
        text = "\n".join(text.splitlines()[-tail:])
    return text


# -- runtime state -----------------------------------------------------------------------------------
@dataclass
class Container:
    spec: dict
    fingerprint: str
    proc: subprocess.Popen | None = None
    restarts: int = 0
    next_start: float = 0.0
    started: float = 0.0
    last_exit: int | None = None


@dataclass
class PodRun:
    pod: dict
    netns: str
    veth: str
    ip: str
    dir: Path
    containers: dict[str, Container] = field(default_factory=dict)
    volumes: dict[str, Path] = field(default_factory=dict)
    tokens: dict[tuple, tuple[str, float]] = field(default_factory=dict)

    @property
    def uid(self) -> str:
        return self.pod["metadata"]["uid"]

    @property
    def key(self) -> str:
        return f"{self.pod['metadata']['namespace']}/{self.pod['metadata']['name']}"


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)


class Runner:
    def __init__(self, lab: Lab):
        from kubernetes import client, config

        self.lab = lab
        self.api = config.new_client_from_config(config_file=str(lab.admin_kubeconfig))
        self.core = client.CoreV1Api(self.api)
        self.pods: dict[str, PodRun] = {}
        self.refused: dict[str, tuple[str, float]] = {}  # key -> (uid, retry_at)
        self.dirty = threading.Event()
        self.stopping = threading.Event()
        self.nft_applied: str | None = None
        self.nat_rules: list[podspec.NatRule] = []
        self.events: dict[tuple, tuple[str, int]] = {}  # (uid, reason, container, same_as) -> (event name, count)
        self.goflow2_bin = str(lab.bin("goflow2"))
        self.svcs: list[dict] = []  # for service-link env vars
        self.standin_limit = caretta_standin_limit()
        self.skipped = 0  # Caretta pods not run (scale benchmarks), for the log

    # -- API helpers -------------------------------------------------------------------------------
    def _json(self, resp) -> dict:
        return json.loads(resp.data)

    def list_items(self, fn, **kw) -> list[dict]:
        return self._json(fn(_preload_content=False, _request_timeout=20, **kw))["items"]

    def _watch(self, name: str, fn) -> None:
        """Level-triggered: any change just marks the state dirty; reconcile re-lists."""
        while not self.stopping.is_set():
            try:
                resp = fn(watch=True, _preload_content=False, timeout_seconds=240, _request_timeout=(5, 300))
                for _line in resp:
                    self.dirty.set()
                    if self.stopping.is_set():
                        break
                resp.release_conn()
            except Exception as exc:  # noqa: BLE001 - API server restarting: retry
                log(f"watch {name}: {exc.__class__.__name__}: {str(exc)[:200]}")
                self.stopping.wait(2)

    def event(self, pod: dict, reason: str, message: str, type_: str = "Warning", container: str | None = None,
              same_as: str | None = None) -> None:
        """Record a Kubernetes Event on the pod, aggregated (count++) like kubelet's recorder.

        Events with the same pod, reason and `same_as` (default: the message) are one Event whose
        count grows; its message shows the latest occurrence.
        """
        meta = pod["metadata"]
        log(f"{meta['namespace']}/{meta['name']}{'/' + container if container else ''}: {reason}: {message}")
        key = (meta["uid"], reason, container, same_as if same_as is not None else message)
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        try:
            if key in self.events:
                name, count = self.events[key]
                self.core.patch_namespaced_event(name, meta["namespace"],
                                                 {"count": count + 1, "lastTimestamp": now, "message": message[:1000]})
                self.events[key] = (name, count + 1)
                return
            name = f"{meta['name']}.{time.time_ns():x}"
            involved = {"kind": "Pod", "apiVersion": "v1", "namespace": meta["namespace"], "name": meta["name"],
                        "uid": meta["uid"]}
            if container:
                involved["fieldPath"] = f"spec.containers{{{container}}}"
            body = {"metadata": {"name": name, "namespace": meta["namespace"]}, "involvedObject": involved,
                    "reason": reason, "message": message[:1000], "type": type_, "count": 1,
                    "firstTimestamp": now, "lastTimestamp": now,
                    "source": {"component": COMPONENT, "host": pod["spec"].get("nodeName", "")},
                    "reportingComponent": COMPONENT, "reportingInstance": pod["spec"].get("nodeName", "")}
            self.core.create_namespaced_event(meta["namespace"], body)
            self.events[key] = (name, 1)
        except Exception as exc:  # noqa: BLE001 - an Event is best effort
            log(f"event {reason} not recorded: {exc}")

    def _get(self, fn, name: str, namespace: str) -> dict | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return self._json(fn(name, namespace, _preload_content=False, _request_timeout=20))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def sources(self, run_: PodRun) -> podvolumes.Sources:
        ns = run_.pod["metadata"]["namespace"]

        def token(sa: str, audience: str | None, ttl: int) -> str:
            key = (sa, audience, ttl)
            cached = run_.tokens.get(key)
            if cached and time.time() < cached[1]:
                return cached[0]
            spec: dict = {"expirationSeconds": ttl, "boundObjectRef": {
                "kind": "Pod", "apiVersion": "v1", "name": run_.pod["metadata"]["name"], "uid": run_.uid}}
            if audience:
                spec["audiences"] = [audience]
            resp = self._json(self.core.create_namespaced_service_account_token(
                sa, ns, {"spec": spec}, _preload_content=False, _request_timeout=20))
            tok = resp["status"]["token"]
            run_.tokens[key] = (tok, time.time() + 0.8 * ttl)  # kubelet refreshes at 80% of the TTL
            return tok

        return podvolumes.Sources(
            configmap=lambda n: self._get(self.core.read_namespaced_config_map, n, ns),
            secret=lambda n: self._get(self.core.read_namespaced_secret, n, ns),
            token=token)

    # -- reconcile -----------------------------------------------------------------------------------
    def reconcile(self) -> None:
        pods = self.list_items(self.core.list_pod_for_all_namespaces)
        svcs = self.list_items(self.core.list_service_for_all_namespaces)
        wanted: dict[str, dict] = {}
        skipped = 0
        for p in pods:
            meta, spec, status = p["metadata"], p.get("spec", {}), p.get("status", {})
            if (spec.get("nodeName") and status.get("phase") == "Running" and status.get("podIP")
                    and not meta.get("deletionTimestamp")):
                if skip_for_scale(p, self.standin_limit):
                    skipped += 1
                    continue
                wanted[f"{meta['namespace']}/{meta['name']}"] = p
        if skipped != self.skipped:
            log(f"{skipped} Caretta pods not run ({CARETTA_STANDINS_ENV}={self.standin_limit}: "
                f"stand-ins only on the first {self.standin_limit} nodes)")
            self.skipped = skipped
        for key, r in list(self.pods.items()):
            p = wanted.get(key)
            if p is None or p["metadata"]["uid"] != r.uid or p["status"]["podIP"] != r.ip:
                self.stop_pod(r, "pod deleted" if p is None else "pod replaced")
        for key, p in wanted.items():
            if key in self.pods:
                self.update_pod(self.pods[key], p)
                continue
            refused = self.refused.get(key)
            if refused and refused[0] == p["metadata"]["uid"] and time.monotonic() < refused[1]:
                continue
            self.start_pod(p)
        self.refused = {k: v for k, v in self.refused.items() if k in wanted}
        self.svcs = svcs
        self.apply_nat(svcs)

    def apply_nat(self, svcs: list[dict]) -> None:
        rules = podspec.nat_rules(svcs, [r.pod for r in self.pods.values()])
        text = podspec.render_nft(rules)
        if text == self.nft_applied:
            return
        try:
            run(["nft", "-f", "-"], input=text)
            self.nft_applied = text
            log(f"nft nodeports: {len(rules)} rules")
        except Exception as exc:  # noqa: BLE001 - e.g. hostnet not set up
            log(f"nft nodeports not applied: {exc}")
            return
        for daddr, dport in podspec.stale_udp_targets(self.nat_rules, rules):
            # like kube-proxy: flows still DNATed to a former backend (or to none) start over
            try:
                run(["conntrack", "-D", "-p", "udp", "--orig-dst", daddr, "--orig-port-dst", str(dport)], check=False)
                log(f"conntrack: UDP entries for {daddr}:{dport} deleted (backends changed)")
            except OSError as exc:  # conntrack (Debian package) missing: make lab-deps installs it
                log(f"conntrack: UDP entries for {daddr}:{dport} not deleted: {exc}")
        self.nat_rules = rules

    def start_pod(self, pod: dict) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        ns, name = meta["namespace"], meta["name"]
        key = f"{ns}/{name}"
        try:
            if spec.get("hostNetwork"):
                raise podspec.SpecError("LabHostNetworkUnsupported",
                                        "hostNetwork pods are not run by the lab (they would share the host's ports)")
            for c in spec.get("initContainers") or []:
                raise podspec.SpecError("LabInitContainerUnsupported", f"init container {c['name']} not supported")
            for c in spec["containers"]:  # refuse before wiring anything: like ImagePullBackOff, no endpoint
                podspec.map_image(c["image"], self.goflow2_bin, versions.GOFLOW2)
            for v in spec.get("volumes") or []:
                podvolumes.volume_kind(v)
        except podspec.SpecError as exc:
            self.event(pod, exc.reason, str(exc))
            self.refused[key] = (meta["uid"], time.monotonic() + 60)
            return
        r = PodRun(pod=pod, netns=podspec.pod_netns(ns, name), veth=podspec.pod_veth(ns, name),
                   ip=pod["status"]["podIP"], dir=self.lab.pods_dir / f"{ns}_{name}")
        try:
            shutil.rmtree(r.dir, ignore_errors=True)
            r.dir.mkdir(parents=True)
            podnet.setup_pod_network(r.netns, r.veth, r.ip)
            self.sync_volumes(r, first=True)
        except podspec.SpecError as exc:
            self.event(pod, exc.reason, str(exc))
            podnet.teardown_pod_network(r.netns, r.veth, r.ip)
            shutil.rmtree(r.dir, ignore_errors=True)
            self.refused[key] = (meta["uid"], time.monotonic() + 10)
            return
        for c in spec["containers"]:
            r.containers[c["name"]] = Container(spec=c, fingerprint=podspec.container_fingerprint(c))
        self.pods[key] = r
        log(f"{key}: network {r.netns} {r.ip} on {spec['nodeName']}")

    def sync_volumes(self, r: PodRun, first: bool = False) -> None:
        """(Re)materialise volumes; configMap/secret/projected content is refreshed like kubelet's."""
        src = self.sources(r)
        for v in r.pod["spec"].get("volumes") or []:
            kind = podvolumes.volume_kind(v)
            path = r.dir / "volumes" / v["name"]
            if kind == "emptyDir":
                if first:
                    path.mkdir(parents=True, exist_ok=True)
                    path.chmod(0o777)
            elif kind == "hostPath":
                path = Path(v["hostPath"]["path"])
                if not path.exists():
                    raise podspec.SpecError("LabVolumeError", f"hostPath {path} does not exist on the lab host")
            else:
                try:
                    files = podvolumes.volume_files(v, r.pod, src)
                except podspec.SpecError:
                    if first:
                        raise
                    continue  # keep the last good content, as kubelet does
                if podvolumes.atomic_write(path, files) and not first:
                    log(f"{r.key}: volume {v['name']} updated")
            r.volumes[v["name"]] = path

    def update_pod(self, r: PodRun, pod: dict) -> None:
        r.pod = pod
        try:
            self.sync_volumes(r)
        except podspec.SpecError as exc:
            self.event(pod, exc.reason, str(exc))
        for c in pod["spec"]["containers"]:  # in-place image updates restart the container
            cur = r.containers.get(c["name"])
            fp = podspec.container_fingerprint(c)
            if cur is not None and cur.fingerprint != fp:
                self.kill([cur])
                r.containers[c["name"]] = Container(spec=c, fingerprint=fp)

    def stop_pod(self, r: PodRun, why: str) -> None:
        log(f"{r.key}: stopping ({why})")
        self.kill(list(r.containers.values()))
        podnet.teardown_pod_network(r.netns, r.veth, r.ip)
        shutil.rmtree(r.dir, ignore_errors=True)
        self.pods.pop(r.key, None)

    def kill(self, ctrs: list[Container], grace: float = STOP_GRACE_CAP) -> None:
        procs = [c.proc for c in ctrs if c.proc is not None and c.proc.poll() is None]
        for p in procs:
            p.terminate()
        deadline = time.monotonic() + grace
        for p in procs:
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        for c in ctrs:
            c.proc = None

    # -- containers --------------------------------------------------------------------------------
    def tick(self) -> None:
        now = time.monotonic()
        for r in list(self.pods.values()):
            for name, c in r.containers.items():
                if c.proc is not None:
                    rc = c.proc.poll()
                    if rc is None:
                        continue
                    c.proc, c.last_exit = None, rc
                    c.restarts += 1
                    if now - c.started > 120:  # ran fine for a while: reset the backoff
                        c.restarts = 1
                    delay = podspec.backoff(c.restarts)
                    c.next_start = now + delay
                    tail = read_logs(self.lab, r.pod["metadata"]["namespace"], r.pod["metadata"]["name"], name, 3)
                    self.event(r.pod, "LabContainerExited",
                               f"container {name} exited with code {rc}; restart {c.restarts} in {delay:.0f}s "
                               f"(restartPolicy Always, back-off). Last log lines: {tail.strip()[-400:]}",
                               container=name, same_as=f"exit {rc}")
                elif now >= c.next_start:
                    self.start_container(r, name, c)

    def start_container(self, r: PodRun, name: str, c: Container) -> None:
        pod, spec = r.pod, c.spec
        ns = pod["metadata"]["namespace"]
        try:
            profile = podspec.map_image(spec["image"], self.goflow2_bin, versions.GOFLOW2)
            cms = {o["metadata"]["name"]: o for o in self.list_items(self.core.list_namespaced_config_map, namespace=ns)}
            secrets = {o["metadata"]["name"]: o for o in self.list_items(self.core.list_namespaced_secret, namespace=ns)}
            extra = {}
            if profile.kind == "caretta":
                extra = {"NETVIZ_LAB_NODE_NAME": pod["spec"]["nodeName"],
                         "NETVIZ_LAB_KUBECONFIG": str(self.lab.admin_kubeconfig),
                         "NETVIZ_LAB_HOST_NETNS": f"/proc/{os.getpid()}/ns/net",
                         "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
            env = podspec.build_env(pod, spec, cms, secrets, self.svcs, profile, extra)
            argv = podspec.resolve_argv(spec, profile, env)
            if argv[0] == podspec.CARETTA_STANDIN:
                argv = [sys.executable, "-m", "netviz_lab.caretta_standin", *argv[1:]]
            mounts = []
            for vm in spec.get("volumeMounts") or []:
                vol = next((v for v in pod["spec"].get("volumes") or [] if v["name"] == vm["name"]), None)
                if vol is None or vm["name"] not in r.volumes:
                    raise podspec.SpecError("LabVolumeError", f"volumeMount {vm['name']!r} has no volume")
                src = r.volumes[vm["name"]]
                if vm.get("subPath"):
                    src = Path(os.path.realpath(src / vm["subPath"]))
                ro = bool(vm.get("readOnly")) or podvolumes.volume_kind(vol) in podvolumes.PROJECTED_KINDS
                m = podvolumes.Mount(str(src), vm["mountPath"], ro)
                podvolumes.prepare_mountpoint(m)
                mounts.append(m)
            sc = {**(pod["spec"].get("securityContext") or {}), **(spec.get("securityContext") or {})}
            user = profile.user
            if "runAsUser" in sc:
                user = None if sc["runAsUser"] == 0 and "runAsGroup" not in sc else (sc["runAsUser"], sc.get("runAsGroup", 0))
            workdir, files = podspec.workdir_for(spec, profile)
            if files:  # the image's WORKDIR content (e.g. ./goflow2 for a `sh -c` entrypoint)
                wd = r.dir / "workdir" / name
                wd.mkdir(parents=True, exist_ok=True)
                wd.chmod(0o755)
                for fname, target in files.items():
                    link = wd / fname
                    if not (link.is_symlink() and os.readlink(link) == target):
                        link.unlink(missing_ok=True)
                        link.symlink_to(target)
                workdir = str(wd)
            cmd = podvolumes.launch_argv(r.netns, pod["metadata"]["name"], mounts, workdir, user, argv)
        except podspec.SpecError as exc:
            c.restarts += 1
            c.next_start = time.monotonic() + podspec.backoff(c.restarts)
            self.event(pod, exc.reason, str(exc), container=name)
            return
        except Exception as exc:  # noqa: BLE001 - API hiccup: retry soon
            c.next_start = time.monotonic() + 2
            log(f"{r.key}/{name}: not started: {exc}")
            return
        logf = log_path(self.lab, ns, pod["metadata"]["name"], name)
        logf.parent.mkdir(parents=True, exist_ok=True)
        with open(logf, "ab") as out:
            c.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True)
        c.started = time.monotonic()
        log(f"{r.key}/{name}: started pid {c.proc.pid}: {' '.join(argv)[:200]}")
        self.event(pod, "LabContainerStarted", f"started {name} as {' '.join(argv)[:300]}", "Normal", name,
                   same_as="started")

    # -- demo ---------------------------------------------------------------------------------------
    def apply_demo(self) -> None:
        import yaml
        from kubernetes.dynamic import DynamicClient

        dc = DynamicClient(self.api)
        for f in sorted(DEMO_DIR.glob("*.yaml")):
            for doc in yaml.safe_load_all(f.read_text()):
                if not doc:
                    continue
                res = dc.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
                res.server_side_apply(body=doc, field_manager=FIELD_MANAGER, force_conflicts=True)
        log("demo workload applied")

    # -- main loop ------------------------------------------------------------------------------------
    def run(self) -> int:
        for name, fn in (("pods", self.core.list_pod_for_all_namespaces),
                         ("services", self.core.list_service_for_all_namespaces),
                         ("configmaps", self.core.list_config_map_for_all_namespaces)):
            threading.Thread(target=self._watch, args=(name, fn), daemon=True, name=f"watch-{name}").start()
        demo_done = os.environ.get("NETVIZ_LAB_NO_DEMO") == "1"
        last = 0.0
        ready = False
        while not self.stopping.is_set():
            if not demo_done:
                try:
                    self.apply_demo()
                    demo_done = True
                except Exception as exc:  # noqa: BLE001 - API server not ready yet
                    log(f"demo not applied yet: {exc}")
            if self.dirty.is_set() or time.monotonic() - last > RESYNC_SECONDS:
                self.dirty.clear()
                last = time.monotonic()
                try:
                    self.reconcile()
                    if not ready and demo_done:
                        _ready_file(self.lab).write_text(json.dumps({"ready": True, "pid": os.getpid()}))
                        ready = True
                except Exception:  # noqa: BLE001 - keep running; next resync retries
                    log(traceback.format_exc())
            self.tick()
            self.stopping.wait(0.3)
        return self.shutdown()

    def shutdown(self) -> int:
        log("shutting down: stopping all pods")
        # The supervisor SIGKILLs us 5 s after SIGTERM: short grace for everything at once.
        self.kill([c for r in self.pods.values() for c in r.containers.values()], grace=2.0)
        for r in list(self.pods.values()):
            podnet.teardown_pod_network(r.netns, r.veth, r.ip)
        self.pods.clear()
        run(["nft", "flush", "chain", "ip", "netviz_lab", "nodeports"], check=False)
        return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=None)
    ap.add_argument("--cache", type=Path, default=None)
    a = ap.parse_args(argv)
    kw = {k: v for k, v in (("root", a.root), ("cache", a.cache)) if v is not None}
    lab = Lab(**kw)
    (lab.logs / "pods").mkdir(parents=True, exist_ok=True)
    lab.pods_dir.mkdir(parents=True, exist_ok=True)
    runner = Runner(lab)
    signal.signal(signal.SIGTERM, lambda *_: runner.stopping.set())
    signal.signal(signal.SIGINT, lambda *_: runner.stopping.set())
    return runner.run()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
