"""The flow aggregator's Kubernetes name index (netviz_pipeline/flowagg/names.py): memory and speed.

Feeds a synthetic cluster to `ClusterNames` the way the watchers do (LIST pages of `names.PAGE` objects, each
a realistic pod / ReplicaSet / Job / Service / Node JSON object, built one page at a time so only the
index stays in memory), then measures, in a separate stdlib-only process (`python -I`, as the
aggregator runs):
  * tracemalloc bytes held by the index after the LIST, per pod (all kinds included);
  * VmRSS growth of the process (and VmHWM: the peak, with one page of JSON alive);
  * the same after `--churn` rounds replacing every pod by a new one reusing its address (new UID,
    new ReplicaSet: a rollout of every Deployment), as DELETED + ADDED watch events;
  * name() lookups per second (half pod addresses, the rest Services, nodes and unknown addresses);
  * one /metrics render of an aggregator with names and 100 tracked talkers.
Prints a table; `--out` also writes it (bench-results/flowagg_names.txt by default with --save).

    .venv/bin/python benchmarks/flowagg_names.py [--pods 10000] [--churn 3] [--save]

Figures (2026-11-28, python 3.11.7, this repo's dev machine, 10,000 pods = 2,000 Deployments of 5,
5 % Job pods, 2,000 Services, 2,000 ReplicaSets, 2,000 Jobs, 90 nodes; 16,090 objects):
  tracemalloc after the LIST   5.7 MiB = ~590 B per pod, all kinds included (~370 B per object)
  RSS growth after the LIST    10.4 MiB = ~1.1 KiB per pod; VmHWM of the whole process 31 MiB
  after rollouts of every pod on the same addresses: 8.9 MiB traced after 3 (84,000 events),
      9.6 MiB after 8 (224,000 events): bounded (4,096 tombstones; the intern table is rebuilt
      when it doubles); the reused addresses name the new pods
  name() lookups ~275,000/s; a /metrics render with names for 100 talkers ~3 ms
So the default cap (50,000 objects) costs at most ~35-40 MiB of RSS; 10,000 pods ~10-14 MiB.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLOWAGG_DIR = ROOT / "netviz_pipeline" / "flowagg"

CHILD = r'''
import gc, json, random, sys, time, tracemalloc
sys.path.insert(0, sys.argv[1])
args = json.loads(sys.argv[2])
import names as nm
import flowagg

def rss():
    out = {}
    for line in open("/proc/self/status"):
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM"):
            out[k] = int(v.split()[0]) * 1024
    return out

PODS, CHURN, TRACE = args["pods"], args["churn"], args["trace"]
PER_DEPLOY, NODES = 5, max(3, PODS // 110)
rnd = random.Random(1)

def uid(kind, i, gen=0):
    return "%08x-%04x-4%03x-8%03x-%012x" % (hash((kind, gen)) & 0xffffffff, i >> 16 & 0xffff, i & 0xfff, gen, i)

def pod_ip(i):
    return "10.%d.%d.%d" % (64 + (i >> 16), (i >> 8) & 255, i & 255)

def owner(kind, name, u):
    return [{"apiVersion": "apps/v1", "kind": kind, "name": name, "uid": u, "controller": True,
             "blockOwnerDeletion": True}]

def pod(i, gen=0):
    d = i // PER_DEPLOY
    ns = "team-%d" % (d % 40)
    if i % 20 == 19:  # 5 %: Job pods
        ref, ctl = "job-%d-%d" % (d, gen), owner("Job", "job-%d-%d" % (d, gen), uid("job", d, gen))
    elif i % 20 == 18:  # 5 %: bare pods
        ref, ctl = None, []
    else:
        ctl = owner("ReplicaSet", "app-%d-%x" % (d, 0x5d4f8c9b7 + gen), uid("rs", d, gen))
    name = "app-%d-%x-%05d" % (d, gen, i)
    return {"kind": "Pod", "apiVersion": "v1", "metadata": {
        "name": name, "namespace": ns, "uid": uid("pod", i, gen), "resourceVersion": str(100000 + i + gen * PODS),
        "creationTimestamp": "2026-11-28T12:00:00Z", "labels": {"app": "app-%d" % d, "pod-template-hash": "5d4f8c9b7"},
        "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-11-28T11:00:00Z"}, "ownerReferences": ctl,
        "managedFields": [{"manager": m, "operation": "Update", "apiVersion": "v1", "time": "2026-11-28T12:00:01Z",
                           "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {"f:conditions": {
                               'k:{"type":"%s"}' % t: {".": {}, "f:lastProbeTime": {}, "f:status": {}, "f:type": {}}
                               for t in ("ContainersReady", "Initialized", "Ready", "PodScheduled")}}}}
                          for m in ("kube-controller-manager", "kubelet")]},
        "spec": {"containers": [{"name": "app", "image": "registry.example/app:1.%d" % (d % 10),
                                 "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                                 "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
                                 "env": [{"name": "MODE", "value": "prod"}]}],
                 "nodeName": "node-%d" % (i % NODES), "serviceAccountName": "default", "restartPolicy": "Always"},
        "status": {"phase": "Running", "hostIP": "192.168.0.%d" % (i % NODES), "podIP": pod_ip(i),
                   "podIPs": [{"ip": pod_ip(i)}], "qosClass": "Burstable", "startTime": "2026-11-28T12:00:01Z",
                   "conditions": [{"type": t, "status": "True"} for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")]}}

def meta_obj(kind, i, gen=0):
    d = i
    if kind == "replicasets":
        return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": {
            "name": "app-%d-%x" % (d, 0x5d4f8c9b7 + gen), "namespace": "team-%d" % (d % 40), "uid": uid("rs", d, gen),
            "resourceVersion": str(50000 + d + gen * PODS), "labels": {"app": "app-%d" % d},
            "ownerReferences": owner("Deployment", "app-%d" % d, uid("deploy", d))}}
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": {
        "name": "job-%d-%d" % (d, gen), "namespace": "team-%d" % (d % 40), "uid": uid("job", d, gen),
        "resourceVersion": str(60000 + d + gen * PODS),
        "ownerReferences": owner("CronJob", "cron-%d" % d, uid("cron", d))}}

def service(i):
    return {"kind": "Service", "metadata": {"name": "app-%d" % i, "namespace": "team-%d" % (i % 40),
            "uid": uid("svc", i), "resourceVersion": str(70000 + i)},
            "spec": {"clusterIP": "10.96.%d.%d" % (i >> 8 & 255, i & 255), "clusterIPs": ["10.96.%d.%d" % (i >> 8 & 255, i & 255)],
                     "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}], "selector": {"app": "app-%d" % i}}}

def node(i):
    return {"kind": "Node", "metadata": {"name": "node-%d" % i, "uid": uid("node", i), "resourceVersion": str(80000 + i)},
            "status": {"addresses": [{"type": "InternalIP", "address": "192.168.0.%d" % i},
                                     {"type": "Hostname", "address": "node-%d" % i}]}}

def feed_list(names, kind, make, n):
    seen = names.list_begin(kind)
    for start in range(0, n, nm.PAGE):
        names.list_page(kind, json.loads(json.dumps([make(i) for i in range(start, min(n, start + nm.PAGE))])), seen)
    names.list_end(kind, seen)

deploys = PODS // PER_DEPLOY
gc.collect()
base = rss()
if TRACE:
    tracemalloc.start()
t0 = time.perf_counter()
names = nm.ClusterNames(max_objects=args["max_objects"])
feed_list(names, "nodes", node, NODES)
feed_list(names, "services", service, deploys)
feed_list(names, "replicasets", lambda i: meta_obj("replicasets", i), deploys)
feed_list(names, "jobs", lambda i: meta_obj("jobs", i), deploys)
feed_list(names, "pods", pod, PODS)
list_s = time.perf_counter() - t0
gc.collect()
traced = tracemalloc.get_traced_memory()[0]
after = rss()
entries = names.entries()
ok = sum(names.name(pod_ip(i)) is not None for i in range(PODS))

# churn: every pod replaced by a new pod (new UID, new ReplicaSet/Job generation) on the same address
t0 = time.perf_counter()
events = 0
for gen in range(1, CHURN + 1):
    for d in range(deploys):
        names.apply("replicasets", "ADDED", meta_obj("replicasets", d, gen))
        names.apply("jobs", "ADDED", meta_obj("jobs", d, gen))
    for i in range(PODS):
        old = pod(i, gen - 1)
        names.apply("pods", "ADDED", pod(i, gen))  # the new pod claims the address first (old one Terminating)
        names.apply("pods", "DELETED", old)
        events += 2
    for d in range(deploys):
        names.apply("replicasets", "DELETED", meta_obj("replicasets", d, gen - 1))
        names.apply("jobs", "DELETED", meta_obj("jobs", d, gen - 1))
        events += 4
churn_s = time.perf_counter() - t0
gc.collect()
traced_churn = tracemalloc.get_traced_memory()[0]
tracemalloc.stop()
churned = rss()
expect = "team-%d/app-%d" % ((7 // PER_DEPLOY) % 40, 7 // PER_DEPLOY)
correct = names.name(pod_ip(7)) == expect

addrs = [pod_ip(rnd.randrange(PODS)) for _ in range(50000)] + \
        ["10.96.%d.%d" % (rnd.randrange(4), rnd.randrange(256)) for _ in range(25000)] + \
        ["192.168.0.%d" % rnd.randrange(NODES) for _ in range(12500)] + \
        ["203.0.113.%d" % rnd.randrange(256) for _ in range(12500)]
rnd.shuffle(addrs)
t0 = time.perf_counter()
for a in addrs:
    names.name(a)
lookup_s = time.perf_counter() - t0

agg = flowagg.Aggregator(names=nm.Names(names))
tmpl = ('{"type":"NETFLOW_V9","time_received_ns":1700000000000000000,"sequence_num":1,"sampling_rate":0,'
        '"sampler_address":"192.0.2.1","time_flow_start_ns":0,"time_flow_end_ns":0,"bytes":%d,"packets":1,'
        '"src_addr":"%s","dst_addr":"%s","etype":"IPv4","proto":"TCP","src_port":40000,"dst_port":443,"in_if":1}')
agg.feed([tmpl % (100 + i, pod_ip(i), "10.96.0.%d" % (i % 200)) for i in range(5000)])
t0 = time.perf_counter()
text = agg.render()
render_s = time.perf_counter() - t0
series = sum(1 for ln in text.split("\n") if ln and not ln.startswith("#"))
print(json.dumps({"pods": PODS, "nodes": NODES, "deployments": deploys, "entries": entries, "named": ok,
                  "list_s": list_s, "traced": traced, "rss_growth": after["VmRSS"] - base["VmRSS"],
                  "hwm": after["VmHWM"], "churn_rounds": CHURN, "churn_events": events, "churn_s": churn_s,
                  "traced_after_churn": traced_churn, "rss_after_churn": churned["VmRSS"] - base["VmRSS"],
                  "strs": len(names.strs), "dead": len(names.dead), "churn_correct": correct,
                  "lookups": len(addrs), "lookup_s": lookup_s, "render_s": render_s, "series": series,
                  "budget": agg.budget(), "python": sys.version.split()[0]}))
'''


def run(pods: int, churn: int, max_objects: int) -> dict:
    """Two fresh processes: one traced (tracemalloc bytes), one not (RSS and timings: tracing slows
    Python several times and its own bookkeeping would count as RSS)."""
    def child(trace: bool) -> dict:
        out = subprocess.run([sys.executable, "-I", "-c", CHILD, str(FLOWAGG_DIR),
                              json.dumps({"pods": pods, "churn": churn, "max_objects": max_objects, "trace": trace})],
                             capture_output=True, text=True, check=True, timeout=900)
        return json.loads(out.stdout)
    traced, plain = child(True), child(False)
    return plain | {"traced": traced["traced"], "traced_after_churn": traced["traced_after_churn"]}


def table(r: dict) -> str:
    per = r["pods"]
    lines = [
        f"flowagg names index, python {r['python']}: {r['pods']} pods ({r['deployments']} Deployments, "
        f"{r['entries']['services']} Services, {r['nodes']} nodes)",
        f"  indexed: {r['entries']}; pod addresses named: {r['named']}/{r['pods']}",
        f"  LIST: {r['list_s']:.2f} s for {sum(r['entries'].values()):,} objects "
        f"({sum(r['entries'].values()) / r['list_s']:,.0f}/s, building and parsing their JSON included)",
        f"  tracemalloc after LIST: {r['traced'] / 2**20:.2f} MiB = {r['traced'] / per:,.0f} B per pod (all kinds)",
        f"  RSS growth after LIST: {r['rss_growth'] / 2**20:.2f} MiB = {r['rss_growth'] / per:,.0f} B per pod; "
        f"VmHWM {r['hwm'] / 2**20:.1f} MiB",
        f"  churn: {r['churn_rounds']} rollouts of every pod ({r['churn_events']:,} events, "
        f"{r['churn_events'] / r['churn_s']:,.0f} events/s): tracemalloc {r['traced_after_churn'] / 2**20:.2f} MiB, "
        f"RSS growth {r['rss_after_churn'] / 2**20:.2f} MiB; intern table {r['strs']}, tombstones {r['dead']}; "
        f"reused address names the new pod: {r['churn_correct']}",
        f"  name() lookups: {r['lookups'] / r['lookup_s']:,.0f}/s",
        f"  render with names (100 talkers): {r['render_s'] * 1000:.1f} ms, {r['series']} series <= budget {r['budget']}",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pods", type=int, default=10_000)
    ap.add_argument("--churn", type=int, default=3, help="rollouts of every pod after the LIST")
    ap.add_argument("--max-objects", type=int, default=100_000)
    ap.add_argument("--save", action="store_true", help="write bench-results/flowagg_names.txt")
    a = ap.parse_args(argv)
    r = run(a.pods, a.churn, a.max_objects)
    text = table(r)
    print(text)
    if a.save:
        (ROOT / "bench-results").mkdir(exist_ok=True)
        (ROOT / "bench-results" / "flowagg_names.txt").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
