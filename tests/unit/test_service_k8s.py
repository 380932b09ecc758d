"""The in-cluster recipe: settings a pod cannot use are refused with the fix; the pod is what the
docs/operating.md promises (one replica, the pipeline's ServiceAccount, secrets only by reference)."""
from __future__ import annotations

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


def test_one_pod_as_the_pipeline_identity_with_secrets_by_reference(raw):
    objs = service_k8s.render(yaml.safe_dump(pod_settings(raw)), "localhost/netviz-pipeline:1", node_port=30300)
    kinds = [o["kind"] for o in objs]
    assert kinds == ["Namespace", "ServiceAccount", "ConfigMap", "ConfigMap", "Deployment", "Service"]
    dep = objs[4]["spec"]
    assert dep["replicas"] == 1 and dep["strategy"]["type"] == "Recreate"  # one healer, never two
    pod = dep["template"]["spec"]
    assert pod["serviceAccountName"] == service_k8s.SERVICE_ACCOUNT
    assert [c["command"][0] for c in pod["containers"]] == ["dagster-webserver", "dagster-daemon"]
    # the storage is created once, before both processes open it (they raced on a fresh SQLite instance)
    [init] = pod["initContainers"]
    assert init["command"] == ["dagster", "instance", "migrate"]
    assert init["volumeMounts"] == pod["containers"][1]["volumeMounts"] and init["env"] == pod["containers"][1]["env"]
    ssh = next(v for v in pod["volumes"] if v["name"] == "ssh")
    assert ssh["secret"] == {"secretName": service_k8s.SSH_SECRET, "defaultMode": 0o400}
    for c in pod["containers"]:
        assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert c["envFrom"] == [{"secretRef": {"name": service_k8s.ENV_SECRET, "optional": True}}]
    assert objs[5]["spec"]["ports"][0]["nodePort"] == 30300
    assert "webhook" not in yaml.safe_dump_all(objs).lower()  # no secret values, only references


def test_the_cli_refuses_before_printing_anything(tmp_path, raw, capsys):
    path = tmp_path / "netviz.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert service.main(["k8s", "--settings", str(path), "--image", "x"]) == 2
    out = capsys.readouterr()
    assert out.out == "" and "in_cluster: true" in out.err
    path.write_text(yaml.safe_dump(pod_settings(raw)))
    assert service.main(["k8s", "--settings", str(path), "--image", "x"]) == 0
    assert [d["kind"] for d in yaml.safe_load_all(capsys.readouterr().out)][-1] == "Service"
