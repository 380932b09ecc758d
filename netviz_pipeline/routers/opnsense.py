"""OPNsense: built-in NetFlow (kernel ng_netflow, v5/v9), configured over its REST API.

Why the API and not SSH: OPNsense's netflow settings live in its MVC model (config.xml
OPNsense/Netflow); the API validates them and `reconfigure` regenerates and restarts the
exporter. Nothing to install. Interfaces and collector targets the user already has are kept: ours
are added to the lists. getconfig is compared first, so a converged router is neither saved nor
reconfigured.
"""
from __future__ import annotations

from ..render import softflowd as sf
from ..resources.router import OPNsenseClient, RouterError
from ..settings import Router, Settings
from .common import FlowExportStatus, RouterOutcome

PLATFORM = "opnsense"


def resolve_interface(r: Router) -> Router:
    return r if r.interface != "auto" else r.model_copy(update={"interface": "lan"})


def _selected(value) -> list[str]:
    if isinstance(value, dict):
        return sorted(k for k, v in value.items() if isinstance(v, dict) and int(v.get("selected", 0) or 0))
    return sorted(x for x in str(value or "").split(",") if x)


def merged_body(current: dict, s: Settings, r: Router) -> dict:
    """setconfig body with our interface and target added to the ones already configured."""
    body = sf.opnsense_setconfig_body(s, r)
    cap, cur = body["netflow"]["capture"], (current.get("netflow") or {}).get("capture") or {}
    for key in ("interfaces", "targets"):
        cap[key] = ",".join(sorted(set(_selected(cur.get(key))) | {cap[key]}))
    return body


def _client(r: Router, client: OPNsenseClient | None) -> OPNsenseClient:
    return client or OPNsenseClient(r)


def status(session, s: Settings, r: Router, *, client: OPNsenseClient | None = None) -> FlowExportStatus:
    r = resolve_interface(r)
    api = _client(r, client)
    method, path = sf.OPNSENSE_API["status"]
    state = api.call(method, path)
    cfg = api.call(*sf.OPNSENSE_API["get"]).get("netflow") or {}
    cap = cfg.get("capture") or {}
    targets, ifs = _selected(cap.get("targets")), _selected(cap.get("interfaces"))
    want = sf.collector(s, r)
    st = FlowExportStatus(router=r.name, platform=PLATFORM, running=state.get("status") == "active",
                          collector=",".join(targets) or None, interfaces=ifs,
                          version=",".join(_selected(cap.get("version"))) or None, details={"api_status": state})
    if want not in targets:
        st.drift.append(f"targets: {','.join(targets) or '-'} lack {want}")
    if r.interface not in ifs:
        st.drift.append(f"interfaces: {','.join(ifs) or '-'} lack {r.interface}")
    return st


def restart(session, s: Settings, r: Router, *, client: OPNsenseClient | None = None) -> FlowExportStatus:
    api = _client(r, client)
    api.call(*sf.OPNSENSE_API["reconfigure"])
    return status(session, s, r, client=api)


def converge(session, s: Settings, r: Router, *, client: OPNsenseClient | None = None) -> RouterOutcome:
    out = RouterOutcome(router=r.name, platform=PLATFORM, changed=False, actions=[], restarted=False)
    r = resolve_interface(r)
    api = _client(r, client)
    current = api.call(*sf.OPNSENSE_API["get"])
    body = merged_body(current, s, r)
    out.details["setconfig"] = body
    if sf.opnsense_needs_change(current, body):
        res = api.call(*sf.OPNSENSE_API["set"], body)
        if res.get("result") != "saved":
            raise RouterError(f"router {r.name}: OPNsense refused the netflow settings: "
                              f"{res.get('validations') or res}")
        out.actions.append("saved netflow settings (setconfig)")
        out.changed = True
    st = status(session, s, r, client=api)
    if out.changed or not st.running:
        st = restart(session, s, r, client=api)
        out.actions.append("reconfigured netflow (reconfigure)")
        out.changed = out.restarted = True
    if not st.running:
        raise RouterError(f"router {r.name}: OPNsense netflow is not active after reconfigure")
    if st.drift:
        raise RouterError(f"router {r.name}: OPNsense netflow differs after setconfig: {'; '.join(st.drift)}")
    out.status = st
    return out
