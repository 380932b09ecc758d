"""Where GoFlow2 runs (placement.py), what the sensor makes of its node (checks/collector_node.py), how a
move is healed (remediation) and what it needs (settings, grant, rollout strategy)."""
from __future__ import annotations

import copy
from datetime import datetime, timezone

import pytest

from netviz_pipeline import loading
from netviz_pipeline.checks.collector_node import collector_node_finding
from netviz_pipeline.findings import Finding
from netviz_pipeline.placement import (Candidate, candidates, choose, lease_age, node_with_address,
                                       pinned_node)
from netviz_pipeline.remediation import Policy, plan, reruns
from netviz_pipeline.render import goflow2 as render_goflow2
from netviz_pipeline.render import install
from netviz_pipeline.settings import SettingsError

NOW = 1_800_000_000.0
PRIMARY, STANDBY = "198.18.0.1", "198.18.0.7"


def _node(name, ip, ready=True, cordoned=False):
    return {"metadata": {"name": name}, "spec": {"unschedulable": True} if cordoned else {},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}],
                       "conditions": [{"type": "Ready", "status": "True" if ready else "Unknown"}]}}


def _lease(age):
    t = datetime.fromtimestamp(NOW - age, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {"spec": {"renewTime": t, "leaseDurationSeconds": 40}}


@pytest.fixture
def standby(raw):
    data = copy.deepcopy(raw)
    data["cluster"]["standby_node_addresses"] = [STANDBY]
    for r in data["routers"]:
        del r["collector_address"]
    return loading.parse(data)


def test_node_with_address_picks_the_node_with_that_internal_ip():
    nodes = [_node("b", "10.0.0.2"), _node("a", "10.0.0.2"), _node("c", "10.0.0.3")]
    assert node_with_address(nodes, "10.0.0.2")["metadata"]["name"] == "a"
    assert node_with_address(nodes, "10.9.9.9") is None


def test_lease_age_reads_the_kubelets_renew_time():
    assert lease_age(_lease(12.5), NOW) == pytest.approx(12.5, abs=1e-3)
    assert lease_age({"spec": {}}, NOW) is None and lease_age(None, NOW) is None


def test_candidates_are_the_primary_then_the_standbys_as_the_cluster_shows_them(standby):
    nodes = [_node("n1", PRIMARY), _node("n2", STANDBY, cordoned=True)]
    c1, c2 = candidates(standby, nodes, {"n1": _lease(3)}, NOW)
    assert (c1.node, c1.ready, c1.cordoned, round(c1.lease_age)) == ("n1", True, False, 3)
    assert (c2.node, c2.cordoned, c2.lease_age) == ("n2", True, None)
    (only,) = candidates(loading.parse(_without_override(standby)), nodes, None, NOW)
    assert only.lease_age is None  # leases are not read without standbys


def _without_override(s):
    d = s.model_dump(mode="json")
    d["cluster"]["standby_node_addresses"] = []
    return d


LOST = 40


def _c(node, address, age=3.0, ready=True, cordoned=False):
    return Candidate(address, node, ready=ready, cordoned=cordoned, lease_age=age)


def test_the_collector_stays_while_its_node_is_usable_even_if_the_primary_is_back():
    cands = [_c("n1", PRIMARY), _c("n2", STANDBY)]
    p = choose(cands, "n2", LOST)
    assert (p.node, p.address, p.moves) == ("n2", STANDBY, False) and "stays on n2" in p.reason


def test_a_lost_node_moves_the_collector_to_the_first_usable_standby():
    cands = [_c("n1", PRIMARY, age=41), _c("n2", STANDBY)]
    p = choose(cands, "n1", LOST)
    assert (p.node, p.address, p.moves) == ("n2", STANDBY, True)
    assert "moves to n2" in p.reason and "not renewed its Lease for 41s" in p.reason


def test_a_late_lease_within_the_bound_is_not_lost():
    assert not choose([_c("n1", PRIMARY, age=39), _c("n2", STANDBY)], "n1", LOST).moves


@pytest.mark.parametrize("bad", [dict(ready=False), dict(cordoned=True)])
def test_not_ready_or_cordoned_moves_it_too(bad):
    p = choose([_c("n1", PRIMARY, **bad), _c("n2", STANDBY)], "n1", LOST)
    assert p.moves and p.node == "n2"


def test_with_nowhere_to_go_it_stays_and_says_why():
    p = choose([_c("n1", PRIMARY, age=90), _c("n2", STANDBY, cordoned=True)], "n1", LOST)
    assert (p.node, p.moves) == ("n1", False)
    assert "no usable node" in p.reason and "n2 is cordoned" in p.reason


def test_first_deploy_goes_to_the_first_usable_and_an_unknown_address_has_no_node():
    assert choose([_c("n1", PRIMARY), _c("n2", STANDBY)], None, LOST).node == "n1"
    p = choose([Candidate(PRIMARY, None)], None, LOST)
    assert p.node is None and p.address == PRIMARY


def test_pinned_node_reads_the_rendered_deployment(settings):
    assert pinned_node(render_goflow2.deployment(settings, node_name="n7")) == "n7"
    assert pinned_node(None) is None


# -- what the sensor makes of it -----------------------------------------------------------------------
def _finding(s, cands, current):
    return collector_node_finding(s, choose(cands, current, s.cluster.node_lost_after_seconds), cands)


def test_the_sensor_heals_a_lost_node_by_moving_and_waits_while_the_lease_is_only_late(standby):
    healthy = _finding(standby, [_c("n1", PRIMARY, age=4), _c("n2", STANDBY)], "n1")
    assert healthy.healthy
    late = _finding(standby, [_c("n1", PRIMARY, age=25), _c("n2", STANDBY)], "n1")
    assert not late.healthy and not late.heal and late.details["waiting"]
    lost = _finding(standby, [_c("n1", PRIMARY, age=45), _c("n2", STANDBY)], "n1")
    assert not lost.healthy and lost.heal and lost.details["to"] == "n2"
    assert _finding(standby, [_c("n1", PRIMARY)], None) is None  # not deployed yet


def test_without_standbys_a_lost_node_is_told_with_the_fix_and_not_re_run(settings):
    f = _finding(settings, [_c("n1", PRIMARY, ready=False, age=None)], "n1")
    assert not f.healthy and not f.heal and "cluster.standby_node_addresses" in f.reason


def test_a_move_re_runs_goflow2_scrape_config_and_every_router_in_one_run_and_drops_the_symptoms():
    obs = [Finding("collector-node", False, "moves to n2"), Finding("collector", False, "target down"),
           Finding("router:a", False, "stale"), Finding("router:b", False, "stale")]
    p = plan(obs, {}, now=5, policy=Policy())
    assert set(p.state) == {"collector-node"}  # collector and routers are its symptoms
    (run,) = reruns(p, now=5)
    assert run.assets == ("goflow2", "prometheus_scrape_config", "router_softflowd") and run.partition is None


def test_a_late_lease_holds_back_the_collector_re_run_and_says_it_waits():
    obs = [Finding("collector-node", False, "lease late", {"waiting": True}, heal=False),
           Finding("collector", False, "target down")]
    p = plan(obs, {}, now=5, policy=Policy())
    assert p.assets == () and p.diagnoses["collector-node"] == "lease late"


# -- what it needs -------------------------------------------------------------------------------------
def test_standbys_refuse_a_fixed_router_collector_address_and_repeats(raw):
    data = copy.deepcopy(raw)
    data["cluster"]["standby_node_addresses"] = [STANDBY]
    with pytest.raises(SettingsError) as e:
        loading.parse(data)
    assert any("routers[0].collector_address, routers[1].collector_address cannot be set with "
               "cluster.standby_node_addresses" in err for err in e.value.errors), e.value.errors
    data["cluster"]["standby_node_addresses"] = [STANDBY, STANDBY]
    with pytest.raises(SettingsError) as e:
        loading.parse(data)
    assert any(err.startswith("cluster.standby_node_addresses:") and "repeated" in err for err in e.value.errors)
    data["cluster"]["standby_node_addresses"] = [PRIMARY]
    with pytest.raises(SettingsError) as e:
        loading.parse(data)
    assert any("a standby is another node" in err for err in e.value.errors)


def test_routers_follow_the_placement(standby):
    moved = standby.with_collector_at(STANDBY)
    assert moved.collector(moved.routers[0]) == (STANDBY, 32055)
    assert standby.collector(standby.routers[0]) == (PRIMARY, 32055)  # the settings themselves are unchanged


def test_the_grant_reads_leases_only_with_standbys(settings, standby):
    def lease_roles(s):
        return [o for o in install.install_objects(s) if o["kind"] == "Role"
                and o["metadata"]["namespace"] == "kube-node-lease"]
    assert lease_roles(settings) == []
    (role,) = lease_roles(standby)
    assert role["rules"] == [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "list"]}]
    assert not [o for o in install.install_objects(standby) if o["kind"] == "Namespace"
                and o["metadata"]["name"] == "kube-node-lease"]  # a system namespace: never netviz's


def test_the_collector_can_leave_a_lost_node_one_pod_at_a_time(settings):
    strategy = render_goflow2.deployment(settings, node_name="n1")["spec"]["strategy"]
    assert strategy == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}
