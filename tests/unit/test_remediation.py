"""The healing planner: re-run the owning step, back off, give up with a diagnosis, no storms."""
from __future__ import annotations

import pytest

from netviz_pipeline.findings import Finding
from netviz_pipeline.remediation import Policy, dump, load, plan
from netviz_pipeline.settings import SettingsError

BAD_ROUTER = Finding("router:edge", False, "0 NetFlow datagrams from 198.18.0.2 in the last 180s")
P = Policy(max_attempts=3, backoff_seconds=100, backoff_max_seconds=250)


def test_first_failure_re_runs_the_owning_asset_once():
    p = plan([BAD_ROUTER, Finding("caretta", True, "ok")], {}, now=1000, policy=P)
    assert p.assets == ("router_softflowd",)
    assert p.state["router:edge"].attempts == 1 and "caretta" not in p.state
    assert "re-running router_softflowd" in p.diagnoses["router:edge"]


def test_back_off_doubles_and_is_capped_then_gives_up_with_a_diagnosis():
    state, launched = {}, []
    for now in range(1000, 2000, 10):  # a sensor tick every 10 s, the exporter never recovers
        p = plan([BAD_ROUTER], state, now=now, policy=P)
        state = p.state
        if p.assets:
            launched.append(now)
    assert launched == [1000, 1100, 1300]  # then +250 would be 1550, but max_attempts=3 stops it
    final = plan([BAD_ROUTER], state, now=2000, policy=P)
    assert final.assets == ()
    assert "still unhealthy after 3 re-runs of router_softflowd" in final.diagnoses["router:edge"]
    assert "0 NetFlow datagrams" in final.diagnoses["router:edge"]


def test_recovery_ends_the_incident_only_after_the_settle_window():
    p = plan([BAD_ROUTER], {}, now=0, policy=P)
    healed = plan([Finding("router:edge", True, "fresh")], p.state, now=50, policy=P)
    assert healed.assets == () and healed.state["router:edge"].healthy_since == 50
    assert healed.state["router:edge"].attempts == 1  # kept: a failure now would be the same incident
    later = plan([Finding("router:edge", True, "fresh")], healed.state, now=50 + P.settle_seconds, policy=P)
    assert later.state == {}
    again = plan([BAD_ROUTER], later.state, now=60 + P.settle_seconds, policy=P)
    assert again.assets == ("router_softflowd",) and again.state["router:edge"].attempts == 1  # afresh


def test_a_flap_keeps_the_attempt_count_and_back_off():
    p = plan([BAD_ROUTER], {}, now=0, policy=P)
    p = plan([Finding("router:edge", True, "fresh")], p.state, now=30, policy=P)
    p = plan([BAD_ROUTER], p.state, now=60, policy=P)  # fails again within the window
    assert p.assets == () and "waiting for back-off" in p.diagnoses["router:edge"]
    st = p.state["router:edge"]
    assert (st.attempts, st.flaps, st.failing_since, st.healthy_since) == (1, 1, 0, None)
    assert plan([BAD_ROUTER], p.state, now=100, policy=P).assets == ("router_softflowd",)  # back-off of 100 s


def test_a_crash_looping_exporter_gets_a_bounded_number_of_runs_with_the_default_policy():
    """Killed every 75 s for 10 minutes (seen within a 30 s tick, healthy again after a re-run or by
    itself): the default policy's 3 re-runs are the bound, and the diagnosis says it flaps."""
    policy, state, runs = Policy(), {}, 0
    for now in range(0, 600, 30):
        healthy = (now % 75) >= 45  # 45 s dead, 30 s alive, and again
        p = plan([Finding("router:edge", True, "fresh") if healthy else BAD_ROUTER], state, now=now, policy=policy)
        state, runs = p.state, runs + len(p.assets)
    assert runs == policy.max_attempts and state["router:edge"].flaps >= 5
    stuck = plan([BAD_ROUTER], state, now=600, policy=policy)
    assert "still unhealthy after 3 re-runs" in stuck.diagnoses["router:edge"] and "failed again" in \
        stuck.diagnoses["router:edge"]


def test_shared_cause_suppresses_per_router_storm():
    obs = [Finding(f"router:r{i}", False, "stale") for i in range(50)] + [Finding("scrape", False, "job gone")]
    p = plan(obs, {}, now=0, policy=P)
    assert p.assets == ("prometheus_scrape_config",)
    assert set(p.state) == {"scrape"}


def test_nothing_launches_while_a_remediation_run_is_in_flight():
    p = plan([BAD_ROUTER], {}, now=0, policy=P, busy=True)
    assert p.assets == () and p.state["router:edge"].attempts == 0
    assert "in flight" in p.diagnoses["router:edge"]


def test_dashboard_subject_maps_to_its_asset_and_state_round_trips():
    p = plan([Finding("dashboard:goflow2", False, "edited by hand")], {}, now=5, policy=P)
    assert p.assets == ("goflow2_dashboard",)
    assert load(dump(p.state)) == p.state


def test_a_down_collector_re_runs_it_and_refreshes_the_scrape_targets():
    p = plan([Finding("collector", False, "GoFlow2 metrics target down")], {}, now=0, policy=P)
    assert p.assets == ("goflow2", "prometheus_scrape_config")
    assert "re-running goflow2 + prometheus_scrape_config" in p.diagnoses["collector"]


def test_an_unreachable_router_is_diagnosed_but_never_re_run():
    down = Finding("router:edge", False, "router-unreachable: timed out", heal=False)
    p = plan([down], {}, now=0, policy=P)
    assert p.assets == () and "a person must look" in p.diagnoses["router:edge"]
    again = plan([down], p.state, now=10_000, policy=P)
    assert again.assets == () and again.state["router:edge"].attempts == 0


def test_each_router_heals_alone_and_shared_steps_together():
    from netviz_pipeline.remediation import reruns

    obs = [Finding("router:a", False, "exporter-down"), Finding("router:b", False, "exporter-down"),
           Finding("dashboard:goflow2", False, "edited by hand")]
    p = plan(obs, {}, now=7, policy=P)
    runs = reruns(p, now=7)
    assert [(r.assets, r.partition, r.subjects) for r in runs] == [
        (("goflow2_dashboard",), None, ("dashboard:goflow2",)),
        (("router_softflowd",), "a", ("router:a",)), (("router_softflowd",), "b", ("router:b",))]
    assert reruns(plan(obs, p.state, now=8, policy=P), now=8) == []  # backing off: nothing to run


def test_a_step_never_deployed_from_this_instance_is_not_healed():
    """A fresh service must not turn its first tick into a partial deploy; it says what to do instead."""
    obs = [Finding("scrape", False, "jobs missing: netviz-goflow2"),
           Finding("dashboard:goflow2", False, "edited by hand")]
    p = plan(obs, {}, now=0, policy=P, undeployed=frozenset({"prometheus_scrape_config"}))
    assert p.assets == ("goflow2_dashboard",)
    assert "never materialised prometheus_scrape_config: run netviz_deploy first" in p.diagnoses["scrape"]
    assert p.state["scrape"].attempts == 0
    after = plan(obs, p.state, now=10, policy=P)  # deployed since: healed as usual
    assert "prometheus_scrape_config" in after.assets


def test_the_bounds_come_from_the_settings_healing_section(make):
    assert Policy.of(make().healing) == Policy()  # the section's defaults are the planner's
    tight = Policy.of(make(healing={"max_attempts": 1, "backoff_seconds": 5, "settle_seconds": 30}).healing)
    assert (tight.max_attempts, tight.backoff_seconds, tight.settle_seconds) == (1, 5, 30)


def test_a_backoff_ceiling_below_the_first_backoff_is_refused_naming_the_fields(make):
    with pytest.raises(SettingsError, match="healing.*backoff_max_seconds is below backoff_seconds"):
        make(healing={"backoff_seconds": 600, "backoff_max_seconds": 60})


def test_a_watched_failure_is_healed_only_if_it_lasts():
    down = Finding("scrape", False, "netviz-caretta: 1/2 targets up", confirm_after_s=25)
    first = plan([down], {}, now=100, policy=P)
    assert first.assets == () and "watching: re-runs prometheus_scrape_config if it lasts 25s" in first.diagnoses["scrape"]
    assert plan([down], first.state, now=130, policy=P).assets == ("prometheus_scrape_config",)


def test_scrape_targets_down_with_a_lost_collector_node_are_its_symptom():
    obs = [Finding("collector-node", False, "lease late", {"waiting": True}, heal=False),
           Finding("scrape", False, "netviz-caretta: 1/2 targets up")]
    assert plan(obs, {}, now=0, policy=P).assets == ()
