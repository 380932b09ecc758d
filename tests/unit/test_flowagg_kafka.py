"""The kafka transport's aggregator (netviz_pipeline/flowagg/kafka_input.py): GoFlow2's protobuf decoded into
the records the JSON path makes, malformed messages counted by reason, the consumer's series inside the
budget, and its config (secrets from files only). The consumer against a real broker and a real goflow2:
tests/lab/test_kafka_flows.py."""
from __future__ import annotations

import json
import os
import select
import socket
import struct
import subprocess
import sys
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netviz_pipeline.flowagg import flowagg as fa
from netviz_pipeline.flowagg import kafka_input as ki

from test_flowagg import REAL, samples

GOFLOW2 = os.environ.get("GOFLOW2_BIN", "/var/cache/netviz-lab/bin/goflow2-v2.2.1")
V4 = socket.inet_aton
V6 = lambda a: socket.inet_pton(socket.AF_INET6, a)  # noqa: E731


def flow(**kw) -> bytes:
    f = dict(sampler_address=V4("198.18.5.2"), src_addr=V4("198.18.3.10"), dst_addr=V4("198.18.4.10"), bytes=305,
             packets=5, proto=6, src_port=40022, dst_port=8080, time_received_ns=1795672900637243907, type=3,
             sequence_num=67)
    f.update(kw)
    return ki.encode(**f)


def frame(body: bytes) -> bytes:
    """A varint length prefix, then `body` (a body over 127 bytes takes a two-byte prefix)."""
    size, prefix = len(body), b""
    while size >= 0x80:
        prefix += bytes([size & 0x7F | 0x80])
        size >>= 7
    return prefix + bytes([size]) + body


def test_the_fields_are_goflow2_v2_2_1s():
    """Numbers and types as in goflow2 v2.2.1 pb/flow.proto (FlowMessage)."""
    F = ki._F
    assert {name: (num, typ) for name, num, typ in ki.FIELDS} == {
        "sampling_rate": (3, F.TYPE_UINT64), "src_addr": (6, F.TYPE_BYTES), "dst_addr": (7, F.TYPE_BYTES),
        "bytes": (9, F.TYPE_UINT64), "packets": (10, F.TYPE_UINT64), "sampler_address": (11, F.TYPE_BYTES),
        "proto": (20, F.TYPE_UINT32), "src_port": (21, F.TYPE_UINT32), "dst_port": (22, F.TYPE_UINT32),
        "time_received_ns": (110, F.TYPE_UINT64), "type": (1, F.TYPE_UINT32), "sequence_num": (4, F.TYPE_UINT32),
        "observation_domain_id": (70, F.TYPE_UINT32)}


def test_a_flow_message_decodes_to_what_the_json_path_parses():
    bad: dict = {}
    assert ki.decode(flow(), bad) == [fa.parse_line(REAL)] and bad == {}


def test_several_messages_in_one_value_ipv6_and_protocol_names():
    value = (flow(src_addr=V6("2001:db8::1"), dst_addr=V6("2001:db8:0:1::20"), proto=58, sampling_rate=100)
             + flow(proto=250, src_port=0, dst_port=0)
             + flow(sampler_address=V6("::ffff:198.18.5.2"), proto=17)
             + frame(ki.FlowMessage(src_addr=V4("10.0.0.1"), dst_addr=V4("10.0.0.2"), bytes=10 ** 12,
                                    packets=2 ** 40).SerializeToString() + b"\xa2\x06\xc8\x01" + b"x" * 200))
    bad: dict = {}
    recs = ki.decode(value, bad)
    assert bad == {} and len(recs) == 4
    assert recs[0][:7] == ("198.18.5.2", 100, 305, 5, "2001:db8::1", "2001:db8:0:1::20", "IPv6-ICMP")
    assert recs[1][6:9] == ("250", 0, 0)  # a number without a name: the number, as flowagg's _proto does
    assert recs[2][0] == "::ffff:198.18.5.2" and recs[2][6] == "UDP"  # as GoFlow2's JSON (netip) writes it
    assert recs[3][2:6] == (10 ** 12, 2 ** 40, "10.0.0.1", "10.0.0.2")  # 2-byte prefix, an unknown field skipped


def test_fields_goflow2_sends_that_we_do_not_read_are_skipped():
    """A real FlowMessage carries ~40 more fields (in_if, next_hop, as_path, ...): unknown to our descriptor."""
    body = ki.FlowMessage(src_addr=V4("10.0.0.1"), dst_addr=V4("10.0.0.2"), bytes=7).SerializeToString()
    extra = (b"\x90\x01\x05"  # 18 in_if: varint 5
             + b"\xa2\x06\x04" + V4("192.0.2.1")  # 100 bgp_next_hop: bytes
             + b"\xb2\x06\x02\x01\x02"  # 102 as_path: packed repeated
             + b"\x08\x03")  # 1 type: NETFLOW_V9 (read: its sequence number, 0 when absent, counts)
    value = bytes([len(body) + len(extra)]) + extra + body
    assert ki.decode(value) == [("", 0, 7, 0, "10.0.0.1", "10.0.0.2", "0", 0, 0, 0.0, 0, 0)]


@pytest.mark.parametrize("value, reason", [
    (b"\x05abc", "truncated"),  # the length says more than the value holds
    (flow()[:-3], "truncated"),
    (b"\x80", "truncated"),  # the value ends inside the length prefix
    (b"\xff" * 11, "protobuf"),  # no varint is that long
    (b"\x03\xff\xff\xff", "protobuf"),  # a length, then no protobuf
    (b"\x02\x0f\x01", "protobuf"),  # wire type 7 does not exist
    (b"", "missing_field"),
    (ki.encode(sampler_address=V4("198.18.5.2"), bytes=5), "missing_field"),  # no addresses
    (ki.encode(src_addr=V4("10.0.0.1"), dst_addr=b"\x01\x02\x03\x04\x05"), "bad_value"),  # 5-byte address
    (ki.encode(src_addr=V4("10.0.0.1"), dst_addr=V4("10.0.0.2"), sampler_address=b"\x01"), "bad_value"),
    (None, "protobuf"),  # a tombstone
    ("not bytes", "protobuf"),
])
def test_what_is_not_a_flow_message_is_counted_by_reason(value, reason):
    bad: dict = {}
    assert ki.decode(value, bad) == [] and bad == {reason: 1}
    assert reason in fa.MALFORMED_REASONS


def test_a_bad_message_in_a_value_costs_only_itself_until_framing_is_lost():
    bad: dict = {}
    recs = ki.decode(flow() + b"\x03\xff\xff\xff" + flow(proto=17) + b"\x09abc", bad)
    assert [r[6] for r in recs] == ["TCP", "UDP"] and bad == {"protobuf": 1, "truncated": 1}


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.binary(max_size=400),
                 st.lists(st.sampled_from([flow(), flow(src_addr=V6("2001:db8::7")), b"\x80", b"\x01\x08", b"\x00"]),
                          max_size=6).map(b"".join),
                 st.tuples(st.binary(max_size=40), st.integers(0, 30)).map(lambda t: flow()[:t[1]] + t[0])))
def test_decode_never_raises_and_yields_only_well_formed_records(value):
    bad: dict = {}
    recs = ki.decode(value, bad)
    assert set(bad) <= set(fa.MALFORMED_REASONS) and all(c > 0 for c in bad.values())
    for r in recs:
        exp, rate, b, p, src, dst, proto, sp, dp, t, seq, dom = r
        assert all(isinstance(x, int) and x >= 0 for x in (rate, b, p, sp, dp, dom)) and isinstance(t, float)
        assert seq == fa.NO_SEQUENCE or 0 <= seq < 1 << 32
        assert all(isinstance(x, str) for x in (exp, src, dst, proto)) and src and dst
    a = fa.Aggregator(top_k={"talkers": 2, "ports": 2, "protocols": 2, "exporters": 2})
    assert a.add(recs, bad) == len(recs)
    assert sum(a.malformed.values()) == sum(bad.values())
    assert samples(a.render())["netviz_flow_series"] <= a.budget()


def test_add_counts_records_and_malformed_reasons_as_feed_does():
    fed, added = fa.Aggregator(), fa.Aggregator()
    fed.feed([REAL, REAL, "garbage"])
    added.add([fa.parse_line(REAL)] * 2, {"json": 1})
    assert fed.render() == added.render().replace(str(added.started), str(fed.started))
    added.add([], {"protobuf": 2})
    assert samples(added.render())['netviz_flow_malformed_lines_total{reason="protobuf"}'] == 2
    with pytest.raises(ValueError, match="not one of"):
        added.add([], {"no-such-reason": 1})


def test_the_consumers_series_are_in_the_budget_the_scrape_job_is_sized_from():
    cfg = {"top_k": {"talkers": 5}, "kafka": {"brokers": ["198.18.0.1:9092"], "topic": "t", "group": "g"}}
    agg = fa.Aggregator(cfg["top_k"])
    plain = agg.budget()
    agg.input_series = ki.KafkaStats()
    assert agg.budget() == plain + ki.KafkaStats.SERIES == fa.config_budget(cfg)
    assert ki.KafkaStats.SERIES == fa.INPUT_SERIES["kafka"] == sum(len(s) for *_, s in agg.input_series.samples())
    assert fa.config_budget({"top_k": {"talkers": 5}}) == plain
    rnd_recs = [(f"203.0.113.{i % 7}", i % 3, 100 + i, 1, f"10.0.{i}.1", f"10.1.{i}.1", fa.PROTO_NAMES.get(i % 60) or str(i),
                 i, 65000 - i, 1.0, i, 0) for i in range(300)]
    agg.add(rnd_recs, {"protobuf": 3})
    text = agg.render()
    m = samples(text)
    exported = sum(1 for ln in text.splitlines() if ln and not ln.startswith("#"))
    assert exported == m["netviz_flow_series"] <= m["netviz_flow_series_budget"] == agg.budget()
    for name in ("messages_total", "lag_messages", "assigned_partitions", "rebalances_total", "connected",
                 "commit_failures_total"):
        assert f"netviz_flow_kafka_{name}" in m


# -- the real producer: goflow2 v2.2.1's own protobuf ------------------------------------------------------
def _v9(flows: list[tuple[bytes, bytes, int, int, int]], v6: bool) -> bytes:
    """One NetFlow v9 datagram: template 256 (IPv4) or 257 (IPv6) and its flows (src, dst, bytes, proto, dport)."""
    addr = (27, 16) if v6 else (8, 4)
    fields = [addr, ((28, 16) if v6 else (12, 4)), (1, 4), (2, 4), (7, 2), (11, 2), (4, 1)]
    tid = 257 if v6 else 256
    body = struct.pack("!HH", tid, len(fields)) + b"".join(struct.pack("!HH", t, n) for t, n in fields)
    a = "16s16s" if v6 else "4s4s"
    recs = b"".join(struct.pack(f"!{a}IIHHB", s, d, b, 2, 40000, dp, p) for s, d, b, p, dp in flows)
    recs += b"\0" * ((-len(recs)) % 4)
    sets = struct.pack("!HH", 0, 4 + len(body)) + body + struct.pack("!HH", tid, 4 + len(recs)) + recs
    return struct.pack("!HHIIII", 9, len(flows) + 1, 1000, int(time.time()), 1, 1) + sets


def _goflow2_output(fmt: str, datagrams: list[bytes], want: int, done) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        http = s.getsockname()[1]
    p = subprocess.Popen([GOFLOW2, "-listen", f"netflow://127.0.0.1:{port}", "-transport=file", "-transport.file=",
                          f"-transport.file.sep={'' if fmt == 'bin' else chr(10)}", f"-format={fmt}",
                          "-addr", f"127.0.0.1:{http}", "-loglevel", "error"], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL)
    try:
        import urllib.request
        deadline = time.monotonic() + 20
        while True:  # /__health: 200 once goflow2 listens
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{http}/__health", timeout=1).status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline and p.poll() is None, "goflow2 did not start"
            time.sleep(0.05)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for d in datagrams:
                s.sendto(d, ("127.0.0.1", port))
        out = b""
        while not done(out):
            assert time.monotonic() < deadline + 20, f"goflow2 wrote {len(out)} bytes, not {want} flows"
            if select.select([p.stdout], [], [], 0.5)[0]:
                out += os.read(p.stdout.fileno(), 1 << 16)
        return out
    finally:
        p.kill()
        p.wait()


@pytest.mark.skipif(not os.access(GOFLOW2, os.X_OK), reason=f"{GOFLOW2} missing (make go-binaries)")
def test_real_goflow2_protobuf_decodes_to_the_records_of_its_json():
    """The same NetFlow through goflow2 v2.2.1 as `-format bin` (what it produces to Kafka: length-prefixed
    FlowMessages, here back to back on stdout) and as `-format json`: the same records but the receive time."""
    v4 = [(V4(f"10.0.0.{i}"), V4(f"192.0.2.{i}"), 100 * i + 1, (6, 17, 1)[i % 3], 443 + i) for i in range(1, 9)]
    v6 = [(V6(f"2001:db8::{i:x}"), V6(f"2001:db8:1::{i:x}"), 7 * i, 58, 0) for i in range(1, 5)]
    dgs = [_v9(v4, False), _v9(v6, True)]
    n = len(v4) + len(v6)
    binary = _goflow2_output("bin", dgs, n, lambda out: len(ki.decode(out, {})) == n)
    bad: dict = {}
    from_bin = ki.decode(binary, bad)
    assert bad == {}
    text = _goflow2_output("json", dgs, n, lambda out: out.count(b"\n") == n)
    from_json = [fa.parse_line(line) for line in text.decode().splitlines()]
    assert sorted(r[:9] for r in from_bin) == sorted(r[:9] for r in from_json)
    assert {r[4] for r in from_bin} >= {"10.0.0.1", "2001:db8::1"} and {r[0] for r in from_bin} == {"127.0.0.1"}
    assert all(abs(r[9] - time.time()) < 120 for r in from_bin)


# -- config --------------------------------------------------------------------------------------------------
def _run(tmp_path, cfg, *extra) -> subprocess.CompletedProcess:
    path = tmp_path / "cfg.json"
    path.write_text(cfg if isinstance(cfg, str) else json.dumps(cfg))
    return subprocess.run([sys.executable, "-m", "netviz_pipeline.flowagg.kafka_input", "--config", str(path),
                           "--listen", "127.0.0.1:0", *extra], capture_output=True, text=True, timeout=60)


KAFKA = {"brokers": ["198.18.0.1:9092"], "topic": "netviz-flows", "group": "netviz-flowagg"}


@pytest.mark.parametrize("cfg, says", [
    ("{not json", "not JSON"),
    ([1], "not a JSON object"),
    ({"top_k": {"talkers": 5}}, "no `kafka` section"),
    ({"kafka": KAFKA | {"brokers": []}}, "kafka.brokers"),
    ({"kafka": KAFKA | {"topic": ""}}, "kafka.topic"),
    ({"kafka": KAFKA | {"grup": "x"}}, "unknown keys ['grup']"),
    ({"kafka": KAFKA | {"security": {"enable.auto.commit": True}}}, "set by the aggregator itself"),
    ({"kafka": KAFKA | {"security": {"sasl.password": "hunter2"}}}, "name the file that holds it"),
    ({"kafka": KAFKA | {"security": {"no.such.property": "1"}}}, "No such configuration property"),
    ({"kafka": KAFKA | {"secret_files": {"sasl.password": "/nonexistent/password"}}}, "cannot read /nonexistent"),
    ({"kafka": KAFKA | {"batch": 0}}, "kafka.batch"),
    ({"kafka": KAFKA, "top_k": {"talkers": 0}}, "k must be >= 1"),
    ({"kafka": KAFKA, "networks": {"lan": ["10.0.0.300/8"]}}, "networks"),
])
def test_a_bad_config_exits_2_saying_what_is_wrong(tmp_path, cfg, says):
    out = _run(tmp_path, cfg)
    assert out.returncode == ki.EXIT_CONFIG and says in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_secrets_come_from_files_and_never_reach_a_log_line(tmp_path):
    (tmp_path / "password").write_text("s3cr3t-pa55\n")
    (tmp_path / "username").write_text("flowagg")
    cfg = {"kafka": KAFKA | {"security": {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN"},
                             "secret_files": {"sasl.username": str(tmp_path / "username"),
                                              "sasl.password": str(tmp_path / "password")}}}
    s = ki.kafka_settings(cfg)
    assert s["conf"]["sasl.password"] == "s3cr3t-pa55" and s["conf"]["sasl.username"] == "flowagg"
    assert s["conf"]["enable.auto.commit"] is False and s["conf"]["auto.offset.reset"] == "earliest"
    assert s["conf"]["bootstrap.servers"] == "198.18.0.1:9092" and s["conf"]["group.id"] == "netviz-flowagg"
    assert ki._redact("auth failed for s3cr3t-pa55", s["secrets"]) == "auth failed for ***"
    # a secret value librdkafka refuses: the message never shows it
    bad = cfg | {"kafka": cfg["kafka"] | {"secret_files": {"sasl.mechanism": str(tmp_path / "password")},
                                          "security": {"security.protocol": "SASL_PLAINTEXT"}}}
    out = _run(tmp_path, bad)
    assert out.returncode == ki.EXIT_CONFIG and "Unsupported SASL mechanism: ***" in out.stderr, out.stderr
    assert "s3cr3t" not in out.stderr


def test_the_brokers_may_be_one_comma_separated_string():
    s = ki.kafka_settings({"kafka": KAFKA | {"brokers": "a:9092, b:9092"}})
    assert s["conf"]["bootstrap.servers"] == "a:9092,b:9092" and s["batch"] == 1000 and s["poll_seconds"] == 0.5
