"""The flow aggregator's counting logic and its bounds (netviz_pipeline/flowagg/flowagg.py)."""
from __future__ import annotations

import json
import re
import os
import random
import subprocess
import sys
import time
import urllib.request

import pytest

from netviz_pipeline.flowagg import SOURCE
from netviz_pipeline.flowagg import flowagg as fa

REAL = ('{"type":"NETFLOW_V9","time_received_ns":1795672900637243907,"sequence_num":67,"sampling_rate":0,'
        '"sampler_address":"198.18.5.2","time_flow_start_ns":1795672897999000000,"time_flow_end_ns":1795672898000000000,'
        '"bytes":305,"packets":5,"src_addr":"198.18.3.10","dst_addr":"198.18.4.10","etype":"IPv4","proto":"TCP",'
        '"src_port":40022,"dst_port":8080,"in_if":1,"out_if":1,"src_mac":"00:00:00:00:00:00","dst_mac":"00:00:00:00:00:00",'
        '"src_vlan":0,"dst_vlan":0,"vlan_id":0,"ip_tos":0,"forwarding_status":0,"ip_ttl":0,"ip_flags":0,"tcp_flags":27,'
        '"icmp_type":0,"icmp_code":0,"ipv6_flow_label":0,"fragment_id":0,"fragment_offset":0,"src_as":0,"dst_as":0,'
        '"next_hop":"","next_hop_as":0,"src_net":"0.0.0.0/0","dst_net":"0.0.0.0/0","bgp_next_hop":"","bgp_communities":[],'
        '"as_path":[],"mpls_ttl":[],"mpls_label":[],"mpls_ip":[],"observation_domain_id":0,"observation_point_id":0,'
        '"layer_stack":[],"layer_size":[],"ipv6_routing_header_addresses":[],"ipv6_routing_header_seg_left":0}')


def rec(**kw) -> str:
    d = json.loads(REAL)
    d.update(kw)
    return json.dumps(d, separators=(",", ":"))


def samples(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def talker(metric: str = "bytes", exporter: str = "198.18.5.2", **labels) -> str:
    """A talker series' sample name: names default to the addresses, kinds to "address", networks to
    "other" (what the aggregator exports when nothing names an address)."""
    src, dst = labels.pop("src"), labels.pop("dst")
    full = {"exporter": exporter, "src": src, "dst": dst, "src_name": src, "dst_name": dst,
            "src_kind": "address", "dst_kind": "address", "src_net": "other", "dst_net": "other"} | labels
    return f"netviz_flow_talker_{metric}_total{{" + ",".join(f'{k}="{v}"' for k, v in full.items()) + "}"


OTHER_TALKER = "netviz_flow_talker_bytes_total{" + ",".join(
    f'{k}="other"' for k in ("exporter", "src", "dst", *fa.TALKER_EXTRA_LABELS)) + "}"


def test_real_goflow2_line_takes_the_fast_path_and_equals_json():
    fast = fa.parse_line(REAL)
    assert fa._FAST.match(REAL)
    slow = fa.parse_line(REAL.replace('{"type":"NETFLOW_V9",', '{"type":"NETFLOW_V9", ', 1))  # breaks the pattern
    assert fast == slow == ("198.18.5.2", 0, 305, 5, "198.18.3.10", "198.18.4.10", "TCP", 40022, 8080,
                            1795672900.637243907, 67, 0)


def test_sampling_rate_corrects_bytes_and_zero_counts_as_one():
    a = fa.Aggregator()
    a.feed([rec(sampling_rate=100, bytes=10, packets=2, sampler_address="10.0.0.1"),
            rec(sampling_rate=0, bytes=10, packets=2, sampler_address="10.0.0.2")])
    m = samples(a.render())
    assert m['netviz_flow_exporter_bytes_total{exporter="10.0.0.1"}'] == 1000
    assert m['netviz_flow_exporter_packets_total{exporter="10.0.0.1"}'] == 200
    assert m['netviz_flow_exporter_bytes_total{exporter="10.0.0.2"}'] == 10
    assert m['netviz_flow_sampling_rate_zero_total{exporter="10.0.0.2"}'] == 1
    assert 'netviz_flow_sampling_rate_zero_total{exporter="10.0.0.1"}' not in m
    assert m["netviz_flow_bytes_total"] == 1010 and m["netviz_flow_records_total"] == 2


def test_dimensions_labels_ports_and_networks():
    a = fa.Aggregator(networks={"lan": ["198.18.3.0/24"], "wan": ["198.18.0.0/16"], "iot": ["2001:db8::/32"]})
    a.feed([REAL, rec(proto=1, src_port=0, dst_port=0, src_addr="2001:db8::1", dst_addr="198.18.3.7"),
            rec(src_port=443, dst_port=50000)])
    m = samples(a.render())
    assert m[talker(src="198.18.3.10", dst="198.18.4.10", src_net="lan", dst_net="wan")] == 610
    assert m['netviz_flow_port_bytes_total{protocol="TCP",port="8080"}'] == 305
    assert m['netviz_flow_port_bytes_total{protocol="TCP",port="443"}'] == 305
    assert m['netviz_flow_port_flows_total{protocol="ICMP",port="none"}'] == 1
    assert m['netviz_flow_protocol_bytes_total{protocol="TCP"}'] == 610
    # longest prefix wins: 198.18.3.0/24 is lan although 198.18.0.0/16 is wan
    assert m['netviz_flow_network_bytes_total{src_net="lan",dst_net="wan"}'] == 610
    assert m['netviz_flow_network_bytes_total{src_net="iot",dst_net="lan"}'] == 305
    assert m['netviz_flow_last_record_timestamp_seconds{exporter="198.18.5.2"}'] == pytest.approx(1795672900.637, abs=0.01)


def test_service_port():
    assert fa.service_port(40022, 8080) == "8080" and fa.service_port(53, 53) == "53"
    assert fa.service_port(50000, 60000) == "ephemeral" and fa.service_port(0, 0) == "none"
    assert fa.service_port(0, 123) == "123"


def test_malformed_lines_are_counted_by_reason_and_skipped():
    a = fa.Aggregator()
    n = a.feed(["not json", REAL[:200], '{"bytes": 1}', '{"src_addr":"a","dst_addr":"b","bytes":-1}', "[1,2]",
                "x" * (fa.MAX_LINE + 1), REAL])
    assert n == 1
    assert a.malformed == {"json": 2, "truncated": 1, "missing_field": 1, "bad_value": 1, "too_long": 1,
                           "protobuf": 0}  # the kafka input's reason


def test_space_saving_error_bound_and_heavy_hitters_are_tracked():
    rnd = random.Random(3)
    k = 20
    ss = fa.SpaceSaving(k)
    exact: dict[int, int] = {}
    keys = list(range(2000))
    weights = [1 / (i + 1) ** 1.2 for i in keys]
    for key in rnd.choices(keys, weights, k=50_000):
        b = rnd.randrange(1, 1500)
        exact[key] = exact.get(key, 0) + b
        ss.offer(key, b, 1, 1, 0.0)
    n = sum(exact.values())
    assert ss.total == n and len(ss.entries) == k
    for key, e in ss.entries.items():
        count, err, observed = e[0], e[1], e[2]
        assert count - err == observed  # exported counters: exact since admission
        assert observed <= exact[key] <= count  # Space-Saving's bracket
        assert err <= n / k  # the stated error bound
    for key, v in exact.items():
        if v > n / k:
            assert key in ss.entries, "a key above N/k must be tracked"
    # nothing is lost: tracked + other == total
    assert sum(e[2] for e in ss.entries.values()) + ss.other[0] == n


def test_series_never_exceed_the_budget_whatever_the_traffic():
    a = fa.Aggregator(top_k={"talkers": 5, "ports": 3, "protocols": 2, "exporters": 2}, networks={"lan": ["10.0.0.0/8"]})
    rnd = random.Random(1)
    for _ in range(20):
        a.feed([rec(src_addr=f"10.{rnd.randrange(256)}.0.{rnd.randrange(256)}", dst_addr=f"192.0.2.{rnd.randrange(256)}",
                    sampler_address=f"203.0.113.{rnd.randrange(50)}", proto=rnd.randrange(256),
                    src_port=rnd.randrange(65536), dst_port=rnd.randrange(65536), sampling_rate=rnd.randrange(3))
                for _ in range(500)])
    text = a.render()
    m = samples(text)
    exported = sum(1 for ln in text.splitlines() if ln and not ln.startswith("#"))
    assert exported == m["netviz_flow_series"] <= m["netviz_flow_series_budget"] == a.budget()
    talkers = [k for k in m if k.startswith("netviz_flow_talker_bytes_total")]
    assert len(talkers) == 6 and OTHER_TALKER in m
    assert sum(m[k] for k in talkers) == m["netviz_flow_bytes_total"]  # the "other" bucket keeps totals exact
    assert len([k for k in m if k.startswith("netviz_flow_last_record_timestamp_seconds")]) <= 2


def test_idle_keys_expire_into_other():
    now = [1000.0]
    a = fa.Aggregator(idle_seconds=60, clock=lambda: now[0])
    a.feed([REAL])
    now[0] += 120
    a.feed([rec(src_addr="192.0.2.1")])
    m = samples(a.render())
    assert talker(src="198.18.3.10", dst="198.18.4.10") not in m
    assert m[OTHER_TALKER] == 305
    assert m[talker(src="192.0.2.1", dst="198.18.4.10")] == 305


def test_label_values_are_escaped():
    a = fa.Aggregator()
    a.feed([rec(src_addr='a"b\\c\nd')])
    assert 'src="a\\"b\\\\c\\nd"' in a.render()


def test_splitter_reassembles_lines_and_drops_overlong_ones():
    a = fa.Aggregator()
    sp = fa.Splitter(a)
    data = (REAL + "\n") * 3
    out = []
    for i in range(0, len(data), 7):
        out += sp.lines(data[i:i + 7].encode())
    assert out == [REAL] * 3 and sp.flush() == []
    out = sp.lines(b"x" * (fa.MAX_LINE + 10)) + sp.lines(b"yyy\n" + REAL.encode() + b"\n")
    assert out == [REAL] and a.malformed["too_long"] == 1


def test_standalone_process_reads_a_fifo_serves_metrics_and_exits_nonzero_when_input_is_lost(tmp_path):
    """The file the ConfigMap ships, run with the stdlib alone (-I: no site, no repo on sys.path)."""
    import socket

    fifo = tmp_path / "goflow2.fifo"
    os.mkfifo(fifo)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"top_k": {"talkers": 10}, "networks": {"lan": ["198.18.3.0/24"]}}))
    p = subprocess.Popen([sys.executable, "-I", "-B", str(SOURCE), "--input", str(fifo), "--config", str(cfg),
                          "--listen", f"127.0.0.1:{port}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        w = os.open(fifo, os.O_WRONLY)  # blocks until the aggregator opened it
        os.write(w, (REAL + "\n" + "garbage\n").encode())
        deadline = time.monotonic() + 10
        while True:
            try:
                m = samples(urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode())
                if m.get("netviz_flow_records_total") == 1:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "metrics never showed the record"
            time.sleep(0.1)
        assert m['netviz_flow_malformed_lines_total{reason="json"}'] == 1
        assert m["netviz_flow_input_connected"] == 1
        os.close(w)  # GoFlow2 gone
        assert p.wait(10) == fa.EXIT_INPUT_LOST
    finally:
        p.kill()
        p.wait()


# -- export packets from NetFlow v9 sequence numbers (flowagg.Sequences) ----------------------------------
def _v9(seq, t, exp="198.18.0.2", dom=0, kind="NETFLOW_V9"):
    return REAL.replace('"sequence_num":67', f'"sequence_num":{seq}').replace(
        '"time_received_ns":1795672900637243907', f'"time_received_ns":{int(t * 1e9)}').replace(
        '"sampler_address":"198.18.5.2"', f'"sampler_address":"{exp}"').replace(
        '"observation_domain_id":0', f'"observation_domain_id":{dom}').replace('"NETFLOW_V9"', f'"{kind}"')


def _sent(a) -> dict:
    return {m.group(1): float(m.group(2)) for m in re.finditer(
        r'^netviz_flow_exporter_sequence_packets_total\{exporter="([^"]*)"\} (\S+)$', a.render(), re.M)}


def test_sequence_numbers_count_the_packets_an_exporter_sent_from_a_baseline():
    a = fa.Aggregator()
    a.feed([_v9(100, 1.0), _v9(100, 1.0)])  # one packet, two records: the baseline
    assert _sent(a) == {"198.18.0.2": 0}
    a.feed([_v9(101, 2.0), _v9(104, 3.0), _v9(104, 3.0)])  # 102 and 103 never arrived: still sent
    assert _sent(a) == {"198.18.0.2": 4}


def test_late_and_reordered_packets_do_not_move_it_but_a_restart_and_a_wrap_do():
    a = fa.Aggregator()
    a.feed([_v9(1000, 10.0)])
    a.feed([_v9(990, 9.0)])  # an older packet arriving late (another partition's backlog)
    a.feed([_v9(998, 11.0)])  # received later, a little lower: reordered
    assert _sent(a) == {"198.18.0.2": 0}
    a.feed([_v9(5, 12.0)])  # far lower, received later: softflowd restarted and numbers from 0 again
    assert _sent(a) == {"198.18.0.2": 5}
    wrap = fa.Aggregator()
    wrap.feed([_v9(2 ** 32 - 2, 1.0)])
    wrap.feed([_v9(3, 2.0)])  # uint32 wrapped: 2**32-1, 0, 1, 2, 3
    assert _sent(wrap) == {"198.18.0.2": 5}


def test_each_observation_domain_counts_apart_and_other_flow_types_not_at_all():
    a = fa.Aggregator()
    a.feed([_v9(10, 1.0, dom=1), _v9(500, 1.0, dom=2), _v9(7, 1.0, kind="IPFIX", exp="198.18.5.2")])
    a.feed([_v9(12, 2.0, dom=1), _v9(501, 2.0, dom=2), _v9(900, 2.0, kind="IPFIX", exp="198.18.5.2")])
    assert _sent(a) == {"198.18.0.2": 3}  # IPFIX numbers count records, not packets: not compared


def test_a_replica_seeing_some_packets_counts_them_all():
    """Kafka spreads one exporter's records over partitions: any record of a packet carries its number."""
    every, some = fa.Aggregator(), fa.Aggregator()
    for seq in range(1, 40):
        every.feed([_v9(seq, seq)])
        if seq % 3 == 0 or seq == 1:
            some.feed([_v9(seq, seq)])
    assert _sent(every) == _sent(some) == {"198.18.0.2": 38}
