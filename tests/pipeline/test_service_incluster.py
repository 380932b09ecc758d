"""netviz inside the cluster, as the in-cluster recipe (docs/operating.md) runs it: webserver and daemon in a pod
on a real node from the locally built image, the pipeline's ServiceAccount, settings from a ConfigMap
and the router key from a Secret. `netviz_deploy` launched through that webserver (as the UI does)
converges the lab, with the in-cluster Prometheus found by `mode: auto`.

The pod's instance is new and the lab was never deployed from it: its health sensor must not heal
anything before this first deploy (it once re-ran the scrape config alone, whose check then waited for
targets nobody had created while the deploy sat in the queue behind it)."""
from __future__ import annotations

import time

import pytest
from test_service import Service, _record, _tag  # tests/pipeline is on sys.path (pytest rootdir import)

from netviz_lab import incluster_netviz
from netviz_lab.lab import Lab

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def incluster(lab: Lab):
    t0 = time.monotonic()
    try:
        service = Service(incluster_netviz.deploy(lab), settings=None)  # its settings are a ConfigMap
        service.wait_loaded()
        yield service, time.monotonic() - t0
    finally:
        incluster_netviz.remove(lab)


def test_deploy_launched_in_the_cluster_converges_the_lab(incluster, admin_api):
    service, ready_s = incluster
    t0 = time.time()
    run_id = service.launch("netviz_deploy")
    run = service.wait_run(lambda r: r["runId"] == run_id, 900, "netviz_deploy in the cluster")
    assert run["status"] == "SUCCESS", run
    # the sensor ticks every 30 s through the first deploy: it heals nothing before it (never deployed
    # from this instance) nor during it (a run that writes is in flight)
    early = [r for r in service.runs(tags=[{"key": "netviz/remediation", "value": "true"}])
             if r["creationTime"] < run["endTime"]]
    assert not early, f"the sensor healed before or during the first deploy: {early}"
    assert _tag(run, "netviz/writes") == "true"
    # the daemon in the pod runs the health sensor too: its evaluations reach the same instance
    deadline = time.monotonic() + 120
    while not service.gql(CHECKS)["assetNodes"][0]["assetChecksOrError"]["checks"][0]["executionForLatestMaterialization"]:
        assert time.monotonic() < deadline, "no netflow_arriving evaluation in the pod's instance"
        time.sleep(2)
    _record("in the cluster: pod answering", seconds=ready_s)
    _record("in the cluster: netviz_deploy through its webserver", seconds=time.time() - t0)


CHECKS = """{ assetNodes(assetKeys: [{path: ["router_softflowd"]}]) { assetChecksOrError { ... on AssetChecks {
  checks { name executionForLatestMaterialization { status } } } } } }"""
