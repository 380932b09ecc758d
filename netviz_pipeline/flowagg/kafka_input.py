"""The `kafka` flow transport's aggregator: GoFlow2's protobuf flows from a Kafka topic, consumed as one
consumer group, counted by flowagg.Aggregator into the same bounded series as the FIFO sidecar.

    python -m netviz_pipeline.flowagg.kafka_input --config cfg.json --listen 0.0.0.0:9102

Input. GoFlow2 v2.2.1 runs with `-transport=kafka -format=bin`: each Kafka message is one
`flowpb.FlowMessage` (goflow2 v2.2.1 pb/flow.proto) behind a varint length prefix, keyed by
(sampler_address, src_addr, dst_addr) with the hash partitioner, so one pair always lands on one
partition. `decode` reads the fields the aggregator counts with the protobuf runtime, from a descriptor
built here (field numbers from that flow.proto): addresses (4 or 16 bytes) become text as GoFlow2's JSON
writes them, the protocol number the names flowagg uses (PROTO_NAMES, else the number). What is not a
FlowMessage is counted in netviz_flow_malformed_lines_total by reason and skipped; nothing in a message
can stop the process: "truncated" (the value ends inside the length prefix or before the length it
gives), "protobuf" (no valid prefix, or not a protobuf message), "missing_field" (no source or
destination address), "bad_value" (an address neither 4 nor 16 bytes long).

Commit rule. N replicas consume the topic as one consumer group (`kafka.group`), each owning a disjoint
set of partitions. A replica polls a batch (`batch` messages at most, waiting up to `poll_seconds`),
decodes it, counts it (`Aggregator.add`) and only then commits the batch's offsets, synchronously;
auto-commit is off, so an offset is committed only after its records are counted. A new group starts at
the earliest offset. While the group's coordinator is unreachable a commit waits for it (librdkafka), so
nothing more is counted meanwhile; a commit the broker refuses pauses the replica's partitions
(librdkafka drops what it had fetched for them) until a retry goes through. Either way at most one batch
is ever counted and uncommitted. On a rebalance the revoked partitions' pending offsets are committed
first.

What a crash costs. A replica that dies between counting a batch and committing it (or whose commit
never goes through) leaves the group's offsets at the previous batch: the partition's next owner reads
that batch again and counts it again, so its flows are counted twice: at most one batch (`batch`
messages, one flow each) per crash and partition owner. Committing first would instead lose the batch
for good when the crash comes between commit and count. A double count shows as a short spike in a
rate(), bounded and visible (netviz_flow_kafka_messages_total summed over the replicas runs ahead of the
topic's committed offsets); a loss is silent and makes every total wrong forever. Series of a dead
replica vanish with it, and its counters restart in the next owner from zero (rate() handles resets).

Series: the aggregator's (flowagg.py), plus six of the consumer's own (flowagg.INPUT_SERIES["kafka"],
in netviz_flow_series_budget): netviz_flow_kafka_messages_total, netviz_flow_kafka_lag_messages (high
watermark - position, summed over the partitions this replica owns; a partition not read from since its
assignment counts from the group's committed offset), netviz_flow_kafka_assigned_partitions,
netviz_flow_kafka_rebalances_total (assignments received), netviz_flow_kafka_connected (1 while
librdkafka's statistics, every second, show a broker connection up and the consumer has not been waiting
on the broker, in a commit, for more than 5 s) and netviz_flow_kafka_commit_failures_total. The lag is
refreshed after each batch (at most once a second) from librdkafka's cached watermarks.
netviz_flow_input_connected is 1 while a broker is reachable and the replica holds an assignment from
its group (possibly of no partitions: more replicas than partitions); it reads 0 between a rebalance's
revoke and assign.

Config: flowagg's (top_k, networks, idle_seconds, names) plus
    kafka: {brokers: [host:port, ...] (or "a:9092,b:9092"), topic, group,
            security: {librdkafka key: value} (e.g. security.protocol, sasl.mechanism, ssl.ca.location),
            secret_files: {librdkafka key: file} (e.g. sasl.password: /etc/netviz-kafka-sasl/password),
            batch: 1000, poll_seconds: 0.5}
Secrets come only from the files `secret_files` names (a Kubernetes Secret mounted as files; a trailing
newline is dropped): never from the command line, the config's own text or a log line. A secret key
given inline in `security` is refused. A bad config exits with status 2 and says what is wrong.

Exit statuses: 0 on SIGTERM/SIGINT (after committing what was counted and leaving the group), 2 for a
bad config, 3 (flowagg.EXIT_INPUT_LOST) on a fatal consumer error, so the pod restarts.
"""
from __future__ import annotations

import argparse
import json
import signal
import socket
import sys
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from . import flowagg as fa

EXIT_CONFIG = 2
MAX_VARINT = 10  # bytes of a 64-bit varint
_F = descriptor_pb2.FieldDescriptorProto
# The FlowMessage fields the aggregator counts: (name, number, type), as in goflow2 v2.2.1 pb/flow.proto.
# Every other field of GoFlow2's message is skipped by the parser (kept as unknown bytes, never read).
FIELDS = (
    ("type", 1, _F.TYPE_UINT32),  # the FlowType enum, read as its varint
    ("sequence_num", 4, _F.TYPE_UINT32),
    ("sampling_rate", 3, _F.TYPE_UINT64),
    ("src_addr", 6, _F.TYPE_BYTES),
    ("dst_addr", 7, _F.TYPE_BYTES),
    ("bytes", 9, _F.TYPE_UINT64),
    ("packets", 10, _F.TYPE_UINT64),
    ("sampler_address", 11, _F.TYPE_BYTES),
    ("proto", 20, _F.TYPE_UINT32),
    ("src_port", 21, _F.TYPE_UINT32),
    ("dst_port", 22, _F.TYPE_UINT32),
    ("time_received_ns", 110, _F.TYPE_UINT64),
    ("observation_domain_id", 70, _F.TYPE_UINT32),
)
NETFLOW_V9 = 3  # FlowMessage.FlowType
# librdkafka settings this program owns (the commit rule depends on them): not settable in `security`
OWNED = ("bootstrap.servers", "group.id", "enable.auto.commit", "enable.auto.offset.store", "auto.offset.reset",
         "statistics.interval.ms", "on_commit", "error_cb", "stats_cb", "logger")
# librdkafka settings holding secrets: only from `secret_files`
SECRET_KEYS = ("sasl.password", "sasl.username", "ssl.key.password", "ssl.keystore.password", "ssl.key.pem",
               "ssl_key", "sasl.oauthbearer.client.secret", "sasl.oauthbearer.config")
STATS_INTERVAL_MS = 1000  # librdkafka's statistics: its brokers' states (netviz_flow_kafka_connected)
SESSION_TIMEOUT_MS = 10_000
STUCK_S = 5.0  # a commit waiting longer than this is waiting for an unreachable broker
LAG_REFRESH_S = 1.0
LOG_EVERY_S = 30.0


def flow_message_class():
    """The FlowMessage class, built from a descriptor made here in its own pool (no generated code)."""
    fdp = descriptor_pb2.FileDescriptorProto(name="netviz/flowagg/flow.proto", package="flowpb", syntax="proto3")
    msg = fdp.message_type.add(name="FlowMessage")
    for name, number, typ in FIELDS:
        msg.field.add(name=name, number=number, type=typ, label=_F.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("flowpb.FlowMessage"))


FlowMessage = flow_message_class()
_AF = {4: socket.AF_INET, 16: socket.AF_INET6}


def decode(value, malformed: dict[str, int] | None = None) -> list[tuple]:
    """The records of one Kafka message value: varint-length-prefixed FlowMessages (GoFlow2 writes one)
    -> the tuples flowagg.parse_line returns. What is not a FlowMessage is counted in `malformed` by reason
    and skipped; after a framing error the rest of the value is one malformed message. Never raises."""
    out: list[tuple] = []
    bad = malformed if malformed is not None else {}
    try:
        view = memoryview(value)
        if view.ndim != 1 or view.itemsize != 1:
            view = view.cast("B")
    except (TypeError, ValueError):
        bad["protobuf"] = bad.get("protobuf", 0) + 1  # None (a tombstone) or not bytes at all
        return out
    n = len(view)
    if n == 0:
        bad["missing_field"] = bad.get("missing_field", 0) + 1
        return out
    pos = 0
    msg = FlowMessage()
    ntop = socket.inet_ntop
    names = fa.PROTO_NAMES
    while pos < n:
        reason = None
        size = shift = 0
        while True:  # the varint length prefix
            if pos >= n:
                reason = "truncated"
                break
            byte = view[pos]
            pos += 1
            size |= (byte & 0x7F) << shift
            if byte < 0x80:
                break
            shift += 7
            if shift >= 7 * MAX_VARINT:
                reason = "protobuf"
                break
        if reason is None and pos + size > n:
            reason = "truncated"
        if reason is not None:
            bad[reason] = bad.get(reason, 0) + 1
            return out  # framing lost: nothing after this can be found
        try:
            msg.ParseFromString(view[pos:pos + size])
        except Exception:  # noqa: BLE001 - DecodeError, or anything the runtime raises on garbage
            bad["protobuf"] = bad.get("protobuf", 0) + 1
            pos += size
            continue
        pos += size
        src, dst, exp = msg.src_addr, msg.dst_addr, msg.sampler_address
        if not src or not dst:
            bad["missing_field"] = bad.get("missing_field", 0) + 1
            continue
        fsrc, fdst, fexp = _AF.get(len(src)), _AF.get(len(dst)), _AF.get(len(exp))
        if fsrc is None or fdst is None or (exp and fexp is None):
            bad["bad_value"] = bad.get("bad_value", 0) + 1
            continue
        proto = msg.proto
        out.append((ntop(fexp, exp) if exp else "", msg.sampling_rate, msg.bytes, msg.packets, ntop(fsrc, src),
                    ntop(fdst, dst), names.get(proto) or str(proto), msg.src_port, msg.dst_port,
                    msg.time_received_ns / 1e9, msg.sequence_num if msg.type == NETFLOW_V9 else fa.NO_SEQUENCE,
                    msg.observation_domain_id))
    return out


def encode(**fields) -> bytes:
    """One length-prefixed FlowMessage as GoFlow2 frames it (tests and benchmarks build input with it)."""
    body = FlowMessage(**fields).SerializeToString()
    size, prefix = len(body), bytearray()
    while size >= 0x80:
        prefix.append(size & 0x7F | 0x80)
        size >>= 7
    prefix.append(size)
    return bytes(prefix) + body


# ---------------------------------------------------------------------------------- config
class ConfigError(ValueError):
    pass


def kafka_settings(cfg: dict) -> dict:
    """The validated `kafka` section: {conf: librdkafka settings (secrets read from their files), topic,
    batch, poll_seconds, secrets: the secret values (to keep them out of messages)}."""
    k = cfg.get("kafka")
    if not isinstance(k, dict):
        raise ConfigError("no `kafka` section (an object with brokers, topic, group)")
    brokers = k.get("brokers")
    if isinstance(brokers, str):
        brokers = [b.strip() for b in brokers.split(",") if b.strip()]
    if not isinstance(brokers, list) or not brokers or not all(isinstance(b, str) and b for b in brokers):
        raise ConfigError("kafka.brokers: a non-empty list of host:port")
    for name in ("topic", "group"):
        if not isinstance(k.get(name), str) or not k[name]:
            raise ConfigError(f"kafka.{name}: a non-empty string")
    unknown = set(k) - {"brokers", "topic", "group", "security", "secret_files", "batch", "poll_seconds"}
    if unknown:
        raise ConfigError(f"kafka: unknown keys {sorted(unknown)}")
    security = k.get("security") or {}
    files = k.get("secret_files") or {}
    for name, d in (("security", security), ("secret_files", files)):
        if not isinstance(d, dict):
            raise ConfigError(f"kafka.{name}: an object of librdkafka settings")
    conf: dict = {}
    for key, value in security.items():
        if key in OWNED:
            raise ConfigError(f"kafka.security.{key}: set by the aggregator itself (its commit rule needs it)")
        if key in SECRET_KEYS:
            raise ConfigError(f"kafka.security.{key}: a secret; name the file that holds it in kafka.secret_files")
        if not isinstance(value, (str, int, float, bool)):
            raise ConfigError(f"kafka.security.{key}: a string, number or boolean")
        conf[key] = value
    secrets = []
    for key, path in files.items():
        if key in OWNED or key in conf:
            raise ConfigError(f"kafka.secret_files.{key}: set elsewhere already")
        if not isinstance(path, str) or not path:
            raise ConfigError(f"kafka.secret_files.{key}: the path of a file")
        try:
            with open(path) as f:
                value = f.read().rstrip("\r\n")
        except OSError as e:
            raise ConfigError(f"kafka.secret_files.{key}: cannot read {path}: {e.strerror}") from None
        if not value:
            raise ConfigError(f"kafka.secret_files.{key}: {path} is empty")
        conf[key] = value
        secrets.append(value)
    batch, poll = k.get("batch", 1000), k.get("poll_seconds", 0.5)
    if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= 100_000:
        raise ConfigError("kafka.batch: messages per batch, 1..100000")
    if isinstance(poll, bool) or not isinstance(poll, (int, float)) or not 0.01 <= poll <= 10:
        raise ConfigError("kafka.poll_seconds: 0.01..10")
    conf |= {"bootstrap.servers": ",".join(brokers), "group.id": k["group"], "enable.auto.commit": False,
             "auto.offset.reset": "earliest", "statistics.interval.ms": STATS_INTERVAL_MS}
    conf.setdefault("client.id", f"netviz-flowagg-{socket.gethostname()}")
    # librdkafka's 45 s session left a killed replica's partitions uncounted that long (bench_flow_loss:
    # caught up 48 s after a kill); 10 s hands them over sooner, a clean stop leaves the group at once
    conf.setdefault("session.timeout.ms", SESSION_TIMEOUT_MS)
    return {"conf": conf, "topic": k["topic"], "batch": batch, "poll_seconds": float(poll), "secrets": secrets}


def _redact(text: str, secrets: list[str]) -> str:
    for s in secrets:
        text = text.replace(s, "***")
    return text


# ---------------------------------------------------------------------------------- consumer
class KafkaStats:
    """The consumer's own series: a fixed number (SERIES == flowagg.INPUT_SERIES["kafka"])."""

    SERIES = 6

    def __init__(self):
        self.messages = 0
        self.lag = 0
        self.assigned = 0
        self.rebalances = 0
        self.connected = lambda: 0  # set by the consumer: computed when /metrics is rendered
        self.commit_failures = 0

    def samples(self):
        return [
            ("netviz_flow_kafka_messages_total", "counter",
             "Kafka messages consumed and counted (one flow each from GoFlow2; malformed ones included).",
             [((), self.messages)]),
            ("netviz_flow_kafka_lag_messages", "gauge",
             "Messages behind the high watermark, summed over the partitions this replica owns.", [((), self.lag)]),
            ("netviz_flow_kafka_assigned_partitions", "gauge", "Partitions the consumer group gives this replica.",
             [((), self.assigned)]),
            ("netviz_flow_kafka_rebalances_total", "counter", "Partition assignments received from the group.",
             [((), self.rebalances)]),
            ("netviz_flow_kafka_connected", "gauge",
             "1 while a broker connection is up and no commit has waited for the broker over 5 s.",
             [((), self.connected())]),
            ("netviz_flow_kafka_commit_failures_total", "counter",
             "Offset commits that failed (the batch stays counted; partitions pause until a commit goes through).",
             [((), self.commit_failures)]),
        ]


class FlowConsumer:
    """One replica of the group: poll a batch, count it, commit it (see the module doc)."""

    def __init__(self, agg: fa.Aggregator, settings: dict, log=fa.log):
        self.agg, self.log = agg, log
        self.topic, self.batch, self.poll_seconds = settings["topic"], settings["batch"], settings["poll_seconds"]
        self.secrets = settings["secrets"]
        self.stats = KafkaStats()
        agg.input_series = self.stats
        agg.input_help = ("1 while a Kafka broker is reachable and the consumer group has given this replica "
                          "its partitions (possibly none).")
        self.assignment: list[TopicPartition] = []
        self.joined = False
        self.pending: dict[tuple[str, int], int] = {}  # counted, not yet committed: (topic, partition) -> next offset
        self.paused = False
        self.start: dict[tuple[str, int], int] = {}  # where a partition not yet read from starts (for lag)
        self.fatal: str | None = None
        self._last_lag = 0.0
        self._logged: dict[str, float] = {}
        self.broker_up = False  # librdkafka's statistics: a broker connection is up
        self.busy_since: float | None = None  # monotonic start of a call waiting on the broker (a commit)
        self.stats.connected = self.connected
        agg.input_connected = lambda: int(self.joined and self.connected())
        conf = dict(settings["conf"], error_cb=self._on_error, stats_cb=self._on_stats)
        self.consumer = Consumer(conf)
        self.consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_lost)

    # -- callbacks (served inside consume(), on this thread) -----------------------------------------
    def _log_limited(self, kind: str, msg: str) -> None:
        now = time.monotonic()
        if now - self._logged.get(kind, -LOG_EVERY_S) >= LOG_EVERY_S:
            self._logged[kind] = now
            self.log(_redact(msg, self.secrets))

    def _on_error(self, err: KafkaError) -> None:
        if err.code() == KafkaError._ALL_BROKERS_DOWN:
            self.broker_up = False
        if err.fatal():
            self.fatal = err.str()
        self._log_limited(f"error{err.code()}", f"kafka: {err.str()}")

    def _on_stats(self, text: str) -> None:
        try:
            brokers = json.loads(text).get("brokers") or {}
            self.broker_up = any(b.get("state") == "UP" for b in brokers.values())
        except (ValueError, AttributeError):
            pass

    def connected(self) -> int:
        """Read by the /metrics thread: a commit stuck on the broker means it is not reachable, whatever
        the last statistics (they are delivered on this consumer's thread, which that commit holds)."""
        since = self.busy_since
        return int(self.broker_up and (since is None or time.monotonic() - since < STUCK_S))

    def _on_assign(self, consumer, partitions) -> None:
        self.assignment = list(partitions)
        self.start = {}
        self.joined = True
        self.paused = False  # a new assignment starts unpaused
        self.stats.assigned = len(partitions)
        self.stats.rebalances += 1
        self._last_lag = 0.0  # refresh the lag now
        self.log(f"assigned partitions {sorted(p.partition for p in partitions)} of {self.topic}")

    def _on_revoke(self, consumer, partitions) -> None:
        gone = {(p.topic, p.partition) for p in partitions}
        if any(tp in gone for tp in self.pending):
            self._commit({tp: o for tp, o in self.pending.items() if tp in gone})
        self._drop(partitions)

    def _on_lost(self, consumer, partitions) -> None:
        self._drop(partitions)  # no longer ours: a commit would be refused

    def _drop(self, partitions) -> None:
        gone = {(p.topic, p.partition) for p in partitions}
        if self.paused:  # leave no pause behind on partitions the group may give back later
            try:
                self.consumer.resume(list(partitions))
            except KafkaException:
                pass
        for tp in gone & set(self.pending):
            del self.pending[tp]  # uncommitted: its next owner counts that batch again (module doc)
        self.assignment = [p for p in self.assignment if (p.topic, p.partition) not in gone]
        self.stats.assigned = len(self.assignment)
        self.joined = False
        self.paused = False

    # -- the loop ---------------------------------------------------------------------------------
    def _commit(self, offsets: dict[tuple[str, int], int]) -> bool:
        tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        self.busy_since = time.monotonic()
        try:
            result = self.consumer.commit(offsets=tps, asynchronous=False)
            failed = [tp for tp in result or () if tp.error is not None]
            error = failed[0].error.str() if failed else None
        except KafkaException as e:
            failed, error = tps, e.args[0].str() if e.args and isinstance(e.args[0], KafkaError) else str(e)
        finally:
            self.busy_since = None
        failed_keys = {(tp.topic, tp.partition) for tp in failed}
        for tp, o in offsets.items():
            if tp not in failed_keys and self.pending.get(tp) == o:
                del self.pending[tp]
        if failed:
            self.stats.commit_failures += 1
            self._log_limited("commit", f"kafka: commit failed ({error}); partitions paused until it goes through")
            return False
        if self.paused and not self.pending:
            self._pause(False)
        return True

    def _pause(self, pause: bool) -> None:
        """Pause (nothing more is fetched, what was fetched is dropped) or resume the owned partitions."""
        try:
            (self.consumer.pause if pause else self.consumer.resume)(self.assignment)
            self.paused = pause
        except KafkaException as e:
            self._log_limited("pause", f"kafka: {'pause' if pause else 'resume'} failed: {e}")

    def step(self) -> int:
        """One batch: retry a failed commit (paused meanwhile), consume, count, commit. Returns records."""
        if self.pending and not self._commit(dict(self.pending)) and not self.paused and self.assignment:
            self._pause(True)  # count nothing more until the counted batch is committed
        msgs = self.consumer.consume(self.batch, self.poll_seconds)
        records: list[tuple] = []
        bad: dict[str, int] = {}
        offsets: dict[tuple[str, int], int] = {}
        good = 0
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.fatal():
                    self.fatal = err.str()
                self._log_limited(f"msg{err.code()}", f"kafka: {err.str()}")
                continue
            records += decode(m.value(), bad)
            offsets[(m.topic(), m.partition())] = m.offset() + 1
            good += 1
        n = 0
        if offsets:
            n = self.agg.add(records, bad)
            self.stats.messages += good
            self.pending.update(offsets)  # counted: now, and only now, commit
            if not self._commit(dict(self.pending)) and not self.paused:
                self._pause(True)
        now = time.monotonic()
        if now - self._last_lag >= LAG_REFRESH_S:
            self._last_lag = now
            self._refresh_lag()
        return n

    def _refresh_lag(self) -> None:
        """High watermark - position over the owned partitions (librdkafka's cached watermarks: no request)."""
        if not self.assignment:
            self.stats.lag = 0
            return
        try:
            positions = self.consumer.position(self.assignment)
            unknown = [tp for tp in positions if tp.offset < 0 and (tp.topic, tp.partition) not in self.start]
            if unknown:  # not read from since the assignment: from the group's committed offset (once)
                self.busy_since = time.monotonic()
                try:
                    committed = self.consumer.committed([TopicPartition(t.topic, t.partition) for t in unknown],
                                                        timeout=2)
                finally:
                    self.busy_since = None
                for tp in committed:
                    lo, _ = self.consumer.get_watermark_offsets(tp, cached=True)
                    start = tp.offset if tp.offset >= 0 else lo  # no commit yet: the earliest offset
                    if start >= 0:
                        self.start[(tp.topic, tp.partition)] = start
            lag = 0
            for tp in positions:
                _, hi = self.consumer.get_watermark_offsets(tp, cached=True)
                pos = tp.offset if tp.offset >= 0 else self.start.get((tp.topic, tp.partition), -1)
                if hi >= 0 and pos >= 0:
                    lag += max(0, hi - pos)
            self.stats.lag = lag
        except KafkaException as e:
            self._log_limited("lag", f"kafka: lag not refreshed: {e}")

    def close(self) -> None:
        """Commit what was counted, leave the group (the revoke callback commits too)."""
        try:
            if self.pending:
                self._commit(dict(self.pending))
            self.consumer.close()
        except (KafkaException, RuntimeError) as e:
            self.log(f"kafka: close: {_redact(str(e), self.secrets)}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="GoFlow2 protobuf flows from Kafka -> bounded Prometheus series")
    ap.add_argument("--config", required=True,
                    help="JSON: flowagg's (top_k, networks, idle_seconds, names) plus kafka: {brokers, topic, group, "
                         "security: {librdkafka key: value}, secret_files: {librdkafka key: file}, batch, poll_seconds}")
    ap.add_argument("--listen", default="0.0.0.0:9102", help="host:port of /metrics")
    a = ap.parse_args(argv)
    host, _, port = a.listen.rpartition(":")
    try:
        try:
            with open(a.config) as f:
                cfg = json.load(f)
        except OSError as e:
            raise ConfigError(f"cannot read: {e.strerror}") from None
        except ValueError as e:
            raise ConfigError(f"not JSON: {e}") from None
        if not isinstance(cfg, dict):
            raise ConfigError("not a JSON object")
        if not port.isdigit() or not 0 <= int(port) < 65536:
            raise ConfigError(f"--listen {a.listen}: host:port")
        settings = kafka_settings(cfg)
        try:
            names = fa.make_names(cfg.get("names"))
            agg = fa.Aggregator(cfg.get("top_k"), cfg.get("networks"), float(cfg.get("idle_seconds", 900)), names=names)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"top_k/networks/idle_seconds/names: {e}") from None
        try:
            consumer = FlowConsumer(agg, settings)
        except KafkaException as e:
            raise ConfigError(f"kafka: {_redact(str(e.args[0].str() if e.args else e), settings['secrets'])}") from None
    except ConfigError as e:
        print(f"kafka_input: bad config {a.config}: {e}", file=sys.stderr, flush=True)
        return EXIT_CONFIG
    fa.serve(agg, host.strip("[]") or "0.0.0.0", int(port))
    stop = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.append(1))
    fa.log(f"serving /metrics on {a.listen}; series budget {agg.budget()}; top_k {agg.k}; networks {agg.nets.names}; "
           f"consuming {settings['topic']} from {settings['conf']['bootstrap.servers']} as group "
           f"{settings['conf']['group.id']} (batch {settings['batch']})")
    if names is not None and names.cluster is not None:
        fa.names_mod.start(names.cluster, fa.log)
    total = 0
    while not stop and consumer.fatal is None:
        total += consumer.step()
    consumer.close()
    if consumer.fatal is not None:
        fa.log(f"kafka: fatal error ({_redact(consumer.fatal, settings['secrets'])}) after {total} records: "
               f"exiting {fa.EXIT_INPUT_LOST} so the pod restarts")
        return fa.EXIT_INPUT_LOST
    fa.log(f"stopped after {total} records; offsets committed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
