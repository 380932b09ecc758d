"""Bad input is rejected with a clear error before anything happens; nothing crashes on garbage."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from netviz_pipeline.settings import SettingsError, parse_settings

BASE = {"cluster": {"in_cluster": True, "node_address": "198.18.0.1"},
        "prometheus": {"url": "http://127.0.0.1:9090", "mode": "operator"}}
ROUTER = {"name": "edge", "host": "198.18.0.2", "platform": "linux", "ssh_key_file": "/etc/hostname",
          "known_hosts_file": "/etc/hostname", "interface": "eth1"}

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner,
                                                                                       max_size=4), max_leaves=12)


@hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_any_document_either_parses_or_fails_with_a_settings_error(doc):
    try:
        parse_settings(doc, check_host=False)
    except SettingsError as exc:
        assert str(exc).strip()


@hsettings(max_examples=200, deadline=None)
@given(section=st.sampled_from(["cluster", "caretta", "goflow2", "prometheus", "grafana", "checks"]),
       key=st.text(min_size=1, max_size=10), value=json_values)
def test_fuzzed_fields_of_a_valid_document_never_crash(section, key, value):
    doc = json.loads(json.dumps(BASE))
    doc.setdefault(section, {})[key] = value
    try:
        parse_settings(doc, check_host=False)
    except SettingsError as exc:
        assert section in str(exc) or "(top level)" in str(exc)


HOSTILE = ["eth0; reboot", "lan0 && rm -rf /", "$(id)", "`id`", "eth0\nreboot", "eth0|nc", "../../etc", "a" * 16,
           "eth0 ", "-i", "eth0'", 'eth0"']


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_interface_names_are_rejected_naming_the_field(value):
    with pytest.raises(SettingsError) as exc:
        parse_settings(BASE | {"routers": [ROUTER | {"interface": value}]}, check_host=False)
    assert "routers[0].interface" in str(exc.value)


@pytest.mark.parametrize("field,value", [("host", "198.18.0.2; id"), ("host", "$(reboot)"), ("user", "root;id"),
                                         ("ssh_key_file", "relative/key"), ("known_hosts_file", "/x\n/y"),
                                         ("collector_address", "collector.example"), ("platform", "windows")])
def test_hostile_router_fields_are_rejected_naming_the_field(field, value):
    with pytest.raises(SettingsError) as exc:
        parse_settings(BASE | {"routers": [ROUTER | {field: value}]}, check_host=False)
    assert f"routers[0].{field}" in str(exc.value) or "routers[0]" in str(exc.value)


class _Garbage(BaseHTTPRequestHandler):
    answers = {"/api/v1/query": (200, b"<html>not prometheus</html>"),
               "/api/v1/targets": (200, json.dumps({"status": "success"}).encode()),
               "/api/v1/query_range": (500, json.dumps({"status": "error", "error": "boom"}).encode())}

    def do_GET(self):  # noqa: N802
        code, body = self.answers.get(self.path.split("?")[0], (404, b"{}"))
        self.send_response(code)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def odd_prometheus(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Garbage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    cfg = tmp_path / "netviz.yaml"
    cfg.write_text(json.dumps(BASE | {"prometheus": {"url": f"http://127.0.0.1:{server.server_port}",
                                                     "mode": "operator"}}))
    yield str(cfg)
    server.shutdown()


def test_prometheus_answers_that_are_not_prometheus_give_clear_errors(odd_prometheus):
    from netviz_pipeline.resources.config import NetvizConfig
    from netviz_pipeline.resources.prometheus import PrometheusError, PrometheusResource

    prom = PrometheusResource(config=NetvizConfig(config_path=odd_prometheus))
    with pytest.raises(PrometheusError, match="non-JSON"):
        prom.query("up")
    with pytest.raises(PrometheusError, match="failed"):
        prom.targets()
    with pytest.raises(PrometheusError, match="boom"):
        prom.query_range("up")
