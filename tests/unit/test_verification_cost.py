"""What a check or sensor tick costs does not grow where it need not (issue 6, make bench):
NetFlow freshness is one Prometheus query per figure for every router, and a rollout wait watches the workload
instead of polling it and listing its pods."""
from __future__ import annotations

from netviz_pipeline.checks import exporters
from netviz_pipeline.resources.cluster import ClusterResource
from netviz_pipeline.resources.config import NetvizConfig


class FakeProm:
    def __init__(self, series: dict[str, float]):
        self.series, self.queries = series, []

    def query(self, expr: str) -> list[dict]:
        self.queries.append(expr)
        return [{"metric": {"router": r}, "value": [0, str(v)]} for r, v in self.series.items()]


def test_netflow_freshness_is_one_query_for_every_router(make, raw):
    routers = [dict(raw["routers"][i % 2], name=f"r{i}") for i in range(50)]
    s = make(routers=routers)
    prom = FakeProm({"198.18.0.2": 12.0})  # only the linux router's address has datagrams
    counts, error = exporters.datagram_counts(s, prom)
    # three queries for fifty routers: datagrams counted, and export packets sent and lost (sequence numbers)
    assert len(prom.queries) == 3 and "sum by (router)" in prom.queries[0] and not error
    assert [counts[f"r{i}"][0] for i in range(50)] == [12.0 if i % 2 == 0 else 0.0 for i in range(50)]


def _ds(rv: int, ready: int, desired: int = 3) -> dict:
    return {"kind": "DaemonSet", "metadata": {"name": "caretta", "namespace": "caretta", "generation": 1,
                                              "resourceVersion": str(rv)},
            "spec": {"selector": {"matchLabels": {"app": "caretta"}}},
            "status": {"observedGeneration": 1, "desiredNumberScheduled": desired,
                       **{k: ready for k in ("currentNumberScheduled", "updatedNumberScheduled",
                                              "numberAvailable", "numberReady")}}}


class FakeKube:
    """get() returns the first state; the watch delivers the others as MODIFIED events."""

    def __init__(self, states: list[dict]):
        self.states, self.calls = states, []

    def get(self, api_version, kind, name, namespace=None):
        self.calls.append("get")
        return self.states[0]

    def list(self, api_version, kind, namespace=None, **selectors):
        self.calls.append("list")
        return [{"metadata": {"name": "caretta-x"}}]

    def resource(self, api_version, kind):
        kube = self

        class Res:
            def watch(self, namespace, name, resource_version, timeout, watcher):
                kube.calls.append(f"watch@{resource_version}")
                for obj in kube.states[1:]:
                    yield {"type": "MODIFIED", "raw_object": obj}

        return Res()


def test_wait_rollout_watches_the_workload_and_lists_pods_once(tmp_path):
    cluster = ClusterResource(config=NetvizConfig(config_path=str(tmp_path / "unused.yaml")))
    kube = FakeKube([_ds(1, 0), _ds(2, 1), _ds(3, 2), _ds(4, 3)])
    cluster.__dict__["kube"] = kube  # the cached_property's slot
    r, obj, pods = cluster.wait_rollout("DaemonSet", "caretta", "caretta", timeout=30)
    assert r.ready and obj["metadata"]["resourceVersion"] == "4" and len(pods) == 1
    assert kube.calls == ["get", "watch@1", "list"]


def test_wait_rollout_gives_up_at_the_timeout_with_the_pods(tmp_path):
    cluster = ClusterResource(config=NetvizConfig(config_path=str(tmp_path / "unused.yaml")))
    kube = FakeKube([_ds(1, 0)])
    cluster.__dict__["kube"] = kube
    r, _, pods = cluster.wait_rollout("DaemonSet", "caretta", "caretta", timeout=0.5)
    assert not r.ready and "want 3 pods" in r.message and pods


def test_canary_query_counts_only_aggregators_that_are_up():
    from netviz_pipeline.freshness import current_talker_query

    q = current_talker_query("198.18.1.20", "198.18.2.10")
    assert q.startswith("sum(netviz_flow_talker_bytes_total{") and 'src="198.18.1.20"' in q
    assert q.endswith('and on (instance) (up{job="netviz-flows"} == 1))')
