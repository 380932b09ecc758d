from __future__ import annotations

from netviz_pipeline.render import goflow2


def by_name(objs):
    return {(o["kind"], o["metadata"]["name"]): o for o in objs}


def test_args_are_valid_v2_flags(settings):
    args = goflow2.args(settings)
    assert args[:2] == ["-listen", "netflow://:2055"]
    assert args[args.index("-transport") + 1] == "file"
    assert "-transport.file=" in args  # empty = stdout
    assert args[args.index("-format") + 1] == "json"
    assert args[args.index("-addr") + 1] == ":8080"
    assert "stdout" not in args and not any(a.startswith("nfl://") for a in args)


def test_rendered_deployment_never_uses_stdout_transport(settings, make, tmp_path):
    for s in (settings, make(goflow2={"flows_file": "/flows/flows.json"})):
        c = by_name(goflow2.render(s))[("Deployment", "goflow2")]["spec"]["template"]["spec"]["containers"][0]
        joined = " ".join(c["args"])
        assert "-transport stdout" not in joined and "-transport file" in joined


def test_flows_file_mounts_an_empty_dir(make):
    s = make(goflow2={"flows_file": "/flows/flows.json"})
    d = by_name(goflow2.render(s))[("Deployment", "goflow2")]
    pod = d["spec"]["template"]["spec"]
    assert "-transport.file=/flows/flows.json" in pod["containers"][0]["args"]
    assert pod["containers"][0]["volumeMounts"] == [{"name": "flows", "mountPath": "/flows"}]
    assert "emptyDir" in pod["volumes"][0]


def test_probes_hit_health_on_metrics_port(settings):
    c = by_name(goflow2.render(settings))[("Deployment", "goflow2")]["spec"]["template"]["spec"]["containers"][0]
    for probe in (c["readinessProbe"], c["livenessProbe"]):
        assert probe["httpGet"] == {"path": "/__health", "port": "metrics"}
    ports = {p["name"]: (p["containerPort"], p["protocol"]) for p in c["ports"]}
    assert ports == {"netflow": (2055, "UDP"), "metrics": (8080, "TCP")}
    assert c["image"] == "netsampler/goflow2:v2.2.1"


def test_services(settings):
    objs = by_name(goflow2.render(settings))
    metrics = objs[("Service", "goflow2")]["spec"]
    assert metrics["type"] == "ClusterIP" and metrics["ports"][0]["port"] == 8080
    nf = objs[("Service", "goflow2-netflow")]["spec"]
    assert nf["type"] == "NodePort" and nf["externalTrafficPolicy"] == "Local"
    assert nf["ports"] == [{"name": "netflow", "port": 2055, "targetPort": "netflow", "nodePort": 32055,
                            "protocol": "UDP"}]
    assert nf["selector"] == metrics["selector"] == {"app": "goflow2"}


def test_node_port_from_settings(make):
    s = make(goflow2={"netflow_node_port": 31000})
    assert by_name(goflow2.render(s))[("Service", "goflow2-netflow")]["spec"]["ports"][0]["nodePort"] == 31000


def test_node_pinning_for_local_traffic_policy(settings):
    pod = by_name(goflow2.render(settings, node_name="node-1"))[("Deployment", "goflow2")]["spec"]["template"]["spec"]
    assert pod["nodeSelector"]["kubernetes.io/hostname"] == "node-1"
    pod = by_name(goflow2.render(settings))[("Deployment", "goflow2")]["spec"]["template"]["spec"]
    assert "kubernetes.io/hostname" not in pod["nodeSelector"]


def test_single_replica_recreate(settings):
    spec = by_name(goflow2.render(settings))[("Deployment", "goflow2")]["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
