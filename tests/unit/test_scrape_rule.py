"""The one rule for "is scraping healthy" (checks/scrape.py), as the scrape_targets_up check and the
sensor both ask it: pure logic over Prometheus's active targets and running pods."""
from __future__ import annotations

import ast
from pathlib import Path

import netviz_pipeline
from netviz_pipeline import targets
from netviz_pipeline.checks.scrape import scrape_findings

PODS = {"netviz-caretta": 2, "netviz-goflow2": 1, "netviz-flows": 1}


def target(job, health="up", error=""):
    return {"labels": {"job": job}, "health": health, "lastError": error}


def healthy_targets():
    return [target("netviz-caretta"), target("netviz-caretta"), target("netviz-goflow2"), target("netviz-flows")]


def rule(settings, targets_, running=PODS, collector=None, pending_ok=False):
    prom = targets.resolve(settings, None).prometheus
    return {f.subject: f for f in scrape_findings(settings, targets_, running, collector, prom, pending_ok)}


def test_every_job_with_a_healthy_target_per_running_pod(settings):
    found = rule(settings, healthy_targets())
    assert found["scrape"].healthy and found["collector"].healthy
    assert found["scrape"].details["targets"]["netviz-caretta"] == "2 up of 2 targets, 2 running pods"


def test_a_job_missing_from_the_loaded_config_is_a_scrape_problem(settings):
    found = rule(settings, [t for t in healthy_targets() if t["labels"]["job"] != "netviz-caretta"])
    assert not found["scrape"].healthy and found["collector"].healthy
    assert found["scrape"].details["problems"] == ["netviz-caretta: not in Prometheus's loaded config yet"]


def test_the_goflow2_job_missing_is_the_scrape_configs_problem_not_the_collectors(settings):
    found = rule(settings, [target("netviz-caretta"), target("netviz-caretta")])
    assert "collector" not in found  # nothing is known of the collector while its job is not loaded
    assert {p.split(":")[0] for p in found["scrape"].details["problems"]} == {"netviz-goflow2", "netviz-flows"}


def test_a_gone_collector_is_the_collectors_problem_only(settings):
    found = rule(settings, [target("netviz-caretta"), target("netviz-caretta")],
                 running={"netviz-caretta": 2}, collector="Deployment goflow2/goflow2 is gone")
    assert found["scrape"].healthy
    assert not found["collector"].healthy and "is gone" in found["collector"].reason


def test_a_down_collector_target_names_its_error_once(settings):
    down = [target("netviz-caretta"), target("netviz-caretta"),
            target("netviz-goflow2", "down", "connection refused"), target("netviz-flows", "down", "connection refused")]
    found = rule(settings, down)
    assert found["scrape"].healthy  # one pod, one cause: reported once, as the collector
    assert not found["collector"].healthy and found["collector"].reason.endswith("connection refused; connection refused")


def test_fewer_healthy_targets_than_running_pods(settings):
    found = rule(settings, healthy_targets()[1:])
    assert found["scrape"].details["problems"] == ["netviz-caretta: 1/2 targets up"]
    flaky = healthy_targets()
    flaky[0] = target("netviz-caretta", "down", "context deadline exceeded")
    assert rule(settings, flaky)["scrape"].details["problems"] == \
        ["netviz-caretta: 1/2 targets up (context deadline exceeded)"]
    assert rule(settings, flaky)["scrape"].confirm_after_s > 0  # watched a tick: a lost node does this too


def test_a_target_not_scraped_yet_waits_in_a_check_and_passes_between_runs(settings):
    fresh = healthy_targets()
    fresh[0] = target("netviz-caretta", "unknown")
    assert not rule(settings, fresh)["scrape"].healthy
    assert rule(settings, fresh, pending_ok=True)["scrape"].healthy


def test_no_running_pods(settings):
    found = rule(settings, healthy_targets()[2:], running={"netviz-caretta": 0, "netviz-goflow2": 1, "netviz-flows": 1})
    assert found["scrape"].details["problems"] == ["netviz-caretta: no running pods to scrape"]
    assert found["scrape"].confirm_after_s == 0  # a job without targets is the scrape config's: healed at once


def test_the_check_and_the_sensor_ask_the_same_function():
    """One rule: the scrape check and the sensor's observations both call checks.scrape.scrape_health."""
    pkg = Path(netviz_pipeline.__file__).parent
    callers = sorted(str(p.relative_to(pkg)) for p in pkg.rglob("*.py")
                     if any(isinstance(n, ast.Call) and getattr(n.func, "id", getattr(n.func, "attr", "")) == "scrape_health"
                            for n in ast.walk(ast.parse(p.read_text()))))
    assert callers == ["assets/prometheus.py", "checks/observe.py"]
