"""Telling a quiet link from a dead exporter from lost datagrams (exporter_health.classify), and
reading softflowd's own counters."""
from __future__ import annotations

import pytest

from netviz_pipeline.exporter_health import Sample, classify, dump, history, load, lost_bound
from netviz_pipeline.routers.common import parse_statistics

# softflowctl statistics of Debian's softflowd 1.1.0, as the lab router printed it
STATS = """softflowd[48]: Accumulated statistics since 2026-11-28T12:00:42 UTC:
Number of active flows: 20
Packets processed: 678
Fragments: 0
Ignored packets: 2 (2 non-IP, 0 too short)
Flows expired: 78 (0 forced)
Flows exported: 78 (156 records) in 45 packets (3 failures)
Packets received by libpcap: 680
"""


def test_statistics_are_parsed_and_other_text_is_not():
    c = parse_statistics(STATS)
    assert (c.packets_processed, c.flows_exported, c.export_packets, c.export_failures) == (678, 78, 45, 3)
    assert parse_statistics("ctl connect(\"/run/softflowd/x.ctl\") error: No such file or directory") is None


def s(t, processed=100, sent=10, failures=0, inc="48@Sat"):
    return Sample(t, inc, processed, sent, failures)


def verdict(samples, datagrams=0.0, now=None, **kw):
    args = dict(reachable_error=None, running=True, drift=[], samples=samples, counters_known=True,
                datagrams=datagrams, window_s=180, settle_s=35, now=now if now is not None else (samples[-1].t if samples else 0),
                interface="lan0", address="198.18.0.2", collector="198.18.6.2:32055")
    return classify(**(args | kw))


def test_unreachable_down_and_misconfigured_come_first():
    assert verdict([s(0)], datagrams=5, reachable_error="timed out").cause == "router-unreachable"
    assert not verdict([s(0)], reachable_error="x").heal
    assert verdict([], datagrams=5, running=False).cause == "exporter-down"
    assert verdict([s(0)], datagrams=5, drift=["collectors: running a, want b"]).cause == "misconfigured"


def test_datagrams_counted_means_flowing():
    v = verdict([s(0)], datagrams=12)
    assert v.healthy and v.cause == "flowing" and "12 NetFlow datagrams" in v.reason


def test_a_quiet_link_is_healthy_and_says_so():
    v = verdict([s(0), s(30), s(60)])
    assert v.healthy and v.cause == "quiet" and "no packets on lan0" in v.reason


def test_traffic_whose_flows_have_not_expired_is_healthy():
    v = verdict([s(0), s(30, processed=150), s(60, processed=200)])
    assert v.healthy and v.cause == "flows-open"


def test_sent_but_never_counted_is_lost():
    v = verdict([s(0), s(30, sent=20), s(60, sent=30)], now=70)
    assert not v.healthy and v.cause == "not-received" and "sent 10 NetFlow datagrams" in v.reason


def test_datagrams_sent_too_recently_to_be_scraped_are_not_called_lost():
    # a quiet link wakes up: the only datagrams were sent after the last settled look
    v = verdict([s(0), s(30), s(60, processed=300, sent=25)], now=60)
    assert v.healthy and v.cause == "flows-open"


def test_send_failures_are_reported_even_while_older_datagrams_count():
    v = verdict([s(0), s(30, failures=4)], datagrams=3)
    assert not v.healthy and v.cause == "export-failing" and "failed to send 4" in v.reason


def test_first_look_is_a_baseline_and_unreadable_counters_cannot_pass_silence():
    assert verdict([s(0)]).cause == "baseline" and verdict([s(0)]).healthy
    v = verdict([], counters_known=False)
    assert not v.healthy and v.cause == "no-counters"


@pytest.mark.parametrize("restart", [True, False])
def test_history_keeps_one_incarnation_inside_the_window(restart):
    old = [s(0), s(100), s(150)]
    cur = s(200, inc="99@Sun" if restart else "48@Sat")
    kept = history(old, cur, now=200, window_s=180)
    assert kept == ([cur] if restart else [s(100), s(150), cur])
    assert history(old, None, now=200, window_s=180) == []
    assert load(dump({"r": kept})) == {"r": kept}


def test_export_packets_lost_on_the_way_make_a_flowing_exporter_unhealthy_and_are_not_re_run():
    """Sequence numbers say what the exporter sent; GoFlow2 counted fewer: the path loses them. The
    bound leaves room for two counters scraped an interval apart (seen: 8 of 79 with nothing lost)."""
    base = dict(reachable_error=None, running=True, drift=[], samples=[], counters_known=True, datagrams=70.0,
                window_s=180, settle_s=35, now=1000.0, address="198.18.0.2", scrape_interval_s=15)
    v = classify(**base, sent=100.0, lost=30.0)
    assert (v.healthy, v.cause, v.heal) == (False, "datagrams-lost", False)
    assert "30 of the 100 NetFlow export packets 198.18.0.2 sent" in v.reason
    assert classify(**base, sent=79.0, lost=8.0).cause == "flowing"  # the lab's chart mode, nothing lost
    assert classify(**base, sent=100.0, lost=21.0).cause == "flowing"  # under 5 + 100 x 2 x 15 / 180
    long = base | {"window_s": 3600}
    assert classify(**long, sent=10_000.0, lost=100.0).cause == "flowing"  # 1 %: under the 2 % floor
    assert classify(**long, sent=10_000.0, lost=300.0).cause == "datagrams-lost"
    assert classify(**base).cause == "flowing"  # no sequence numbers (NetFlow v5, IPFIX): nothing to compare


def test_the_loss_bound_is_five_packets_plus_two_scrapes_worth_or_two_percent():
    assert lost_bound(0, 180, 15) == 5
    assert lost_bound(180, 180, 15) == pytest.approx(5 + 30)  # two 15 s scrapes of a 180 s window
    assert lost_bound(1000, 3600, 15) == pytest.approx(5 + 20)  # 2 % is the floor
