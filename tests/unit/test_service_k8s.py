"""The in-cluster recipe: settings a pod cannot use are refused with the fix; the objects are what
docs/operating.md promises (Dagster's Helm chart's shape: code server, webserver, one daemon, runs as
Jobs under the pipeline's ServiceAccount, Postgres, secrets only by reference)."""
from __future__ import annotations

import copy

import yaml

from netviz_pipeline import service, targets
from netviz_pipeline.render import service_k8s
from netviz_pipeline import loading


def pod_settings(raw: dict) -> dict:
    raw = dict(raw)
    raw["cluster"] = {"in_cluster": True, "node_address": raw["cluster"]["node_address"]}
    raw["prometheus"] = {"url": "http://198.19.128.50:80", "mode": "auto"}
    raw["routers"] = [dict(r, ssh_key_file=f"{service_k8s.SSH_DIR}/id_ed25519",
                           known_hosts_file=f"{service_k8s.SSH_DIR}/known_hosts") for r in raw["routers"]]
    raw["checks"] = {}
    return raw


def test_settings_a_pod_cannot_use_are_refused_naming_the_field(raw):
    s = loading.parse(raw, check_host=False)
    bad = service_k8s.problems(targets.resolve(s, None))
    assert any(b.startswith("cluster: set in_cluster: true") for b in bad)
    assert any(b.startswith("prometheus: file mode") for b in bad)
    assert any(b.startswith("routers[0].ssh_key_file:") and service_k8s.SSH_DIR in b for b in bad)
    assert service_k8s.problems(targets.resolve(loading.parse(pod_settings(raw), check_host=False), None)) == []


PG = service_k8s.PostgresRef("postgres.db.svc", 5432, "dagster", "dagster")
IMAGE = "localhost/netviz-pipeline:1"


def _by(objs, kind, name):
    return next(o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name)


def test_the_helm_charts_shape_code_server_webserver_daemon_and_runs_as_jobs(raw):
    objs = service_k8s.render(yaml.safe_dump(pod_settings(raw)), IMAGE, PG, node_port=30300,
                              node_selector={"netviz.io/real-node": "true"})
    deps = {o["metadata"]["name"]: o["spec"] for o in objs if o["kind"] == "Deployment"}
    assert list(deps) == [service_k8s.CODE, service_k8s.WEBSERVER, service_k8s.DAEMON]
    pods = {n: d["template"]["spec"] for n, d in deps.items()}
    assert deps[service_k8s.DAEMON]["replicas"] == 1 and deps[service_k8s.DAEMON]["strategy"]["type"] == "Recreate"
    code = pods[service_k8s.CODE]["containers"][0]
    assert code["command"][:3] == ["dagster", "api", "grpc"] and "netviz_pipeline" in code["command"]
    assert {"name": "DAGSTER_CURRENT_IMAGE", "value": IMAGE} in code["env"]
    # the webserver and the daemon load the code from the code server, over gRPC
    ws = yaml.safe_load(_by(objs, "ConfigMap", service_k8s.WORKSPACE_CONFIGMAP)["data"]["workspace.yaml"])
    # found through the Service's link variable (no cluster DNS needed); the Service comes before them
    assert ws["load_from"][0]["grpc_server"]["host"] == {"env": "NETVIZ_CODE_SERVICE_HOST"}
    order = [(o["kind"], o["metadata"]["name"]) for o in objs]
    assert order.index(("Service", service_k8s.CODE)) < order.index(("Deployment", service_k8s.WEBSERVER))
    assert [c["command"][0] for c in pods[service_k8s.WEBSERVER]["containers"]] == ["dagster-webserver"]
    assert [c["command"][0] for c in pods[service_k8s.DAEMON]["containers"]] == ["dagster-daemon"]
    for name in (service_k8s.WEBSERVER, service_k8s.DAEMON):
        assert pods[name]["serviceAccountName"] == service_k8s.DAGSTER_ACCOUNT
        # the storage created or upgraded before the process opens it, then the code server waited for
        migrate, wait = pods[name]["initContainers"]
        assert migrate["command"] == service_k8s.MIGRATE
        assert wait["command"][-2:] == ["NETVIZ_CODE_SERVICE_HOST", str(service_k8s.GRPC_PORT)]
    # sensors are evaluated in the code server: it runs as the pipeline's identity, like the runs
    assert pods[service_k8s.CODE]["serviceAccountName"] == service_k8s.SERVICE_ACCOUNT
    for pod in pods.values():
        assert pod["nodeSelector"] == {"netviz.io/real-node": "true"}
        for c in pod["containers"] + pod.get("initContainers", []):
            assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
            assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert _by(objs, "Service", service_k8s.WEBSERVER)["spec"]["ports"][0]["nodePort"] == 30300


def test_the_daemon_may_only_launch_jobs_in_its_namespace(raw):
    objs = service_k8s.render(yaml.safe_dump(pod_settings(raw)), IMAGE, PG)
    role = _by(objs, "Role", service_k8s.DAGSTER_ACCOUNT)
    assert role["metadata"]["namespace"] == "netviz"
    granted = {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
               for v in rule["verbs"]}
    assert {r for _, r, _ in granted} == {"jobs", "jobs/status", "pods", "pods/log", "events"}
    assert not {v for *_, v in granted} & {"escalate", "bind", "impersonate", "*", "patch", "update"}
    assert not [o for o in objs if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    binding = _by(objs, "RoleBinding", service_k8s.DAGSTER_ACCOUNT)
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": service_k8s.DAGSTER_ACCOUNT, "namespace": "netviz"}]


def test_postgres_password_only_by_reference_and_runs_as_the_pipeline_identity(raw):
    objs = service_k8s.render(yaml.safe_dump(pod_settings(raw)), IMAGE, PG)
    inst = yaml.safe_load(_by(objs, "ConfigMap", service_k8s.INSTANCE_CONFIGMAP)["data"]["dagster.yaml"])
    db = inst["storage"]["postgres"]["postgres_db"]
    assert db == {"hostname": "postgres.db.svc", "port": 5432, "username": "dagster", "db_name": "dagster",
                  "password": {"env": "DAGSTER_PG_PASSWORD"}}
    launcher = inst["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_k8s", "K8sRunLauncher")
    cfg = launcher["config"]
    assert cfg["service_account_name"] == service_k8s.SERVICE_ACCOUNT
    assert cfg["postgres_password_secret"] == service_k8s.POSTGRES_SECRET and cfg["job_image"] == IMAGE
    assert cfg["instance_config_map"] == service_k8s.INSTANCE_CONFIGMAP and cfg["job_namespace"] == "netviz"
    # the run pods get what the code server has: settings, SSH key, the optional env Secret
    assert {v["name"] for v in cfg["volumes"]} == {"settings", "ssh", "home", "tmp"}
    assert cfg["run_k8s_config"]["container_config"]["env_from"] == [{"secret_ref": {"name": "netviz-env", "optional": True}}]
    for pod in (o["spec"]["template"]["spec"] for o in objs if o["kind"] == "Deployment"):
        for c in pod["containers"] + pod.get("initContainers", []):
            for e in c.get("env", []):
                assert "value" in e and "PASSWORD" not in e["name"] or "valueFrom" in e, e
    refs = [e for o in objs if o["kind"] == "Deployment" for c in o["spec"]["template"]["spec"]["containers"]
            for e in c.get("env", []) if e["name"] == "DAGSTER_PG_PASSWORD"]
    # code server (it evaluates the sensor's ticks against the instance), webserver, daemon
    assert len(refs) == 3 and all(e["valueFrom"]["secretKeyRef"] == {"name": "netviz-postgres", "key": "postgresql-password"}
                        for e in refs)
    # the K8sRunLauncher itself accepts this config (its own schema, no cluster asked)
    from dagster._config import process_config
    from dagster_k8s import K8sRunLauncher

    assert process_config(K8sRunLauncher.config_type(), cfg).success


def test_the_cli_refuses_before_printing_anything(tmp_path, raw, capsys):
    path = tmp_path / "netviz.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert service.main(["k8s", "--settings", str(path), "--image", "x", "--postgres-host", "pg"]) == 2
    out = capsys.readouterr()
    assert out.out == "" and "in_cluster: true" in out.err
    path.write_text(yaml.safe_dump(pod_settings(raw)))
    assert service.main(["k8s", "--settings", str(path), "--image", "x", "--postgres-host", "pg"]) == 0
    assert [d["kind"] for d in yaml.safe_load_all(capsys.readouterr().out)][-1] == "Deployment"


def test_admin_print_brings_the_in_cluster_service_and_grants_its_runs_identity(tmp_path, raw, capsys):
    from netviz_pipeline import admin

    path = tmp_path / "netviz.yaml"
    path.write_text(yaml.safe_dump(pod_settings(raw)))
    assert admin.main(["print", "--settings", str(path)]) == 0
    alone = list(yaml.safe_load_all(capsys.readouterr().out))
    assert admin.main(["print", "--settings", str(path), "--service-image", "reg/netviz:1", "--postgres-host", "pg",
                       "--namespace", "ops", "--node-selector", "pool=infra"]) == 0
    both = list(yaml.safe_load_all(capsys.readouterr().out))
    service_objs = both[len(alone):]
    assert {(o["kind"], o["metadata"]["name"]) for o in service_objs} >= {
        ("Deployment", service_k8s.CODE), ("Deployment", service_k8s.WEBSERVER), ("Deployment", service_k8s.DAEMON),
        ("Role", service_k8s.DAGSTER_ACCOUNT), ("ConfigMap", service_k8s.INSTANCE_CONFIGMAP)}
    assert all(o["metadata"].get("namespace") in (None, "ops") for o in service_objs)
    assert all(o["spec"]["template"]["spec"]["nodeSelector"] == {"pool": "infra"}
               for o in service_objs if o["kind"] == "Deployment")
    # the pipeline's grant names the runs' ServiceAccount, not the default user
    subjects = [s for o in both[:len(alone)] if o["kind"] in ("RoleBinding", "ClusterRoleBinding") for s in o["subjects"]
                if s["name"] == service_k8s.SERVICE_ACCOUNT]
    assert subjects and all(s == {"kind": "ServiceAccount", "name": service_k8s.SERVICE_ACCOUNT, "namespace": "ops"}
                            for s in subjects), subjects
    assert not any(s.get("kind") == "User" for o in both if o["kind"] in ("RoleBinding", "ClusterRoleBinding") for s in o["subjects"]
                   if s["name"] == "netviz-pipeline")
    # bad options are refused before anything is printed
    assert admin.main(["print", "--settings", str(path), "--service-image", "x"]) == 2
    assert admin.main(["print", "--settings", str(path), "--service-image", "x", "--postgres-host", "pg",
                       "--node-selector", "infra"]) == 2
    assert admin.main(["print", "--settings", str(path), "--service-image", "x", "--postgres-host", "pg",
                       "--run-start-timeout", "5"]) == 2
    err = capsys.readouterr()
    assert err.out == "" and "--postgres-host" in err.err and "KEY=VALUE" in err.err and "30 s or more" in err.err
    assert admin.main(["print", "--settings", str(path), "--service-image", "x", "--postgres-host", "pg",
                       "--run-start-timeout", "600"]) == 0
    inst = next(o for o in yaml.safe_load_all(capsys.readouterr().out)
                if o["metadata"]["name"] == service_k8s.INSTANCE_CONFIGMAP)
    assert yaml.safe_load(inst["data"]["dagster.yaml"])["run_monitoring"]["start_timeout_seconds"] == 600


def test_drift_of_service_objects_ignores_api_defaults_and_names_a_change(raw):
    from netviz_pipeline.render.install import drift

    objs = service_k8s.render(yaml.safe_dump(pod_settings(raw)), "reg/netviz:1", service_k8s.PostgresRef("pg"))
    dep = next(o for o in objs if o["kind"] == "Deployment")
    live = copy.deepcopy(dep)
    live["spec"]["progressDeadlineSeconds"] = 600  # what the API server adds
    for c in live["spec"]["template"]["spec"]["containers"]:
        c["terminationMessagePath"] = "/dev/termination-log"
    assert drift(dep, live) == []
    live["spec"]["template"]["spec"]["containers"][0]["image"] = "reg/netviz:0"
    assert drift(dep, live) == [f"Deployment {dep['metadata']['namespace']}/{dep['metadata']['name']}: spec differs "
                                "from what netviz installs"]
    assert drift(dep, None) == [f"Deployment {dep['metadata']['namespace']}/{dep['metadata']['name']} is missing"]
