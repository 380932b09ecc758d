from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml

from netviz_pipeline import loading
from netviz_pipeline.settings import ENV_VAR, SettingsError


def errors_of(data, **kw) -> list[str]:
    with pytest.raises(SettingsError) as e:
        loading.parse(data, **kw)
    return e.value.errors


def test_lab_shape_is_accepted_with_defaults(settings):
    assert settings.caretta.image == "quay.io/groundcover/caretta:v0.0.16"
    assert settings.goflow2.image == "netsampler/goflow2:v2.2.1"
    assert settings.goflow2.metrics_port == 8080
    assert settings.routers[0].port == 22 and settings.routers[0].netflow_version == 9
    assert settings.routers[0].timeouts.maxlife == 60 and settings.routers[0].timeouts.tcp_fin == 1
    assert settings.grafana.sidecar_label_key == "grafana_dashboard" and settings.grafana.sidecar_label_value == "1"
    assert settings.ownership.on_foreign_manager == "skip"
    assert settings.prometheus.reload_url == "http://127.0.0.1:9090/-/reload"


def test_lab_renderer_output_is_accepted(tmp_path):
    """What `python -m netviz_lab config` writes must load (files checked once the lab is up)."""
    from netviz_lab.lab import Lab
    from netviz_lab.settings import render
    text = render(Lab(root=tmp_path))
    s = loading.parse(yaml.safe_load(text), check_host=False)
    assert {r.platform for r in s.routers} == {"linux", "pfsense"}
    assert s.routers[1].interface == "lan"


def test_load_from_env_and_path(raw, tmp_path, monkeypatch):
    p = tmp_path / "netviz.yaml"
    p.write_text(yaml.safe_dump(raw))
    monkeypatch.setenv(ENV_VAR, str(p))
    assert loading.load().cluster.node_address == "198.18.0.1"
    assert loading.load(p).routers[1].name == "edge-pfsense"


def test_unset_env_names_the_variable(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    with pytest.raises(SettingsError, match=ENV_VAR):
        loading.load()


def test_duplicate_yaml_keys_rejected(tmp_path):
    p = tmp_path / "dup.yaml"
    p.write_text("cluster: {node_address: 198.18.0.1}\ncluster: {in_cluster: true}\n")
    with pytest.raises(SettingsError, match="duplicate key 'cluster'"):
        loading.load(p)


@pytest.mark.parametrize("hostile", ["eth0; rm -rf /", "lan0 -n 6.6.6.6:1", "$(reboot)", "a" * 16, "", "lan'0", "-i"])
def test_hostile_interface_rejected(raw, hostile):
    raw["routers"][0]["interface"] = hostile
    errs = errors_of(raw)
    assert any(e.startswith("routers[0].interface:") and "plain interface name" in e for e in errs), errs


def test_error_message_shape_matches_contract(raw):
    raw["routers"][0]["interface"] = "eth0; rm -rf /"
    assert errors_of(raw) == ["routers[0].interface: 'eth0; rm -rf /' is not a plain interface name "
                              "(letters, digits, '.', '-', '_', max 15 chars)"]


def test_all_errors_collected_at_once(raw):
    raw["cluster"]["node_address"] = "node1.example"
    raw["goflow2"]["netflow_node_port"] = 2055
    raw["routers"][1]["ssh_key_file"] = "/nonexistent/key"
    raw["caretta"]["resources"] = {"memory_limit": "lots"}
    errs = errors_of(raw)
    paths = {e.split(":")[0] for e in errs}
    assert paths == {"cluster.node_address", "goflow2.netflow_node_port", "routers[1].ssh_key_file",
                     "caretta.resources.memory_limit"}
    assert "goflow2.netflow_node_port: Input should be greater than or equal to 30000 (got 2055)" in errs, errs


def test_unknown_keys_rejected_with_allowed_list(raw):
    raw["caretta"]["namespce"] = "x"
    (err,) = errors_of(raw)
    assert err.startswith("caretta.namespce: unknown key") and "namespace" in err


@pytest.mark.parametrize("section,key", [("grafana", "token"), ("grafana", "password")])
def test_inline_secrets_rejected(raw, section, key):
    raw[section][key] = "glsa_supersecret"
    (err,) = errors_of(raw)
    assert "inline secrets are not accepted" in err and "glsa_supersecret" not in err


def test_secret_values_never_accepted_as_env_names(raw):
    raw["grafana"]["token_env"] = "glsa_abc123"
    (err,) = errors_of(raw)
    assert err.startswith("grafana.token_env:")


def test_token_env_must_be_set(raw, monkeypatch):
    monkeypatch.delenv("NETVIZ_TEST_TOKEN", raising=False)
    raw["grafana"]["token_env"] = "NETVIZ_TEST_TOKEN"
    (err,) = errors_of(raw)
    assert "NETVIZ_TEST_TOKEN is not set" in err
    monkeypatch.setenv("NETVIZ_TEST_TOKEN", "v")
    assert loading.parse(raw).grafana.token_env == "NETVIZ_TEST_TOKEN"


def test_host_checks_can_be_skipped(raw):
    raw["routers"][0]["ssh_key_file"] = "/does/not/exist"
    assert loading.parse(raw, check_host=False).routers[0].ssh_key_file.name == "exist"
    raw["routers"][0]["ssh_key_file"] = "relative/key"  # still must be absolute
    assert errors_of(raw, check_host=False)[0].startswith("routers[0].ssh_key_file:")


NOBODY = 65534  # the unprivileged user (and group) the check runs as when the tests run as root (CI)


def _load_as(uid: int, config: Path) -> list[str]:
    """loading.load(config) in a forked child that first drops to user and group `uid` with no supplementary
    groups: the same interpreter and code as this test, only the user differs. (Not a new python: its
    installation may sit where that user cannot go, e.g. under /root.)"""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: reports through the pipe and never returns into pytest
        try:
            os.close(r)
            try:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
                try:
                    loading.load(config)
                    out = {"errors": []}
                except SettingsError as e:
                    out = {"errors": e.errors}
                out |= {"ids": [os.getuid(), os.geteuid(), os.getgid(), os.getegid(), os.getgroups()]}
            except BaseException as e:  # noqa: BLE001 - reported to the parent, which fails the test
                out = {"crash": repr(e)}
            with os.fdopen(w, "w") as f:
                f.write(json.dumps(out))
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        text = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0 and text, (status, text)
    out = json.loads(text)
    assert "crash" not in out, out["crash"]
    assert out["ids"] == [uid, uid, uid, uid, []]
    return out["errors"]


@pytest.fixture
def service_dir():
    """A directory every user can traverse (pytest's tmp_path is 0700 when the tests run as root)."""
    d = Path(tempfile.mkdtemp(prefix="netviz-key-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d)


def test_a_private_key_the_service_user_cannot_read_is_refused_naming_field_and_fix(service_dir):
    """Root reads any file, so as root (CI) the check runs as an unprivileged user: a key only root may read
    (0600, owned by root) is refused for that user, and the same key, made that user's own, passes."""
    key, known_hosts, config = service_dir / "id_ed25519", service_dir / "known_hosts", service_dir / "netviz.yaml"
    key.write_text("x\n")
    key.chmod(0o600)
    known_hosts.write_text("x\n")
    known_hosts.chmod(0o644)
    config.write_text(yaml.safe_dump({
        "cluster": {"in_cluster": True, "node_address": "198.18.0.1"},
        "prometheus": {"url": "http://127.0.0.1:9090", "mode": "operator"},
        "routers": [{"name": "edge", "host": "198.18.0.2", "platform": "linux", "interface": "eth1",
                     "ssh_key_file": str(key), "known_hosts_file": str(known_hosts)}]}))
    config.chmod(0o644)
    refused = [f"routers[0].ssh_key_file: {str(key)!r} is not a readable file: create it, fix the path, or let this user read it (chown/chmod)"]
    if os.geteuid() == 0:
        os.chown(key, 0, 0)
        loading.load(config)  # root itself may read it: what fails below is the user
        assert _load_as(NOBODY, config) == refused
        os.chown(key, NOBODY, NOBODY)  # the same key (still 0600), now that user's own
        assert _load_as(NOBODY, config) == []
    else:
        key.chmod(0)
        if os.access(key, os.R_OK):
            pytest.skip("this user reads a mode 000 file anyway (CAP_DAC_OVERRIDE)")
        with pytest.raises(SettingsError) as e:
            loading.load(config)
        assert e.value.errors == refused
        key.chmod(0o600)
        loading.load(config)


def test_collector_address_must_be_ip_literal(raw):
    raw["routers"][1]["collector_address"] = "collector.example.com"
    (err,) = errors_of(raw)
    assert err.startswith("routers[1].collector_address:") and "IP address literal" in err


def test_collector_defaults_to_node_port(raw):
    del raw["routers"][0]["collector_address"]
    s = loading.parse(raw)
    assert s.collector(s.routers[0]) == ("198.18.0.1", 32055)


def test_pfsense_needs_pfsense_interface_name(raw):
    raw["routers"][1]["interface"] = "vtnet1"
    (err,) = errors_of(raw)
    assert err.startswith("routers[1]:") and "lan, wan, optN" in err


def test_opnsense_needs_api_env_names(raw, monkeypatch):
    r = raw["routers"][0] | {"name": "opn", "platform": "opnsense", "interface": "lan"}
    raw["routers"] = [r]
    assert "opnsense section" in errors_of(raw)[0]
    monkeypatch.setenv("OPN_KEY", "k")
    monkeypatch.setenv("OPN_SECRET", "s")
    r["opnsense"] = {"key_env": "OPN_KEY", "secret_env": "OPN_SECRET"}
    assert loading.parse(raw).routers[0].opnsense.key_env == "OPN_KEY"


def test_a_platform_section_is_checked_by_its_platforms_model_naming_the_field(raw, monkeypatch):
    monkeypatch.setenv("OPN_KEY", "k")
    monkeypatch.delenv("OPN_SECRET", raising=False)
    r = raw["routers"][0] | {"name": "opn", "platform": "opnsense", "interface": "lan"}
    raw["routers"] = [r]
    r["opnsense"] = {"key_env": "OPN_KEY", "api_key": "hunter2", "url": "ftp://x"}
    errs = errors_of(raw, check_host=False)
    allowed = "key_env, secret_env, url, ca_file"
    assert errs == [
        "routers[0].opnsense.secret_env: required: add it",
        "routers[0].opnsense.url: 'ftp://x' is not an http(s) URL (e.g. http://prometheus.monitoring:9090)",
        "routers[0].opnsense.api_key: inline secrets are not accepted: reference them by environment variable "
        f"name or file path (allowed keys: {allowed})"]
    r["opnsense"] = {"key_env": "OPN_KEY", "secret_env": "OPN_SECRET"}
    assert errors_of(raw) == ["routers[0].opnsense.secret_env: environment variable OPN_SECRET is not set: "
                              "export it before running"]
    r["opnsense"] = "OPN_KEY"
    assert errors_of(raw, check_host=False) == [
        "routers[0].opnsense: Input should be a valid dictionary or instance of OPNsenseApi"]


def test_the_pure_parser_leaves_platforms_and_their_sections_to_the_registry(raw):
    """settings.parse_settings imports no platform: a router's platform is a string, its section raw data;
    loading.parse applies the registry's rules and puts the typed section in place."""
    from netviz_pipeline.routers.opnsense import OPNsenseApi
    from netviz_pipeline.settings import parse_settings

    raw["routers"][0] |= {"platform": "windows", "opnsense": {"key_env": "K", "secret_env": "S"}}
    r = parse_settings(raw, check_host=False).routers[0]
    assert r.platform == "windows" and r.opnsense == {"key_env": "K", "secret_env": "S"}
    assert errors_of(raw, check_host=False) == [
        "routers[0].platform: 'windows' is not a supported platform: auto or one of freebsd, linux, opnsense, pfsense"]
    raw["routers"][0]["platform"] = "auto"
    s = parse_settings(raw, check_host=False)
    typed = loading.parse(raw, check_host=False)
    assert isinstance(typed.routers[0].opnsense, OPNsenseApi) and typed.routers[0].opnsense.secret_env == "S"
    assert isinstance(s.routers[0].opnsense, dict)  # apply_rules returns a copy: what it was given is unchanged
    assert loading.apply_rules(s, check_host=False) == typed


def test_router_rules_and_the_parsers_problems_come_in_one_refusal(raw):
    """A platform's problems are found after parsing, yet reported with the parser's, all at once."""
    raw["cluster"]["node_address"] = "node1.example"
    raw["routers"][0] |= {"nmae": "x", "platform": "windows"}
    raw["routers"][1]["interface"] = "vtnet1"  # pfSense names interfaces lan, wan, optN
    errs = errors_of(raw)
    assert [e.split(":")[0] for e in errs] == ["cluster.node_address", "routers[0].nmae", "routers[0].platform",
                                               "routers[1]"], errs
    assert "unknown key: remove it or fix the spelling (allowed keys: name, host," in errs[1] and "opnsense)" in errs[1]
    del raw["routers"][1]["ssh_key_file"]  # a router that does not parse: its keys are still checked
    errs = errors_of(raw)
    assert "routers[1].ssh_key_file: required: add it" in errs and "routers[0].nmae" in errs[-2]


def test_redacted_marks_a_platform_sections_env_references(raw, monkeypatch):
    monkeypatch.setenv("OPN_KEY", "k")
    monkeypatch.setenv("OPN_SECRET", "s")
    raw["routers"][0] |= {"platform": "opnsense", "interface": "lan",
                          "opnsense": {"key_env": "OPN_KEY", "secret_env": "OPN_SECRET"}}
    red = loading.parse(raw).redacted()["routers"][0]["opnsense"]
    assert red == {"key_env": "<ref OPN_KEY>", "secret_env": "<ref OPN_SECRET>", "url": None, "ca_file": None}


def test_router_names_unique(raw):
    raw["routers"][1]["name"] = "edge-linux"
    assert "repeated: edge-linux" in errors_of(raw)[0]


def test_cluster_needs_exactly_one_way_in(raw):
    raw["cluster"] = {"node_address": "198.18.0.1"}
    assert "exactly one of kubeconfig" in errors_of(raw)[0]
    raw["cluster"] = {"node_address": "198.18.0.1", "in_cluster": True}
    assert loading.parse(raw).cluster.in_cluster


def test_prometheus_mode_needs_its_section(raw):
    raw["prometheus"] = {"url": "http://p:9090", "mode": "chart"}
    assert "prometheus.chart section" in errors_of(raw)[0]
    raw["prometheus"]["mode"] = "bogus"
    assert errors_of(raw)[0].startswith("prometheus.mode:")


def test_url_credentials_rejected(raw):
    raw["prometheus"]["url"] = "http://admin:hunter2@prom:9090"
    assert "credentials inside the URL" in errors_of(raw)[0]


def test_canary_command_must_be_list_of_strings(raw):
    raw["checks"]["canary_command"] = "curl http://x"
    assert errors_of(raw)[0].startswith("checks.canary_command:")
    raw["checks"]["canary_command"] = []
    assert errors_of(raw)[0].startswith("checks.canary_command:")


def test_settings_are_immutable(settings):
    with pytest.raises(Exception):
        settings.cluster.node_address = "1.1.1.1"


def test_redacted_is_json_safe_and_marks_refs(raw, files):
    raw["grafana"]["token_file"] = files["token"]
    red = loading.parse(raw).redacted()
    assert red["grafana"]["token_file"] == f"<ref {files['token']}>"
    import json
    json.dumps(red)


def test_not_a_mapping():
    assert errors_of(["cluster"])[0].startswith("(top level)")


def test_input_is_not_mutated(raw):
    before = copy.deepcopy(raw)
    loading.parse(raw)
    assert raw == before


def test_key_path_must_be_a_file(raw, tmp_path):
    raw["routers"][0]["known_hosts_file"] = str(tmp_path)  # a directory
    assert errors_of(raw)[0].startswith("routers[0].known_hosts_file: ")


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_private_key_others_can_read_is_refused_naming_field_and_fix(raw, files, mode):
    os.chmod(files["id_ed25519"], mode)
    errs = errors_of(raw)
    assert any(e.startswith("routers[0].ssh_key_file:") and f"mode {mode:04o}" in e and
               f"chmod 600 {files['id_ed25519']}" in e for e in errs), errs
    os.chmod(files["id_ed25519"], 0o400)
    loading.parse(raw)  # owner-only is fine


@pytest.mark.parametrize(("url", "reload", "link"), [
    ("http://prom:9090", "http://prom:9090/-/reload", "http://grafana/d/netviz-flows"),
    ("https://h/sub/path/", "https://h/sub/path/-/reload", "https://h/grafana/d/netviz-flows")])
def test_urls_join_with_one_slash(make, raw, url, reload, link):
    """A Grafana under a sub-path used to give `.../grafanad/<uid>`, and a bare Prometheus `//-/reload`."""
    from netviz_pipeline.settings import url_join

    prom = dict(raw["prometheus"]) | {"url": url}
    prom["file"] = {k: v for k, v in prom["file"].items() if k != "reload_url"}
    assert make(prometheus=prom).prometheus.reload_url == reload
    grafana = "http://grafana" if "prom:" in url else "https://h/grafana"
    assert url_join(loading.parse(raw | {"grafana": {"url": grafana}}).grafana.url, "d/netviz-flows") == link


@pytest.mark.parametrize(("limit", "ok"), [("512Mi", True), ("1.5Gi", True), ("1e9", True), ("0", False),
                                           ("-1Mi", False), ("512MB", False), ("lots", False)])
def test_memory_limit_is_a_positive_kubernetes_quantity(raw, limit, ok):
    raw["caretta"]["resources"] = {"memory_limit": limit}
    if ok:
        assert loading.parse(raw).caretta.resources.memory_limit == limit
    else:
        assert [e.split(":")[0] for e in errors_of(raw)] == ["caretta.resources.memory_limit"]


@pytest.mark.parametrize(("limit", "why"), [
    ("lots", "'lots' is not a Kubernetes quantity (e.g. 512Mi, 1Gi, 150m)"),
    ("512MB", "'512MB' is not a Kubernetes quantity (e.g. 512Mi, 1Gi, 150m)"),
    ("-1Mi", "'-1Mi' must be a positive quantity (e.g. 512Mi)")])
def test_a_bad_quantity_names_the_field_and_the_fix(raw, limit, why):
    raw["caretta"]["resources"] = {"memory_limit": limit}
    assert errors_of(raw) == [f"caretta.resources.memory_limit: {why}"]


def test_freshness_windows_must_hold_two_scrapes(raw):
    raw["prometheus"]["scrape_interval_seconds"] = 15
    raw["checks"] = dict(raw.get("checks") or {}, freshness={"netflow_max_age_seconds": 12})
    errs = errors_of(raw)
    assert any("checks.freshness.netflow_max_age_seconds (12s)" in e and "30s" in e for e in errs), errs
    raw["prometheus"]["scrape_interval_seconds"] = 5
    assert loading.parse(raw).checks.freshness.netflow_max_age_seconds == 12


def test_prometheus_rule_file_defaults_next_to_the_config_and_must_be_absolute(raw, files):
    f = loading.parse(raw).prometheus.file
    assert f.rules_file == f.config_path.parent / "netviz-alerts.yml"
    raw["prometheus"]["file"]["rules_path"] = "rules/netviz.yml"
    assert errors_of(raw) == ["prometheus.file.rules_path: 'rules/netviz.yml' is not an absolute path "
                              "(Prometheus reads it, not us)"]
    raw["prometheus"]["file"]["rules_path"] = files["prometheus.yml"]
    (err,) = errors_of(raw)
    assert err.startswith("prometheus.file: rules_path is config_path") and "netviz-alerts.yml" in err
