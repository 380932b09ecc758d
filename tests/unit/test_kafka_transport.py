"""The `kafka` flow transport's settings, rendering and rules (pure): what GoFlow2 and the aggregators
are given, what the admission policy and scrape jobs allow, and how topic shape and lag are judged."""
from __future__ import annotations

import pytest

from netviz_pipeline.checks.kafka import lag_between, lag_finding, topic_finding
from netviz_pipeline.render import aggregators, goflow2, install, scrape
from netviz_pipeline.resources.kafka import PartitionLag, TopicShape
from netviz_pipeline.settings import SettingsError

IMAGE = "localhost/netviz-pipeline:0.1.0-abc"
KAFKA = {"brokers": ["198.18.0.1:9092"], "image": IMAGE, "partitions": 4, "replicas": 2}


@pytest.fixture
def kafka(make, raw):
    def _kafka(**over):
        return make(flows=raw.get("flows", {}) | {"transport": "kafka", "kafka": KAFKA | over})
    return _kafka


def _container(objs, name):
    dep = next(o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == name)
    return dep, dep["spec"]["template"]["spec"]["containers"]


def test_goflow2_produces_protobuf_keyed_by_pair_to_the_topic(kafka):
    s = kafka()
    objs = goflow2.render(s, node_name="n1")
    dep, containers = _container(objs, "goflow2")
    assert [c["name"] for c in containers] == ["goflow2"]  # no FIFO sidecar
    a = containers[0]["args"]
    assert a[a.index("-transport") + 1] == "kafka" and a[a.index("-format") + 1] == "bin"
    assert "-transport.kafka.brokers=198.18.0.1:9092" in a and "-transport.kafka.hashing=true" in a
    assert "-transport.kafka.version=3.0.0" in a and "-transport.kafka.topic=netviz-flows" in a
    assert not [x for x in a if "compression" in x or "sasl" in x or "tls" in x]
    mapping = next(o for o in objs if o["metadata"]["name"] == goflow2.MAPPING_CONFIGMAP)["data"]["mapping.yaml"]
    import yaml
    assert yaml.safe_load(mapping) == {"formatter": {"key": ["sampler_address", "src_addr", "dst_addr"]}}
    assert "command" not in containers[0]  # the image's own entrypoint: no FIFO script
    assert not [o for o in objs if o["metadata"]["name"] == goflow2.FLOWAGG_CONFIGMAP]


def test_the_aggregators_are_a_consumer_group_of_replicas_scraped_as_the_flows_job(kafka):
    s = kafka()
    objs = aggregators.render(s)
    dep, (c,) = _container(objs, "flowagg")
    assert dep["spec"]["replicas"] == 2 and c["image"] == IMAGE
    assert c["command"][-1] == "netviz_pipeline.flowagg.kafka_input"
    cfg = aggregators.config(s)["kafka"]
    assert cfg == {"brokers": ["198.18.0.1:9092"], "topic": "netviz-flows", "group": "netviz-flowagg",
                   "security": {}, "secret_files": {}}
    (job,) = [j for j in scrape.pod_jobs(s) if j[0] == scrape.FLOWS_JOB]
    assert job[2] == "flowagg" and job[3] == goflow2.FLOWS_PORT_NAME
    # every mode scrapes them: the PodMonitor selects the aggregators' pods too
    (mon,) = [m for m in scrape.monitors(s, None) if m["metadata"]["name"] == scrape.FLOWS_JOB]
    assert mon["spec"]["selector"] == {"matchLabels": {"app": "flowagg"}}
    assert aggregators.render(kafka().model_copy(update={"flows": s.flows.model_copy(update={"transport": "fifo"})})) == []


def test_secrets_reach_the_pods_only_by_reference(kafka, monkeypatch):
    monkeypatch.setenv("KAFKA_USER", "netviz")
    monkeypatch.setenv("KAFKA_PASS", "s3cret-value")
    s = kafka(sasl={"mechanism": "scram-sha512", "secret": "kafka-creds", "username_env": "KAFKA_USER",
                    "password_env": "KAFKA_PASS"}, tls={"ca_secret": "kafka-ca"}, compression="zstd")
    objs = goflow2.render(s, node_name="n1") + aggregators.render(s)
    text = repr(objs)
    assert "s3cret-value" not in text  # the pipeline read it (settings check), the objects never carry it
    _, (g,) = _container(objs, "goflow2")
    assert "-transport.kafka.sasl=scram-sha512" in g["args"] and "-transport.kafka.tls=true" in g["args"]
    assert "-transport.kafka.compression=zstd" in g["args"]
    env = {e["name"]: e for e in g["env"]}
    assert env["KAFKA_SASL_PASS"]["valueFrom"]["secretKeyRef"] == {"name": "kafka-creds", "key": "password"}
    assert env["SSL_CERT_FILE"]["value"].endswith("/ca.crt")
    _, (a,) = _container(objs, "flowagg")
    assert "env" not in a  # the consumer reads its secrets from mounted files
    cfg = aggregators.config(s)["kafka"]
    assert cfg["security"] == {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
                               "ssl.ca.location": f"{goflow2.KAFKA_CA_DIR}/ca.crt"}
    assert set(cfg["secret_files"]) == {"sasl.username", "sasl.password"}


def test_every_image_the_product_runs_is_on_the_admission_policys_list(kafka, make, raw):
    """Caretta's preflight probe included: with the kafka transport (or flows disabled) it once ran the
    FIFO sidecar's image, which the policy then refused ("only the netviz images ... may run")."""
    from netviz_pipeline.render import caretta, preflight_probe

    for s in (kafka(), make(), make(flows=raw.get("flows", {}) | {"enabled": False})):
        pods = [o["spec"]["template"]["spec"] for o in caretta.render(s) + goflow2.render(s) + aggregators.render(s)
                + [preflight_probe.daemonset(s)] if o["kind"] in ("Deployment", "DaemonSet")]
        used = {c["image"] for p in pods for c in p["containers"] + p.get("initContainers", [])}
        assert used <= set(install.product_images(s)), (used, install.product_images(s))
        assert preflight_probe.daemonset(s)["spec"]["template"]["spec"]["containers"][0]["image"] in used


def test_the_admission_policy_allows_the_aggregator_image_and_account_only_there(kafka):
    s = kafka()
    assert install.product_images(s) == [s.caretta.image, s.goflow2.image, IMAGE]
    policy = next(o for o in install.admission_policy(s, install.Subject.parse(install.DEFAULT_SUBJECT))
                  if o["kind"] == "ValidatingAdmissionPolicy" and o["metadata"]["name"] == install.NAME)
    exprs = [v["expression"] for v in policy["spec"]["validations"]]
    assert any(IMAGE in e and "python:3.12-alpine" not in e for e in exprs if "c.image in" in e)
    assert any('object.metadata.name == "flowagg"' in e for e in exprs)


@pytest.mark.parametrize("over, words", [
    ({"replicas": 5, "partitions": 4}, ["replicas (5)", "partitions (4)"]),
    ({"brokers": []}, ["flows.kafka.brokers"]),
    ({"brokers": ["kafka"]}, ["host:port"]),
    ({"topic": "flows/x"}, ["topic name"]),
])
def test_bad_kafka_settings_are_refused_naming_the_field(kafka, over, words):
    with pytest.raises(SettingsError) as e:
        kafka(**over)
    assert all(w in str(e.value) for w in words), str(e.value)


def test_transport_kafka_needs_its_section(make, raw):
    with pytest.raises(SettingsError, match="flows.kafka section"):
        make(flows={"transport": "kafka"})


def test_topic_shape_rules():
    assert topic_finding(TopicShape("t", 4, 1), 4, 2, "netviz").healthy
    missing = topic_finding(TopicShape("t", 0, 0), 4, 2, "netviz")
    assert not missing.healthy and "does not exist" in missing.reason and missing.heal
    few = topic_finding(TopicShape("t", 1, 1), 1, 2, "external")
    assert not few.healthy and "would idle" in few.reason and not few.heal and "owns it" in few.reason
    assert not topic_finding(TopicShape("t", 2, 1), 4, 2, "netviz").healthy  # fewer than asked
    assert topic_finding(TopicShape("t", 8, 1), 4, 2, "netviz").healthy  # more is fine: Kafka cannot shrink


def _lag(*pairs):
    return [PartitionLag(i, c, h) for i, (c, h) in enumerate(pairs)]


def _judge(before, after):
    return lag_finding(*lag_between(before, after), 10, 10_000, "kafka")


def test_lag_rules_tell_falling_behind_from_no_flows_and_from_a_burst():
    behind = _judge(_lag((0, 50_000)), _lag((1000, 80_000)))
    assert not behind.healthy and "falling behind" in behind.reason and not behind.heal
    assert behind.details["produced"] == 30_000 and behind.details["counted"] == 1000
    burst = _judge(_lag((0, 50_000)), _lag((45_000, 52_000)))
    assert burst.healthy and "keep up" in burst.reason  # large but shrinking: being worked off
    quiet = _judge(_lag((10, 10), (5, 5)), _lag((10, 10), (5, 5)))
    assert quiet.healthy and "no flows produced" in quiet.reason
    never = PartitionLag(0, -1, 300)
    assert never.lag == 300  # a group that never committed has everything left to count
    stuck = _judge(_lag((0, 20_000)), _lag((0, 20_000)))  # nothing produced, but a backlog nobody counts
    assert not stuck.healthy and "stalled" in stuck.reason
    small = _judge(_lag((0, 200)), _lag((0, 200)))  # a small backlog waits for the next batch: fine
    assert small.healthy


def test_a_transport_switch_removes_only_what_the_other_transport_rendered(kafka, make):
    k, f = kafka(), make()
    names = lambda objs: {(o["apiVersion"], o["kind"], o["metadata"]["name"]) for o in objs}  # noqa: E731
    rendered_k = names(goflow2.render(k, "n1") + aggregators.render(k))
    rendered_f = names(goflow2.render(f, "n1") + aggregators.render(f))
    # what each removes is what the other renders and it does not
    assert set(aggregators.other_transport_objects(k)) == (rendered_f - rendered_k) - {
        o for o in rendered_f if o[1] not in ("Deployment", "ConfigMap")}
    assert set(aggregators.other_transport_objects(f)) == {o for o in rendered_k - rendered_f
                                                          if o[1] in ("Deployment", "ConfigMap")}
    # and the grant names exactly those
    granted = {n for names_ in aggregators.prunable().values() for n in names_}
    assert {n for *_, n in aggregators.other_transport_objects(k) + aggregators.other_transport_objects(f)} == granted


def test_unreachable_brokers_fail_with_the_setting_named(kafka, raw, tmp_path):
    """A real connection attempt to a loopback port nobody listens on (no mock): the error names the
    brokers and the setting, and no topic is created."""
    import socket

    import yaml

    from netviz_pipeline.resources.config import NetvizConfig
    from netviz_pipeline.resources.kafka import KafkaError, KafkaResource

    with socket.socket() as sock:  # a free port, closed again: connections to it are refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    data = dict(raw) | {"flows": {"transport": "kafka", "kafka": KAFKA | {"brokers": [f"127.0.0.1:{port}"]}}}
    path = tmp_path / "netviz.yaml"
    path.write_text(yaml.safe_dump(data))
    res = KafkaResource(config=NetvizConfig(config_path=str(path)), timeout_seconds=2)
    with pytest.raises(KafkaError) as e:
        res.topic("netviz-flows")
    assert f"127.0.0.1:{port}" in str(e.value) and "flows.kafka.brokers" in str(e.value)
