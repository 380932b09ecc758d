"""The `kafka` flow transport end to end on real parts: NetFlow v9 -> the real goflow2 v2.2.1 producing
keyed protobuf to the lab's Kafka broker -> two kafka_input replicas in one consumer group.

Held: the replicas together count exactly the flows sent (no loss, no double count), each (exporter, src,
dst) pair is counted on one replica only (GoFlow2's key puts a pair on one partition), the group's
committed offsets equal the messages counted, and a replica that leaves cleanly hands its partitions over
without a flow counted twice."""
from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from netviz_lab.lab import Lab
from netviz_lab.topology import KAFKA_BOOTSTRAP

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 4
# NetFlow v9 template: (field type, length): src, dst, bytes, packets, src port, dst port, protocol, last, first
TEMPLATE = [(8, 4), (12, 4), (1, 4), (2, 4), (7, 2), (11, 2), (4, 1), (21, 4), (22, 4)]
RECORD = struct.Struct("!4s4sIIHHBII")
PAIRS = [(f"10.1.{i // 8}.{10 + i}", f"192.0.2.{100 + i}") for i in range(24)]
FLOWS_PER_PAIR = 5


def flow_bytes(i: int) -> int:
    return 1000 + 7 * i  # per flow of pair i: every pair's total differs


def datagram(seq: int, flows: list[tuple[str, str, int]]) -> bytes:
    """One NetFlow v9 export packet: the template, then the flows (src, dst, bytes) as one data set."""
    body = struct.pack("!HH", 256, len(TEMPLATE)) + b"".join(struct.pack("!HH", t, n) for t, n in TEMPLATE)
    template_set = struct.pack("!HH", 0, 4 + len(body)) + body
    uptime = 5_000_000
    recs = b"".join(RECORD.pack(socket.inet_aton(s), socket.inet_aton(d), b, 3, 40000 + n, 443, 6, uptime - 100,
                                uptime - 900) for n, (s, d, b) in enumerate(flows))
    pad = (-len(recs)) % 4
    data_set = struct.pack("!HH", 256, 4 + len(recs) + pad) + recs + b"\0" * pad
    header = struct.pack("!HHIIII", 9, len(flows) + 1, uptime, int(time.time()), seq, 1)
    return header + template_set + data_set


def send_wave(port: int, seq0: int) -> int:
    """FLOWS_PER_PAIR flows of every pair, 8 flows a datagram; returns the flows sent."""
    flows = [(s, d, flow_bytes(i)) for _ in range(FLOWS_PER_PAIR) for i, (s, d) in enumerate(PAIRS)]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for n in range(0, len(flows), 8):
            sock.sendto(datagram(seq0 + n // 8, flows[n:n + 8]), ("127.0.0.1", port))
    return len(flows)


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def until(what: str, cond, timeout: float = 60.0, diag=lambda: ""):
    """Poll `cond` until it returns something truthy (returned), or fail saying what did not happen."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            got = cond()
        except OSError:
            got = None
        if got:
            return got
        assert time.monotonic() < deadline, f"{what} within {timeout:.0f}s: {diag()}"
        time.sleep(0.2)


def talkers(m: dict[str, float]) -> dict[tuple[str, str], float]:
    """(src, dst) -> bytes of the tracked talker series (the exporter is 127.0.0.1 throughout)."""
    out = {}
    for name, v in m.items():
        if name.startswith("netviz_flow_talker_bytes_total{") and 'exporter="other"' not in name:
            labels = dict(kv.split("=", 1) for kv in name[name.index("{") + 1:-1].split(","))
            out[(labels["src"].strip('"'), labels["dst"].strip('"'))] = v
    return out


@pytest.fixture
def topic():
    admin = AdminClient({"bootstrap.servers": KAFKA_BOOTSTRAP})
    name = f"netviz-test-flows-{uuid.uuid4().hex[:8]}"
    for f in admin.create_topics([NewTopic(name, PARTITIONS, 1)], operation_timeout=30).values():
        f.result(timeout=60)
    yield name
    for f in admin.delete_topics([name], operation_timeout=30).values():
        f.result(timeout=60)


@pytest.fixture
def goflow2(lab: Lab, topic: str, tmp_path):
    """The real goflow2 producing protobuf to `topic`, keyed by (exporter, src, dst); yields its NetFlow port."""
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text("formatter:\n  key:\n    - sampler_address\n    - src_addr\n    - dst_addr\n")
    nf, http = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
    log = open(tmp_path / "goflow2.log", "wb")
    p = subprocess.Popen([str(lab.bin("goflow2")), "-listen", f"netflow://127.0.0.1:{nf}", "-transport=kafka",
                          "-format=bin", f"-transport.kafka.brokers={KAFKA_BOOTSTRAP}",
                          f"-transport.kafka.topic={topic}", "-transport.kafka.version=3.0.0",
                          "-transport.kafka.hashing=true", "-transport.kafka.flushfreq=200ms",
                          f"-mapping={mapping}", "-addr", f"127.0.0.1:{http}"], stdout=log, stderr=log)
    try:
        # /__health answers 200 once every listener is up (cmd/goflow2/main.go `collecting`)
        until("goflow2 collecting", lambda: p.poll() is None and urllib.request.urlopen(
            f"http://127.0.0.1:{http}/__health", timeout=2).status == 200, 30,
            lambda: (tmp_path / "goflow2.log").read_text()[-1500:])
        yield nf
    finally:
        p.kill()
        p.wait(10)
        log.close()


class Replica:
    def __init__(self, tmp_path: Path, topic: str, group: str, name: str, kafka: dict | None = None):
        self.port = free_port(socket.SOCK_STREAM)
        cfg = tmp_path / f"{name}.json"
        cfg.write_text(json.dumps({"top_k": {"talkers": 100}, "kafka": {
            "brokers": [KAFKA_BOOTSTRAP], "topic": topic, "group": group, "batch": 50, "poll_seconds": 0.2} | (kafka or {})}))
        self.log_path = tmp_path / f"{name}.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "netviz_pipeline.flowagg.kafka_input", "--config", str(cfg),
                                      "--listen", f"127.0.0.1:{self.port}"], cwd=ROOT, stdout=self.log,
                                     stderr=subprocess.STDOUT, env=os.environ | {"PYTHONUNBUFFERED": "1"})

    def metrics(self) -> dict[str, float]:
        assert self.proc.poll() is None, f"replica exited {self.proc.returncode}: {self.log_path.read_text()[-1500:]}"
        return scrape(self.port)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        finally:
            self.log.close()


def committed(group: str, topic: str) -> list[tuple[int, int, int]]:
    """(partition, committed offset, high watermark) of the group on `topic` (read without joining it)."""
    c = Consumer({"bootstrap.servers": KAFKA_BOOTSTRAP, "group.id": group, "enable.auto.commit": False})
    try:
        out = []
        for tp in c.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=10):
            _, hi = c.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=10)
            out.append((tp.partition, max(tp.offset, 0), hi))
        return out
    finally:
        c.close()


def committed_sum(group: str, topic: str, want: int):
    """The group's offsets once they add up to `want` messages, else None."""
    offsets = committed(group, topic)
    return offsets if sum(c for _, c, _ in offsets) == want else None


def test_two_replicas_in_one_group_count_every_flow_once(goflow2: int, topic: str, tmp_path):
    group = f"netviz-test-flowagg-{uuid.uuid4().hex[:8]}"
    a, b = Replica(tmp_path, topic, group, "a"), Replica(tmp_path, topic, group, "b")
    try:
        def split():  # both members, the four partitions shared between them
            ma, mb = a.metrics(), b.metrics()
            pa, pb = ma["netviz_flow_kafka_assigned_partitions"], mb["netviz_flow_kafka_assigned_partitions"]
            return (pa + pb == PARTITIONS and pa >= 1 and pb >= 1 and ma["netviz_flow_input_connected"] == 1
                    and mb["netviz_flow_input_connected"] == 1)
        until("the group splits the partitions between both replicas", split, 60,
              lambda: (a.log_path.read_text()[-800:], b.log_path.read_text()[-800:]))

        sent = send_wave(goflow2, 0)
        assert sent == len(PAIRS) * FLOWS_PER_PAIR
        counted = lambda: a.metrics()["netviz_flow_records_total"] + b.metrics()["netviz_flow_records_total"]  # noqa: E731
        until(f"{sent} flows counted", lambda: counted() >= sent, 60, lambda: counted())
        offsets = until("the group's offsets committed up to the flows sent", lambda: committed_sum(group, topic, sent),
                        30, lambda: committed(group, topic))
        ma, mb = a.metrics(), b.metrics()
        # GoFlow2 produced one message per flow and nothing else: exactly the flows sent, counted once
        assert [c for _, c, _ in offsets] == [hi for _, _, hi in offsets], offsets
        assert ma["netviz_flow_records_total"] + mb["netviz_flow_records_total"] == sent
        assert ma["netviz_flow_kafka_messages_total"] + mb["netviz_flow_kafka_messages_total"] == sent
        for m in (ma, mb):
            assert sum(v for k, v in m.items() if k.startswith("netviz_flow_malformed_lines_total")) == 0
            assert m["netviz_flow_kafka_commit_failures_total"] == 0 and m["netviz_flow_kafka_connected"] == 1
            assert m["netviz_flow_series"] <= m["netviz_flow_series_budget"]
        # each pair on one replica only, with its exact bytes; both replicas got pairs
        ta, tb = talkers(ma), talkers(mb)
        assert not set(ta) & set(tb), sorted(set(ta) & set(tb))
        assert ta and tb, (ta, tb)
        assert ta | tb == {p: FLOWS_PER_PAIR * flow_bytes(i) for i, p in enumerate(PAIRS)}
        until("no lag left on either replica", lambda: a.metrics()["netviz_flow_kafka_lag_messages"] == 0
              and b.metrics()["netviz_flow_kafka_lag_messages"] == 0, 15)

        # b leaves cleanly (SIGTERM: it commits what it counted and leaves the group); a takes over
        assert b.stop() == 0, b.log_path.read_text()[-1500:]
        until("a owns every partition", lambda: a.metrics()["netviz_flow_kafka_assigned_partitions"] == PARTITIONS, 60,
              lambda: a.log_path.read_text()[-800:])
        before = a.metrics()
        sent2 = send_wave(goflow2, 1000)
        until(f"{sent2} more flows counted by a", lambda: a.metrics()["netviz_flow_records_total"]
              >= before["netviz_flow_records_total"] + sent2, 60, lambda: a.metrics()["netviz_flow_records_total"])
        offsets = until("the group's offsets committed up to the new end",
                        lambda: committed_sum(group, topic, sent + sent2), 30, lambda: committed(group, topic))
        assert [c for _, c, _ in offsets] == [hi for _, _, hi in offsets], offsets
        after = a.metrics()
        # nothing b had counted was counted again by a: exactly the second wave
        assert after["netviz_flow_records_total"] - before["netviz_flow_records_total"] == sent2
        assert after["netviz_flow_kafka_messages_total"] - before["netviz_flow_kafka_messages_total"] == sent2
        assert before["netviz_flow_kafka_rebalances_total"] >= 2  # the split, then all four after b left
        ta2 = talkers(after)
        for i, pair in enumerate(PAIRS):
            wave = FLOWS_PER_PAIR * flow_bytes(i)
            assert ta2[pair] == (ta[pair] + wave if pair in ta else wave), pair  # b's pairs start afresh on a
    finally:
        for r in (a, b):
            r.stop()


# --- The secured listener: SASL over TLS, as production brokers run ------------------------------------
# The pipeline's client, GoFlow2 and the aggregator each connect exactly as the product renders them
# (render.goflow2.kafka_args / kafka_env_and_mounts, render.aggregators.config), with the two Secrets'
# contents at the paths the kubelet mounts them (moved under tmp_path) and the env it resolves.
USER_ENV, PASS_ENV = "NETVIZ_TEST_KAFKA_USER", "NETVIZ_TEST_KAFKA_PASSWORD"


def secured(lab: Lab, tmp_path: Path, monkeypatch, mechanism: str, password: str, ca: Path | None = None):
    """(Settings, settings file) of the kafka transport on the lab broker's SASL_SSL listener."""
    import yaml

    from netviz_lab import kafka as labkafka
    from netviz_lab import settings as lab_settings
    from netviz_lab.images import pipeline_image_ref
    from netviz_lab.topology import KAFKA_SASL_USER, KAFKA_SECURE_BOOTSTRAP
    from netviz_pipeline.settings import parse_settings

    monkeypatch.setenv(USER_ENV, KAFKA_SASL_USER)
    monkeypatch.setenv(PASS_ENV, password)
    cfg = lab_settings.settings(lab)
    cfg["flows"] = dict(cfg.get("flows") or {}) | {"transport": "kafka", "kafka": {
        "brokers": [KAFKA_SECURE_BOOTSTRAP], "topic": f"netviz-test-secured-{uuid.uuid4().hex[:8]}",
        "partitions": PARTITIONS, "replicas": 1, "replication_factor": 1, "image": pipeline_image_ref(lab),
        "tls": {"ca_secret": "kafka-ca", "ca_file": str(ca or labkafka.ca_file(lab))},
        "sasl": {"mechanism": mechanism, "secret": "kafka-client", "username_env": USER_ENV, "password_env": PASS_ENV}}}
    path = tmp_path / "netviz.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return parse_settings(cfg), path


class Mounts:
    """The pods' Secret and ConfigMap mounts, under tmp_path: `at(path)` is where a pod path lives here."""

    def __init__(self, lab: Lab, tmp_path: Path, s, password: str):
        from netviz_lab import kafka as labkafka
        from netviz_lab.topology import KAFKA_SASL_USER
        from netviz_pipeline.render import aggregators, goflow2

        self.root = tmp_path / "mounts"
        self.secret = {"username": KAFKA_SASL_USER, "password": password}  # Secret kafka-client
        files = {f"{goflow2.KAFKA_CA_DIR}/ca.crt": labkafka.ca_file(lab).read_text(),  # Secret kafka-ca
                 f"{aggregators.SASL_DIR}/username": self.secret["username"] + "\n",
                 f"{aggregators.SASL_DIR}/password": self.secret["password"] + "\n",
                 f"{goflow2.MAPPING_DIR}/mapping.yaml": goflow2.mapping_configmap(s)["data"]["mapping.yaml"]}
        for pod_path, text in files.items():
            self.at(pod_path).parent.mkdir(parents=True, exist_ok=True)
            self.at(pod_path).write_text(text)

    def at(self, pod_path: str) -> Path:
        return self.root / pod_path.lstrip("/")

    def args(self, argv: list[str]) -> list[str]:
        return [a.replace("-mapping=/", f"-mapping={self.root}/") for a in argv]

    def env(self, env: list[dict]) -> dict[str, str]:
        """What the kubelet resolves: secretKeyRef values from the Secret, file paths under the mounts."""
        out = {}
        for e in env:
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            out[e["name"]] = self.secret[ref["key"]] if ref else str(self.at(e["value"])) if e["value"].startswith("/") else e["value"]
        return out


def start_goflow2(lab: Lab, s, mounts: Mounts, tmp_path: Path):
    from netviz_pipeline.render import goflow2 as render

    env, _, _ = render.kafka_env_and_mounts(s)
    nf, http = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
    log_path = tmp_path / "goflow2.log"
    argv = [str(lab.bin("goflow2")), "-listen", f"netflow://127.0.0.1:{nf}", *mounts.args(render.kafka_args(s)),
            "-addr", f"127.0.0.1:{http}"]
    with open(log_path, "wb") as log:
        p = subprocess.Popen(argv, stdout=log, stderr=log, env={"PATH": os.environ["PATH"], **mounts.env(env)})
    return p, nf, http, log_path


def replica_kafka(s, mounts: Mounts) -> dict:
    """kafka_input's `kafka` section as rendered for the pods, paths moved under the mounts."""
    from netviz_pipeline.render import aggregators

    k = aggregators.config(s)["kafka"]
    sec = dict(k["security"])
    sec["ssl.ca.location"] = str(mounts.at(sec["ssl.ca.location"]))
    return k | {"security": sec, "secret_files": {key: str(mounts.at(v)) for key, v in k["secret_files"].items()},
                "batch": 50, "poll_seconds": 0.2}


def test_sasl_over_tls_as_rendered_counts_every_flow(lab: Lab, tmp_path, monkeypatch):
    """PLAIN over TLS (the deploy test in tests/pipeline/test_flows_kafka.py proves SCRAM-SHA-512 in pods):
    the pipeline creates the topic and reads the group's lag, GoFlow2 produces, the aggregator counts
    every flow once, all through the secured listener, and the password appears in no argv and no log."""
    from netviz_lab import kafka as labkafka
    from netviz_pipeline.resources.config import NetvizConfig
    from netviz_pipeline.resources.kafka import KafkaResource

    password = labkafka.client_password(lab)
    s, path = secured(lab, tmp_path, monkeypatch, "plain", password)
    topic = s.flows.kafka.topic
    kafka = KafkaResource(config=NetvizConfig(config_path=str(path)))
    kafka.create_topic(topic, PARTITIONS, 1)
    mounts = Mounts(lab, tmp_path, s, password)
    gf, nf, http, gf_log = start_goflow2(lab, s, mounts, tmp_path)
    r = Replica(tmp_path, topic, s.flows.kafka.consumer_group, "secured", replica_kafka(s, mounts))
    try:
        until("goflow2 collecting", lambda: gf.poll() is None and urllib.request.urlopen(
            f"http://127.0.0.1:{http}/__health", timeout=2).status == 200, 30, lambda: gf_log.read_text()[-1500:])
        until("the replica assigned every partition", lambda: r.metrics()["netviz_flow_kafka_assigned_partitions"]
              == PARTITIONS, 60, lambda: r.log_path.read_text()[-1500:])
        sent = send_wave(nf, 0)
        until(f"{sent} flows counted through SASL_SSL", lambda: r.metrics()["netviz_flow_records_total"] >= sent, 60,
              lambda: (r.metrics()["netviz_flow_records_total"], gf_log.read_text()[-1500:]))
        assert r.metrics()["netviz_flow_records_total"] == sent
        lags = until("the group's offsets committed, read by the pipeline through SASL_SSL",
                     lambda: (lg := kafka.lag(s.flows.kafka.consumer_group, topic)) and sum(x.lag for x in lg) == 0
                     and sum(x.committed for x in lg) == sent and lg, 30)
        assert len(lags) == PARTITIONS
        assert kafka.topic(topic).partitions == PARTITIONS
    finally:
        gf.kill()
        gf.wait(10)
        r.stop()
        admin = AdminClient({"bootstrap.servers": KAFKA_BOOTSTRAP})  # held until the future resolves
        for f in admin.delete_topics([topic], operation_timeout=30).values():
            f.result(timeout=60)
    for text in (gf_log.read_text(), r.log_path.read_text(), " ".join(gf.args)):
        assert password not in text


def test_wrong_credentials_are_refused_by_name_and_never_printed(lab: Lab, tmp_path, monkeypatch):
    """A wrong password (SCRAM-SHA-512) and a wrong CA, against the real broker: the pipeline's error
    names the cause and the setting; GoFlow2 exits (its pod restarts); the aggregator reports itself
    disconnected and logs the broker's reason; no output holds the password."""
    from netviz_lab.topology import KAFKA_SECURE_BOOTSTRAP
    from netviz_pipeline.resources.config import NetvizConfig
    from netviz_pipeline.resources.kafka import KafkaError, KafkaResource

    wrong = f"not-the-password-{uuid.uuid4().hex[:6]}"
    s, path = secured(lab, tmp_path, monkeypatch, "scram-sha512", wrong)
    with pytest.raises(KafkaError) as e:
        KafkaResource(config=NetvizConfig(config_path=str(path)), timeout_seconds=5).topic("netviz-flows")
    msg = str(e.value)
    assert KAFKA_SECURE_BOOTSTRAP in msg and "Authentication failed" in msg, msg
    assert f"${USER_ENV} / ${PASS_ENV} (flows.kafka.sasl)" in msg and wrong not in msg, msg

    mounts = Mounts(lab, tmp_path, s, wrong)
    gf, _, _, gf_log = start_goflow2(lab, s, mounts, tmp_path)
    r = Replica(tmp_path, "netviz-flows", s.flows.kafka.consumer_group, "wrong", replica_kafka(s, mounts))
    try:
        assert gf.wait(60) != 0, gf_log.read_text()[-1500:]
        until("the aggregator logs the broker's refusal", lambda: "Authentication failed" in r.log_path.read_text(), 30,
              lambda: r.log_path.read_text()[-1500:])
        m = r.metrics()
        assert m["netviz_flow_kafka_connected"] == 0 and m["netviz_flow_input_connected"] == 0, m
    finally:
        if gf.poll() is None:
            gf.kill()
        r.stop()
    for text in (gf_log.read_text(), r.log_path.read_text(), msg):
        assert wrong not in text
    print(f"wrong password: pipeline: {msg}\n  goflow2 exited {gf.returncode}: {gf_log.read_text().strip().splitlines()[-1]}")

    # the right password with a CA that did not sign the broker's certificate (the cluster's)
    s, path = secured(lab, tmp_path, monkeypatch, "scram-sha512", wrong, ca=lab.pki / "ca.crt")
    with pytest.raises(KafkaError) as e:
        KafkaResource(config=NetvizConfig(config_path=str(path)), timeout_seconds=5).topic("netviz-flows")
    assert "flows.kafka.tls" in str(e.value) and "certificate verify failed" in str(e.value), str(e.value)
    print(f"wrong CA: pipeline: {e.value}")
