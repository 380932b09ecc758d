from __future__ import annotations

import copy

from netviz_pipeline import readiness as rd

DS_READY = {"kind": "DaemonSet", "metadata": {"name": "caretta", "namespace": "caretta", "generation": 2},
            "status": {"observedGeneration": 2, "desiredNumberScheduled": 3, "currentNumberScheduled": 3,
                       "updatedNumberScheduled": 3, "numberAvailable": 3, "numberReady": 3}}
DEP_READY = {"kind": "Deployment", "metadata": {"name": "goflow2", "namespace": "goflow2", "generation": 1},
             "spec": {"replicas": 1},
             "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1,
                        "availableReplicas": 1,
                        "conditions": [{"type": "Available", "status": "True"},
                                       {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}]}}


def patched(obj, **status):
    o = copy.deepcopy(obj)
    o["status"].update(status)
    return o


def test_daemonset_ready():
    r = rd.daemonset(DS_READY)
    assert r.ready and "3/3" in r.message


def test_daemonset_desired_zero_is_not_ready():
    r = rd.daemonset(patched(DS_READY, desiredNumberScheduled=0, currentNumberScheduled=0,
                             updatedNumberScheduled=0, numberAvailable=0, numberReady=0))
    assert not r.ready and "0 nodes" in r.message


def test_daemonset_desired_missing_is_not_ready():
    o = copy.deepcopy(DS_READY)
    del o["status"]["desiredNumberScheduled"]
    assert not rd.daemonset(o).ready


def test_daemonset_old_generation_not_ready():
    r = rd.daemonset(patched(DS_READY, observedGeneration=1))
    assert not r.ready and "generation 2" in r.message


def test_daemonset_each_counter_matters():
    for k in ("currentNumberScheduled", "updatedNumberScheduled", "numberAvailable", "numberReady"):
        r = rd.daemonset(patched(DS_READY, **{k: 2}))
        assert not r.ready and k in r.message, k


def test_deployment_ready_and_counts():
    assert rd.deployment(DEP_READY).ready
    assert not rd.deployment(patched(DEP_READY, readyReplicas=0)).ready
    assert not rd.deployment(patched(DEP_READY, updatedReplicas=0)).ready
    assert not rd.deployment(patched(DEP_READY, availableReplicas=0)).ready


def test_deployment_progress_deadline_exceeded():
    o = patched(DEP_READY, readyReplicas=0, conditions=[
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}])
    r = rd.deployment(o)
    assert not r.ready and "progress deadline" in r.message


def test_deployment_needs_available_condition():
    assert not rd.deployment(patched(DEP_READY, conditions=[])).ready


def test_snake_case_dicts_from_the_python_client():
    o = {"kind": "DaemonSet", "metadata": {"name": "c", "generation": 1},
         "status": {"observed_generation": 1, "desired_number_scheduled": 2, "current_number_scheduled": 2,
                    "updated_number_scheduled": 2, "number_available": 2, "number_ready": 2}}
    assert rd.daemonset(o).ready


def pod(name, **status):
    return {"metadata": {"name": name}, "status": status}


def test_pod_waiting_reasons_surface():
    pods = [
        pod("a", containerStatuses=[{"name": "caretta", "state": {"waiting": {"reason": "ImagePullBackOff",
                                                                           "message": "pull access denied"}}}]),
        pod("b", containerStatuses=[{"name": "caretta", "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                                     "lastState": {"terminated": {"reason": "OOMKilled"}}}]),
        pod("c", initContainerStatuses=[{"name": "init", "state": {"waiting": {"reason": "CreateContainerConfigError"}}}]),
        pod("d", containerStatuses=[{"name": "x", "state": {"waiting": {"reason": "ErrImagePull"}}}]),
        pod("e", conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                              "message": "0/3 nodes are available"}]),
        pod("ok", containerStatuses=[{"name": "x", "state": {"waiting": {"reason": "ContainerCreating"}}}]),
        # FallbackToLogsOnError: the crash's last log line says why
        pod("f", containerStatuses=[{"name": "goflow2", "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                                     "lastState": {"terminated": {"exitCode": 1, "message": "starting\nkafka: no brokers\n"}}}]),
    ]
    reasons = rd.pod_reasons(pods)
    assert reasons == [
        "pod a container caretta: ImagePullBackOff: pull access denied",
        "pod b container caretta: CrashLoopBackOff",
        "pod b container caretta: OOMKilled (raise the memory limit)",
        "pod c container init: CreateContainerConfigError",
        "pod d container x: ErrImagePull",
        "pod e: Unschedulable: 0/3 nodes are available",
        "pod f container goflow2: CrashLoopBackOff; last exit 1: kafka: no brokers",
    ]
    r = rd.daemonset(patched(DS_READY, numberReady=1), pods)
    assert not r.ready and len(r.reasons) == 7


def test_dispatch():
    assert rd.ready(DS_READY).ready and rd.ready(DEP_READY).ready
    assert rd.ready({"kind": "ConfigMap", "metadata": {"name": "x"}}).ready
    assert not rd.ready({"kind": "Namespace", "metadata": {"name": "x"}, "status": {"phase": "Terminating"}}).ready


def _pod(name, ready=True, deleting=False, phase="Running"):
    meta = {"name": name} | ({"deletionTimestamp": "2026-12-07T15:06:16Z"} if deleting else {})
    return {"metadata": meta, "status": {"phase": phase,
                                         "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def test_listed_pods_confirm_the_status_counts():
    """Seen after a move off a lost node: every count at 1 while the one Ready pod was the old one, deleting."""
    assert rd.deployment(DEP_READY, [_pod("new"), _pod("old", deleting=True)]).ready
    r = rd.deployment(DEP_READY, [_pod("new", ready=False), _pod("old", deleting=True)])
    assert not r.ready and "0 pod(s) serve" in r.message
    assert rd.deployment(DEP_READY).ready  # pods not listed: the status alone


def test_serving_is_running_ready_and_not_deleting():
    assert rd.serving(_pod("a"))
    assert not rd.serving(_pod("a", ready=False)) and not rd.serving(_pod("a", deleting=True))
    assert not rd.serving(_pod("a", phase="Pending"))
