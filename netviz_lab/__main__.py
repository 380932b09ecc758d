"""`python -m netviz_lab up|down|status|config|kubeconfig|summary|images|prometheus|screenshots` — drive the local lab."""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time

from . import nodes
from . import settings as lab_settings
from .lab import Lab
from .proc import list_netns, pid_alive, pid_cmdline, run
from .supervisor import Component, read_state, supervisor_alive, write_state
from .topology import NETNS_PREFIX, NFT_TABLE, REAL_NODES, ROUTERS

UP_TIMEOUT = float(os.environ.get("NETVIZ_LAB_UP_TIMEOUT", "300"))
# Namespace names, ports and the nft table are machine-wide: one lab per machine at a time.
LOCK_FILE = "/run/netviz-lab.lock"
OWNER_FILE = "/run/netviz-lab.owner"


def components() -> list[Component]:
    """The lab's components in start order (the supervisor is given them: it imports none)."""
    from . import cluster, hostnet, kafka, postgres, prometheus, router

    return [hostnet, router, cluster, prometheus, kafka, postgres, nodes]


@contextlib.contextmanager
def machine_lock():
    with open(LOCK_FILE, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def other_lab_running(lab: Lab) -> str | None:
    """The root of another lab whose supervisor is alive on this machine, if any."""
    try:
        owner = json.loads(open(OWNER_FILE).read())
    except (OSError, ValueError):
        return None
    if owner.get("root") != str(lab.root) and owner.get("pid") and pid_alive(owner["pid"]) \
            and "netviz_lab" in pid_cmdline(owner["pid"]):
        return owner["root"]
    return None


def require_root() -> None:
    if os.geteuid() != 0:
        sys.exit("netviz_lab needs root: it creates network namespaces, veths, nft rules and runs sshd. "
                 "Run it as root (for example `sudo make demo`).")


def require_binaries(lab: Lab) -> None:
    missing = [str(lab.bin(t)) for t in ("etcd", "kube-apiserver", "kube-controller-manager",
                                          "kube-scheduler", "kwok", "goflow2", "kubelet", "kube-proxy", "prometheus")
               if not lab.bin(t).exists()]
    if not (lab.kafka_lib / ".complete").exists():
        missing.append(str(lab.kafka_lib))
    from .postgres import PG_BIN

    if not (PG_BIN / "postgres").exists():
        missing.append("postgresql-15")
    if missing or not all(shutil.which(t) for t in ("softflowd", "containerd", "runc", "umoci", "java")):
        sys.exit("lab dependencies missing (" + (", ".join(missing) or "Debian packages") +
                 "): run `make lab-deps` first")


def cmd_up(lab: Lab, args: argparse.Namespace) -> int:
    require_root()
    require_binaries(lab)
    with machine_lock():
        other = other_lab_running(lab)
        if other:
            sys.exit(f"another netviz lab is running from {other} (one lab per machine: namespaces and ports "
                     f"are shared); stop it first: NETVIZ_LAB_DIR={other} python -m netviz_lab down")
        return _up(lab, args)


def _up(lab: Lab, args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    pid = supervisor_alive(lab)
    if pid and read_state(lab).get("phase") == "ready":
        if read_state(lab).get("nodes") == args.nodes:
            print(f"lab already up (supervisor pid {pid}, {len(REAL_NODES)} real + {args.nodes} kwok nodes); "
                  "nothing changed")
            return 0
        from . import cluster

        cluster.ensure_nodes(lab, args.nodes)
        write_state(lab, nodes=args.nodes)
        print(f"lab already up (supervisor pid {pid}); kwok nodes scaled to {args.nodes} "
              f"in {time.monotonic() - t0:.1f}s")
        return 0
    if pid is None:
        teardown_everything(lab, quiet=True)  # leftovers of a crashed `up`
        lab.logs.mkdir(parents=True, exist_ok=True)
        lab.root.chmod(0o755)
        write_state(lab, phase="starting", supervisor_pid=None, error=None)
        with open(lab.log("supervisor"), "ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "netviz_lab", "_supervise", "--nodes", str(args.nodes)],
                                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, cwd=os.getcwd())
        pid = proc.pid
        with open(OWNER_FILE, "w") as f:
            json.dump({"root": str(lab.root), "pid": pid}, f)
    deadline = t0 + UP_TIMEOUT
    while time.monotonic() < deadline:
        state = read_state(lab)
        if state.get("phase") == "ready":
            print(f"lab up in {time.monotonic() - t0:.1f}s (supervisor pid {pid}, {len(REAL_NODES)} real + "
                  f"{args.nodes} kwok nodes)")
            print(f"  admin kubeconfig:    {lab.admin_kubeconfig}")
            print(f"  pipeline kubeconfig: {lab.pipeline_kubeconfig}")
            print("  settings:            python -m netviz_lab config > netviz.yaml")
            return 0
        if state.get("phase") in ("failed", "down") or not pid_alive(pid):
            break
        time.sleep(0.2)
    state = read_state(lab)
    print(f"lab failed to come up: {state.get('error') or 'timed out after %.0fs' % UP_TIMEOUT}", file=sys.stderr)
    print(f"supervisor log: {lab.log('supervisor')}", file=sys.stderr)
    try:
        print("".join(open(lab.log("supervisor")).readlines()[-15:]), file=sys.stderr)
    except OSError:
        pass
    stop_supervisor(lab)
    teardown_everything(lab, quiet=True, keep_logs=True)
    return 1


def stop_supervisor(lab: Lab) -> None:
    pid = supervisor_alive(lab)
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if pid_alive(pid):
        os.kill(pid, signal.SIGKILL)


def teardown_everything(lab: Lab, quiet: bool = False, keep_logs: bool = True) -> list[str]:
    """Remove every trace of the lab, with or without a live supervisor. Returns what was left."""
    # Services recorded by a supervisor that died: kill them if they are still our processes.
    for name, pid in (read_state(lab).get("services") or {}).items():
        cmd = pid_cmdline(pid)
        if pid_alive(pid) and (str(lab.root) in cmd or str(lab.cache) in cmd or "netviz_lab" in cmd):
            os.kill(pid, signal.SIGKILL)
    for comp in reversed(components()):
        try:
            comp.teardown(lab)
        except Exception as exc:  # noqa: BLE001 - keep going; leftovers are reported below
            if not quiet:
                print(f"teardown {comp.__name__}: {exc}", file=sys.stderr)
    if lab.root.exists():
        for entry in lab.root.iterdir():
            if keep_logs and entry == lab.logs:
                continue
            if nodes.mounts_under(entry):  # never recurse into a mounted host path (hostPath volumes)
                continue
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    return leftovers(lab)


def leftovers(lab: Lab) -> list[str]:
    found = [f"netns {n}" for n in list_netns(NETNS_PREFIX)]
    links = run(["ip", "-o", "link", "show"], check=False).stdout
    hostifs = {r.host_if for r in ROUTERS} | {n.host_if for n in REAL_NODES}
    for line in links.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if name in hostifs:
            found.append(f"link {name}")
    found += [f"cgroup {d}" for n in REAL_NODES for d in nodes.cgroup_dirs(n) if d.exists()]
    found += [f"file {f}" for n in REAL_NODES for f in nodes.runtime_files_outside(lab, n)]
    if "198.18.0.0/15" in run(["ip", "route", "show"], check=False).stdout:
        found.append("route 198.18.0.0/15")
    if NFT_TABLE in run(["nft", "list", "tables"], check=False).stdout:
        found.append(f"nft table {NFT_TABLE}")
    for pid in os.listdir("/proc"):
        if pid.isdigit() and int(pid) != os.getpid() and pid_alive(int(pid)):
            cmd = pid_cmdline(int(pid))
            if str(lab.root) + "/" in cmd or str(lab.cache) + "/" in cmd or "netviz_lab _supervise" in cmd:
                found.append(f"process {pid} {cmd[:80]}")
    mounts = open("/proc/self/mounts").read()
    found += [f"mount {line.split()[1]}" for line in mounts.splitlines() if str(lab.root) in line]
    return found


def cmd_down(lab: Lab, args: argparse.Namespace) -> int:
    require_root()
    t0 = time.monotonic()
    with machine_lock():
        stop_supervisor(lab)
        left = teardown_everything(lab)
        with contextlib.suppress(FileNotFoundError):
            if json.loads(open(OWNER_FILE).read()).get("root") == str(lab.root):
                os.unlink(OWNER_FILE)
    if left:
        print("lab down, but left behind:\n  " + "\n  ".join(left), file=sys.stderr)
        return 1
    print(f"lab down in {time.monotonic() - t0:.1f}s; nothing left behind")
    return 0


def cmd_status(lab: Lab, args: argparse.Namespace) -> int:
    state = read_state(lab)
    pid = supervisor_alive(lab)
    phase = state.get("phase", "down") if pid else "down"
    print(f"phase: {phase}" + (f" (supervisor pid {pid}, {len(REAL_NODES)} real + {state.get('nodes')} kwok nodes)"
                                   if pid else ""))
    if pid:
        for name, spid in (state.get("services") or {}).items():
            print(f"  {name:28} pid {spid:<8} {'running' if pid_alive(spid) else 'EXITED'}")
        print("  namespaces: " + " ".join(list_netns(NETNS_PREFIX)))
    return 0 if phase == "ready" else 3


def cmd_config(lab: Lab, args: argparse.Namespace) -> int:
    sys.stdout.write(lab_settings.render(lab))
    return 0


def cmd_summary(lab: Lab, args: argparse.Namespace) -> int:
    from . import summary

    print(summary.render(lab, args.settings, args.dagster_home, args.log))
    return 0


def cmd_kubeconfig(lab: Lab, args: argparse.Namespace) -> int:
    print(lab.pipeline_kubeconfig if args.restricted else lab.admin_kubeconfig)
    return 0


def cmd_images(lab: Lab, args: argparse.Namespace) -> int:
    from . import images

    for img in images.ensure_images(lab):
        print(images.describe(img))
    return 0


def cmd_prometheus(lab: Lab, args: argparse.Namespace) -> int:
    """An in-cluster Prometheus (chart-shaped or Operator-managed) beside the lab's own outside one."""
    from . import incluster_prometheus as icp

    if read_state(lab).get("phase") != "ready":
        sys.exit("the lab is not up: run `python -m netviz_lab up` first")
    if args.mode == "remove":
        print("\n".join(icp.remove(lab)) or "nothing to remove")
        icp.wait_gone(lab)
        return 0
    t0 = time.monotonic()
    print(f"{args.mode} Prometheus ready at {icp.deploy(lab, args.mode)} in {time.monotonic() - t0:.1f}s")
    return 0


def cmd_traffic(lab: Lab, args: argparse.Namespace) -> int:
    """Make a router's LAN quiet (its traffic client pauses) or busy again."""
    from . import router

    r = router.router_by_name(args.router)
    router.set_traffic(lab, r, paused=args.action == "pause")
    print(f"{r.name}: LAN traffic {'paused' if args.action == 'pause' else 'resumed'}")
    return 0


def cmd_node(lab: Lab, args: argparse.Namespace) -> int:
    """Cut a real node off the network (lost, as the cluster sees it) or reconnect it."""
    from . import nodes

    node = nodes.node_by_name(args.node)
    if args.action == "cut":
        nodes.cut_off(node)
        print(f"{node.name}: cut off (nothing in or out of {node.ip}); `node reconnect {node.name}` undoes it")
    else:
        print(f"{node.name}: " + ("reconnected" if nodes.reconnect(node) else "was not cut off"))
    return 0


def cmd_screenshots(lab: Lab, args: argparse.Namespace) -> int:
    """README screenshots of a running service's UI (read-only): asset graph, netflow_arriving check."""
    from . import screenshots

    for path, page in screenshots.take(args.url, args.out):
        print(f"{path}  <- {page}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m netviz_lab", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start the lab (idempotent)")
    up.add_argument("--nodes", type=int, default=0,
                    help="simulated (kwok) nodes beside the real ones, for scale tests (nothing runs on them)")
    sub.add_parser("down", help="stop the lab and remove every trace of it")
    sub.add_parser("status", help="show what runs")
    sub.add_parser("config", help="print netviz settings YAML pointing at this lab")
    kc = sub.add_parser("kubeconfig", help="print the admin kubeconfig path")
    kc.add_argument("--restricted", action="store_true", help="the RBAC-limited pipeline user's instead")
    sm = sub.add_parser("summary", help="print what the demo deployed and where to look")
    sm.add_argument("--settings", default="netviz.yaml")
    sm.add_argument("--dagster-home", default="")
    sm.add_argument("--log", default="", help="where the deploy's event stream was written")
    sub.add_parser("images", help="build (or reuse) the lab's container images (OCI tarballs for containerd)")
    pm = sub.add_parser("prometheus", help="deploy a Prometheus inside the lab cluster: as the prometheus-community "
                                          "chart does (chart), or managed by the Prometheus Operator (operator)")
    pm.add_argument("mode", choices=("chart", "operator", "remove"))
    tr = sub.add_parser("traffic", help="pause or resume a router's steady LAN traffic (a quiet link on demand)")
    tr.add_argument("action", choices=("pause", "resume"))
    tr.add_argument("router", choices=[r.name for r in ROUTERS])
    nd = sub.add_parser("node", help="cut a real node off the network (a lost node, as the cluster sees it) or "
                                     "reconnect it")
    nd.add_argument("action", choices=("cut", "reconnect"))
    nd.add_argument("node", choices=[n.name for n in REAL_NODES])
    ss = sub.add_parser("screenshots", help="PNG screenshots of a running netviz service's Dagster UI for the README "
                                           "(headless Debian Chromium; needs the `docs` extra)")
    ss.add_argument("--url", default="http://127.0.0.1:3000", help="the dagster-webserver to photograph")
    ss.add_argument("--out", default="docs/screenshots", help="directory for asset-graph.png and netflow-check.png")
    sv = sub.add_parser("_supervise")
    sv.add_argument("--nodes", type=int, default=0)
    args = parser.parse_args(argv)
    if getattr(args, "nodes", 0) < 0:
        parser.error("--nodes must be 0 or more")
    lab = Lab(nodes=getattr(args, "nodes", 0))
    if args.cmd == "_supervise":
        from . import supervisor

        return supervisor.main(lab, components())
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `... status | head` ends quietly
    return {"up": cmd_up, "down": cmd_down, "status": cmd_status, "config": cmd_config,
            "kubeconfig": cmd_kubeconfig, "summary": cmd_summary, "images": cmd_images,
            "prometheus": cmd_prometheus, "traffic": cmd_traffic, "node": cmd_node,
            "screenshots": cmd_screenshots}[args.cmd](lab, args)


if __name__ == "__main__":
    sys.exit(main())
