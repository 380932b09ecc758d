"""Notifications: Slack-shaped payloads POSTed to a real local receiver, retries, the webhook URL kept
secret, once-per-incident announcements, and the run-failure sensor."""
from __future__ import annotations

import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pytest
import yaml

from netviz_pipeline.findings import Finding
from netviz_pipeline.jobs import REMEDIATION_TAG
from netviz_pipeline.notify import (MAX_OUTBOX, Notifier, NotifierResource, check_failed, netviz_run_failure,
                                    recovered, remediation_gave_up, run_failed, transitions)
from netviz_pipeline.remediation import Policy, dump, load, plan
from netviz_pipeline.resources.config import NetvizConfig
from netviz_pipeline.sensors import load_cursor
from netviz_pipeline import loading

ENV = "NETVIZ_TEST_WEBHOOK"
SECRET_PATH = "/services/T000/B000/s3cr3tT0ken"


class Receiver:
    """A webhook receiver on 127.0.0.1: records each POST, answers with the queued statuses (then 200)."""

    def __init__(self):
        self.posts: list[dict] = []
        self.statuses: list[int] = []
        self.delay = 0.0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.posts.append({"path": self.path, "content_type": self.headers.get("Content-Type"),
                                    "body": body})
                if outer.delay:
                    # Answer nothing: the client has timed out, and a write to its closed socket raises
                    # SIGPIPE, which kills pytest once netviz_lab's CLI (tested earlier) set it to SIG_DFL.
                    time.sleep(outer.delay)
                    return
                status = outer.statuses.pop(0) if outer.statuses else 200
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"ok" if status == 200 else b"nope")

            def log_message(self, *args):  # keep pytest output quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}{SECRET_PATH}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def json(self, i: int = -1) -> dict:
        return json.loads(self.posts[i]["body"])


@pytest.fixture
def receiver():
    r = Receiver()
    r.thread.start()
    yield r
    r.server.shutdown()
    r.server.server_close()


@pytest.fixture
def hook(receiver, monkeypatch):
    monkeypatch.setenv(ENV, receiver.url)
    return receiver


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_slack_shape(p: dict):
    assert isinstance(p["text"], str) and p["text"]
    assert p["blocks"] and all(b["type"] == "section" and b["text"]["type"] == "mrkdwn" for b in p["blocks"])


# ---------------------------------------------------------------- payloads
@pytest.mark.parametrize("payload", [
    check_failed("router:edge", "0 datagrams", {"check": "netflow_arriving"}, link="http://dagster:3000"),
    remediation_gave_up("collector", ["re-ran goflow2 (attempt 1)"], "target down"),
    recovered("caretta", 330),
    run_failed("netviz_deploy", "0123456789abcdef", "caretta: rollout timed out"),
])
def test_payloads_have_the_slack_shape_and_stay_short(payload):
    assert_slack_shape(payload)
    json.dumps(payload)
    assert len(payload["text"]) < 1200 and len(payload["blocks"][0]["text"]["text"]) < 3000  # Slack's block limit


def test_mrkdwn_control_characters_are_escaped():
    p = check_failed("dashboard:<x>", "a & b <!channel> c", {"k<": "v>"})
    text = json.dumps(p)
    assert "<!channel>" not in text and "&lt;!channel&gt;" in text and "a &amp; b" in text
    assert "<x>" not in text and "k&lt;" in text and "v&gt;" in text


def test_long_reasons_are_clipped_and_links_rendered():
    p = run_failed("netviz_deploy", "abc", "x" * 10_000, link="http://dagster:3000/runs/abc")
    assert len(p["text"]) < 1200
    assert p["blocks"][0]["text"]["text"].endswith("<http://dagster:3000/runs/abc|Open in Dagster>")
    assert recovered("caretta", 3 * 3600 + 600)["text"].endswith("after 3 h 10 min")


# ---------------------------------------------------------------- delivery
def test_payload_arrives_as_json_at_the_url_from_the_env_var(hook):
    p = check_failed("router:edge", "0 NetFlow datagrams", {"check": "netflow_arriving"})
    assert Notifier(ENV).send(p) is True
    (post,) = hook.posts
    assert post["path"] == SECRET_PATH
    assert post["content_type"] == "application/json"
    assert hook.json() == p
    assert_slack_shape(hook.json())


def test_the_url_is_read_at_send_time(receiver, monkeypatch):
    n = Notifier(ENV)
    monkeypatch.delenv(ENV, raising=False)
    assert n.send(recovered("caretta", 5)) is False and not receiver.posts
    monkeypatch.setenv(ENV, receiver.url)
    assert n.send(recovered("caretta", 5)) is True and len(receiver.posts) == 1


def test_a_500_then_200_is_retried(hook):
    hook.statuses = [500]
    assert Notifier(ENV).send(recovered("caretta", 5)) is True
    assert len(hook.posts) == 2 and hook.posts[0]["body"] == hook.posts[1]["body"]


def test_persistent_5xx_gives_up_after_two_retries_without_leaking_the_url(hook, caplog):
    hook.statuses = [503, 503, 503, 503]
    with caplog.at_level(logging.WARNING):
        assert Notifier(ENV).send(recovered("caretta", 5)) is False
    assert len(hook.posts) == 3
    assert "HTTP 503" in caplog.text and "s3cr3tT0ken" not in caplog.text and hook.url not in caplog.text


def test_a_4xx_is_not_retried(hook, caplog):
    hook.statuses = [404]
    with caplog.at_level(logging.WARNING):
        assert Notifier(ENV).send(recovered("caretta", 5)) is False
    assert len(hook.posts) == 1 and "HTTP 404" in caplog.text


def test_unreachable_receiver_returns_false_quickly_and_never_names_the_url(monkeypatch, caplog):
    url = f"http://127.0.0.1:{closed_port()}{SECRET_PATH}?token=querysecret"
    monkeypatch.setenv(ENV, url)
    seen = []

    class Log:  # what a Dagster context.log receives
        def warning(self, msg):
            seen.append(msg)

    started = time.monotonic()
    assert Notifier(ENV).send(recovered("caretta", 5), log=Log()) is False
    assert time.monotonic() - started < 3
    (msg,) = seen
    assert "ConnectionError" in msg and f"${ENV}" in msg
    for secret in (url, SECRET_PATH, "s3cr3tT0ken", "querysecret"):
        assert secret not in msg
    with caplog.at_level(logging.DEBUG):  # every logger, urllib3's retry and request lines included
        assert Notifier(ENV).send(recovered("caretta", 5)) is False
    assert "Retrying" in caplog.text and "not delivered" in caplog.text
    assert "s3cr3tT0ken" not in caplog.text and "querysecret" not in caplog.text


def test_urllib3_debug_request_lines_do_not_name_the_webhook(hook, caplog):
    with caplog.at_level(logging.DEBUG):
        hook.statuses = [500]
        assert Notifier(ENV).send(recovered("caretta", 5)) is True
    assert "POST" in caplog.text and "s3cr3tT0ken" not in caplog.text


def test_a_slow_receiver_is_cut_by_the_timeout_and_not_posted_twice(hook):
    hook.delay = 1.0
    started = time.monotonic()
    assert Notifier(ENV, timeout_seconds=0.3).send(recovered("caretta", 5)) is False
    assert time.monotonic() - started < 1.0 and len(hook.posts) == 1


@pytest.fixture
def blackhole(monkeypatch):
    """A receiver that takes the connection (the kernel's backlog) and never reads or answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        monkeypatch.setenv(ENV, f"http://127.0.0.1:{s.getsockname()[1]}{SECRET_PATH}")
        yield s


def test_a_receiver_that_never_answers_cannot_hold_a_tick_past_its_budget(blackhole, caplog):
    """Four transitions in one tick against a blackholed receiver: the first attempt's timeout is cut
    to the budget, the round ends there, and the three not attempted are kept for the next tick."""
    payloads = [check_failed(f"router:r{i}", "stale") for i in range(4)]
    started = time.monotonic()
    with caplog.at_level(logging.WARNING):
        left = Notifier(ENV, timeout_seconds=5).send_within(payloads, budget_seconds=3)
    elapsed = time.monotonic() - started
    assert left == payloads[1:]
    assert elapsed < 3 + 1.5, elapsed  # the contract: a tick's sends end within their budget
    assert "did not answer in time: 3 notification(s) kept" in caplog.text and "s3cr3tT0ken" not in caplog.text


def test_what_a_tick_could_not_send_goes_first_next_tick_and_the_outbox_is_bounded(hook, make, tmp_path, raw):
    raw["notify"] = {"webhook_url_env": ENV, "send_budget_seconds": 5}
    path = tmp_path / "netviz.yaml"
    path.write_text(yaml.safe_dump(raw))
    res = NotifierResource(config=NetvizConfig(config_path=str(path)))
    older, newer = recovered("router:a", 5), recovered("router:b", 5)
    assert res.deliver([older], [newer]) == []
    assert [json.loads(p["body"]) for p in hook.posts] == [older, newer]
    hook.delay = 2.0  # slower than the cut timeout: nothing is delivered, at most MAX_OUTBOX kept
    many = [recovered(f"router:r{i}", 5) for i in range(MAX_OUTBOX + 5)]
    left = res.deliver([], many)
    assert len(left) == MAX_OUTBOX and left[-1] == many[-1]


def test_a_value_that_is_no_url_is_refused_without_echoing_it(monkeypatch, caplog):
    monkeypatch.setenv(ENV, "xoxb-not-a-url")
    with caplog.at_level(logging.WARNING):
        assert Notifier(ENV).send(recovered("caretta", 5)) is False
    assert "does not hold an http(s) URL" in caplog.text and "xoxb" not in caplog.text


def test_no_webhook_configured_sends_nothing(receiver, make, tmp_path, raw):
    assert Notifier(None).send(recovered("caretta", 5)) is False
    path = tmp_path / "netviz.yaml"
    path.write_text(yaml.safe_dump(raw))
    res = NotifierResource(config=NetvizConfig(config_path=str(path)))
    assert res.send(recovered("caretta", 5)) is False and res.link("runs/x") is None
    assert not receiver.posts


def test_unusable_settings_do_not_raise_into_the_sender(tmp_path, caplog):
    res = NotifierResource(config=NetvizConfig(config_path=str(tmp_path / "missing.yaml")))
    with caplog.at_level(logging.WARNING):
        assert res.send(recovered("caretta", 5)) is False
    assert "settings unusable" in caplog.text


# ---------------------------------------------------------------- settings
def test_settings_section_references_the_env_var_and_redacts_it(raw, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    raw["notify"] = {"webhook_url_env": ENV, "dagster_url": "http://dagster.example:3000/"}
    with pytest.raises(ValueError, match=f"{ENV} is not set"):
        loading.parse(raw)
    monkeypatch.setenv(ENV, "https://hooks.example/services/T/B/s3cr3tT0ken")
    s = loading.parse(raw)
    assert s.notify.webhook_url_env == ENV and s.notify.timeout_seconds == 5
    red = s.redacted()
    assert red["notify"]["webhook_url_env"] == f"<ref {ENV}>"
    assert "s3cr3tT0ken" not in json.dumps(red)
    assert Notifier(ENV, dagster_url=s.notify.dagster_url).link("runs/abc") == "http://dagster.example:3000/runs/abc"


def test_settings_default_is_off_and_inline_urls_are_rejected(raw):
    assert loading.parse(raw).notify.webhook_url_env is None
    assert loading.parse(raw).redacted()["notify"]["webhook_url_env"] is None
    raw["notify"] = {"webhook_url_env": "https://hooks.slack.com/services/T/B/x"}
    with pytest.raises(ValueError) as err:
        loading.parse(raw)
    assert "environment variable name" in str(err.value)


# ---------------------------------------------------------------- transitions
P = Policy(max_attempts=2, backoff_seconds=30, backoff_max_seconds=60)
OK = Finding("router:edge", True, "fresh")
BAD = Finding("router:edge", False, "0 NetFlow datagrams from 198.18.0.2 in the last 180s")
CARETTA = Finding("caretta", True, "ok")


class Sensor:
    """The flow_freshness sensor's bookkeeping, as its docstring asks: cursor through JSON every tick."""

    def __init__(self):
        self.cursor: str | None = None

    def tick(self, observations, now, busy=False) -> list[dict]:
        cursor = load_cursor(self.cursor)
        p = plan(observations, load(cursor.get("remediation")), now, policy=P, busy=busy)
        out, announced = transitions(cursor.get("announced") or {}, observations, p, now, policy=P, busy=busy)
        self.cursor = json.dumps({"remediation": dump(p.state), "announced": announced})
        return out


def kinds(payloads) -> list[str]:
    return [p["text"].split(" ")[0] for p in payloads]


def subjects(payloads) -> list[str]:
    return [p["text"].split(" ")[2] for p in payloads]  # ":emoji: netviz: <subject> ..."


def test_one_incident_is_announced_once_gave_up_once_recovered_once():
    s = Sensor()
    assert s.tick([OK, CARETTA], 0) == []  # steady healthy: nothing
    sent = {t: s.tick([BAD, CARETTA], t) for t in range(60, 600, 10)}
    flat = [p for t in sorted(sent) for p in sent[t]]
    assert kinds(flat) == [":red_circle:", ":warning:"]
    assert sent[60][0]["text"].startswith(":red_circle: netviz: router:edge is unhealthy: 0 NetFlow datagrams")
    assert "re-running router_softflowd" in sent[60][0]["text"]
    body = sent[60][0]["blocks"][0]["text"]["text"]
    assert "*check*: netflow_arriving" in body and "*owner*: router_softflowd" in body
    gave_up_at = next(t for t in sorted(sent) if sent[t] and sent[t][0]["text"].startswith(":warning:"))
    assert gave_up_at == 100  # attempts at 60 and 90 (back-off 30), exhausted on the tick after
    assert "attempt 2" in flat[1]["blocks"][0]["text"]["text"]
    back = s.tick([OK, CARETTA], 660)
    assert kinds(back) == [":large_green_circle:"] and back[0]["text"].endswith("recovered after 10 min")
    assert s.tick([OK, CARETTA], 670) == [] and s.tick([OK, CARETTA], 680) == []
    assert s.tick([OK, CARETTA], 660 + P.settle_seconds) == []  # the incident ends quietly: no flap
    assert json.loads(s.cursor) == {"remediation": {}, "announced": {}}
    assert kinds(s.tick([BAD, CARETTA], 1300)) == [":red_circle:"]  # a new incident is announced again


def test_a_flapping_subject_is_told_once_per_incident_not_once_per_flap():
    """Red, green, one 'flapping', and one 'stable' when it has stayed healthy for the settle window;
    the flaps in between send nothing and launch no more re-runs than the incident's bound."""
    s = Sensor()
    sent = []
    for now in range(0, 1200, 10):
        sent += s.tick([OK if (now // 60) % 2 else BAD, CARETTA], now)  # a minute down, a minute up
    for now in range(1200, 1200 + int(P.settle_seconds) + 20, 10):
        sent += s.tick([OK, CARETTA], now)
    assert kinds(sent) == [":red_circle:", ":warning:", ":large_green_circle:", ":large_orange_circle:",
                           ":large_green_circle:"]  # 2 re-runs (P) within the first minute, then gave up
    assert "flapping" in sent[3]["text"] and "stable again" in sent[4]["text"]
    assert json.loads(s.cursor) == {"remediation": {}, "announced": {}}


def test_a_short_incident_healed_by_the_first_re_run():
    s = Sensor()
    assert kinds(s.tick([BAD], 0)) == [":red_circle:"]
    assert s.tick([BAD], 10, busy=True) == []
    assert kinds(s.tick([OK], 20)) == [":large_green_circle:"]


def test_gave_up_waits_for_the_last_run_in_flight():
    s = Sensor()
    s.tick([BAD], 0)
    s.tick([BAD], 30)  # second and last attempt
    assert s.tick([BAD], 40, busy=True) == []  # its run is still going: it may yet heal
    assert kinds(s.tick([BAD], 50)) == [":warning:"]
    assert s.tick([BAD], 60) == [] and s.tick([BAD], 3600) == []


def test_symptoms_of_a_shared_cause_are_not_announced_one_by_one():
    s = Sensor()
    routers = [Finding(f"router:r{i}", False, "stale") for i in range(20)]
    out = s.tick(routers + [Finding("scrape", False, "netviz-goflow2 job missing")], 0)
    assert subjects(out) == ["scrape"]
    healthy = [Finding(o.subject, True, "fresh") for o in routers] + [Finding("scrape", True, "ok")]
    assert subjects(s.tick(healthy, 60)) == ["scrape"]


def test_an_announced_router_hidden_by_a_shared_cause_stays_quiet_until_it_recovers():
    s = Sensor()
    assert len(s.tick([BAD, Finding("collector", True, "up")], 0)) == 1
    assert subjects(s.tick([BAD, Finding("collector", False, "down")], 10)) == ["collector"]
    back = s.tick([OK, Finding("collector", True, "up")], 20)
    assert sorted(subjects(back)) == ["collector", "router:edge"]


def test_a_subject_first_seen_exhausted_gets_only_gave_up_and_removed_subjects_are_forgotten():
    p0 = plan([BAD], {}, 1000, policy=P)
    p1 = plan([BAD], p0.state, 1030, policy=P)
    p2 = plan([BAD], p1.state, 1040, policy=P)
    out, announced = transitions({}, [BAD], p2, 1040, policy=P)  # e.g. notifications just turned on
    assert kinds(out) == [":warning:"] and announced["router:edge"] == {"stage": "failing", "since": 1000,
                                                                        "gave_up": True}
    out, announced = transitions(announced, [CARETTA], plan([CARETTA], p2.state, 1050, policy=P), 1050, policy=P)
    assert out == [] and announced == {}


@pytest.mark.skipif("heal" not in Finding.__dataclass_fields__, reason="planner without Finding.heal")
def test_a_failure_no_re_run_can_fix_is_announced_once_and_never_given_up():
    s = Sensor()
    cut = Finding("router:edge", False, "SSH to 198.18.0.2 refused", heal=False)
    (first,) = s.tick([cut], 1000)
    assert "a person must look" in first["text"] and "a re-run cannot fix this" in first["blocks"][0]["text"]["text"]
    assert all(s.tick([cut], t) == [] for t in range(1010, 5000, 60))
    assert kinds(s.tick([OK], 5000)) == [":large_green_circle:"]


def test_the_older_cursor_is_read_as_remediation_state():
    old = dump(plan([BAD], {}, 0, policy=P).state)
    assert load_cursor(json.dumps(old)) == {"remediation": old}
    assert load_cursor(None) == {"remediation": {}}


# ---------------------------------------------------------------- the run failure sensor
@dg.op
def boom():
    raise ValueError("rollout of caretta timed out & <nothing> is ready")


@dg.op
def fine():
    return 1


def _failed_run(name: str, tags: dict | None = None):
    instance = dg.DagsterInstance.ephemeral()
    job = dg.GraphDefinition(name=name, node_defs=[boom]).to_job(tags=tags or {})
    result = job.execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    return instance, result


def _context(instance, result, resource):
    # a context manager: the resource nests NetvizConfig, which Dagster opens in a scope
    return dg.build_run_status_sensor_context(
        sensor_name="netviz_run_failure", dagster_instance=instance, dagster_run=result.dagster_run,
        dagster_event=result.get_run_failure_event(), resources={"notifier": resource})


@pytest.fixture
def resource(hook, raw, tmp_path):
    raw["notify"] = {"webhook_url_env": ENV, "dagster_url": "http://dagster.example:3000"}
    path = tmp_path / "netviz.yaml"
    path.write_text(yaml.safe_dump(raw))
    return NotifierResource(config=NetvizConfig(config_path=str(path)))


def test_run_failure_sensor_posts_a_failed_netviz_run(hook, resource):
    instance, result = _failed_run("netviz_deploy")
    with _context(instance, result, resource) as context:
        netviz_run_failure(context)
    (post,) = hook.posts
    p = hook.json()
    assert_slack_shape(p)
    assert p["text"].startswith(":x: netviz: run of netviz_deploy failed: boom: ValueError: rollout of caretta "
                                "timed out &amp; &lt;nothing&gt; is ready")  # the user's error, escaped
    assert f"<http://dagster.example:3000/runs/{result.run_id}|Open in Dagster>" in p["blocks"][0]["text"]["text"]


def test_run_failure_sensor_names_remediation_runs_and_skips_other_jobs(hook, resource):
    instance, result = _failed_run("__anonymous_asset_job_flow_freshness",
                                   {REMEDIATION_TAG: "true", "netviz/remediates": "router:edge"})
    with _context(instance, result, resource) as context:
        netviz_run_failure(context)
    assert hook.json()["text"].startswith(":x: netviz: run of remediation of router:edge failed")
    instance, result = _failed_run("someone_elses_job")
    with _context(instance, result, resource) as context:
        assert isinstance(netviz_run_failure(context), dg.SkipReason)
    assert len(hook.posts) == 1


def test_the_code_location_registers_the_failure_sensor():
    from netviz_pipeline import defs

    repo = defs.get_repository_def()
    assert repo.get_sensor_def("netviz_run_failure") is netviz_run_failure
    assert "notifier" in repo.get_top_level_resources()
