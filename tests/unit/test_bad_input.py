"""Bad input is rejected with a clear error before anything happens; nothing crashes on garbage."""
from __future__ import annotations

import copy
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from hypothesis import HealthCheck, assume, given, settings as hsettings, strategies as st

from netviz_pipeline import loading
from netviz_pipeline.settings import Flows, Settings, SettingsError

BASE = {"cluster": {"in_cluster": True, "node_address": "198.18.0.1"},
        "prometheus": {"url": "http://127.0.0.1:9090", "mode": "operator"}}
ROUTER = {"name": "edge", "host": "198.18.0.2", "platform": "linux", "ssh_key_file": "/etc/hostname",
          "known_hosts_file": "/etc/hostname", "interface": "eth1"}

# Every section with valid values (check_host=False: files and env vars are not looked at).
FULL = {
    "cluster": {"in_cluster": True, "node_address": "198.18.0.1", "context": "lab"},
    "caretta": {"namespace": "caretta", "image": "quay.io/groundcover/caretta:v0.0.16", "preflight": "block",
                "poll_interval_seconds": 5, "resources": {"cpu_limit": "150m", "memory_limit": "512Mi"}},
    "goflow2": {"namespace": "goflow2", "netflow_node_port": 32055, "netflow_port": 2055, "metrics_port": 8080},
    "flows": {"enabled": True, "image": "python:3.12-alpine", "metrics_port": 9102, "idle_seconds": 900,
              "top_k": {"talkers": 100, "protocols": 16, "ports": 50, "exporters": 32},
              "networks": {"lan": ["192.168.1.0/24"], "k8s-pods": ["10.42.0.0/16", "fd00::/64"]},
              "names": {"kubernetes": True, "max_entries": 50_000, "from_routers": True,
                        "hosts": {"192.168.1.10": "nas.lan", "fd00::10": "printer"}},
              "fifo": "/run/flows/goflow2.fifo"},
    "prometheus": {"url": "http://127.0.0.1:9090", "mode": "operator", "scrape_interval_seconds": 15,
                   "operator": {"namespace": "monitoring", "labels": {"release": "kps"}}},
    "grafana": {"dashboards_namespace": "monitoring", "url": "http://grafana.monitoring"},
    "routers": [ROUTER | {"port": 22, "user": "root", "lan_address": "192.168.1.1", "collector_address": "198.18.0.1",
                          "collector_port": 32055, "netflow_version": 9, "timeouts": {"tcp": 300, "udp": 15}},
                ROUTER | {"name": "edge-pfsense", "host": "pfsense.lab.example", "platform": "pfsense",
                          "interface": "lan"},
                ROUTER | {"name": "edge-opnsense", "host": "198.18.0.4", "platform": "opnsense", "interface": "opt1",
                          "opnsense": {"key_env": "OPN_KEY", "secret_env": "OPN_SECRET",
                                       "url": "https://198.18.0.4/api"}}],
    "checks": {"deadline_seconds": 60, "freshness": {"netflow_max_age_seconds": 180}},
    "ownership": {"on_foreign_manager": "skip"},
    "notify": {"webhook_url_env": "NETVIZ_WEBHOOK", "timeout_seconds": 5, "dagster_url": "http://dagster:3000"},
}

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner,
                                                                                       max_size=4), max_leaves=12)
# what a mistaken or hostile settings file holds: wrong types, out-of-range numbers, bad addresses and names
bad_values = st.one_of(
    json_values,
    st.integers(min_value=-2**70, max_value=2**70),
    st.sampled_from([-1, 0, 1, 1023, 65536, 2**31, 10**9, 0.5, -0.0, 1e308, float("inf"), float("-inf")]),
    st.sampled_from(["198.18.0.256", "198.18.0", "::g", "fd00::/129", "10.0.0.0/33", "host name", "-host",
                     "a" * 254, "http://", "ftp://x", "http://admin:hunter2@prom:9090", "relative/path", "/",
                     "/x\n/y", "/a\x00b"]),
    st.sampled_from(["Edge", "-edge", "edge-", "a" * 64, "eth0; reboot", "$(id)", "`id`", "lan'0", "", " ",
                     "kube-system", "lowercase_env", "9LIVES", "glsa_supersecret", "auto", "windows", "opt"]),
    st.text(max_size=20))
# keys: near misses of real field names and arbitrary text (newlines, ': ', brackets, ...); YAML also gives ints
bad_keys = st.one_of(st.sampled_from(["namespce", "nam", "Name", "token", "password", "api_key", "hosts ", "[key]",
                                      "a.b", "a: b", "a\nb", "", "lax-x", "function-after"]),
                     st.text(max_size=12), st.integers(min_value=-3, max_value=40))


def _paths(node, at=()):
    """Every location in a document: () is the document, then keys (str) and list indices (int)."""
    yield at
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, at + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, at + (i,))


def _render(path: tuple) -> str:
    """The documented error path of a location: routers[0].interface, flows.names.hosts.10.0.0.1, and a key that
    would break the `path: problem` line (empty, blanks, control characters) quoted: flows['a\\nb']."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not part or not part.isprintable() or any(c.isspace() for c in part):
            out += f"[{part!r}]"
        else:
            out += f".{part}" if out else part
    return out


SECTIONS = tuple(Settings.model_fields)
# a `section.field` or `section[i]` path of the settings' own schema, as the whole-document checks name them
_SCHEMA_PATH = re.compile(rf"\b({'|'.join(SECTIONS)})((\.[a-z_]+)|\[\d+\])+")


def assert_refusal_names_paths(exc: SettingsError, doc) -> None:
    """Every problem is one `path: problem` line naming where it is: a location in `doc` (or a required key
    missing right below one); a whole-document check, reported at "(top level)", names the fields it compares."""
    assert exc.errors, "a refusal without a problem"
    existing = {_render(p): p for p in _paths(doc)}
    for line in exc.errors:
        assert line.splitlines() == [line], f"one line per problem: {line!r}"
        if line.startswith("(top level): "):
            assert _SCHEMA_PATH.search(line) or not isinstance(doc, dict), f"names no field: {line!r}"
            continue
        path = next((p for p in sorted(existing, key=len, reverse=True)
                     if p and (line.startswith(p + ": ") or line.startswith(p + ".[key]: "))), None)
        if path is None:  # a required key: not in the input, so named below the location that lacks it
            head, _, rest = line.partition(": ")
            parent, _, field = head.rpartition(".")
            assert rest == "required: add it" and (parent in existing) and field, \
                f"names no location of the input: {line!r}"
        elif allowed := re.search(r"\(allowed keys: ([^()]*)\)$", line):  # the unknown key itself, not its section
            assert str(existing[path][-1]) not in allowed[1].split(", "), f"names a known key: {line!r}"
    assert str(exc).splitlines()[1:] == [f"  {e}" for e in exc.errors]


def test_the_full_document_is_valid():
    s = loading.parse(copy.deepcopy(FULL), check_host=False)
    assert [r.platform for r in s.routers] == ["linux", "pfsense", "opnsense"]


@hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_any_document_either_parses_or_fails_with_a_settings_error(doc):
    try:
        loading.parse(doc, check_host=False)
    except SettingsError as exc:
        assert_refusal_names_paths(exc, doc)


@st.composite
def mutated_documents(draw):
    """FULL with 1-3 edits in any section (all ten: routers, flows, notify, ownership too): a value replaced
    by a bad one, an unknown key added, or a key removed."""
    doc = copy.deepcopy(FULL)
    for _ in range(draw(st.integers(1, 3))):
        section = draw(st.sampled_from(SECTIONS))
        paths = [p for p in _paths(doc) if p[:1] == (section,)] or [()]
        path = draw(st.sampled_from(paths))
        parent = doc
        for part in path[:-1]:
            parent = parent[part]
        node = parent[path[-1]] if path else doc
        op = draw(st.sampled_from(["replace", "add", "remove"]))
        if op == "add" and isinstance(node, (dict, list)):
            if isinstance(node, dict):
                node[draw(bad_keys)] = draw(bad_values)
            else:
                node.append(draw(bad_values))
        elif op == "remove" and path:
            del parent[path[-1]]
        elif path:
            parent[path[-1]] = draw(bad_values)
    return doc


@hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_documents())
def test_fuzzed_fields_of_a_valid_document_parse_or_name_the_field(doc):
    try:
        loading.parse(doc, check_host=False)
    except SettingsError as exc:
        assert_refusal_names_paths(exc, doc)


_UNKNOWN = "unknown key: remove it or fix the spelling (allowed keys: {})"


@pytest.mark.parametrize("doc,line", [
    ({"": 1}, "['']: " + _UNKNOWN.format(", ".join(Settings.model_fields))),
    ({"flows": {"a\nb: c": 1}}, "flows['a\\nb: c']: " + _UNKNOWN.format(", ".join(Flows.model_fields))),
    ({"lax-x": 1}, "lax-x: " + _UNKNOWN.format(", ".join(Settings.model_fields))),
    ({"flows": {"function-x": 1}}, "flows.function-x: " + _UNKNOWN.format(", ".join(Flows.model_fields))),
    ({"flows": {"networks": {"lax-y": ["x"]}}}, "flows.networks.lax-y[0]: 'x' is not a CIDR (e.g. 192.168.1.0/24)")])
def test_a_key_of_any_spelling_is_named_where_it_is(doc, line):
    """Found by the fuzzers: an empty key was reported at "(top level)", a key with a newline split its line
    in two, and keys starting with "lax-" / "function-" were dropped from the path (taken for pydantic's own)."""
    with pytest.raises(SettingsError) as exc:
        loading.parse(BASE | doc, check_host=False)
    assert exc.value.errors == [line]
    assert_refusal_names_paths(exc.value, BASE | doc)


def test_repeated_router_names_name_the_field():
    with pytest.raises(SettingsError) as exc:
        loading.parse(BASE | {"routers": [ROUTER, ROUTER]}, check_host=False)
    assert_refusal_names_paths(exc.value, BASE | {"routers": [ROUTER, ROUTER]})


HOSTILE = ["eth0; reboot", "lan0 && rm -rf /", "$(id)", "`id`", "eth0\nreboot", "eth0|nc", "../../etc", "a" * 16,
           "eth0 ", "-i", "eth0'", 'eth0"']


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_interface_names_are_rejected_naming_the_field(value):
    with pytest.raises(SettingsError) as exc:
        loading.parse(BASE | {"routers": [ROUTER | {"interface": value}]}, check_host=False)
    assert exc.value.errors == [f"routers[0].interface: {value!r} is not a plain interface name "
                                "(letters, digits, '.', '-', '_', max 15 chars)"]


@pytest.mark.parametrize("field,value,problem", [
    ("host", "198.18.0.2; id", "'198.18.0.2; id' is not an IP address or DNS host name"),
    ("host", "$(reboot)", "'$(reboot)' is not an IP address or DNS host name"),
    ("user", "root;id", "'root;id' is not a plain user name"),
    ("ssh_key_file", "relative/key", "'relative/key' is not an absolute path: write the full path"),
    ("known_hosts_file", "/x\n/y", "'/x\\n/y' contains control characters: write a plain path"),
    ("collector_address", "collector.example",
     "'collector.example' is not an IP address literal (e.g. 198.18.0.1); host names are not accepted here"),
    ("platform", "windows", "'windows' is not a supported platform: auto or one of freebsd, linux, opnsense, pfsense")])
def test_hostile_router_fields_are_rejected_naming_the_field(field, value, problem):
    """The one problem, at the field itself (not just somewhere in routers[0]), with what to write instead."""
    with pytest.raises(SettingsError) as exc:
        loading.parse(BASE | {"routers": [ROUTER | {field: value}]}, check_host=False)
    assert exc.value.errors == [f"routers[0].{field}: {problem}"]


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
