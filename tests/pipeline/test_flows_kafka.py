"""The `kafka` flow transport end to end in the lab: the lab's real Kafka 4.4.0 broker on its secured
listener (SCRAM-SHA-512 over TLS, the broker's own CA), the real GoFlow2 producing keyed protobuf, two
aggregator replicas (the netviz image) on real nodes as one consumer group, the lab's Prometheus scraping
both, all set up by `netviz_deploy` from the CLI as a user runs it.

The user's Kafka team hands over a user, its password and their CA: the test puts them in two Secrets
(kafka-client, kafka-ca) in the goflow2 namespace and the pipeline's environment, as a user does.

Proves: the topic is created with the partitions asked; GoFlow2 (credentials from the Secret through
env, the CA through SSL_CERT_FILE) and both replicas (credentials as mounted files) authenticate on
real kubelets; both replicas roll out and are scraped as netviz-flows; real LAN traffic reaches the
talker series through Kafka, every byte of a canary counted once (the sum over replicas), by one
replica alone; the group's offsets are committed; a health sensor's tick finds the aggregators keeping
up and heals nothing; a second deploy, now with `topic_owner: external` (the Kafka team takes the topic
over), verifies the topic and changes nothing. The lab goes back to the fifo default afterwards (the
deploy removes the consumers)."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import yaml
from test_flows import CANARY_CONNECTIONS, DEADLINE_S, canary_traffic, query  # tests/pipeline on sys.path
from test_pipeline import run_job
from test_prometheus_modes import sensor_tick

from netviz_lab import clusterapi, nodes
from netviz_lab import kafka as labkafka
from netviz_lab import settings as lab_settings
from netviz_lab.images import pipeline_image_ref
from netviz_lab.lab import Lab
from netviz_lab.topology import KAFKA_BOOTSTRAP, KAFKA_SASL_USER, KAFKA_SECURE_BOOTSTRAP, LINUX_ROUTER
from netviz_pipeline import freshness
from netviz_pipeline.render.scrape import FLOWS_JOB

pytestmark = pytest.mark.lab

TOPIC = "netviz-flows-lab"
PARTITIONS, REPLICAS = 4, 2
USER_ENV, PASS_ENV = "NETVIZ_LAB_KAFKA_USER", "NETVIZ_LAB_KAFKA_PASSWORD"
SASL_SECRET, CA_SECRET = "kafka-client", "kafka-ca"


def _admin():
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": KAFKA_BOOTSTRAP})


def _delete_topic() -> None:
    fut = _admin().delete_topics([TOPIC], operation_timeout=10).get(TOPIC)
    try:
        fut.result(timeout=15)
    except Exception:  # noqa: BLE001 - absent already
        pass


def _kafka_settings(lab: Lab) -> dict:
    cfg = lab_settings.settings(lab)
    cfg["flows"] = dict(cfg.get("flows") or {}) | {"transport": "kafka", "kafka": {
        "brokers": [KAFKA_SECURE_BOOTSTRAP], "image": pipeline_image_ref(lab), "topic": TOPIC,
        "partitions": PARTITIONS, "replicas": REPLICAS, "replication_factor": 1,
        "tls": {"ca_secret": CA_SECRET, "ca_file": str(labkafka.ca_file(lab))},
        "sasl": {"mechanism": "scram-sha512", "secret": SASL_SECRET, "username_env": USER_ENV, "password_env": PASS_ENV}}}
    return cfg


def _kafka_team_hands_over(lab: Lab, admin_api) -> None:
    """The user's Kafka team's credentials: two Secrets next to GoFlow2, and the pipeline's environment."""
    from kubernetes import client

    core = client.CoreV1Api(admin_api)
    try:  # a user whose first deploy uses kafka creates the namespace for the Secrets first
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="goflow2")))
    except client.ApiException as e:
        if e.status != 409:
            raise
    secrets = {SASL_SECRET: {"username": KAFKA_SASL_USER, "password": labkafka.client_password(lab)},
               CA_SECRET: {"ca.crt": labkafka.ca_file(lab).read_text()}}
    for name, data in secrets.items():
        body = client.V1Secret(metadata=client.V1ObjectMeta(name=name, namespace="goflow2"), string_data=data)
        try:
            core.create_namespaced_secret("goflow2", body)
        except client.ApiException as e:
            if e.status != 409:
                raise
            core.replace_namespaced_secret(name, "goflow2", body)
    os.environ[USER_ENV], os.environ[PASS_ENV] = KAFKA_SASL_USER, labkafka.client_password(lab)


def _kafka_team_takes_back(admin_api) -> None:
    from kubernetes import client

    for name in (SASL_SECRET, CA_SECRET):
        try:
            client.CoreV1Api(admin_api).delete_namespaced_secret(name, "goflow2")
        except client.ApiException as e:
            if e.status != 404:
                raise
    for var in (USER_ENV, PASS_ENV):
        os.environ.pop(var, None)


@pytest.fixture(scope="module")
def kafka_deployed(lab: Lab, admin_api, tmp_path_factory):
    from kubernetes import client

    d = tmp_path_factory.mktemp("kafka")
    _kafka_team_hands_over(lab, admin_api)
    cfg = _kafka_settings(lab)
    nodes.import_on_demand_images(lab)  # the netviz image runs the consumers
    clusterapi.install(lab, cfg)  # the administrator's step: the admission policy now allows that image
    path = d / "netviz.yaml"
    path.write_text(yaml.safe_dump(cfg))
    _delete_topic()
    t0 = time.monotonic()
    deploy = run_job("netviz_deploy", path, d / "deploy")
    took = time.monotonic() - t0
    (d / "deploy-output.txt").write_text(deploy.stdout + deploy.stderr)
    try:
        assert deploy.returncode == 0, (deploy.stdout + deploy.stderr)[-6000:]
        yield path, d, took
    finally:
        # back to the lab's settings (fifo), as a user switches back: the deploy removes the consumers
        clusterapi.install(lab)
        back = d / "fifo.yaml"
        back.write_text(lab_settings.render(lab))
        restore = run_job("netviz_deploy", back, d / "restore")
        _delete_topic()
        _kafka_team_takes_back(admin_api)
        out = restore.stdout + restore.stderr
        assert restore.returncode == 0, out[-4000:]
        if deploy.returncode == 0:  # else the deploy's own failure is the one to read
            assert "removed what the other flow transport used: Deployment flowagg" in out, out[-4000:]
        left = client.AppsV1Api(admin_api).list_namespaced_deployment("goflow2").items
        assert [x.metadata.name for x in left] == ["goflow2"], [x.metadata.name for x in left]


def test_kafka_transport_counts_real_flows_once_across_replicas(lab, kafka_deployed, admin_api):
    from confluent_kafka import Consumer, TopicPartition
    from kubernetes import client

    path, d, took = kafka_deployed
    # the password is in no object the pipeline wrote, nor in its run's output (the Secret holds it)
    password = labkafka.client_password(lab)
    apps = client.AppsV1Api(admin_api)
    written = [apps.list_namespaced_deployment("goflow2").to_dict(),
               client.CoreV1Api(admin_api).list_namespaced_config_map("goflow2").to_dict()]
    assert password not in str(written) and password not in (d / "deploy-output.txt").read_text()
    md = _admin().list_topics(topic=TOPIC, timeout=10).topics[TOPIC]
    assert md.error is None and len(md.partitions) == PARTITIONS, md
    pods = client.CoreV1Api(admin_api).list_namespaced_pod("goflow2", label_selector="app=flowagg").items
    running = [p for p in pods if p.status.phase == "Running"]
    assert len(running) == REPLICAS, [(p.metadata.name, p.status.phase) for p in pods]
    # both replicas scraped as the flows job, in the lab's Prometheus (file mode, kubernetes_sd)
    deadline = time.monotonic() + 90
    while len(query(f'up{{job="{FLOWS_JOB}"}} == 1')) < REPLICAS:
        assert time.monotonic() < deadline, query(f'up{{job="{FLOWS_JOB}"}}')
        time.sleep(2)
    assert {r["metric"]["pod"] for r in query(f'up{{job="{FLOWS_JOB}"}}')} == {p.metadata.name for p in running}

    # a canary through the real router: every byte counted once, summed over the replicas
    src, dst = LINUX_ROUTER.lan_host, LINUX_ROUTER.wan_host
    q = f'sum(netviz_flow_talker_bytes_total{{job="{FLOWS_JOB}",src="{src}",dst="{dst}"}})'
    deadline = time.monotonic() + 120
    while not query(q):
        assert time.monotonic() < deadline, f"no talker series for {src} -> {dst} through Kafka"
        time.sleep(2)
    time.sleep(6)
    per_pod = f'netviz_flow_talker_bytes_total{{job="{FLOWS_JOB}",src="{src}",dst="{dst}"}}'
    before_pods = {r["metric"]["pod"]: float(r["value"][1]) for r in query(per_pod)}
    before = freshness.value(query(q))
    sent = canary_traffic()
    done = time.monotonic()
    while (grown := freshness.value(query(q)) - before) < sent:
        assert time.monotonic() - done < DEADLINE_S + 10, f"grew {grown:.0f} of {sent} B through Kafka"
        time.sleep(0.5)
    latency = time.monotonic() - done
    assert grown < sent * 1.5, f"{grown:.0f} B counted for {sent} B sent: counted twice?"
    # the pair lives on one partition, so one replica counted all of the canary (a replica that owned
    # the partition before a rebalance keeps its older, frozen series: that is not counting twice)
    after_pods = {r["metric"]["pod"]: float(r["value"][1]) for r in query(per_pod)}
    counted_by = [p for p, v in after_pods.items() if v > before_pods.get(p, 0.0)]
    assert len(counted_by) == 1, (before_pods, after_pods)
    # the group committed what it counted
    c = Consumer({"bootstrap.servers": KAFKA_BOOTSTRAP, "group.id": "netviz-flowagg", "enable.auto.commit": False})
    try:
        committed = c.committed([TopicPartition(TOPIC, p) for p in range(PARTITIONS)], timeout=10)
    finally:
        c.close()
    assert sum(max(tp.offset, 0) for tp in committed) > 0, committed
    print(f"kafka transport: deploy {took:.0f}s; canary of {CANARY_CONNECTIONS} connections visible "
          f"{latency:.1f}s after it ended")

    # the health sensor, one tick under these settings: the aggregators keep up, recorded on goflow2's check
    tick = sensor_tick(path)
    evals = {e.check_name: e for e in tick.asset_events}
    lag = evals["aggregators_keep_up"]
    assert lag.passed, lag.metadata
    assert "keep up" in lag.metadata["aggregators"].value or "no flows" in lag.metadata["aggregators"].value
    assert evals["netflow_arriving"].passed, evals["netflow_arriving"].metadata
    assert not tick.run_requests, tick.run_requests  # nothing to heal

    # converged: a second deploy changes nothing (no object rewritten, the topic unchanged), now with the
    # Kafka team owning the topic: netviz only verifies it
    external = d / "external.yaml"
    cfg = yaml.safe_load(path.read_text())
    cfg["flows"]["kafka"]["topic_owner"] = "external"
    external.write_text(yaml.safe_dump(cfg))
    again = run_job("netviz_deploy", external, d / "deploy")
    out = again.stdout + again.stderr
    assert again.returncode == 0, out[-4000:]
    assert f"topic {TOPIC}: unchanged" in out and "did not pass" not in out, out[-4000:]
