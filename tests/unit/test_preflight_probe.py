"""The Caretta preflight probe: its DaemonSet (restricted, allowed by the admission policy), the shipped
script, the record on Caretta's DaemonSet, and the caretta asset's probe run against a fake cluster."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

import dagster as dg

from netviz_pipeline.checks import preflight
from netviz_pipeline.assets import caretta as caretta_asset
from netviz_pipeline.render import caretta, install
from netviz_pipeline.render import preflight_probe as probe


def _pod(ds):
    return ds["spec"]["template"]["spec"]


def test_probe_daemonset_is_restricted_and_runs_where_caretta_runs(settings):
    ds = probe.daemonset(settings)
    pod, carettas = _pod(ds), _pod(caretta.daemonset(settings))
    (c,) = pod["containers"]
    assert ds["metadata"]["name"] == "caretta-preflight" and ds["metadata"]["namespace"] == settings.caretta.namespace
    assert ds["spec"]["selector"]["matchLabels"] == {"app": "caretta-preflight"}
    assert ds["spec"]["template"]["metadata"]["labels"]["app"] == "caretta-preflight"  # not Caretta's pods
    assert pod["nodeSelector"] == carettas["nodeSelector"] and pod["tolerations"] == carettas["tolerations"]
    assert c["image"] == settings.flows.image and c["command"][:2] == ["python3", "-c"]
    assert pod["serviceAccountName"] == "default" and pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["securityContext"] == {"runAsNonRoot": True, "runAsUser": 65534, "runAsGroup": 65534,
                                    "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]}}
    assert "volumes" not in pod and "volumeMounts" not in c and "ports" not in c
    assert not {"hostNetwork", "hostPID", "hostIPC"} & set(pod)
    assert set(c["resources"]["requests"]) == set(c["resources"]["limits"]) == {"cpu", "memory"}
    assert c["env"] == [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]


def test_probe_daemonset_passes_the_admission_policy(settings, make):
    """As far as a unit test can: the policy's image list holds the probe's image (also when it is not
    the default), and the probe uses none of what the policy's other rules refuse."""
    for s in (settings, make(flows={"image": "registry.example/python:3.13-alpine"})):
        (policy,) = [o for o in install.admission_policy(s, install.Subject.parse(install.DEFAULT_SUBJECT))
                     if o["kind"] == "ValidatingAdmissionPolicy" and o["metadata"]["name"] == install.NAME]
        images = policy["spec"]["validations"][0]["expression"]
        assert json.dumps(probe.daemonset(s)["spec"]["template"]["spec"]["containers"][0]["image"]) in images
    pod = _pod(probe.daemonset(settings))
    text = json.dumps(pod)
    for refused in ("privileged", "hostPath", "\"add\"", "Unconfined", "procMount", "seLinuxOptions", "sysctls",
                    "hostPort", "hostProcess", "appArmorProfile"):
        assert refused not in text, refused
    assert pod["containers"][0]["image"] != settings.caretta.image  # command allowed: not Caretta's image


def test_the_shipped_script_prints_one_json_line_and_stops_on_sigterm():
    proc = subprocess.Popen([sys.executable, "-c", probe.SCRIPT], stdout=subprocess.PIPE, text=True,
                            env={"NODE_NAME": "n1", "PATH": "/usr/bin:/bin"})
    try:
        answer = json.loads(proc.stdout.readline())
        assert answer["node"] == "n1" and set(answer) == {"kernel", "kprobes", "btf", "source", "node"}
        assert answer["kprobes"] in (True, False, None) and isinstance(answer["btf"], bool)
        assert proc.poll() is None  # stays running until deleted
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        proc.kill()


def node(name, boot, os_name="linux"):
    return {"metadata": {"name": name},
            "status": {"nodeInfo": {"kernelVersion": "6.18.0", "operatingSystem": os_name, "bootID": boot}}}


def test_fingerprint_changes_with_a_boot_id_or_the_node_set_only():
    base = [node("a", "1"), node("b", "2"), node("win", "3", "windows")]
    fp = preflight.nodes_fingerprint(base)
    assert fp == preflight.nodes_fingerprint(list(reversed(base)))  # order does not matter
    assert fp == preflight.nodes_fingerprint(base[:2] + [node("win", "9", "windows")])  # nor non-linux nodes
    assert fp != preflight.nodes_fingerprint([node("a", "1"), node("b", "rebooted")])
    assert fp != preflight.nodes_fingerprint(base + [node("c", "4")])
    assert len(fp) == 64


def test_the_record_rides_on_carettas_daemonset(settings):
    assert "annotations" not in caretta.daemonset(settings)["metadata"]  # unchanged without a record
    record = caretta.preflight_record("f" * 64, ["n2", "n1"])
    assert record == {"netviz.io/preflight-nodes": "f" * 64, "netviz.io/preflight-no-kprobes": "n1,n2"}
    ds = [o for o in caretta.render(settings, record) if o["kind"] == "DaemonSet"][0]
    assert ds["metadata"]["annotations"] == record and "annotations" not in ds["spec"]["template"]["metadata"]
    assert caretta.recorded_preflight(ds) == ("f" * 64, ["n1", "n2"])
    assert caretta.recorded_preflight(caretta.daemonset(settings, caretta.preflight_record("e" * 64, []))) == \
        ("e" * 64, [])
    assert caretta.recorded_preflight(None) is None and caretta.recorded_preflight(caretta.daemonset(settings)) is None


# -- the asset's probe run, against a fake cluster ----------------------------------------------------
ANSWER = {"kernel": "6.18.0", "kprobes": False, "btf": True, "source": "/proc/config.gz"}


def running_pod(name, node_name, uid="ds-1", **extra):
    return {"metadata": {"name": name, "namespace": "caretta", "ownerReferences": [{"uid": uid}], **extra},
            "spec": {"nodeName": node_name},
            "status": {"phase": "Running", "containerStatuses": [{"state": {"running": {}}}]}}


class FakeKube:
    def __init__(self, pods, logs, live_caretta=None, may_delete=True, desired=None):
        self.pods, self.logs, self.live_caretta, self.may_delete = pods, logs, live_caretta, may_delete
        self.desired = desired
        self.deleted, self.log_reads = [], 0

    def get(self, api_version, kind, name, namespace=None):
        if name == caretta.NAME:
            return self.live_caretta
        return {"metadata": {"name": name, "namespace": namespace, "uid": "ds-1", "generation": 1},
                "spec": {"selector": {"matchLabels": probe.SELECTOR}},
                "status": {"observedGeneration": 1,
                           "desiredNumberScheduled": len(self.pods) if self.desired is None else self.desired}}

    def allowed(self, verb, group, resource, namespace, name):
        return self.may_delete

    def delete(self, api_version, kind, name, namespace=None):
        self.deleted.append((kind, namespace, name))
        return True

    def pod_log(self, namespace, name):
        self.log_reads += 1
        log = self.logs[name]
        if isinstance(log, BaseException):
            raise log
        return log


class FakeCluster:
    def __init__(self, settings, kube):
        self.settings, self.kube, self.applied, self.objs = settings, kube, [], []

    def require_installed(self, wanted):
        pass

    def apply(self, objs):
        self.applied += [o["metadata"]["name"] for o in objs]
        self.objs += objs
        return []

    def pods_of(self, workload):
        return self.kube.pods


NODES = [node("real", "boot-1"), node("kwok-1", "")]


def test_probe_collects_answers_treats_unreadable_logs_at_once_and_deletes_the_probe(settings):
    pods = [running_pod("p1", "real"), running_pod("p2", "kwok-1"),
            running_pod("old", "real", uid="ds-0"),  # an earlier probe's pod: ignored
            running_pod("dying", "kwok-1", deletionTimestamp="now")]
    kube = FakeKube(pods, {"p1": "hello\n" + json.dumps(ANSWER | {"node": "real"}), "p2": RuntimeError("no logs")},
                    desired=2)
    cluster = FakeCluster(settings, kube)
    start = time.monotonic()
    findings, record, how = caretta_asset.probe_or_recorded(cluster, NODES)
    assert time.monotonic() - start < 1  # no waiting: every pod answered or cannot
    assert cluster.applied == ["caretta-preflight"] and kube.deleted == [("DaemonSet", "caretta", "caretta-preflight")]
    assert [(f.node, f.severity, f.check) for f in findings] == [("real", "error", "kprobes"),
                                                                  ("kwok-1", "warning", "")]
    assert "log cannot be read (RuntimeError)" in findings[1].message
    assert record == caretta.preflight_record(preflight.nodes_fingerprint(NODES), ["real"])
    assert how.startswith("probed: 1 node(s) answered (real)")


def test_a_recorded_probe_of_the_same_nodes_is_not_repeated(settings):
    record = caretta.preflight_record(preflight.nodes_fingerprint(NODES), ["real"])
    kube = FakeKube([], {}, live_caretta={"metadata": {"annotations": record}})
    cluster = FakeCluster(settings, kube)
    findings, again, how = caretta_asset.probe_or_recorded(cluster, NODES)
    assert again == record and cluster.applied == [] and kube.deleted == [] and how.startswith("recorded")
    assert [(f.node, f.check) for f in findings] == [("real", "kprobes")]
    rebooted = [node("real", "boot-2"), node("kwok-1", "")]
    kube.pods, kube.logs = [running_pod("p1", "real")], {"p1": json.dumps(ANSWER | {"kprobes": True})}
    findings, again, how = caretta_asset.probe_or_recorded(cluster, rebooted)
    assert cluster.applied == ["caretta-preflight"] and how.startswith("probed")
    assert [(f.node, f.severity) for f in findings] == [("kwok-1", "warning")]  # no pod there this time
    assert again == caretta.preflight_record(preflight.nodes_fingerprint(rebooted), [])


def test_a_silent_pod_times_out_is_not_recorded_and_the_probe_is_still_deleted(settings):
    pending = {"metadata": {"name": "p1", "namespace": "caretta", "ownerReferences": [{"uid": "ds-1"}]},
               "spec": {"nodeName": "real"},
               "status": {"phase": "Pending",
                          "containerStatuses": [{"state": {"waiting": {"reason": "ContainerCreating"}}}]}}
    kube = FakeKube([pending], {})
    cluster = FakeCluster(settings, kube)
    results, settled = caretta_asset.run_probe(cluster, timeout=0.2, every=0.05)
    assert not settled and results == {"real": "no answer within 0 s (Pending: ContainerCreating)"}
    assert kube.log_reads == 0 and kube.deleted == [("DaemonSet", "caretta", "caretta-preflight")]


def test_the_probe_is_deleted_when_collecting_fails_and_never_started_without_delete(settings):
    kube = FakeKube([running_pod("p1", "real")], {"p1": KeyboardInterrupt()})  # not a log error: raised
    cluster = FakeCluster(settings, kube)
    with pytest.raises(KeyboardInterrupt):
        caretta_asset.run_probe(cluster, timeout=1)
    assert kube.deleted == [("DaemonSet", "caretta", "caretta-preflight")]
    denied = FakeCluster(settings, FakeKube([], {}, may_delete=False))
    with pytest.raises(Exception, match="may not delete DaemonSet caretta/caretta-preflight"):
        caretta_asset.run_probe(denied)
    assert denied.applied == [] and denied.kube.deleted == []


def test_the_asset_goes_ahead_with_standin_says_so_and_a_second_run_does_not_probe(make):
    nodes = [node("real", "boot-1")]
    kube = FakeKube([running_pod("p1", "real")], {"p1": json.dumps(ANSWER)})
    kube.list = lambda *args, **kwargs: nodes
    cluster = FakeCluster(make(caretta={"namespace": "caretta", "preflight": "standin"}), kube)
    first = caretta_asset.caretta(dg.build_asset_context(), cluster=cluster)
    assert first.metadata["preflight_overridden"].value == (
        "caretta.preflight: standin: went ahead on nodes without kprobes: real; Caretta's eBPF probe cannot run "
        "there: what runs is a stand-in")
    (ds,) = [o for o in cluster.objs if o["metadata"]["name"] == caretta.NAME and o["kind"] == "DaemonSet"]
    assert caretta.recorded_preflight(ds) == (preflight.nodes_fingerprint(nodes), ["real"])
    kube.live_caretta, cluster.applied = ds, []
    second = caretta_asset.caretta(dg.build_asset_context(), cluster=cluster)
    assert "caretta-preflight" not in cluster.applied and "preflight_overridden" in second.metadata
    assert second.metadata["preflight_probe"].value.startswith("recorded")
    blocked = FakeCluster(make(caretta={"namespace": "caretta", "preflight": "block"}), kube)
    with pytest.raises(dg.Failure, match="nothing of Caretta was applied"):
        caretta_asset.caretta(dg.build_asset_context(), cluster=blocked)  # the record, not a new probe, says no
    assert blocked.applied == []
