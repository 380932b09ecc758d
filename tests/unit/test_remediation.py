"""The healing planner: re-run the owning step, back off, give up with a diagnosis, no storms."""
from __future__ import annotations

from netviz_pipeline.findings import Finding
from netviz_pipeline.remediation import Policy, dump, load, plan

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


def test_recovery_resets_the_subject():
    p = plan([BAD_ROUTER], {}, now=0, policy=P)
    healed = plan([Finding("router:edge", True, "fresh")], p.state, now=50, policy=P)
    assert healed.state == {} and healed.assets == ()
    again = plan([BAD_ROUTER], healed.state, now=60, policy=P)
    assert again.assets == ("router_softflowd",)  # a new failure starts afresh, no back-off owed


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
