"""OPNsense: built-in NetFlow (kernel ng_netflow, v5/v9), configured over its REST API.

Why the API and not SSH: OPNsense's netflow settings live in its MVC model (config.xml
OPNsense/Netflow); the API validates them and `reconfigure` regenerates and restarts the
exporter. Nothing to install. Interfaces and collector targets the user already has are kept: ours
are added to the lists. getconfig is compared first, so a converged router is neither saved nor
reconfigured.

Shapes as OPNsense's own model and controller define them (opnsense/core Netflow.xml and
Api/NetflowController.php; checked in tests/unit/test_router_published_shapes.py): getconfig returns
list fields as {key: {value, selected}}, and an empty `targets` (an IPPortField list) as one selected
entry with the empty key, which is no target; setconfig takes comma-joined keys and answers
{"result": "saved"} or {"result": "failed", "validations": {"netflow.<field>": message}}; the timeouts
are integers 1..86400; status answers {"status": "active"|"inactive"}.

Everything OPNsense is here: its settings section (`opnsense:` on the router, `OPNsenseApi`), its
detection marker, its HTTP client (`OPNsenseClient`, requests) and the platform itself.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import requests
from pydantic import field_validator

from ..render.softflowd import collector
from ..resources.router import RouterError
from ..settings import EnvName, HttpUrl, PlatformSection, env_is_set, readable_file
from .common import FlowExportStatus, RouterOutcome
from .platform import Marker, Platform

if TYPE_CHECKING:
    from ..settings import Router, Settings

API = {"get": ("GET", "/api/diagnostics/netflow/getconfig"),
       "set": ("POST", "/api/diagnostics/netflow/setconfig"),
       "reconfigure": ("POST", "/api/diagnostics/netflow/reconfigure"),
       "status": ("GET", "/api/diagnostics/netflow/status")}


TIMEOUT_MIN, TIMEOUT_MAX = 1, 86400  # the model's activeTimeout/inactiveTimeout bounds (Netflow.xml)


# -- settings: the router's `opnsense:` section -------------------------------------------------
class OPNsenseApi(PlatformSection):
    """How to reach the router's REST API. The key and secret are named (environment variables), never
    written here."""

    key_env: EnvName
    secret_env: EnvName
    url: HttpUrl | None = None  # default https://<host>/api
    ca_file: Path | None = None

    _files = field_validator("ca_file")(readable_file)
    _env = field_validator("key_env", "secret_env")(env_is_set)


# -- desired state (pure) ----------------------------------------------------------------------
def _timeout(seconds: int) -> str:
    return str(min(TIMEOUT_MAX, max(TIMEOUT_MIN, seconds)))


def setconfig_body(s: Settings, r: Router) -> dict:
    """Body for setconfig. ng_netflow has only active/inactive timeouts: maxlife and udp map there,
    held to the 1..86400 s the model accepts (settings allow maxlife up to 7 days, which it refuses)."""
    return {"netflow": {
        "capture": {"interfaces": r.interface, "version": f"v{r.netflow_version}", "targets": collector(s, r)},
        "activeTimeout": _timeout(r.timeouts.maxlife),
        "inactiveTimeout": _timeout(r.timeouts.udp),
    }}


def _flatten(value) -> str:
    """getconfig returns selects as {key: {value, selected}}; setconfig takes comma-joined keys."""
    if isinstance(value, dict):
        return ",".join(_selected(value))
    return str(value)


def needs_change(current: dict, body: dict) -> bool:
    """Compare a getconfig response with our setconfig body (only the fields we send)."""
    def walk(cur, want) -> bool:
        if isinstance(want, dict):
            return any(walk((cur or {}).get(k) if isinstance(cur, dict) else None, v) for k, v in want.items())
        return _flatten(cur if cur is not None else "") != ",".join(sorted(str(want).split(",")))
    return walk(current, body)


def _selected(value) -> list[str]:
    """Selected keys of a getconfig list field. The empty key is no entry: an empty IPPortField list
    comes back as {"": {"value": "", "selected": 1}}, and sending it back makes setconfig fail."""
    if isinstance(value, dict):
        return sorted(k for k, v in value.items() if k and isinstance(v, dict) and int(v.get("selected", 0) or 0))
    return sorted(x for x in str(value or "").split(",") if x)


def refused(router: str, res: dict) -> str:
    """A setconfig answer other than saved, as an error naming each refused field."""
    val = res.get("validations")
    if not isinstance(val, dict) or not val:
        return f"router {router}: OPNsense did not save the netflow settings: {res}"
    parts = [f"{k}: {'; '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in sorted(val.items())]
    hint = (" (OPNsense names interfaces by identifier: lan, wan, optN, not the device)"
            if "netflow.capture.interfaces" in val else "")
    return f"router {router}: OPNsense refused the netflow settings: {'; '.join(parts)}{hint}"


def merged_body(current: dict, s: Settings, r: Router) -> dict:
    """setconfig body with our interface and target added to the ones already configured."""
    body = setconfig_body(s, r)
    cap, cur = body["netflow"]["capture"], (current.get("netflow") or {}).get("capture") or {}
    for key in ("interfaces", "targets"):
        cap[key] = ",".join(sorted(set(_selected(cur.get(key))) | {cap[key]}))
    return body


# -- the REST API client -------------------------------------------------------------------------
@dataclass
class OPNsenseClient:
    """OPNsense's REST API (key/secret as HTTP basic auth). TLS is verified: against the settings'
    ca_file when given (OPNsense ships a self-signed certificate), else the system CA store."""

    router: Router
    timeout: float = 30.0
    session: requests.Session | None = None

    def __post_init__(self):
        api = PLATFORM.section_of(self.router)
        if api is None:
            raise RouterError(f"router {self.router.name}: platform opnsense needs an opnsense section")
        key, secret = os.environ.get(api.key_env), os.environ.get(api.secret_env)
        if not key or not secret:
            raise RouterError(f"router {self.router.name}: set environment variables {api.key_env} and "
                              f"{api.secret_env} (OPNsense API key and secret)")
        host = f"[{self.router.host}]" if ":" in self.router.host else self.router.host
        base = (api.url or f"https://{host}/api").rstrip("/")
        self.base = base[:-4] if base.endswith("/api") else base
        self.session = self.session or requests.Session()
        self.session.auth = (key, secret)
        self.session.verify = str(api.ca_file) if api.ca_file else True

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        url = self.base + path
        try:
            resp = self.session.request(method, url, json=body if method == "POST" else None, timeout=self.timeout)
        except requests.exceptions.SSLError as e:
            raise RouterError(f"router {self.router.name}: TLS verification of {url} failed ({e}); set "
                              "routers[].opnsense.ca_file to the CA that signed the web GUI certificate") from None
        except requests.RequestException as e:
            raise RouterError(f"router {self.router.name}: {method} {url} failed: {e}") from None
        if resp.status_code in (401, 403):
            raise RouterError(f"router {self.router.name}: {method} {url} -> {resp.status_code}: the API key "
                              "is wrong or its user lacks the 'Diagnostics: Netflow configuration' privilege")
        if resp.status_code != 200:
            raise RouterError(f"router {self.router.name}: {method} {url} -> {resp.status_code}: {resp.text[:300]}")
        try:
            return resp.json()
        except ValueError:
            raise RouterError(f"router {self.router.name}: {method} {url} did not return JSON") from None


# -- live router -------------------------------------------------------------------------------
def _client(r: Router, client: OPNsenseClient | None) -> OPNsenseClient:
    return client or OPNsenseClient(r)


class OPNsense(Platform):
    """No SSH: `session` is ignored (it is used only to detect the platform when settings say auto).
    `client` lets tests talk to a fake API."""

    name = "opnsense"
    title = "OPNsense (built-in NetFlow, REST API)"
    section, settings_model = "opnsense", OPNsenseApi
    markers = (Marker("opnsense", "[ -d /usr/local/opnsense ]"),)

    def settings_problems(self, r: Router) -> list[str]:
        out = []
        if self.section_of(r) is None:
            out.append("platform opnsense needs an opnsense section (key_env, secret_env)")
        if r.netflow_version == 10:
            out.append("OPNsense NetFlow exports v5 or v9 only: set netflow_version: 9")
        return out

    def matches(self, facts: dict) -> bool:
        return facts["opnsense"]

    @staticmethod
    def _resolve(r: Router) -> Router:
        return r if r.interface != "auto" else r.model_copy(update={"interface": "lan"})

    def status(self, session, s: Settings, r: Router, *, client: OPNsenseClient | None = None) -> FlowExportStatus:
        r = self._resolve(r)
        api = _client(r, client)
        state = api.call(*API["status"])
        cfg = api.call(*API["get"]).get("netflow") or {}
        cap = cfg.get("capture") or {}
        targets, ifs = _selected(cap.get("targets")), _selected(cap.get("interfaces"))
        versions = _selected(cap.get("version"))
        want, body = collector(s, r), setconfig_body(s, r)["netflow"]
        st = FlowExportStatus(router=r.name, platform=self.name, running=state.get("status") == "active",
                              collector=",".join(targets) or None, interfaces=ifs,
                              version=",".join(v.removeprefix("v") for v in versions) or None,  # "9", as softflowd's -v
                              details={"api_status": state})
        if want not in targets:
            st.drift.append(f"targets: {','.join(targets) or '-'} lack {want}")
        if r.interface not in ifs:
            st.drift.append(f"interfaces: {','.join(ifs) or '-'} lack {r.interface}")
        if versions != [body["capture"]["version"]]:
            st.drift.append(f"version: running {','.join(versions) or '-'}, want {body['capture']['version']}")
        for key in ("activeTimeout", "inactiveTimeout"):
            if str(cfg.get(key)) != body[key]:
                st.drift.append(f"{key}: running {cfg.get(key)}, want {body[key]}")
        return st

    def restart(self, session, s: Settings, r: Router, *, client: OPNsenseClient | None = None) -> FlowExportStatus:
        api = _client(r, client)
        api.call(*API["reconfigure"])
        return self.status(session, s, r, client=api)

    def converge(self, session, s: Settings, r: Router, *, client: OPNsenseClient | None = None) -> RouterOutcome:
        out = RouterOutcome(router=r.name, platform=self.name, changed=False, actions=[], restarted=False)
        r = self._resolve(r)
        api = _client(r, client)
        current = api.call(*API["get"])
        body = merged_body(current, s, r)
        out.details["setconfig"] = body
        if needs_change(current, body):
            res = api.call(*API["set"], body)
            if res.get("result") != "saved":
                raise RouterError(refused(r.name, res))
            out.actions.append("saved netflow settings (setconfig)")
            out.changed = True
        st = self.status(session, s, r, client=api)
        if out.changed or not st.running:
            st = self.restart(session, s, r, client=api)
            out.actions.append("reconfigured netflow (reconfigure)")
            out.changed = out.restarted = True
        if not st.running:
            raise RouterError(f"router {r.name}: OPNsense netflow is not active after reconfigure")
        if st.drift:
            raise RouterError(f"router {r.name}: OPNsense netflow differs after setconfig: {'; '.join(st.drift)}")
        out.status = st
        return out


PLATFORM = OPNsense()
