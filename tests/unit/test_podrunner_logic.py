"""Fast tests of the pod runner's and the Caretta stand-in's pure logic (no lab needed)."""
from __future__ import annotations

import os

import pytest

from netviz_lab import caretta_standin as cs
from netviz_lab import podspec, podvolumes
from netviz_lab.podspec import SpecError

GF = "/cache/bin/goflow2-v2.2.1"


def profile(image: str) -> podspec.ImageProfile:
    return podspec.map_image(image, GF, "v2.2.1")


# -- images ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("image,expected", [
    ("python:3.12-alpine", ("python", "3.12-alpine")),
    ("docker.io/library/python:3.11", ("python", "3.11")),
    ("netsampler/goflow2", ("netsampler/goflow2", "latest")),
    ("localhost:5000/team/python:3@sha256:abc", ("localhost:5000/team/python", "3")),
    ("quay.io/groundcover/caretta:v0.0.16", ("quay.io/groundcover/caretta", "v0.0.16")),
])
def test_parse_image(image, expected):
    assert podspec.parse_image(image) == expected


def test_map_image_kinds():
    assert profile("netsampler/goflow2:v2.2.1").kind == "goflow2"
    assert profile("docker.io/netsampler/goflow2:v2.2.1").entrypoint == ("./goflow2",)
    assert profile("python:3.12-alpine").kind == "python"
    assert profile("registry.example/mirror/python:3.12").kind == "python"
    assert profile("quay.io/groundcover/caretta:v0.0.16").kind == "caretta"


def test_map_image_never_fakes_other_goflow2_versions():
    with pytest.raises(SpecError, match="no local build of goflow2 v2.2.6") as exc:
        profile("netsampler/goflow2:v2.2.6")
    assert exc.value.reason == "LabUnknownImage"


@pytest.mark.parametrize("image", ["nginx:1.27", "pythonista:1", "busybox", "grafana/grafana:11.0.0"])
def test_unknown_images_are_refused(image):
    with pytest.raises(SpecError) as exc:
        profile(image)
    assert exc.value.reason == "LabUnknownImage"


# -- argv ----------------------------------------------------------------------------------------------
def test_args_only_use_image_entrypoint():
    c = {"name": "goflow2", "image": "netsampler/goflow2:v2.2.1", "args": ["-listen", "netflow://:2055"]}
    assert podspec.resolve_argv(c, profile(c["image"]), {}) == [GF, "-listen", "netflow://:2055"]


def test_plan_args_are_passed_unchanged():
    c = {"name": "g", "image": "netsampler/goflow2:v2.2.1",
         "args": ["-listen", "netflow://:2055", "-transport", "stdout", "-format", "json"]}
    assert podspec.resolve_argv(c, profile(c["image"]), {})[1:] == c["args"]


def test_command_replaces_entrypoint_and_maps_python():
    c = {"name": "w", "image": "python:3.12-alpine", "command": ["python3", "-m", "http.server", "8080"]}
    assert podspec.resolve_argv(c, profile(c["image"]), {}) == ["/usr/bin/python3", "-m", "http.server", "8080"]
    c = {"name": "w", "image": "python:3.12-alpine", "command": ["/usr/local/bin/python3.12", "x.py"]}
    assert podspec.resolve_argv(c, profile(c["image"]), {})[0] == "/usr/bin/python3"


def test_no_command_no_args_runs_image_cmd():
    c = {"name": "w", "image": "python:3.12-alpine"}
    assert podspec.resolve_argv(c, profile(c["image"]), {}) == ["/usr/bin/python3"]


def test_var_expansion_like_kubernetes():
    env = {"PORT": "8080"}
    assert podspec.expand("-addr=:$(PORT)", env) == "-addr=:8080"
    assert podspec.expand("$$(PORT) $(MISSING)", env) == "$(PORT) $(MISSING)"
    c = {"name": "g", "image": "netsampler/goflow2:v2.2.1", "args": ["-addr", ":$(PORT)"]}
    assert podspec.resolve_argv(c, profile(c["image"]), env)[-1] == ":8080"


def test_unknown_executable_in_image_is_refused():
    c = {"name": "g", "image": "netsampler/goflow2:v2.2.1", "command": ["/usr/bin/curl"]}
    with pytest.raises(SpecError) as exc:
        podspec.resolve_argv(c, profile(c["image"]), {})
    assert exc.value.reason == "LabUnsupportedCommand"


# -- env -------------------------------------------------------------------------------------------------
POD = {"metadata": {"name": "p-1", "namespace": "demo", "uid": "u1", "labels": {"app": "x"}},
       "spec": {"nodeName": "kwok-node-1", "containers": []},
       "status": {"podIP": "198.19.0.7", "hostIP": "198.18.0.1"}}
SVCS = [{"metadata": {"name": "web", "namespace": "demo"},
         "spec": {"clusterIP": "198.19.128.20", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}},
        {"metadata": {"name": "kubernetes", "namespace": "default"},
         "spec": {"clusterIP": "198.19.128.1", "ports": [{"name": "https", "port": 443}]}},
        {"metadata": {"name": "other", "namespace": "elsewhere"},
         "spec": {"clusterIP": "198.19.128.30", "ports": [{"port": 1}]}}]


def test_env_sources():
    c = {"name": "c", "env": [
        {"name": "A", "value": "a"},
        {"name": "B", "value": "$(A)-b"},
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
        {"name": "CM", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "k"}}},
        {"name": "OPT", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k", "optional": True}}},
        {"name": "URL", "value": "http://$(WEB_SERVICE_HOST):$(WEB_SERVICE_PORT)/"},
    ]}
    env = podspec.build_env(POD, c, {"cfg": {"data": {"k": "v"}}}, {}, SVCS, profile("python:3.12"))
    assert env["B"] == "a-b" and env["POD"] == "p-1" and env["NS"] == "demo"
    assert env["NODE"] == "kwok-node-1" and env["IP"] == "198.19.0.7" and env["APP"] == "x"
    assert env["CM"] == "v" and "OPT" not in env
    assert env["URL"] == "http://198.19.128.20:8080/"
    assert env["KUBERNETES_SERVICE_HOST"] == "198.19.128.1"
    assert "OTHER_SERVICE_HOST" not in env
    assert env["WEB_PORT_8080_TCP_ADDR"] == "198.19.128.20"


def test_missing_configmap_key_is_a_config_error():
    c = {"name": "c", "env": [{"name": "CM", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "k"}}}]}
    with pytest.raises(SpecError) as exc:
        podspec.build_env(POD, c, {}, {}, [], profile("python:3.12"))
    assert exc.value.reason == "LabContainerConfigError"


def test_backoff_and_names():
    assert [podspec.backoff(n) for n in (1, 2, 3, 4, 5, 6, 7)] == [1, 2, 4, 8, 16, 30, 30]
    assert podspec.pod_netns("demo", "web-1").startswith("nvz-pod-")
    assert len(podspec.pod_veth("a-very-long-namespace", "a-very-long-pod-name-x")) <= 15


# -- kube-proxy ------------------------------------------------------------------------------------------
def _pod(name, ip, labels, ports=()):
    return {"metadata": {"name": name, "namespace": "netviz", "labels": labels},
            "spec": {"containers": [{"name": "c", "ports": list(ports)}]}, "status": {"podIP": ip}}


def test_nat_rules_nodeport_and_clusterip():
    svc = {"metadata": {"name": "goflow2", "namespace": "netviz"},
           "spec": {"type": "NodePort", "clusterIP": "198.19.128.40", "selector": {"app": "goflow2"},
                    "ports": [{"name": "netflow", "port": 2055, "targetPort": "netflow", "protocol": "UDP",
                               "nodePort": 32055}]}}
    pods = [_pod("g", "198.19.0.9", {"app": "goflow2"}, [{"name": "netflow", "containerPort": 2055, "protocol": "UDP"}]),
            _pod("other", "198.19.0.10", {"app": "x"})]
    rules = podspec.nat_rules([svc], pods)
    assert [(r.daddr, r.proto, r.dport, r.endpoints) for r in rules] == [
        ("198.19.128.40", "udp", 2055, (("198.19.0.9", 2055),)),
        ("198.18.0.1", "udp", 32055, (("198.19.0.9", 2055),)),
    ]
    text = podspec.render_nft(rules)
    assert text.startswith("flush chain ip netviz_lab nodeports\n")
    assert "ip daddr 198.18.0.1 udp dport 32055 dnat to 198.19.0.9:2055" in text
    assert "masquerade" not in text


def test_nat_rules_load_balance_and_skip_selectorless():
    svc = {"metadata": {"name": "web", "namespace": "netviz"},
           "spec": {"clusterIP": "198.19.128.41", "selector": {"app": "w"}, "ports": [{"port": 80, "targetPort": 8080}]}}
    manual = {"metadata": {"name": "manual", "namespace": "netviz"},
              "spec": {"clusterIP": "198.19.128.42", "ports": [{"port": 80}]}}
    pods = [_pod("a", "198.19.0.2", {"app": "w"}), _pod("b", "198.19.0.3", {"app": "w"})]
    rules = podspec.nat_rules([svc, manual], pods)
    assert len(rules) == 1 and rules[0].endpoints == (("198.19.0.2", 8080), ("198.19.0.3", 8080))
    assert "numgen random mod 2 map { 0 : 198.19.0.2 . 8080, 1 : 198.19.0.3 . 8080 }" in podspec.render_nft(rules)


# -- volumes ---------------------------------------------------------------------------------------------
def _sources(cms):
    return podvolumes.Sources(configmap=cms.get, secret=lambda n: None, token=lambda *a: "tok")


def test_configmap_volume_items_and_atomic_refresh(tmp_path):
    vol = {"name": "cfg", "configMap": {"name": "c", "items": [{"key": "a", "path": "conf/a.yaml"}]}}
    files = podvolumes.volume_files(vol, POD, _sources({"c": {"data": {"a": "1", "b": "2"}}}))
    assert files == {"conf/a.yaml": (b"1", 0o644)}
    target = tmp_path / "v"
    assert podvolumes.atomic_write(target, files)
    assert (target / "conf" / "a.yaml").read_text() == "1"
    assert os.readlink(target / "conf") == "..data/conf"
    assert not podvolumes.atomic_write(target, files)  # unchanged: no rewrite
    assert podvolumes.atomic_write(target, {"b": (b"2", 0o644)})
    assert (target / "b").read_text() == "2" and not (target / "conf").exists()
    assert len([p for p in target.iterdir() if p.name.startswith("..20")]) == 1


def test_unsupported_volume_kind():
    with pytest.raises(SpecError) as exc:
        podvolumes.volume_kind({"name": "x", "persistentVolumeClaim": {"claimName": "c"}})
    assert exc.value.reason == "LabVolumeUnsupported"


def test_mountpoint_outside_scratch_roots_is_refused(tmp_path):
    with pytest.raises(SpecError, match="does not exist on the lab host"):
        podvolumes.prepare_mountpoint(podvolumes.Mount(str(tmp_path), "/opt/netviz-no-such-dir/x", True))


def test_launch_argv_enters_pod_namespaces():
    argv = podvolumes.launch_argv("nvz-pod-abc", "web-1", [podvolumes.Mount("/v", "/srv", True)], "/srv",
                                  (100, 65533), ["/usr/bin/python3", "-m", "http.server"])
    assert argv[:3] == ["nsenter", "--net=/run/netns/nvz-pod-abc", "--"]
    assert argv[3:8] == ["unshare", "--mount", "--uts", "--propagation", "slave"]
    script = argv[argv.index("-ec") + 1]
    assert "mount --bind /v /srv" in script and "remount,bind,ro /srv" in script
    assert "setpriv --reuid=100 --regid=65533" in script
    assert argv[-3:] == ["/usr/bin/python3", "-m", "http.server"]


# -- Caretta stand-in ------------------------------------------------------------------------------------
def test_fnv32a_vectors():
    assert cs.fnv32a("") == 0x811C9DC5
    assert cs.fnv32a("a") == 0xE40C292C
    assert cs.fnv32a("foobar") == 0xBF9CF968


def test_link_labels_schema_and_ids():
    link = cs.Link(cs.Workload("client", "demo", "Deployment"), cs.Workload("web", "demo", "Deployment"), 8080, 2)
    labels = cs.link_labels(link)
    assert tuple(labels) == cs.LINK_LABELS
    assert labels["link_id"] == str((cs.fnv32a("clientdemowebdemo") + 2) & 0xFFFFFFFF)
    assert labels["client_id"] == str(cs.fnv32a("clientdemo"))
    assert labels["server_port"] == "8080" and labels["role"] == "2"


def _owned(kind, name, uid):
    return {"kind": kind, "name": name, "uid": uid, "controller": True}


def test_ip_map_follows_caretta_precedence():
    rs = {"metadata": {"uid": "rs1", "ownerReferences": [_owned("Deployment", "web", "d1")]}}
    pod = {"metadata": {"name": "web-abc", "namespace": "demo", "ownerReferences": [_owned("ReplicaSet", "web-5f", "rs1")]},
           "status": {"podIPs": [{"ip": "198.19.0.5"}]}}
    bare = {"metadata": {"name": "solo", "namespace": "demo"}, "status": {"podIPs": [{"ip": "198.18.0.1"}]}}
    nodes = [{"metadata": {"name": f"kwok-node-{i}"}, "status": {"addresses": [{"address": "198.18.0.1"}]}}
             for i in (2, 0, 1)]
    svc = {"metadata": {"name": "web", "namespace": "demo"}, "spec": {"clusterIPs": ["198.19.128.20"]}}
    ips = cs.build_ip_map([svc], [pod, bare], nodes, {"rs1": rs}, {}, preferred_node="kwok-node-0")
    assert ips["198.19.0.5"] == cs.Workload("web", "demo", "Deployment")
    assert ips["198.19.128.20"] == cs.Workload("web", "demo", "Service")
    assert ips["198.18.0.1"] == cs.Workload("kwok-node-0", "node", "node")
    assert cs.resolve(ips, "198.18.0.2") == cs.Workload("198.18.0.2", "external", "external")
    # nodes are never overridden by a later pod with the same address
    assert cs.build_ip_map([], [bare], [], {}, ips)["198.18.0.1"].kind == "node"


SS = """LISTEN 0      5            0.0.0.0:8080        0.0.0.0:*
\t cubic rto:1000 mss:536 cwnd:10
ESTAB  0      0         198.19.0.5:8080     198.19.0.6:41000
\t cubic wscale:7,7 rto:204 bytes_sent:1500 bytes_acked:1501 bytes_received:80 segs_out:5
ESTAB  0      0    [::ffff:198.19.0.5]:8080 [::ffff:198.19.0.6]:41002
\t cubic bytes_sent:700 bytes_received:80
ESTAB  0      0          127.0.0.1:5000      127.0.0.1:5001
\t cubic bytes_sent:3
"""


def test_parse_ss_and_tracker_keeps_closed_bytes():
    socks = cs.parse_ss(SS)
    assert [(s.state, s.src, s.sport, s.dst, s.dport, s.bytes_sent) for s in socks][1:3] == [
        ("ESTAB", "198.19.0.5", 8080, "198.19.0.6", 41000, 1500),
        ("ESTAB", "198.19.0.5", 8080, "198.19.0.6", 41002, 700)]
    ips = {"198.19.0.5": cs.Workload("web", "demo", "Deployment"),
           "198.19.0.6": cs.Workload("client", "demo", "Deployment")}
    t = cs.Tracker()
    t.poll({"ns-web": socks}, ips)
    link = cs.Link(ips["198.19.0.6"], ips["198.19.0.5"], 8080, cs.SERVER)
    assert t.links == {link: 2200} and t.loopback == 1 and t.polls == 1
    # one connection closes with more bytes sent since the poll: nothing already counted is lost
    t.closed("ns-web", cs.Sock("UNCONN", "198.19.0.5", 8080, "198.19.0.6", 41000, 1800), {8080}, ips)
    t.poll({"ns-web": socks[2:]}, ips)
    assert t.links[link] == 2500 and t.deletions == 1
    # a short connection never seen by a poll still counts, with its role from the listening port
    t.closed("ns-web", cs.Sock("UNCONN", "198.19.0.5", 8080, "198.19.0.6", 41010, 100), {8080}, ips)
    t.poll({"ns-web": socks[2:]}, ips)
    assert t.links[link] == 2600
    text = t.exposition()
    assert 'netviz_lab_standin_info{component="caretta"} 1' in text
    assert "caretta_polls_made 3" in text and "# TYPE caretta_links_observed gauge" in text


def test_pause_image_blocks_like_pause():
    c = {"name": "p", "image": "registry.k8s.io/pause:3.10"}
    assert podspec.resolve_argv(c, profile(c["image"]), {}) == ["/usr/bin/sleep", "infinity"]


def test_stale_udp_targets_when_backends_change_appear_or_go():
    R = podspec.NatRule
    old = [R("goflow2/goflow2-netflow nodePort", "198.18.0.1", "udp", 32055, (("198.19.0.4", 2055),)),
           R("demo/web", "198.19.128.10", "tcp", 80, (("198.19.0.2", 8080),)),
           R("x/dns", "198.19.128.11", "udp", 53, (("198.19.0.7", 53),))]
    new = [R("goflow2/goflow2-netflow nodePort", "198.18.0.1", "udp", 32055, (("198.19.0.5", 2055),)),
           R("demo/web", "198.19.128.10", "tcp", 80, (("198.19.0.3", 8080),)),
           R("x/dns", "198.19.128.11", "udp", 53, (("198.19.0.7", 53),)),
           R("y/syslog", "198.19.128.12", "udp", 514, (("198.19.0.8", 514),))]
    assert podspec.stale_udp_targets(old, new) == [("198.18.0.1", 32055), ("198.19.128.12", 514)]
    assert podspec.stale_udp_targets(new, []) == [("198.18.0.1", 32055), ("198.19.128.11", 53),
                                                  ("198.19.128.12", 514)]
    assert podspec.stale_udp_targets(new, new) == []
