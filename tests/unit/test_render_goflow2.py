from __future__ import annotations

import json

from netviz_pipeline.render import goflow2


def by_name(objs):
    return {(o["kind"], o["metadata"]["name"]): o for o in objs}


def test_args_are_valid_v2_flags(settings, make):
    args = goflow2.args(settings)
    assert args[:2] == ["-listen", "netflow://:2055"]
    assert args[args.index("-transport") + 1] == "file"
    assert "-transport.file=/run/flows/goflow2.fifo" in args  # the flow aggregator's FIFO
    assert "-transport.file=" in goflow2.args(make(flows={"enabled": False}))  # empty = stdout
    assert args[args.index("-format") + 1] == "json"
    assert args[args.index("-addr") + 1] == ":8080"
    assert "stdout" not in args and not any(a.startswith("nfl://") for a in args)


def test_rendered_deployment_never_uses_stdout_transport(settings, make, tmp_path):
    for s in (settings, make(goflow2={"flows_file": "/flows/flows.json"}, flows={"enabled": False})):
        c = by_name(goflow2.render(s))[("Deployment", "goflow2")]["spec"]["template"]["spec"]["containers"][0]
        joined = " ".join(c["args"])
        assert "-transport stdout" not in joined and "-transport file" in joined


def test_flows_file_mounts_an_empty_dir(make):
    s = make(goflow2={"flows_file": "/flows/flows.json"}, flows={"enabled": False})
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
    assert spec["replicas"] == 1 and spec["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}


def test_flow_aggregator_sidecar(settings):
    objs = by_name(goflow2.render(settings))
    pod = objs[("Deployment", "goflow2")]["spec"]["template"]["spec"]
    gf, agg = pod["containers"]
    assert gf["name"] == "goflow2" and agg["name"] == "flowagg"
    assert agg["image"] == "python:3.12-alpine"  # stock public image; our code comes in a ConfigMap
    # goflow2 starts through the image's sh: FIFO created before goflow2 could create a file, held open
    assert gf["command"][:2] == ["/bin/sh", "-c"] and gf["command"][3] == "goflow2"
    script = gf["command"][2]
    assert "mkfifo" in script and 'exec 3<>"$f"' in script and script.rstrip().endswith('exec ./goflow2 "$@"')
    assert "-transport.file=/run/flows/goflow2.fifo" in gf["args"]
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols["flows"]["emptyDir"]["medium"] == "Memory"  # flows never touch disk
    assert vols["flowagg"]["configMap"]["name"] == "goflow2-flowagg"
    assert {m["mountPath"] for m in gf["volumeMounts"]} == {"/run/flows"}
    assert {m["mountPath"] for m in agg["volumeMounts"]} == {"/run/flows", "/etc/netviz-flowagg",
                                                             "/var/run/secrets/kubernetes.io/serviceaccount",
                                                             "/var/run/netviz-router-hosts"}
    assert agg["ports"] == [{"name": "flow-metrics", "containerPort": 9102, "protocol": "TCP"}]
    assert agg["securityContext"]["runAsNonRoot"] and agg["securityContext"]["readOnlyRootFilesystem"]
    assert agg["command"][0] == "python3" and "--input" in agg["args"]
    # goflow2's own metrics and health endpoint are untouched
    assert gf["readinessProbe"]["httpGet"] == {"path": "/__health", "port": "metrics"}
    cm = objs[("ConfigMap", "goflow2-flowagg")]
    assert "class SpaceSaving" in cm["data"]["flowagg.py"]
    assert json.loads(cm["data"]["config.json"])["top_k"]["talkers"] == 100
    kinds = [o["kind"] for o in goflow2.render(settings)]
    assert kinds.index("ConfigMap") < kinds.index("Deployment")


def test_flow_config_change_rolls_the_pod(make):
    def ann(s):
        return by_name(goflow2.render(s))[("Deployment", "goflow2")]["spec"]["template"]["metadata"]["annotations"]
    a = ann(make(flows={"networks": {"lan": ["10.0.0.0/8"]}}))
    b = ann(make(flows={"networks": {"lan": ["10.0.0.0/16"]}}))
    assert a != b and a == ann(make(flows={"networks": {"lan": ["10.0.0.0/8"]}}))


def test_flows_disabled_is_plain_goflow2(make):
    objs = goflow2.render(make(flows={"enabled": False}))
    pod = by_name(objs)[("Deployment", "goflow2")]["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["goflow2"] and "command" not in pod["containers"][0]
    assert not any(o["kind"] == "ConfigMap" for o in objs)


def test_fifo_script_runs_in_sh(settings, tmp_path):
    """The script really creates a FIFO, keeps it open and execs goflow2 with its args."""
    import os
    import stat
    import subprocess

    fifo = tmp_path / "flows" / "goflow2.fifo"
    fifo.parent.mkdir()
    s = settings.model_copy(update={"flows": settings.flows.model_copy(update={"fifo": fifo})})
    (tmp_path / "goflow2").write_text('#!/bin/sh\n[ -p "$(readlink /proc/$$/fd/3)" ] && echo "fd3-fifo $*"\n')
    (tmp_path / "goflow2").chmod(0o755)
    out = subprocess.run(["/bin/sh", "-c", goflow2.fifo_script(s), "goflow2", "-listen", "x"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert out.stdout.strip() == "fd3-fifo -listen x"


def test_run_as_non_root_is_provable_by_a_kubelet(settings, make):
    """A kubelet refuses runAsNonRoot when the image user is a name (goflow2's `USER flow`) and the
    pod gives no numeric runAsUser: every non-root container must say its uid, and not uid 0."""
    for s in (settings, make(flows={"enabled": False})):
        pod = by_name(goflow2.render(s))[("Deployment", "goflow2")]["spec"]["template"]["spec"]
        for c in pod["containers"]:
            sc = {**pod.get("securityContext", {}), **c.get("securityContext", {})}
            assert sc.get("runAsNonRoot") is True, c["name"]
            assert isinstance(sc.get("runAsUser"), int) and sc["runAsUser"] > 0, c["name"]
    gf = by_name(goflow2.render(settings))[("Deployment", "goflow2")]["spec"]["template"]["spec"]["containers"][0]
    assert (gf["securityContext"]["runAsUser"], gf["securityContext"]["runAsGroup"]) == (100, 65533)  # upstream `flow`
