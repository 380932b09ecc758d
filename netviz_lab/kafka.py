"""Apache Kafka for the lab (component): one real broker, KRaft combined mode (broker and controller in
one JVM, node id 1), from Maven Central's jars at the pinned version (versions.env, fetched by
fetch-kafka.sh into `lab.kafka_lib`) on Debian's Java 17. It runs beside the cluster as a host process
the supervisor owns, like the lab's Prometheus, and listens on NODE_IP (198.18.0.1, on the router
component's nvz-mgmt link), where the real nodes' pods reach the host as they reach the API server: a
user's Kafka outside the cluster. The controller listens on the same address, port 9093.

A second listener, SASL_SSL on port 9094, is secured as production brokers are: TLS with a certificate
from the broker's own CA (tls/ca.crt, not the cluster's; IP SAN NODE_IP), and SASL with SCRAM-SHA-512 or
PLAIN for one user (KAFKA_SASL_USER, its password random per lab in `client-password`, 0600). The SCRAM
credential is written by StorageTool when it formats the log dir; PLAIN's is in server.properties (0600).

Its files are `lab.kafka_dir`: server.properties, log4j2.properties (INFO to stdout, so into
logs/kafka.log), the cluster id, tls/, client-password and data/ (the log dir, formatted once by
StorageTool; a second setup keeps it). A killed broker is restarted by the supervisor with its data:
topics and committed offsets survive. `teardown` kills what a crashed supervisor left of the broker and removes the directory.
"""
from __future__ import annotations

import base64
import os
import secrets
import shutil
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path

from . import pki
from .lab import Lab
from .proc import kill_by_cmdline, run
from .supervisor import Service
from .topology import (KAFKA_BOOTSTRAP, KAFKA_CONTROLLER_PORT, KAFKA_PORT, KAFKA_SASL_USER, KAFKA_SECURE_PORT,
                       NODE_IP)

NODE_ID = 1
# A 512 MiB heap is plenty for a one-node lab broker. The serial collector (no GC worker threads) and C1
# only (a small code cache, faster start) keep it lean on this machine's two cores; the lab's broker
# moves kilobytes a second, not what C2 is for.
JVM_OPTS = ["-Xmx512m", "-Xms256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-XX:ReservedCodeCacheSize=64m",
            "-XX:MaxMetaspaceSize=128m", "-Xss512k", "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true"]

LOG4J2 = """\
status = warn
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.stdout.ref = STDOUT
# Every start dumps each config object in full (~2,000 lines); server.properties says the same.
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = warn
"""


@dataclass(frozen=True)
class Secured:
    """The SASL_SSL listener: its port, the PEM file with the broker's key and certificate, and the one
    user's password (SCRAM-SHA-512 and PLAIN)."""
    port: int
    keystore: Path
    password: str


def tls_dir(lab: Lab) -> Path:
    return lab.kafka_dir / "tls"


def ca_file(lab: Lab) -> Path:
    """The CA that signed the secured listener's certificate (what a user's Kafka team hands out)."""
    return tls_dir(lab) / "ca.crt"


def client_password(lab: Lab) -> str:
    return (lab.kafka_dir / "client-password").read_text().strip()


def server_properties(lab: Lab) -> str:
    secured = Secured(KAFKA_SECURE_PORT, tls_dir(lab) / "keystore.pem", client_password(lab))
    return properties(NODE_IP, KAFKA_PORT, KAFKA_CONTROLLER_PORT, lab.kafka_dir / "data", secured)


def _secured_properties(s: Secured) -> str:
    return f"""\
# The secured listener: SASL over TLS. SCRAM's credential lives in the metadata log (StorageTool
# --add-scram); PLAIN's user list is the JAAS line below.
sasl.enabled.mechanisms=SCRAM-SHA-512,PLAIN
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_{KAFKA_SASL_USER}="{s.password}";
listener.name.sasl_ssl.ssl.keystore.type=PEM
listener.name.sasl_ssl.ssl.keystore.location={s.keystore}
"""


def properties(host: str, port: int, controller_port: int, data_dir: os.PathLike | str,
               secured: Secured | None = None) -> str:
    """server.properties of a one-node KRaft broker on host:port (controller on controller_port), its log
    in data_dir, with the SASL_SSL listener when `secured`: the lab's broker, and
    benchmarks/bench_flow_loss.py's own one on 127.0.0.1 (plaintext only)."""
    listeners = [f"PLAINTEXT://{host}:{port}"] + ([f"SASL_SSL://{host}:{secured.port}"] if secured else [])
    protocols = "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT" + (",SASL_SSL:SASL_SSL" if secured else "")
    return f"""\
# A one-node Kafka broker (netviz_lab/kafka.py): KRaft, one combined broker + controller.
process.roles=broker,controller
node.id={NODE_ID}
controller.quorum.voters={NODE_ID}@{host}:{controller_port}
listeners={','.join(listeners)},CONTROLLER://{host}:{controller_port}
advertised.listeners={','.join(listeners)}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map={protocols}
log.dirs={data_dir}
# One broker: every internal topic with one replica and a min ISR of 1, or they are never created.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# A killed broker's successor is refused registration (DUPLICATE_BROKER_REGISTRATION) until its
# predecessor's session expires: 3 s instead of 9 s brings a restarted broker back in ~6 s, not ~13 s.
broker.heartbeat.interval.ms=500
broker.session.timeout.ms=3000
# A group's first members are assigned at once (tests and the aggregators start together).
group.initial.rebalance.delay.ms=0
# Only the pipeline creates topics (its flow_topic asset, with the partitions the settings ask): a
# broker that auto-creates would hand GoFlow2 a one-partition topic on its first produce, hiding a
# missing or mis-ordered topic step instead of failing it.
auto.create.topics.enable=false
# Two cores here: fewer request threads than the defaults (3 network, 8 I/O).
num.network.threads=2
num.io.threads=2
# Bounded disk, like the lab Prometheus's 1 d retention.
log.retention.hours=24
log.retention.bytes=268435456
""" + (_secured_properties(secured) if secured else "")


def jars(lab: Lab) -> str:
    if not (lab.kafka_lib / ".complete").exists():
        raise RuntimeError(f"{lab.kafka_lib} is missing: run `make lab-deps`")
    return str(lab.kafka_lib / "*")  # java expands the class path wildcard itself


def java(lab: Lab, main: str, *args: str) -> list[str]:
    return ["java", *JVM_OPTS, f"-Dlog4j2.configurationFile={lab.kafka_dir / 'log4j2.properties'}",
            "-cp", jars(lab), main, *args]


def new_cluster_id() -> str:
    """What `StorageTool random-uuid` prints (Kafka's Uuid.randomUuid: a random UUID, URL-safe base64
    without padding, never starting with '-'), without starting a JVM for it."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def require_address() -> None:
    out = run(["ip", "-4", "-o", "addr", "show"]).stdout
    if f" {NODE_IP}/" not in out:
        raise RuntimeError(f"{NODE_IP} is not on this host: the router component's nvz-mgmt link must come "
                           "before kafka in netviz_lab.__main__.components()")


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def ensure_tls(lab: Lab) -> None:
    """The broker's own CA and its certificate for NODE_IP, as one PEM keystore (key, then certificate)."""
    ca, _ = pki.ensure_ca(tls_dir(lab), "netviz-lab-kafka-ca")
    leaf = pki.ensure_cert(tls_dir(lab), ca, pki.CertSpec("broker", "kafka", ips=(NODE_IP,), server=True))
    _write_private(tls_dir(lab) / "keystore.pem", leaf.key.read_text() + leaf.cert.read_text())


def setup(lab: Lab) -> None:
    require_address()
    jars(lab)
    data = lab.kafka_dir / "data"
    data.mkdir(parents=True, exist_ok=True)
    ensure_tls(lab)
    if not (lab.kafka_dir / "client-password").exists():  # kept with the data: SCRAM's copy is in there
        _write_private(lab.kafka_dir / "client-password", secrets.token_urlsafe(18) + "\n")
    _write_private(lab.kafka_dir / "server.properties", server_properties(lab))  # holds PLAIN's password
    (lab.kafka_dir / "log4j2.properties").write_text(LOG4J2)
    id_file = lab.kafka_dir / "cluster-id"
    if not id_file.exists():
        id_file.write_text(new_cluster_id() + "\n")
    if not (data / "meta.properties").exists():  # formatted once; a second setup keeps the data
        scram = f"SCRAM-SHA-512=[name={KAFKA_SASL_USER},password={client_password(lab)}]"
        run(java(lab, "kafka.tools.StorageTool", "format", "--ignore-formatted", "-t", id_file.read_text().strip(),
                 "-c", str(lab.kafka_dir / "server.properties"), "--add-scram", scram))


def broker_ready(timeout: float = 2.0) -> bool:
    """The broker answers a metadata request on its advertised listener and names itself in it."""
    with socket.create_connection((NODE_IP, KAFKA_PORT), timeout=min(timeout, 1.0)):
        pass
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": KAFKA_BOOTSTRAP, "socket.timeout.ms": int(timeout * 1000)})
    brokers = admin.list_topics(timeout=timeout).brokers
    return NODE_ID in brokers and (brokers[NODE_ID].host, brokers[NODE_ID].port) == (NODE_IP, KAFKA_PORT)


def services(lab: Lab) -> list[Service]:
    return [Service(name="kafka", argv=java(lab, "kafka.Kafka", str(lab.kafka_dir / "server.properties")),
                    ready=broker_ready, ready_timeout=60)]


def kill_leftovers(lab: Lab) -> list[int]:
    """SIGKILL what a crashed supervisor left of this lab's broker (or of a StorageTool run in setup): Java
    processes whose argv names both this lab's jar dir and its kafka dir, nothing else."""
    return kill_by_cmdline(f"{lab.kafka_lib}/*", str(lab.kafka_dir) + "/")


def teardown(lab: Lab) -> None:
    kill_leftovers(lab)
    shutil.rmtree(lab.kafka_dir, ignore_errors=True)
