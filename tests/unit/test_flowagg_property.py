"""Property: no input line, however broken, crashes the aggregator or breaks its output."""
from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from netviz_pipeline.flowagg import flowagg as fa

REAL = ('{"type":"NETFLOW_V9","time_received_ns":1795672900637243907,"sequence_num":67,"sampling_rate":0,'
        '"sampler_address":"198.18.5.2","time_flow_start_ns":1,"time_flow_end_ns":2,"bytes":305,"packets":5,'
        '"src_addr":"198.18.3.10","dst_addr":"198.18.4.10","etype":"IPv4","proto":"TCP","src_port":40022,'
        '"dst_port":8080,"in_if":1,"out_if":1,"tcp_flags":27}')

json_values = st.recursive(st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70)
                           | st.floats(allow_nan=True) | st.text(max_size=20),
                           lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                           max_leaves=10)
field_names = st.sampled_from(["bytes", "packets", "sampling_rate", "src_addr", "dst_addr", "proto", "src_port",
                               "dst_port", "sampler_address", "time_received_ns", "type", "etype"])


@st.composite
def mutated_records(draw):
    rec = json.loads(REAL)
    for _ in range(draw(st.integers(0, 4))):
        key = draw(field_names)
        if draw(st.booleans()):
            rec.pop(key, None)
        else:
            rec[key] = draw(json_values)
    text = json.dumps(rec, separators=(",", ":"))
    cut = draw(st.integers(0, len(text)))
    return text[:cut] if draw(st.booleans()) else text


lines = st.one_of(st.text(max_size=300), mutated_records(),
                  st.binary(max_size=300).map(lambda b: b.decode("utf-8", "replace")),
                  st.just(REAL[:-1]), st.just(REAL + "}"))


@settings(max_examples=400, deadline=None)
@given(st.lists(lines, max_size=12))
def test_no_line_crashes_it_and_output_stays_valid(batch):
    a = fa.Aggregator(top_k={"talkers": 3, "ports": 2, "protocols": 2, "exporters": 2}, networks={"lan": ["10.0.0.0/8"]})
    n = a.feed(batch)
    assert 0 <= n <= len(batch)
    assert n + sum(a.malformed.values()) == sum(1 for ln in batch if ln and ln != "\n")
    text = a.render()
    for line in filter(None, text.split("\n")):  # the text format ends lines with \n only (a label may hold U+0085)
        if line.startswith("#"):
            continue
        name, value = line.rsplit(" ", 1)
        float(value)
        assert "\n" not in name
    series = sum(1 for ln in text.split("\n") if ln and not ln.startswith("#"))
    assert series <= a.budget()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000), st.integers(1, 64))
def test_splitter_never_crashes_on_any_byte_stream(data, step):
    a = fa.Aggregator()
    sp = fa.Splitter(a)
    for i in range(0, len(data), step):
        a.feed(sp.lines(data[i:i + step]))
    a.feed(sp.flush())
    a.render()
