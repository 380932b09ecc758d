"""Cluster names for flow addresses (netviz_pipeline/flowagg/names.py) and their wiring into the aggregator."""
from __future__ import annotations

import gc
import io
import json
import subprocess
import sys
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netviz_pipeline.flowagg import flowagg as fa
from netviz_pipeline.flowagg import names as nm
from netviz_pipeline.render import goflow2, install
from test_flowagg import OTHER_TALKER, talker

REC = ('{"type":"NETFLOW_V9","time_received_ns":1795672900637243907,"sequence_num":67,"sampling_rate":0,'
       '"sampler_address":"198.18.5.2","time_flow_start_ns":1,"time_flow_end_ns":2,"bytes":%d,"packets":5,'
       '"src_addr":"%s","dst_addr":"%s","etype":"IPv4","proto":"TCP","src_port":40022,"dst_port":8080}')


def ref(kind, name, uid, controller=True):
    return {"apiVersion": "apps/v1", "kind": kind, "name": name, "uid": uid, "controller": controller}


def pod(name, ip, uid=None, ns="shop", owner=None, rv="10", phase="Running", host_network=False, ips=None):
    meta = {"name": name, "namespace": ns, "uid": uid or f"uid-{name}", "resourceVersion": rv}
    if owner:
        meta["ownerReferences"] = owner if isinstance(owner, list) else [owner]
    status = {"phase": phase}
    if ip:
        status["podIP"] = ip
        status["podIPs"] = [{"ip": i} for i in (ips or [ip])]
    return {"metadata": meta, "spec": {"hostNetwork": host_network}, "status": status}


def rs(name, uid, deployment=None, ns="shop", rv="5"):
    meta = {"name": name, "namespace": ns, "uid": uid, "resourceVersion": rv}
    if deployment:
        meta["ownerReferences"] = [ref("Deployment", deployment, f"uid-{deployment}")]
    return {"kind": "PartialObjectMetadata", "metadata": meta}


def node(name, *addrs, uid=None, rv="1"):
    return {"metadata": {"name": name, "uid": uid or f"uid-{name}", "resourceVersion": rv},
            "status": {"addresses": [{"type": t, "address": a} for t, a in addrs]}}


def service(name, ns="shop", cluster_ips=("10.96.0.10",), external=(), lb=(), uid=None, rv="1"):
    return {"metadata": {"name": name, "namespace": ns, "uid": uid or f"uid-svc-{ns}-{name}", "resourceVersion": rv},
            "spec": {"clusterIP": cluster_ips[0] if cluster_ips else None, "clusterIPs": list(cluster_ips),
                     "externalIPs": list(external)},
            "status": {"loadBalancer": {"ingress": [{"ip": i} for i in lb]}}}


def samples(text: str) -> dict[str, float]:
    out = {}
    for line in text.split("\n"):
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


# -- owners, the way Caretta resolves them -------------------------------------------------------------
def test_owner_chains_follow_replicasets_and_jobs_to_their_controllers():
    c = nm.ClusterNames()
    c.replace("replicasets", [rs("web-7d9c5b8f4", "uid-rs1", deployment="web")])
    c.replace("jobs", [{"metadata": {"name": "backup-290000", "namespace": "ops", "uid": "uid-job1",
                                     "ownerReferences": [ref("CronJob", "backup", "uid-cron")]}},
                       {"metadata": {"name": "migrate", "namespace": "shop", "uid": "uid-job2"}}])
    c.replace("pods", [
        pod("web-7d9c5b8f4-abcde", "10.244.1.5", owner=ref("ReplicaSet", "web-7d9c5b8f4", "uid-rs1")),
        pod("backup-290000-xyz", "10.244.1.6", ns="ops", owner=ref("Job", "backup-290000", "uid-job1")),
        pod("migrate-q", "10.244.1.7", owner=ref("Job", "migrate", "uid-job2")),
        pod("db-0", "10.244.1.8", owner=ref("StatefulSet", "db", "uid-sts")),
        pod("agent-x1", "10.244.1.9", ns="kube-system", owner=ref("DaemonSet", "agent", "uid-ds")),
        pod("debug", "10.244.1.10"),
        pod("etcd-node1", "10.244.1.11", ns="kube-system", owner=ref("Node", "node1", "uid-node1")),
        # only the controller reference counts (metav1.GetControllerOf)
        pod("adopted", "10.244.1.12", owner=[ref("ConfigMap", "x", "uid-cm", controller=False)]),
    ])
    assert c.name("10.244.1.5") == "shop/web"  # Pod -> ReplicaSet -> Deployment
    assert c.name("10.244.1.6") == "ops/backup"  # Pod -> Job -> CronJob
    assert c.name("10.244.1.7") == "shop/migrate"  # a Job of its own
    assert c.name("10.244.1.8") == "shop/db"
    assert c.name("10.244.1.9") == "kube-system/agent"
    assert c.name("10.244.1.10") == "shop/debug"  # bare pod: its own name
    assert c.name("10.244.1.11") == "kube-system/etcd-node1"  # a static (mirror) pod: its own name, not the node's
    assert c.name("10.244.1.12") == "shop/adopted"
    assert c.name("192.0.2.1") is None


def test_an_owner_not_yet_known_names_the_pod_after_it_until_it_arrives():
    """Watchers run in parallel: a pod may come before its ReplicaSet. Names are resolved at lookup."""
    c = nm.ClusterNames()
    c.apply("pods", "ADDED", pod("web-7d9c5b8f4-abcde", "10.244.1.5", owner=ref("ReplicaSet", "web-7d9c5b8f4", "u-rs")))
    assert c.name("10.244.1.5") == "shop/web-7d9c5b8f4"  # Caretta's fallback: the owner's own name
    c.apply("replicasets", "ADDED", rs("web-7d9c5b8f4", "u-rs", deployment="web"))
    assert c.name("10.244.1.5") == "shop/web"
    c.apply("replicasets", "DELETED", rs("web-7d9c5b8f4", "u-rs", deployment="web"))
    assert c.name("10.244.1.5") == "shop/web-7d9c5b8f4"


# -- nodes, hostNetwork, services -----------------------------------------------------------------------
def test_nodes_by_internal_and_external_ip_and_host_network_pods_never_name_the_node_address():
    c = nm.ClusterNames()
    c.apply("pods", "ADDED", pod("kube-proxy-abc", "192.168.1.11", ns="kube-system", host_network=True,
                                 owner=ref("DaemonSet", "kube-proxy", "u-ds")))
    assert c.name("192.168.1.11") is None  # hostNetwork pods are not indexed: the node names that address
    c.replace("nodes", [node("worker-1", ("InternalIP", "192.168.1.11"), ("ExternalIP", "203.0.113.11"),
                             ("Hostname", "worker-1"))])
    assert c.name("192.168.1.11") == "node/worker-1"
    assert c.name("203.0.113.11") == "node/worker-1"
    assert c.name("worker-1") is None
    assert c.entries()["pods"] == 0


def test_node_wins_over_pod_and_pod_over_service_on_a_shared_address():
    c = nm.ClusterNames()
    c.apply("services", "ADDED", service("odd", cluster_ips=("10.0.0.5",)))
    assert c.name("10.0.0.5") == "service/shop/odd"
    c.apply("pods", "ADDED", pod("p", "10.0.0.5"))
    assert c.name("10.0.0.5") == "shop/p"
    c.apply("nodes", "ADDED", node("n1", ("InternalIP", "10.0.0.5")))
    assert c.name("10.0.0.5") == "node/n1"


def test_services_by_cluster_ips_external_ips_and_load_balancer_ingress():
    c = nm.ClusterNames()
    c.replace("services", [
        service("web", cluster_ips=("10.96.0.10", "fd00:10:96::a"), external=("198.51.100.7",), lb=("198.51.100.8",)),
        service("web", ns="staging", cluster_ips=("10.96.0.11",)),
        service("headless", cluster_ips=("None",)),
        {"metadata": {"name": "ext", "namespace": "shop", "uid": "u-ext"}, "spec": {"type": "ExternalName",
                                                                                    "externalName": "example.org"}},
    ])
    for a in ("10.96.0.10", "fd00:10:96::a", "198.51.100.7", "198.51.100.8"):
        assert c.name(a) == "service/shop/web"
    assert c.name("10.96.0.11") == "service/staging/web"  # same name, other namespace: kept apart
    assert c.entries()["services"] == 2  # headless and ExternalName have no address to name


def test_dual_stack_pod_is_named_by_both_addresses():
    c = nm.ClusterNames()
    c.apply("pods", "ADDED", pod("p", "10.244.0.5", ips=["10.244.0.5", "fd00:244::5"]))
    assert c.name("10.244.0.5") == c.name("fd00:244::5") == "shop/p"


# -- churn ---------------------------------------------------------------------------------------------
def test_an_address_reused_by_another_pod_names_the_live_pod():
    c = nm.ClusterNames()
    old = pod("web-a", "10.244.2.7", uid="u-a", rv="100")
    new = pod("api-b", "10.244.2.7", uid="u-b", rv="120")
    c.apply("pods", "ADDED", old)
    c.apply("pods", "ADDED", new)  # the new pod got the address while the old one is still Terminating
    assert c.name("10.244.2.7") == "shop/api-b"
    c.apply("pods", "MODIFIED", pod("web-a", "10.244.2.7", uid="u-a", rv="121"))  # the old one's status update
    assert c.name("10.244.2.7") == "shop/api-b"
    c.apply("pods", "DELETED", old)  # removes only what still belongs to the deleted UID
    assert c.name("10.244.2.7") == "shop/api-b"
    c.apply("pods", "DELETED", new)
    assert c.name("10.244.2.7") is None
    assert c.addrs["pods"] == {} and c.objs["pods"] == {}


def test_out_of_order_events_do_not_resurrect_a_deleted_or_finished_pod():
    c = nm.ClusterNames()
    c.apply("pods", "ADDED", pod("a", "10.244.3.1", uid="u-a", rv="10"))
    c.apply("pods", "DELETED", pod("a", "10.244.3.1", uid="u-a", rv="12"))
    c.apply("pods", "MODIFIED", pod("a", "10.244.3.1", uid="u-a", rv="11"))  # late, from before the delete
    assert c.name("10.244.3.1") is None
    # a finished pod releases its address, and an older event about it cannot bring it back
    c.apply("pods", "ADDED", pod("job-x", "10.244.3.2", uid="u-j", rv="20"))
    c.apply("pods", "MODIFIED", pod("job-x", "10.244.3.2", uid="u-j", rv="22", phase="Succeeded"))
    assert c.name("10.244.3.2") is None
    c.apply("pods", "MODIFIED", pod("job-x", "10.244.3.2", uid="u-j", rv="21"))
    assert c.name("10.244.3.2") is None
    # an event older than the stored one for the same UID is ignored
    c.apply("pods", "ADDED", pod("b", "10.244.3.3", uid="u-b", rv="30"))
    c.apply("pods", "MODIFIED", pod("b", "10.244.3.4", uid="u-b", rv="29"))
    assert c.name("10.244.3.3") == "shop/b" and c.name("10.244.3.4") is None
    assert c.stale == 3
    assert c.entries()["pods"] == 1


def test_failed_pod_releases_its_address_to_the_next_pod():
    c = nm.ClusterNames()
    c.apply("pods", "ADDED", pod("a", "10.244.4.1", uid="u-a"))
    c.apply("pods", "MODIFIED", pod("a", "10.244.4.1", uid="u-a", rv="11", phase="Failed"))
    c.apply("pods", "ADDED", pod("b", "10.244.4.1", uid="u-b", rv="12"))
    c.apply("pods", "DELETED", pod("a", "10.244.4.1", uid="u-a", rv="13"))
    assert c.name("10.244.4.1") == "shop/b"


def test_a_relist_removes_what_was_deleted_while_nobody_watched():
    c = nm.ClusterNames()
    c.replace("pods", [pod("a", "10.244.5.1"), pod("b", "10.244.5.2")])
    c.replace("pods", [pod("b", "10.244.5.2", rv="11"), pod("c", "10.244.5.3")])
    assert [c.name(f"10.244.5.{i}") for i in (1, 2, 3)] == [None, "shop/b", "shop/c"]
    assert c.synced["pods"] == 1


def test_bookmarks_and_garbage_change_nothing():
    c = nm.ClusterNames()
    c.apply("pods", "ADDED", pod("a", "10.244.6.1"))
    for kind, etype, obj in [("pods", "BOOKMARK", {"metadata": {"resourceVersion": "99"}}),
                             ("pods", "ADDED", {"metadata": "x"}), ("pods", "ADDED", {"metadata": {}}),
                             ("pods", "ADDED", None), ("secrets", "ADDED", pod("s", "10.244.6.2")),
                             ("pods", "ADDED", pod("bad", "not-an-ip")),
                             ("pods", "ADDED", {"metadata": {"uid": "u", "name": "n", "namespace": "x"},
                                                "status": {"podIPs": "10.0.0.1"}, "spec": []}),
                             ("nodes", "MODIFIED", {"metadata": {"uid": "n", "name": "n"}, "status": {"addresses": 5}})]:
        c.apply(kind, etype, obj)  # never raises: a watch must not stall on one object
    assert c.entries()["pods"] == 1 and c.name("10.244.6.1") == "shop/a"
    assert c.bad == 1  # the node whose addresses are not a list


# -- bounded memory ------------------------------------------------------------------------------------
def test_the_cap_falls_back_to_the_address_counts_the_overflow_and_relists_when_there_is_room():
    c = nm.ClusterNames(max_objects=3)
    c.replace("pods", [pod(f"p{i}", f"10.244.7.{i}") for i in range(5)])
    assert c.size() == 3 and c.overflow == 2
    named = [c.name(f"10.244.7.{i}") for i in range(5)]
    assert named.count(None) == 2
    assert not c.wants_relist("pods")  # still full
    c.apply("pods", "DELETED", pod("p0", "10.244.7.0"))
    c.apply("pods", "DELETED", pod("p1", "10.244.7.1"))
    assert c.wants_relist("pods")  # room again: the watcher LISTs to index what it refused
    c.replace("pods", [pod(f"p{i}", f"10.244.7.{i}") for i in range(2, 5)])
    assert [c.name(f"10.244.7.{i}") for i in range(2, 5)] == ["shop/p2", "shop/p3", "shop/p4"]
    assert not c.wants_relist("pods")
    a = fa.Aggregator(names=nm.Names(nm.ClusterNames(max_objects=1)))
    a.names.cluster.replace("pods", [pod("p0", "10.244.8.0"), pod("p1", "10.244.8.1")])
    a.feed([REC % (100, "10.244.8.0", "10.244.8.1")])
    m = samples(a.render())
    assert m[talker(src="10.244.8.0", dst="10.244.8.1", src_name="shop/p0", src_kind="workload")] == 100  # the refused pod's address stands for itself
    assert m["netviz_flow_names_overflow_total"] == 1


def test_memory_of_10000_pods_worth_of_addresses():
    """10,000 pods (2,000 Deployments with their ReplicaSets, 2,000 Services, 90 nodes) in well under
    1 KiB per pod of Python heap; benchmarks/flowagg_names.py has the figures (about 0.56 KiB)."""
    def pods(start, n, gen=0):
        return [pod(f"app-{i // 5}-{gen}-{i}", f"10.{64 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}", uid=f"u-{gen}-{i}",
                    ns=f"team-{i // 5 % 40}", owner=ref("ReplicaSet", f"app-{i // 5}-{gen}", f"u-rs-{gen}-{i // 5}"),
                    rv=str(1000 + i + gen * 10_000)) for i in range(start, start + n)]

    gc.collect()
    tracemalloc.start()
    try:
        c = nm.ClusterNames()
        c.replace("nodes", [node(f"node-{i}", ("InternalIP", f"192.168.0.{i}")) for i in range(90)])
        c.replace("services", [service(f"app-{i}", ns=f"team-{i % 40}", cluster_ips=(f"10.96.{i >> 8}.{i & 255}",))
                               for i in range(2000)])
        c.replace("replicasets", [rs(f"app-{d}-0", f"u-rs-0-{d}", deployment=f"app-{d}", ns=f"team-{d % 40}")
                                  for d in range(2000)])
        seen = c.list_begin("pods")
        for start in range(0, 10_000, nm.PAGE):
            c.list_page("pods", json.loads(json.dumps(pods(start, nm.PAGE))), seen)
        c.list_end("pods", seen)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert c.entries() == {"pods": 10_000, "services": 2000, "nodes": 90, "replicasets": 2000, "jobs": 0}
    assert held / 10_000 < 1024, f"{held / 10_000:.0f} B per pod"
    # address churn: every pod replaced by a new one on the same address (a rollout of everything), twice
    for gen in (1, 2):
        c.replace("replicasets", [rs(f"app-{d}-{gen}", f"u-rs-{gen}-{d}", deployment=f"app-{d}", ns=f"team-{d % 40}")
                                  for d in range(2000)])
        for new, old in zip(pods(0, 10_000, gen), pods(0, 10_000, gen - 1)):
            c.apply("pods", "ADDED", new)
            c.apply("pods", "DELETED", old)
    assert c.name("10.64.0.7") == "team-1/app-1"
    # what churn leaves behind is bounded (benchmarks/flowagg_names.py: traced memory flat over rollouts)
    assert c.entries() == {"pods": 10_000, "services": 2000, "nodes": 90, "replicasets": 2000, "jobs": 0}
    assert len(c.addrs["pods"]) == 10_000 and all(isinstance(v, str) for v in c.addrs["pods"].values())
    assert len(c.dead) == nm.DEFAULT_TOMBSTONES and len(c.strs) <= 2 * c.live_strs + 4096 <= 2 * c.size() + 4096


# -- the aggregator with names -------------------------------------------------------------------------
def cluster():
    c = nm.ClusterNames()
    c.replace("nodes", [node("worker-1", ("InternalIP", "192.168.1.11"))])
    c.replace("replicasets", [rs("web-7d9c5b8f4", "u-rs", deployment="web")])
    c.replace("pods", [pod("web-7d9c5b8f4-x", "10.244.1.5", owner=ref("ReplicaSet", "web-7d9c5b8f4", "u-rs"))])
    c.replace("services", [service("db", cluster_ips=("10.96.0.20",))])
    return c


def test_talkers_carry_names_with_the_address_as_fallback_and_exporters_stay_addresses():
    a = fa.Aggregator(names=nm.Names(cluster(), hosts={"192.168.1.50": "nas"}))
    a.feed([REC % (100, "10.244.1.5", "10.96.0.20"), REC % (200, "192.168.1.11", "198.51.100.1"),
            REC % (300, "192.168.1.50", "10.244.1.5")])
    m = samples(a.render())
    assert m[talker(src="10.244.1.5", dst="10.96.0.20", src_name="shop/web", dst_name="service/shop/db",
                    src_kind="workload", dst_kind="service")] == 100
    assert m[talker(src="192.168.1.11", dst="198.51.100.1", src_name="node/worker-1", src_kind="node")] == 200
    assert m[talker(src="192.168.1.50", dst="10.244.1.5", src_name="nas", dst_name="shop/web",
                    src_kind="host", dst_kind="workload")] == 300
    assert m[OTHER_TALKER] == 0
    assert m['netviz_flow_exporter_bytes_total{exporter="198.18.5.2"}'] == 600
    assert m['netviz_flow_names_entries{kind="pods"}'] == 1 and m['netviz_flow_names_entries{kind="hosts"}'] == 1


def test_without_names_the_series_count_and_the_budget_are_as_before():
    plain = fa.Aggregator()
    named = fa.Aggregator(names=nm.Names(hosts={"192.0.2.1": "x"}))
    assert named.budget() == plain.budget() + nm.Names.SERIES
    plain.feed([REC % (100, "10.0.0.1", "10.0.0.2")])
    text = plain.render()
    # the name labels are always there (the address when nothing names it): one label set for dashboards
    assert ('src="10.0.0.1",dst="10.0.0.2",src_name="10.0.0.1",dst_name="10.0.0.2",src_kind="address",'
            'dst_kind="address",src_net="other",dst_net="other"') in text
    assert "netviz_flow_names" not in text
    # defaults: 3 (100+1 + 16+1 + 50+1 + 32+1 + 1+1) + 3 (32+1) + 33 = 744; with names + 27
    assert plain.budget() == 744 and named.budget() == 771


def test_names_health_series_are_exactly_the_stated_number():
    for names in (nm.Names(hosts={"192.0.2.1": "x"}), nm.Names(cluster())):
        assert sum(len(s) for _, _, _, s in names.samples()) == nm.Names.SERIES


def test_make_names_reads_the_config():
    assert fa.make_names(None) is None and fa.make_names({"kubernetes": False}) is None
    n = fa.make_names({"kubernetes": True, "max_entries": 500, "hosts": {"192.0.2.1": "printer"}})
    assert n.cluster.max_objects == 500 and n.name("192.0.2.1") == "printer"
    assert fa.make_names({"hosts": {"192.0.2.1": "printer"}}).cluster is None


def test_a_name_change_replaces_the_pairs_series_and_keeps_its_counter():
    c = nm.ClusterNames()
    c.apply("pods", "ADDED", pod("web-a", "10.244.2.7", uid="u-a"))
    a = fa.Aggregator(top_k={"talkers": 2}, names=nm.Names(c))
    a.feed([REC % (100, "10.244.2.7", "10.96.0.1")])
    before = samples(a.render())
    c.apply("pods", "DELETED", pod("web-a", "10.244.2.7", uid="u-a"))
    c.apply("pods", "ADDED", pod("api-b", "10.244.2.7", uid="u-b"))
    a.feed([REC % (50, "10.244.2.7", "10.96.0.1")])
    after = samples(a.render())
    talkers = [k for k in after if k.startswith("netviz_flow_talker_bytes_total")]
    assert len(talkers) == 2  # the pair and "other": the old name's series is gone, not added to
    assert after[talker(src="10.244.2.7", dst="10.96.0.1", src_name="shop/api-b", src_kind="workload")] == 150
    assert after["netviz_flow_series"] == before["netviz_flow_series"]


churn_ops = st.lists(st.tuples(st.sampled_from(["add", "delete", "finish", "flow", "render"]),
                               st.integers(0, 11), st.integers(0, 5)), max_size=80)


@settings(max_examples=150, deadline=None)
@given(churn_ops)
def test_series_stay_within_the_budget_under_address_churn(ops):
    """Pods come and go on a few reused addresses while flows arrive: every scrape has exactly one
    series per tracked pair (whatever its current names), never more than the budget, and the talker
    byte counters still sum to the total."""
    c = nm.ClusterNames(max_objects=8)
    a = fa.Aggregator(top_k={"talkers": 4, "ports": 2, "protocols": 2, "exporters": 2}, names=nm.Names(c))
    live: dict[int, tuple[str, int]] = {}  # pod slot -> (its UID, address number)
    rv = 0
    for op, n, addr in ops:
        rv += 1
        ip = f"10.244.9.{addr}"
        if op == "add" and n not in live:
            live[n] = (f"u{n}-{rv}", addr)  # a new pod: a new UID (UIDs are never reused)
            c.apply("pods", "ADDED", pod(f"p{n}-{rv}", ip, uid=live[n][0], rv=str(rv),
                                         owner=ref("ReplicaSet", f"rs{n % 3}", f"u-rs{n % 3}")))
        elif op in ("delete", "finish") and n in live:
            uid, at = live.pop(n)
            p = pod(f"p{n}", f"10.244.9.{at}", uid=uid, rv=str(rv), phase="Succeeded" if op == "finish" else "Running")
            c.apply("pods", "DELETED" if op == "delete" else "MODIFIED", p)
        elif op == "flow":
            a.feed([REC % (n + 1, ip, f"10.244.9.{n % 6}")])
        text = a.render()
        lines = [ln for ln in text.split("\n") if ln and not ln.startswith("#")]
        talkers = [ln for ln in lines if ln.startswith("netviz_flow_talker_bytes_total")]
        assert len(talkers) == len(a.sketch["talkers"].entries) + 1
        assert len({t.split("src_name")[0] for t in talkers}) == len(talkers)  # one series per pair
        assert len(lines) <= a.budget()
        m = samples(text)
        assert sum(m[t.rsplit(" ", 1)[0]] for t in talkers) == m["netviz_flow_bytes_total"]
        # the index agrees with the live pods: each address names a live pod that holds it, or nothing
        for x in range(6):
            got = c.name(f"10.244.9.{x}")
            holders = [u for u, at in live.values() if at == x]
            assert (got is None) == (not holders) or c.overflow
            assert got is None or any(got == "shop/" + rs_name for rs_name in ("rs0", "rs1", "rs2"))


# -- shipping: the ConfigMap, the pod, RBAC --------------------------------------------------------------
def test_the_configmap_ships_both_files_and_they_run_together(settings, tmp_path):
    cm = {o["metadata"]["name"]: o for o in goflow2.render(settings) if o["kind"] == "ConfigMap"}["goflow2-flowagg"]
    assert set(cm["data"]) == {"flowagg.py", "names.py", "config.json"}
    assert "class ClusterNames" in cm["data"]["names.py"]
    cfg = json.loads(cm["data"]["config.json"])
    assert cfg["names"] == {"kubernetes": True, "max_entries": 50_000, "hosts": {},
                            "router_hosts_dir": goflow2.ROUTER_HOSTS_DIR}
    for name, text in cm["data"].items():
        (tmp_path / name).write_text(text)
    # -I: no site, no repo, not even the script's directory on sys.path: flowagg.py finds names.py itself
    code = ("import runpy, sys; sys.argv = ['flowagg.py', '--help']; "
            f"runpy.run_path({str(tmp_path / 'flowagg.py')!r}, run_name='__main__')")
    out = subprocess.run([sys.executable, "-I", "-B", "-c", code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "names" in out.stdout, out.stderr


def test_the_aggregator_has_its_own_service_account_with_only_get_list_watch(settings):
    objs = {(o["kind"], o["metadata"]["name"]): o for o in goflow2.render(settings)}
    sa = objs[("ServiceAccount", "netviz-flowagg")]
    assert sa["metadata"]["namespace"] == "goflow2"
    role = objs[("ClusterRole", "netviz-flowagg")]
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["pods", "services", "nodes"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["apps"], "resources": ["replicasets"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list", "watch"]}]
    # exactly what names.py requests
    paths = {p for p, _, _ in nm.RESOURCES.values()}
    assert paths == {"/api/v1/pods", "/api/v1/services", "/api/v1/nodes", "/apis/apps/v1/replicasets",
                     "/apis/batch/v1/jobs"}
    binding = objs[("ClusterRoleBinding", "netviz-flowagg")]
    assert binding["roleRef"]["name"] == "netviz-flowagg"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "netviz-flowagg", "namespace": "goflow2"}]
    pod_spec = objs[("Deployment", "goflow2")]["spec"]["template"]["spec"]
    assert pod_spec["serviceAccountName"] == "netviz-flowagg" and pod_spec["automountServiceAccountToken"] is False
    gf, agg = pod_spec["containers"]
    token_mounts = [m for m in agg["volumeMounts"] if m["mountPath"] == nm.SA_DIR]
    assert len(token_mounts) == 1 and token_mounts[0]["readOnly"]
    assert not any(m["mountPath"] == nm.SA_DIR for m in gf["volumeMounts"])  # GoFlow2 gets no credentials
    vol = {v["name"]: v for v in pod_spec["volumes"]}[token_mounts[0]["name"]]
    assert {next(iter(s)) for s in vol["projected"]["sources"]} == {"serviceAccountToken", "configMap", "downwardAPI"}
    # cluster-scoped RBAC is for the administrator; the ServiceAccount is the pipeline's to apply
    assert install.is_install_object(role) and install.is_install_object(binding) and not install.is_install_object(sa)
    installed = {(o["kind"], o["metadata"]["name"]) for o in install.install_objects(settings)}
    assert {("ClusterRole", "netviz-flowagg"), ("ClusterRoleBinding", "netviz-flowagg")} <= installed
    # the pipeline's Role in GoFlow2's namespace already lets it apply the ServiceAccount (workloads)
    role = [o for o in install.install_objects(settings) if o["kind"] == "Role"
            and o["metadata"]["namespace"] == "goflow2"][0]
    assert any("serviceaccounts" in r["resources"] and {"create", "patch"} <= set(r["verbs"]) for r in role["rules"])


def test_names_off_means_no_account_no_role_no_token(make):
    s = make(flows={"names": {"kubernetes": False, "hosts": {"192.168.1.50": "nas"}}})
    objs = goflow2.render(s)
    assert not [o for o in objs if o["kind"] in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding")]
    pod_spec = [o for o in objs if o["kind"] == "Deployment"][0]["spec"]["template"]["spec"]
    assert pod_spec["serviceAccountName"] == "default" and pod_spec["automountServiceAccountToken"] is False
    assert all(m["mountPath"] != nm.SA_DIR for c in pod_spec["containers"] for m in c["volumeMounts"])
    assert not any(o["metadata"]["name"] == "netviz-flowagg" for o in install.install_objects(s))
    cfg = json.loads([o for o in objs if o["kind"] == "ConfigMap"][0]["data"]["config.json"])
    assert cfg["names"] == {"kubernetes": False, "max_entries": 50_000, "hosts": {"192.168.1.50": "nas"},
                            "router_hosts_dir": goflow2.ROUTER_HOSTS_DIR}


def test_the_admission_policy_lets_only_goflow2s_deployment_use_the_aggregators_account(settings):
    policy = [o for o in install.install_objects(settings) if o["kind"] == "ValidatingAdmissionPolicy"][0]
    sa_rule = [v for v in policy["spec"]["validations"] if "serviceAccountName" in v["expression"]][0]["expression"]
    assert '"netviz-flowagg"' in sa_rule and 'request.namespace == "goflow2"' in sa_rule
    assert 'object.metadata.name == "goflow2"' in sa_rule and "request.kind.kind == 'Deployment'" in sa_rule


# -- the API client, without an API server ---------------------------------------------------------------
class FakeResp:
    def __init__(self, body: bytes):
        self.buf = io.BytesIO(body)

    def read(self, n=-1):
        return self.buf.read(n)

    def readline(self, limit=-1):
        return self.buf.readline(limit)


class FakeConn:
    closed = False

    def close(self):
        self.closed = True


class FakeApi:
    """Answers queued responses; records (path, query, accept)."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.requests = []

    def request(self, path, query, accept, timeout):
        self.requests.append((path, dict(query), accept))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return FakeConn(), FakeResp(answer)


def lines(*events):
    return b"".join(json.dumps(e).encode() + b"\n" for e in events)


def test_watcher_lists_in_pages_then_watches_with_bookmarks_and_relists_on_410():
    c = nm.ClusterNames()
    api = FakeApi([
        json.dumps({"metadata": {"resourceVersion": "100", "continue": "tok"},
                    "items": [pod("a", "10.244.1.1", uid="u-a")]}).encode(),
        json.dumps({"metadata": {"resourceVersion": "100"}, "items": [pod("b", "10.244.1.2", uid="u-b")]}).encode(),
        lines({"type": "ADDED", "object": pod("c", "10.244.1.3", uid="u-c", rv="101")},
              {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "150"}}},
              {"type": "DELETED", "object": pod("a", "10.244.1.1", uid="u-a", rv="151")}),
        lines({"type": "ERROR", "object": {"kind": "Status", "code": 410, "message": "too old resource version"}}),
        json.dumps({"metadata": {"resourceVersion": "300"}, "items": [pod("c", "10.244.1.3", uid="u-c", rv="101")]}).encode(),
    ])
    logs = []
    w = nm.Watcher(api, c, "pods", log=logs.append, sleep=lambda s: None)
    w.run(rounds=4)  # LIST (2 pages), WATCH, WATCH (410), LIST
    (p1, q1, a1), (p2, q2, _), (p3, q3, a3), (_, q4, _), (_, q5, _) = api.requests
    assert p1 == "/api/v1/pods" and a1 == "application/json" and q1["limit"] == str(nm.PAGE)
    assert q1["fieldSelector"] == "status.phase!=Succeeded,status.phase!=Failed"
    assert q2["continue"] == "tok" and "watch" not in q2
    assert q3["watch"] == "1" and q3["resourceVersion"] == "100" and q3["allowWatchBookmarks"] == "true"
    assert q4["resourceVersion"] == "151"  # the stream ended: resume from the last event, no LIST
    assert "watch" not in q5 and "continue" not in q5  # 410: LIST again
    assert [c.name(f"10.244.1.{i}") for i in (1, 2, 3)] == [None, None, "shop/c"]  # b vanished while gone
    assert c.watch_errors["pods"] == 1 and c.synced["pods"] == 1
    assert any("410" in m for m in logs)


def test_replicasets_and_jobs_are_read_as_metadata_only():
    for kind in ("replicasets", "jobs"):
        api = FakeApi([json.dumps({"metadata": {"resourceVersion": "1"}, "items": []}).encode(), b""])
        nm.Watcher(api, nm.ClusterNames(), kind, sleep=lambda s: None).run(rounds=2)
        (_, _, list_accept), (_, _, watch_accept) = api.requests
        assert list_accept == "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
        assert watch_accept == "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json"
    for kind in ("pods", "services", "nodes"):
        assert not nm.RESOURCES[kind][2]


def test_watcher_backs_off_on_errors_and_logs_a_repeated_failure_once():
    c = nm.ClusterNames()
    forbidden = nm.ApiError(403, 'pods is forbidden: User "system:serviceaccount:goflow2:netviz-flowagg" cannot list')
    api = FakeApi([forbidden] * 8)
    slept, logs = [], []
    nm.Watcher(api, c, "pods", log=logs.append, sleep=slept.append).run(rounds=8)
    assert c.watch_errors["pods"] == 8 and c.synced["pods"] == 0
    assert len(logs) == 1 and "403" in logs[0]
    assert slept[-1] <= nm.BACKOFF_MAX and slept[-1] > slept[0]  # exponential, capped
    assert all(s <= nm.BACKOFF_MAX for s in slept)


def test_in_cluster_config_rereads_the_rotating_token_and_never_logs_it(tmp_path, monkeypatch):
    ca = tmp_path / "ca.crt"
    pytest.importorskip("cryptography")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    import datetime

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "test-ca")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(key, hashes.SHA256()))
    ca.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "token").write_text("secret-token-1\n")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(RuntimeError, match="not in a cluster"):
        nm.InCluster(sa_dir=str(tmp_path))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "1")  # nothing listens: connection refused
    api = nm.InCluster(sa_dir=str(tmp_path), token_ttl=0)
    assert api.token() == "secret-token-1"
    (tmp_path / "token").write_text("secret-token-2\n")  # the kubelet rotated it
    assert api.token() == "secret-token-2"
    logs = []
    nm.Watcher(api, nm.ClusterNames(), "nodes", log=logs.append, sleep=lambda s: None).run(rounds=2)
    assert logs and not any("secret-token" in m for m in logs)


def test_start_outside_a_cluster_starts_nothing(monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    logs = []
    assert nm.start(nm.ClusterNames(), log=logs.append) == []
    assert "not in a cluster" in logs[0]


def _tls_files(tmp_path):
    """A CA and a server certificate for 127.0.0.1 (as the API server's service IP would be)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    now = datetime.datetime.now(datetime.timezone.utc)

    def cert(subject, issuer, pub, sign_key, ca):
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(pub).serial_number(
            x509.random_serial_number()).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                critical=False)
        return b.sign(sign_key, hashes.SHA256())

    name = lambda cn: x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, cn)])  # noqa: E731
    ca_key, srv_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = cert(name("test-ca"), name("test-ca"), ca_key.public_key(), ca_key, True)
    srv = cert(name("kubernetes"), name("test-ca"), srv_key.public_key(), ca_key, False)
    pem = serialization.Encoding.PEM
    (tmp_path / "ca.crt").write_bytes(ca.public_bytes(pem))
    (tmp_path / "srv.pem").write_bytes(srv.public_bytes(pem) + srv_key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return tmp_path / "ca.crt", tmp_path / "srv.pem"


def test_list_and_watch_over_https_with_a_rotated_token(tmp_path, monkeypatch):
    """InCluster + Watcher against a TLS server speaking the API server's LIST/WATCH protocol: CA from
    ca.crt, bearer token re-read after a 401 (rotated), chunked watch stream, 410 -> LIST again."""
    import http.server
    import ssl
    import threading

    pytest.importorskip("cryptography")
    ca, srv_pem = _tls_files(tmp_path)
    (tmp_path / "token").write_text("old-token\n")
    requests, valid = [], {"token": "new-token"}
    watch_answers = [[{"type": "ADDED", "object": node("n2", ("InternalIP", "192.168.9.2"), rv="11")},
                      {"type": "BOOKMARK", "object": {"kind": "Node", "metadata": {"resourceVersion": "20"}}}],
                     410]

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):  # noqa: N802
            requests.append((self.path, self.headers.get("Authorization"), self.headers.get("Accept")))
            if self.headers.get("Authorization") != "Bearer " + valid["token"]:
                return self.reply(401, {"kind": "Status", "code": 401, "message": "Unauthorized"})
            if "watch=1" not in self.path:
                return self.reply(200, {"kind": "NodeList", "metadata": {"resourceVersion": "10"},
                                        "items": [node("n1", ("InternalIP", "192.168.9.1"), rv="9")]})
            answer = watch_answers.pop(0)
            if answer == 410:
                return self.reply(410, {"kind": "Status", "code": 410, "message": "too old resource version"})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for ev in answer:
                data = json.dumps(ev).encode() + b"\n"
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.write(b"0\r\n\r\n")

        def reply(self, code, body):
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(srv_pem)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(srv.server_address[1]))
        api = nm.InCluster(sa_dir=str(tmp_path))  # token_ttl 60 s: the 401 alone makes it re-read
        assert api.token() == "old-token"
        (tmp_path / "token").write_text("new-token\n")  # the kubelet rotates it after our read
        c, logs = nm.ClusterNames(), []
        # LIST (401: token re-read), LIST, WATCH (2 events, stream ends), WATCH (410), LIST
        nm.Watcher(api, c, "nodes", log=logs.append, sleep=lambda s: None).run(rounds=5)
    finally:
        srv.shutdown()
        srv.server_close()
    assert [p.split("?")[0] for p, _, _ in requests] == ["/api/v1/nodes"] * 5
    assert [a for _, a, _ in requests] == ["Bearer old-token"] + ["Bearer new-token"] * 4
    watch = [p for p, _, _ in requests if "watch=1" in p]
    assert "resourceVersion=10" in watch[0] and "allowWatchBookmarks=true" in watch[0]
    assert "resourceVersion=20" in watch[1]  # resumed from the bookmark
    assert "watch=1" not in requests[4][0]  # 410: LIST again
    assert c.name("192.168.9.1") == "node/n1" and c.name("192.168.9.2") is None  # n2 gone from the last LIST
    assert c.watch_errors["nodes"] == 2 and c.synced["nodes"] == 1
    assert not any("token" in m and ("old-token" in m or "new-token" in m) for m in logs)
