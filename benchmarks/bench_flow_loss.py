"""make bench-flows, second part: flow loss end to end through the real path, fifo against kafka (issue 22).

NetFlow v9 (bench_flows' datagrams: 30 flows each, template every 64) is offered on loopback at stepped
rates to the real goflow2 v2.2.1, and the flows the aggregators count are compared with the flows sent.
Three paths in one run, each with GoFlow2's arguments as the pipeline renders them (render/goflow2.args,
only the listen/metrics addresses and the mapping file's path made local):
  fifo       goflow2 `-transport file -format json` into a FIFO held open read+write by
             render/goflow2.fifo_script (run as is), read by `flowagg.py --input <fifo>` in its own process;
  kafka x1   goflow2 `-transport kafka -format bin` (render/goflow2.kafka_args, the mapping file of
  kafka x2   mapping_configmap) producing to a fresh 4-partition topic; 1 or 2 `python -m
             netviz_pipeline.flowagg.kafka_input` replicas in one group (config: render/aggregators.config).
Per rate step (15 s): sent, counted (netviz_flow_records_total, summed over the replicas, as deltas), lost,
where it was lost (UDP socket drops before goflow2, /proc/net/udp; after goflow2's decoder), and each
component's CPU-seconds per 1,000 flows counted (utime+stime from /proc: goflow2, the aggregator(s), the
broker's JVM), the sender's own CPU and what the rest of the machine used meanwhile. A step ends when
its count settles: everything sent counted, or everything goflow2 decoded counted and goflow2 idle for
1 s, or the count unchanged for the grace (2 s, + GoFlow2's Kafka flush interval on the kafka paths:
-transport.kafka.flushfreq as rendered, goflow2's 5 s when not).
goflow2 v2.2.1 queues what its decoders cannot keep up with (up to 1,000,000 datagrams, in memory), so an
overloaded path loses nothing in 15 s: it falls behind, and sustained it would grow until goflow2's
memory limit kills it, losing the queue. So flows counted only after the grace are reported as late, and
the zero-loss ceiling of a path is its highest rate with nothing lost and nothing late. After two steps in
a row that did not keep up, a path's higher rates are not run.

Then durability under faults, kafka with 2 replicas, a steady stream well below the ceiling, each fault on
a fresh topic and group: (a) the broker SIGKILLed and restarted, (b) one replica SIGKILLed and a
replacement started (as Kubernetes would). Flows that reached the broker (sum of the topic's high
watermarks) and were never counted must be 0: counted >= produced, and the group's committed offsets
reach every partition's high watermark; counted - produced is the double count. Flows lost before the
broker (in GoFlow2/sarama while the broker is down, or at the UDP socket) are reported apart.

The broker is the benchmark's own, never the lab's (shared with other work): Apache Kafka from the lab's
jars (make kafka-jars), server.properties from netviz_lab.kafka.properties, on 127.0.0.1 on free ports in
a temporary directory; it and every other process started here are stopped by PID at the end, also on
error. Prints a table and writes bench-results/flow-loss.txt. Bounded: about 10 minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))
import bench_flows as bf  # noqa: E402  (the datagram builder, free_port, proc_cpu)
from confluent_kafka import Consumer, KafkaException, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from netviz_lab import kafka as labkafka  # noqa: E402
from netviz_lab import versions  # noqa: E402
from netviz_pipeline.render import aggregators as render_aggregators  # noqa: E402
from netviz_pipeline.render import goflow2 as render_goflow2  # noqa: E402
from netviz_pipeline.settings import Cluster, FlowNames, Flows, FlowsKafka, Prometheus, Settings  # noqa: E402

GOFLOW2 = bf.GOFLOW2
KAFKA_LIB = Path(os.environ.get("KAFKA_LIB", f"/var/cache/netviz-lab/lib/kafka-{versions.KAFKA}"))
FLOWAGG = ROOT / "netviz_pipeline" / "flowagg" / "flowagg.py"
FPD = bf.FLOWS_PER_DATAGRAM
PARTITIONS = 4
GOFLOW2_KAFKA_FLUSH_S = 5.0  # -transport.kafka.flushfreq's default in goflow2 v2.2.1 (sarama's batching)
ARGS: dict[str, list[str]] = {}  # goflow2's arguments per path, as run (in the report)
# up to 90,000: the kafka path's ceiling is above 45,000 here (the fifo's far below: its rates stop early)
RATES = (5000, 10000, 15000, 20000, 30000, 45000, 60000, 90000)
QUIET = 2  # librdkafka log level of our watchers: no "connection refused" lines while the broker restarts
CLK = os.sysconf("SC_CLK_TCK")

STARTED: dict[int, subprocess.Popen] = {}  # every process this run started, by PID: all stopped at the end


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)


def _die_with_parent() -> None:
    """Child side of Popen: SIGKILL when the benchmark dies, whatever kills it (prctl PR_SET_PDEATHSIG)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


def start(argv: list[str], logfile: Path, **kw) -> subprocess.Popen:
    with open(logfile, "ab") as f:
        p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent, **kw)
    STARTED[p.pid] = p
    return p


def stop(p: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
    """End one process this run started, by its PID: `sig`, then SIGKILL after `timeout`."""
    if p.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p.pid, sig)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGKILL)
            p.wait(10)
    STARTED.pop(p.pid, None)


def until(what: str, cond, timeout: float, interval: float = 0.1, diag=lambda: ""):
    """Poll `cond` until it returns something truthy (returned); fail saying what did not happen."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            got = cond()
        except (OSError, KafkaException):
            got = None
        if got:
            return got
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {timeout:.0f}s {diag()}")
        time.sleep(interval)


def cpu_of(pid: int) -> float:
    try:
        return bf.proc_cpu(pid)
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return 0.0


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU-seconds of the whole machine since boot (/proc/stat)."""
    v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = v[3] + v[4]
    total = sum(v[:8])
    return (total - idle) / CLK, total / CLK


def scrape(url: str) -> dict[str, float]:
    """Unlabelled samples of a /metrics page, and labelled ones under their full name."""
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                out[name] = float(value)
    return out


def udp_drops(port: int) -> int:
    """Datagrams the kernel dropped on the sockets bound to 127.0.0.1:`port` (their receive buffer full)."""
    want = f"0100007F:{port:04X}"
    drops = 0
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        f = line.split()
        if f[1] == want:
            drops += int(f[-1])
    return drops


# ----------------------------------------------------------------------------------------- broker
class Broker:
    """Our own one-node KRaft broker on 127.0.0.1 (never the lab's), from the lab's jars."""

    def __init__(self, workdir: Path):
        self.dir = workdir / "kafka"
        self.dir.mkdir(parents=True)
        self.port, self.cport = bf.free_port(socket.SOCK_STREAM), bf.free_port(socket.SOCK_STREAM)
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.props = self.dir / "server.properties"
        self.props.write_text(labkafka.properties("127.0.0.1", self.port, self.cport, self.dir / "data"))
        (self.dir / "log4j2.properties").write_text(labkafka.LOG4J2)
        self.log = self.dir / "kafka.log"
        self.proc: subprocess.Popen | None = None
        subprocess.run(self.java("kafka.tools.StorageTool", "format", "-t", labkafka.new_cluster_id(), "-c",
                                 str(self.props)), check=True, capture_output=True, timeout=120)

    def java(self, main: str, *args: str) -> list[str]:
        if not (KAFKA_LIB / ".complete").exists():
            raise RuntimeError(f"{KAFKA_LIB} is missing: run `make kafka-jars`")
        return ["java", *labkafka.JVM_OPTS, f"-Dlog4j2.configurationFile={self.dir / 'log4j2.properties'}",
                "-cp", str(KAFKA_LIB / "*"), main, *args]

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"broker exited {self.proc.returncode}: {self.log.read_text()[-2000:]}")
        with socket.create_connection(("127.0.0.1", self.port), timeout=1):
            pass
        brokers = AdminClient({"bootstrap.servers": self.bootstrap, "socket.timeout.ms": 2000,
                                                              "log_level": QUIET}).list_topics(
            timeout=2).brokers
        return labkafka.NODE_ID in brokers and brokers[labkafka.NODE_ID].port == self.port

    def start(self) -> float:
        t0 = time.monotonic()
        self.proc = start(self.java("kafka.Kafka", str(self.props)), self.log)
        until("our broker answering", self.ready, 120, 0.2)
        return time.monotonic() - t0

    def kill(self) -> None:
        stop(self.proc, signal.SIGKILL)

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc, signal.SIGTERM, 30)

    def create_topic(self, name: str) -> None:
        admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": QUIET})
        for f in admin.create_topics([NewTopic(name, PARTITIONS, 1)], operation_timeout=30).values():
            f.result(timeout=60)

        def leaders():
            t = admin.list_topics(name, timeout=5).topics[name]
            return t.error is None and len(t.partitions) == PARTITIONS and all(p.leader >= 0 for p in t.partitions.values())
        until(f"topic {name}'s leaders", leaders, 60, 0.2)


class TopicWatch:
    """The topic's high watermarks and a group's committed offsets, read without joining the group."""

    def __init__(self, bootstrap: str, topic: str, group: str):
        self.topic = topic
        self.c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                           "log_level": QUIET})
        self.tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]

    def hwm(self, timeout: float = 5) -> list[int]:
        return [self.c.get_watermark_offsets(tp, timeout=timeout)[1] for tp in self.tps]

    def committed(self, timeout: float = 5) -> list[int]:
        return [max(tp.offset, 0) for tp in self.c.committed(self.tps, timeout=timeout)]

    def close(self) -> None:
        self.c.close()


# ----------------------------------------------------------------------------------------- parts
def settings(workdir: Path, broker: Broker | None = None, topic: str = "", group: str = "", replicas: int = 1) -> Settings:
    """The settings a user would give: fifo (the default) or kafka to our broker; names off (no cluster)."""
    flows: dict = {"names": FlowNames(kubernetes=False), "fifo": workdir / "goflow2.fifo"}
    if broker is not None:
        flows |= {"transport": "kafka", "kafka": FlowsKafka(
            brokers=[broker.bootstrap], topic=topic, consumer_group=group, partitions=PARTITIONS,
            replicas=replicas, image="netviz-bench:local")}
    return Settings(cluster=Cluster(in_cluster=True, node_address="127.0.0.1"),
                    prometheus=Prometheus(url="http://127.0.0.1:9090"), flows=Flows(**flows))


def local_args(argv: list[str], nf_port: int, http_port: int, mapping: Path | None) -> list[str]:
    """render/goflow2.args with the pod's addresses made local: the NetFlow listener and metrics on
    127.0.0.1, the mapping file where we wrote it. Every other flag as rendered."""
    out = list(argv)
    i = out.index("-listen")
    assert out[i + 1].startswith("netflow://:"), out
    out[i + 1] = out[i + 1].replace("netflow://:", "netflow://127.0.0.1:").rsplit(":", 1)[0] + f":{nf_port}"
    i = out.index("-addr")
    out[i + 1] = f"127.0.0.1:{http_port}"
    maps = [i for i, a in enumerate(out) if a.startswith("-mapping=")]
    assert len(maps) == (1 if mapping else 0), out
    for i in maps:
        out[i] = f"-mapping={mapping}"
    return out


class GoFlow2:
    def __init__(self, s: Settings, workdir: Path, name: str):
        self.nf, self.http = bf.free_port(), bf.free_port(socket.SOCK_STREAM)
        self.log = workdir / f"{name}-goflow2.log"
        mapping = None
        if render_goflow2.kafka_transport(s):
            mapping = workdir / f"{name}-mapping.yaml"
            mapping.write_text(render_goflow2.mapping_configmap(s)["data"]["mapping.yaml"])
        self.argv = local_args(render_goflow2.args(s), self.nf, self.http, mapping)
        ARGS.setdefault(name.split("-")[0] if name.startswith("fifo") else "kafka", self.argv)
        self.flush_s = GOFLOW2_KAFKA_FLUSH_S
        for a in self.argv:  # the flush interval the renderer sets, if it does (Go durations: 1s, 500ms)
            if a.startswith("-transport.kafka.flushfreq="):
                v = a.split("=", 1)[1]
                self.flush_s = float(v[:-2]) / 1000 if v.endswith("ms") else float(v.rstrip("s"))
        if render_goflow2.kafka_transport(s):
            self.proc = start([GOFLOW2, *self.argv], self.log)
        else:  # the container's script as rendered: FIFO made, held open read+write, then `exec ./goflow2`
            bindir = workdir / f"{name}-bin"
            bindir.mkdir()
            (bindir / "goflow2").symlink_to(GOFLOW2)
            self.proc = start(["/bin/sh", "-c", render_goflow2.fifo_script(s), "goflow2", *self.argv], self.log,
                              cwd=bindir)
        until("goflow2 collecting", lambda: self.alive() and urllib.request.urlopen(
            f"http://127.0.0.1:{self.http}/__health", timeout=2).status == 200, 30, 0.1,
            lambda: self.log.read_text()[-1500:])

    def alive(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"goflow2 exited {self.proc.returncode}: {self.log.read_text()[-1500:]}")
        return True

    def decoded(self) -> int:
        """Flows goflow2 decoded (v9 data records), from its own metrics."""
        m = scrape(f"http://127.0.0.1:{self.http}/metrics")
        return int(sum(v for k, v in m.items() if k.startswith("goflow2_flow_process_nf_flowset_records_total{")
                       and 'type="DataFlowSet"' in k))

    def stop(self) -> None:
        stop(self.proc, signal.SIGKILL)  # SIGTERM drains its queues for a long time; the figures are taken


class Agg:
    """One aggregator process: the fifo sidecar's flowagg.py, or a kafka_input replica."""

    def __init__(self, cfg: dict, workdir: Path, name: str, fifo: Path | None = None):
        self.name = name
        self.port = bf.free_port(socket.SOCK_STREAM)
        self.cfg = workdir / f"{name}.json"
        self.cfg.write_text(json.dumps(cfg))
        self.log = workdir / f"{name}.log"
        if fifo is not None:
            argv = [sys.executable, str(FLOWAGG), "--input", str(fifo)]
        else:
            argv = [sys.executable, "-m", "netviz_pipeline.flowagg.kafka_input"]
        self.proc = start([*argv, "--config", str(self.cfg), "--listen", f"127.0.0.1:{self.port}"], self.log, cwd=ROOT,
                          env=os.environ | {"PYTHONUNBUFFERED": "1"})
        self.last: dict[str, float] = {}

    def metrics(self) -> dict[str, float]:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited {self.proc.returncode}: {self.log.read_text()[-1500:]}")
        self.last = scrape(f"http://127.0.0.1:{self.port}/metrics")
        return self.last

    def records(self) -> int:
        return int(self.metrics()["netviz_flow_records_total"])

    def stop(self, sig: int = signal.SIGTERM) -> None:
        stop(self.proc, sig, 30)


class E2E:
    """One end-to-end path: goflow2, its aggregator(s) and (kafka) its topic and group."""

    def __init__(self, name: str, workdir: Path, broker: Broker | None, replicas: int):
        self.name, self.broker, self.workdir = name, broker, workdir
        self.kafka = broker is not None
        self.topic = f"netviz-bench-{name}-{uuid.uuid4().hex[:6]}"
        self.group = f"netviz-bench-{name}-{uuid.uuid4().hex[:6]}"
        if self.kafka:
            broker.create_topic(self.topic)
        self.s = settings(workdir, broker, self.topic, self.group, replicas)
        self.gf = GoFlow2(self.s, workdir, name)
        self.aggs: list[Agg] = []
        self.dead_records = 0  # what killed replicas had counted (their last scrape)
        self.n_started = 0
        for _ in range(replicas if self.kafka else 1):
            self.add_agg()
        self.watch = TopicWatch(broker.bootstrap, self.topic, self.group) if self.kafka else None
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
        self.sock.connect(("127.0.0.1", self.gf.nf))
        # warm up end to end: a template + 30 flows counted means every part is up (and a kafka group joined)
        self.sock.send(DGS[0])
        until(f"{name}: the first datagram's {FPD} flows counted", lambda: self.counted() >= FPD, 90, 0.2,
              lambda: [a.log.read_text()[-800:] for a in self.aggs])

    def add_agg(self) -> Agg:
        n = self.n_started
        self.n_started += 1
        if self.kafka:
            a = Agg(render_aggregators.config(self.s), self.workdir, f"{self.name}-replica{n}")
        else:
            a = Agg(render_goflow2.flowagg_config(self.s), self.workdir, f"{self.name}-flowagg", fifo=self.s.flows.fifo)
        self.aggs.append(a)
        return a

    def kill_agg(self, a: Agg) -> None:
        """SIGKILL a replica right after reading its count (what it counted since is not known: the double
        count reported is then a lower bound, never a hidden loss)."""
        self.dead_records += a.records()
        a.stop(signal.SIGKILL)
        self.aggs.remove(a)

    def counted(self) -> int:
        return self.dead_records + sum(a.records() for a in self.aggs)

    def pids(self) -> dict[str, list[int]]:
        out = {"goflow2": [self.gf.proc.pid], "aggregator": [a.proc.pid for a in self.aggs]}
        if self.kafka:
            out["broker"] = [self.broker.proc.pid]
        return out

    def produced(self) -> int:
        return sum(self.watch.hwm()) if self.watch else 0

    def close(self) -> None:
        self.sock.close()
        if self.watch:
            self.watch.close()
        for a in list(self.aggs):
            a.stop()
        self.gf.stop()


def send(sock: socket.socket, rate: float, seconds: float, stop_event: threading.Event | None = None) -> tuple[int, float]:
    """Datagrams at `rate` flows/s for `seconds` (or until stop_event): (datagrams sent, sender CPU-s).
    Pre-built datagrams, a tight loop, paced by the clock (a late tick sends what is due)."""
    dps = rate / FPD
    total = int(seconds * dps) if stop_event is None else 1 << 62
    dgs, n_dgs, snd = DGS, len(DGS), sock.send
    c0, t0 = time.thread_time(), time.monotonic()
    n = 0
    while n < total and not (stop_event is not None and stop_event.is_set()):
        due = min(total, int((time.monotonic() - t0) * dps) + 1)
        while n < due:
            try:
                snd(dgs[n % n_dgs])
            except OSError:  # ENOBUFS/ECONNREFUSED on loopback: it counts as sent (the receiver lost it)
                pass
            n += 1
        time.sleep(0.001)
    return n, time.thread_time() - c0


# ----------------------------------------------------------------------------------------- sweep
def snapshot(p: E2E) -> dict:
    return {"t": time.monotonic(), "counted": p.counted(), "decoded": p.gf.decoded(), "drops": udp_drops(p.gf.nf),
            "cpu": {k: sum(cpu_of(pid) for pid in pids) for k, pids in p.pids().items()},
            "self": time.process_time(), "machine": machine_cpu()}


def grace(p: E2E) -> float:
    """How long after the sender stops a path that keeps up has counted everything: 2 s, plus GoFlow2's
    Kafka flush interval on the kafka paths (a latency of the producer, not a limit of its throughput)."""
    return 2.0 + (p.gf.flush_s if p.kafka else 0.0)


def settle(p: E2E, base: dict, sent_flows: int, cap: float = 90.0) -> tuple[str, int]:
    """Wait until the step's count settles: everything sent counted, or everything goflow2 decoded counted
    and goflow2 idle for 1 s, or the count unchanged for the grace. Returns (why, the count when the grace
    ran out: what a path that keeps up has counted by then)."""
    quiet = grace(p)
    t0 = last_change = time.monotonic()
    last = None
    at_grace = None
    while True:
        c, d = p.counted() - base["counted"], p.gf.decoded() - base["decoded"]
        now = time.monotonic()
        if at_grace is None and now - t0 >= quiet:
            at_grace = c
        if c >= sent_flows:
            return "all counted", c if at_grace is None else at_grace
        if (c, d) != last:
            last, last_change = (c, d), now
        elif c == d and now - last_change >= 1.0:
            return "all decoded counted", c if at_grace is None else at_grace
        elif now - last_change >= quiet:
            return f"count unchanged {quiet:.0f}s", c if at_grace is None else at_grace
        if now - t0 > cap:
            return f"still counting after {cap:.0f}s", c if at_grace is None else at_grace
        time.sleep(0.2)


def step(p: E2E, rate: int, seconds: float) -> dict:
    base = snapshot(p)
    n, sender_cpu = send(p.sock, rate, seconds)
    t_sent = time.monotonic()
    sent = n * FPD
    why, at_grace = settle(p, base, sent)
    end = snapshot(p)
    counted, decoded = end["counted"] - base["counted"], end["decoded"] - base["decoded"]
    wall = end["t"] - base["t"]
    cpu = {k: end["cpu"][k] - base["cpu"].get(k, 0.0) for k in end["cpu"]}
    busy = end["machine"][0] - base["machine"][0]
    ours = sum(cpu.values()) + (end["self"] - base["self"])
    lost, late = sent - counted, max(0, counted - at_grace)
    return {"path": p.name, "rate": rate, "sent": sent, "counted": counted, "lost": lost, "late": late,
            "lost_pct": 100.0 * lost / sent if sent else 0.0, "late_pct": 100.0 * late / sent if sent else 0.0,
            "kept_up": lost <= 0 and late <= 0, "decoded": decoded,
            "udp_drop_flows": (end["drops"] - base["drops"]) * FPD, "after_goflow2": decoded - counted,
            "cpu_per_1k": {k: 1000.0 * v / max(counted, 1) for k, v in cpu.items()}, "cpu": cpu,
            "sender_cpu": sender_cpu, "sender_cpu_per_1k": 1000.0 * sender_cpu / max(sent, 1), "wall": wall,
            "drain_s": end["t"] - t_sent, "send_s": seconds, "machine_busy_cores": busy / wall,
            "others_cores": max(0.0, busy - ours) / wall, "settled": why}


def sweep(name: str, workdir: Path, broker: Broker | None, replicas: int, rates, seconds: float) -> list[dict]:
    """The rates in order; after two steps in a row that did not keep up the rest are not run (the path's
    ceiling is below them, and each would only queue more in goflow2)."""
    log(f"== {name}: starting goflow2 and {replicas if broker else 1} aggregator(s)")
    p = E2E(name, workdir, broker, replicas)
    rows: list[dict] = []
    try:
        for rate in rates:
            if len(rows) >= 2 and not rows[-1]["kept_up"] and not rows[-2]["kept_up"]:
                rows.append({"path": name, "rate": rate, "skipped": True, "kept_up": False, "lost": None})
                continue
            r = step(p, rate, seconds)
            rows.append(r)
            log(f"{name} {rate:>6,}/s: sent {r['sent']:,} counted {r['counted']:,} lost {r['lost']:,} "
                f"({r['lost_pct']:.2f}%; UDP drops {r['udp_drop_flows']:,}), late {r['late']:,} "
                f"[{r['settled']}, drained {r['drain_s']:.1f}s after the sender stopped]")
    finally:
        p.close()
    return rows


def ceiling(rows: list[dict]) -> tuple[int, int]:
    """(highest rate with 0 lost and 0 late, highest rate up to which every rate kept up: the strict one)."""
    top = max((r["rate"] for r in rows if r["kept_up"]), default=0)
    strict = 0
    for r in sorted(rows, key=lambda r: r["rate"]):
        if not r["kept_up"]:
            break
        strict = r["rate"]
    return top, strict


# ----------------------------------------------------------------------------------------- faults
def fault(kind: str, workdir: Path, broker: Broker, rate: int, before: float, after: float) -> dict:
    """A steady stream through kafka x2 with one fault in the middle; every count taken as a delta."""
    name = f"fault-{kind}"
    log(f"== {name}: steady {rate:,} flows/s, kafka x2")
    p = E2E(name, workdir, broker, 2)
    try:
        until("both replicas hold partitions", lambda: all(
            a.metrics().get("netviz_flow_kafka_assigned_partitions", 0) >= 1 for a in p.aggs), 60, 0.2)
        base_prod, base_counted, base_dec, base_drops = p.produced(), p.counted(), p.gf.decoded(), udp_drops(p.gf.nf)
        stop_ev = threading.Event()
        result: dict = {}
        sender = threading.Thread(target=lambda: result.update(zip(("n", "cpu"), send(p.sock, rate, 0, stop_ev))),
                                  daemon=True)
        sender.start()
        lag_samples = []

        def lag_now():
            with contextlib.suppress(KafkaException):
                return sum(p.watch.hwm(2)) - sum(p.watch.committed(2))
            return None

        t_end_before = time.monotonic() + before
        while time.monotonic() < t_end_before:  # the steady state's lag, sampled (the flush makes it bursty)
            lag = lag_now()
            if lag is not None:
                lag_samples.append(lag)
            time.sleep(0.25)
        base_lag = max(lag_samples, default=0)
        rebal0 = sum(a.metrics().get("netviz_flow_kafka_rebalances_total", 0) for a in p.aggs)
        t_fault = time.monotonic()
        out: dict = {"fault": kind, "rate": rate}
        if kind == "broker":
            broker.kill()
            out["broker_back_s"] = broker.start()
            hwm_at_restart = until("the topic's watermarks after the restart", lambda: [sum(p.watch.hwm(2))], 60, 0.1)[0]

            def recovered():  # the broker answers and GoFlow2 produces to it again
                h = sum(p.watch.hwm(2))
                return h if h > hwm_at_restart else None
        else:
            victim = p.aggs[0]
            p.kill_agg(victim)
            p.add_agg()  # the replacement, as the Deployment's controller would start it

            def recovered():  # the partitions are all owned by live replicas again
                ms = [a.metrics() for a in p.aggs]
                if sum(m.get("netviz_flow_kafka_assigned_partitions", 0) for m in ms) == PARTITIONS and all(
                        m.get("netviz_flow_input_connected") == 1 for m in ms):
                    return sum(p.watch.hwm(2))
                return None
        peak = 0

        def peak_lag():
            nonlocal peak
            lag = lag_now()
            if lag is not None:
                peak = max(peak, lag)
        h_rec = until(f"{name}: recovered", lambda: (peak_lag(), recovered())[1], 180, 0.25)
        out["recovered_s"] = time.monotonic() - t_fault

        def caught_up():  # everything the topic held at recovery committed, and the lag back to steady
            peak_lag()
            c = sum(p.watch.committed(2))
            return c >= h_rec and (sum(p.watch.hwm(2)) - c) <= max(base_lag, 1000)
        until(f"{name}: caught up", caught_up, 180, 0.25)
        out["caught_up_s"] = time.monotonic() - t_fault
        out["peak_lag"], out["steady_lag_max"] = peak, base_lag
        t_stop = time.monotonic() + after
        while time.monotonic() < t_stop:
            peak_lag()
            time.sleep(0.25)
        stop_ev.set()
        sender.join()
        sent = result["n"] * FPD
        # settle: goflow2 idle, the topic no longer growing for longer than GoFlow2's flush, all committed
        state = {"key": None, "since": time.monotonic()}

        def settled():
            key = (p.gf.decoded(), sum(p.watch.hwm(2)))
            now = time.monotonic()
            if key != state["key"]:
                state["key"], state["since"] = key, now
                return False
            committed = p.watch.committed(2)
            return now - state["since"] >= p.gf.flush_s + 2 and committed == p.watch.hwm(2)
        until(f"{name}: settled", settled, 180, 0.5)
        hwm, committed = p.watch.hwm(), p.watch.committed()
        produced = sum(hwm) - base_prod
        counted = p.counted() - base_counted
        decoded = p.gf.decoded() - base_dec
        out |= {"sent": sent, "decoded": decoded, "udp_drop_flows": (udp_drops(p.gf.nf) - base_drops) * FPD,
                "lost_before_broker": decoded - produced, "produced": produced, "counted": counted,
                "lost_at_broker": max(0, produced - counted), "double": max(0, counted - produced),
                "all_committed": committed == hwm,
                "rebalances": sum(a.metrics().get("netviz_flow_kafka_rebalances_total", 0) for a in p.aggs) - rebal0,
                "commit_failures": sum(a.metrics().get("netviz_flow_kafka_commit_failures_total", 0) for a in p.aggs),
                "sender_cpu": result["cpu"]}
        log(f"{name}: sent {sent:,}, produced {produced:,}, counted {counted:,}, lost at/after the broker "
            f"{out['lost_at_broker']:,}, double {out['double']:,}, caught up {out['caught_up_s']:.1f}s")
        return out
    finally:
        p.close()


# ----------------------------------------------------------------------------------------- report
def report(rows: list[dict], faults: list[dict], machine: str, seconds: float, elapsed: float) -> str:
    L = [f"machine: {machine}",
         f"NetFlow v9 from bench_flows ({FPD} flows/datagram) on loopback to goflow2 v2.2.1 with the rendered args; "
         f"{seconds:.0f} s per step; counted = netviz_flow_records_total (sum over replicas); broker: our own Kafka "
         f"{versions.KAFKA} (the lab's JVM options) on 127.0.0.1; topics of {PARTITIONS} partitions",
         *[f"goflow2 {k} args: {' '.join(v)}" for k, v in ARGS.items()],
         "lost: never counted (after the drain); late: counted only after the grace (2 s after the sender stopped, "
         "+ GoFlow2's Kafka flush interval on the kafka paths): the path fell behind, and "
         "goflow2 queues what it cannot decode (up to 1,000,000 datagrams in memory), so sustained it ends in an "
         "OOM kill; drain: seconds from the sender's stop to the settled count",
         "CPU-seconds per 1,000 flows counted (utime+stime from /proc): goflow2, aggregator(s), broker JVM; sender: "
         "per 1,000 flows sent (the kernel's loopback delivery included); others / busy: cores used meanwhile by "
         "the rest of the machine / by everything (2 cores)", ""]
    hdr = (f"{'path':<9} {'flows/s':>7} {'sent':>9} {'counted':>9} {'lost':>7} {'lost %':>6} {'late':>7} "
           f"{'late %':>6} {'drain':>6} {'UDP drop':>8} | {'goflow2':>7} {'agg':>6} {'broker':>6} | "
           f"{'sender':>6} {'others':>6} {'busy':>4}")
    L += [hdr, "-" * len(hdr)]
    for r in rows:
        if r.get("skipped"):
            L.append(f"{r['path']:<9} {r['rate']:>7,}  not run: the two rates below did not keep up")
            continue
        c = r["cpu_per_1k"]
        L.append(f"{r['path']:<9} {r['rate']:>7,} {r['sent']:>9,} {r['counted']:>9,} {r['lost']:>7,} "
                 f"{r['lost_pct']:>6.2f} {r['late']:>7,} {r['late_pct']:>6.1f} {r['drain_s']:>5.1f}s "
                 f"{r['udp_drop_flows']:>8,} | {c['goflow2']:>7.4f} {c['aggregator']:>6.4f} {c.get('broker', 0.0):>6.4f} | "
                 f"{r['sender_cpu_per_1k']:>6.4f} {r['others_cores']:>6.2f} {r['machine_busy_cores']:>4.2f}")
    L.append("")
    ceilings = {}
    for path in dict.fromkeys(r["path"] for r in rows):
        pr = [r for r in rows if r["path"] == path and not r.get("skipped")]
        top, strict = ceiling(pr)
        at_least = bool(pr) and top == max(r["rate"] for r in pr)  # the highest rate tried kept up
        ceilings[path] = (top, at_least, strict)
        sender = sum(r["sender_cpu"] for r in pr) / sum(r["send_s"] for r in pr)
        below = [r for r in pr if r["rate"] < top and not r["kept_up"]]
        L.append(f"zero-loss ceiling {path:<9} {'>= ' if at_least else ''}{top:,} flows/s (highest rate with 0 lost "
                 "and 0 late" + (", the highest tried" if at_least else "") + ")"
                 + (f"; strict (every rate up to it clean): {strict:,}, as " + ", ".join(
                     f"{r['rate']:,} lost {r['lost']:,} ({r['udp_drop_flows']:,} at the UDP socket, before goflow2)"
                     + (f", {r['late']:,} late" if r["late"] else "") for r in below) if below else "")
                 + f"; the sender used {sender:.3f} core")
    fifo, _, fifo_strict = ceilings.get("fifo", (0, False, 0))
    if fifo:
        for path, (top, at_least, strict) in ceilings.items():
            if path != "fifo":
                L.append(f"ratio {path} / fifo ceilings: {'>= ' if at_least else ''}{top / fifo:.2f}x (goal >= 2x: "
                         f"{'met' if top >= 2 * fifo else 'NOT met'})"
                         + (f"; strict ceilings: {strict / fifo_strict:.2f}x" if fifo_strict and
                            (strict, fifo_strict) != (top, fifo) else ""))
    elif "fifo" in ceilings:
        L.append("fifo did not keep up at any rate tried: no ratio")
    if faults:
        L += ["", "durability, kafka x2 (fresh topic and group each): flows lost at/after the broker must be 0",
              f"{'fault':<8} {'flows/s':>7} {'sent':>9} {'UDP drop':>8} {'lost before broker':>18} {'produced':>9} "
              f"{'counted':>9} {'lost at/after':>13} {'double':>7} {'committed=hwm':>13} {'recovered':>9} "
              f"{'caught up':>9} {'peak lag':>8} {'rebal':>5} {'commit fail':>11}"]
        for f in faults:
            L.append(f"{f['fault']:<8} {f['rate']:>7,} {f['sent']:>9,} {f['udp_drop_flows']:>8,} "
                     f"{f['lost_before_broker']:>18,} {f['produced']:>9,} {f['counted']:>9,} {f['lost_at_broker']:>13,} "
                     f"{f['double']:>7,} {'yes' if f['all_committed'] else 'NO':>13} {f['recovered_s']:>8.1f}s "
                     f"{f['caught_up_s']:>8.1f}s {f['peak_lag']:>8,} {f['rebalances']:>5.0f} {f['commit_failures']:>11.0f}")
        for f in faults:
            if f["fault"] == "broker":
                L.append(f"broker: SIGKILLed and restarted, answering again after {f['broker_back_s']:.1f}s")
        lost = sum(f["lost_at_broker"] for f in faults)
        L.append(f"flows lost at/after the broker across the faults: {lost} (goal 0: {'met' if lost == 0 else 'NOT met'})"
                 " (a killed replica's count is its last scrape before the SIGKILL: its double count is a lower bound)")
    L += ["", f"elapsed {elapsed / 60:.1f} min"]
    return "\n".join(L) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", default=",".join(map(str, RATES)), help="flows/s per step, comma-separated")
    ap.add_argument("--seconds", type=float, default=15.0, help="seconds per rate step")
    ap.add_argument("--paths", default="fifo,kafka-x1,kafka-x2", help="which paths to sweep")
    ap.add_argument("--faults", default="broker,replica", help="which faults to inject ('' for none)")
    ap.add_argument("--fault-rate", type=int, default=0, help="flows/s during the faults (0: half the kafka-x2 "
                                                              "ceiling, 2,000..10,000)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench-results" / "flow-loss.txt")
    ap.add_argument("--keep-workdir", action="store_true", help="keep the logs (goflow2's, the aggregators', the broker's)")
    a = ap.parse_args()
    if not os.access(GOFLOW2, os.X_OK):
        print(f"{GOFLOW2} missing: run `make go-binaries` (or set GOFLOW2_BIN)", file=sys.stderr)
        return 2
    rates = [int(x) for x in a.rates.split(",") if x]
    paths = [x for x in a.paths.split(",") if x]
    faults = [x for x in a.faults.split(",") if x]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` stops what we started
    t0 = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="netviz-bench-flow-loss-"))
    machine = bf_machine()
    log(f"machine: {machine}; work dir {workdir}")
    broker = None
    rows: list[dict] = []
    fault_rows: list[dict] = []
    try:
        global DGS
        DGS = bf.datagrams(2048)
        if any(p.startswith("kafka") for p in paths) or faults:
            broker = Broker(workdir)
            log(f"our broker on {broker.bootstrap} (lab's JVM options), up in {broker.start():.1f}s")
        for path in paths:
            if path == "fifo":
                rows += sweep("fifo", workdir, None, 1, rates, a.seconds)
            else:
                rows += sweep(path, workdir, broker, int(path.rsplit("x", 1)[1]), rates, a.seconds)
        rate = a.fault_rate
        if not rate:
            top = ceiling([r for r in rows if r["path"] == "kafka-x2" and not r.get("skipped")])[0]
            rate = max(2000, min(10000, top // 2)) if top else 5000
        for kind in faults:
            fault_rows.append(fault(kind, workdir, broker, rate, before=8.0, after=5.0))
    finally:
        for p in list(STARTED.values()):  # whatever a failure left running: ours, by PID
            stop(p, signal.SIGKILL)
        if broker is not None:
            broker.stop()
        if a.keep_workdir:
            shutil.rmtree(workdir / "kafka" / "data", ignore_errors=True)
            log(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    table = report(rows, fault_rows, machine, a.seconds, time.monotonic() - t0)
    print("\n" + table)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(f"# make bench-flows (benchmarks/bench_flow_loss.py), {time.strftime('%Y-%m-%d %H:%M:%S %Z')}\n"
                     + table)
    print(f"written to {a.out}")
    return 0


def bf_machine() -> str:
    import platform
    cpu_model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                      if ln.startswith("model name")), platform.processor())
    return (f"{cpu_model}, {os.cpu_count()} vCPU, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') >> 30} GiB, "
            f"Linux {platform.release()}, Python {platform.python_version()}")


DGS: list[bytes] = []

if __name__ == "__main__":
    sys.exit(main())
