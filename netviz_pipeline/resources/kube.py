"""The Kubernetes side of the pipeline: server-side apply with a dry-run diff first, reads, exec.

Every write is a server-side apply under field manager `netviz-pipeline`. Before writing, the same
apply runs as a dry run and is compared with the live object, so a converged object is never written
(its resourceVersion stays put) and the metadata can say exactly what changed. Objects another
manager (Helm, kubectl, another tool) owned before we ever applied them are skipped or adopted as the
settings say; fields of objects we manage that someone changed by hand are drift, and are restored.
"""
from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Iterable, Literal

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import (ApiException, ConflictError, ForbiddenError, NotFoundError,
                                           UnauthorizedError)
from urllib3.util.retry import Retry

FIELD_MANAGER = "netviz-pipeline"
# Managers that only write status or defaults; co-owning with them is normal.
_CONTROL_PLANE_MANAGERS = {"kube-controller-manager", "kube-scheduler", "kubelet", "kube-apiserver", "kwok",
                           "before-first-apply"}
_VOLATILE_METADATA = ("managedFields", "resourceVersion", "generation", "creationTimestamp", "uid", "selfLink")

Action = Literal["created", "updated", "unchanged", "skipped", "adopted"]


@dataclass
class ApplyOutcome:
    kind: str
    name: str
    namespace: str | None
    action: Action
    changes: list[str] = field(default_factory=list)
    reason: str = ""

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.namespace + '/' if self.namespace else ''}{self.name}"


def comparable(obj: dict[str, Any]) -> dict[str, Any]:
    """The part of an object that apply can change: no status, no server-maintained metadata."""
    obj = json.loads(json.dumps(obj))
    obj.pop("status", None)
    meta = obj.get("metadata", {})
    for key in _VOLATILE_METADATA:
        meta.pop(key, None)
    annotations = meta.get("annotations") or {}
    annotations.pop("deprecated.daemonset.template.generation", None)
    if not annotations:
        meta.pop("annotations", None)
    return obj


def diff_paths(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted paths whose values differ between two JSON-like values (lists compared whole)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new)):
            out += diff_paths(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else key)
        return out
    return [] if old == new else [prefix or "."]


def we_manage(live: dict[str, Any]) -> bool:
    return any(m.get("manager") == FIELD_MANAGER for m in live.get("metadata", {}).get("managedFields") or [])


def foreign_managers(live: dict[str, Any]) -> list[str]:
    """Managers other than us (and the control plane) that own fields of a live object."""
    managers = {m.get("manager", "?") for m in live.get("metadata", {}).get("managedFields") or []
                if m.get("operation") in ("Apply", "Update") and m.get("subresource") != "status"}
    labels = live.get("metadata", {}).get("labels") or {}
    if labels.get("app.kubernetes.io/managed-by") == "Helm":
        managers.add("helm")
    return sorted(managers - _CONTROL_PLANE_MANAGERS - {FIELD_MANAGER})


STARTING_GRACE_S = 30.0


def _while_starting(fn):
    """A 401/403 from an API server that is not ready yet (just restarted: RBAC and authentication
    caches still loading) is not an answer: wait for /readyz and try again, up to STARTING_GRACE_S.
    The denial may predate readiness even when /readyz answers ok a moment later, so a server that is
    ready is asked once more; its second denial stands and is raised."""
    @functools.wraps(fn)
    def wrapper(self: "Kube", *args, **kwargs):
        deadline = time.monotonic() + STARTING_GRACE_S
        asked_ready = False
        while True:
            try:
                return fn(self, *args, **kwargs)
            except (ForbiddenError, UnauthorizedError):
                if time.monotonic() > deadline:
                    raise
                if self.api_ready():
                    if asked_ready:
                        raise
                    asked_ready = True
                    continue
                time.sleep(1)
    return wrapper


class Kube:
    """A thin client over one cluster. Construct with a kubeconfig path (None = in-cluster)."""

    def __init__(self, kubeconfig: str | None = None, context: str | None = None):
        cfg = k8s.Configuration()
        if kubeconfig:
            k8s_config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=cfg)
        else:
            k8s_config.load_incluster_config(client_configuration=cfg)
        # An API server restarting refuses connections for a few seconds: retry with back-off (every
        # write is a server-side apply, safe to repeat) instead of failing the deploy.
        cfg.retries = Retry(total=6, connect=6, read=2, status=4, backoff_factor=0.5,
                            status_forcelist=(429, 500, 502, 503, 504), allowed_methods=None,
                            respect_retry_after_header=True)
        api = k8s.ApiClient(cfg)
        self.api = api
        self.dyn = DynamicClient(api)

    @cached_property
    def core(self) -> k8s.CoreV1Api:
        """Only exec and pod logs need it; built on first use: it imports ~250 generated models (~0.8 s
        of every run's first step otherwise)."""
        return k8s.CoreV1Api(self.api)

    def api_ready(self) -> bool:
        try:
            return self.api.rest_client.request("GET", f"{self.api.configuration.host}/readyz").status == 200
        except Exception:  # noqa: BLE001 - unreachable or refused: not ready
            return False

    def resource(self, api_version: str, kind: str):
        return self.dyn.resources.get(api_version=api_version, kind=kind)

    @_while_starting
    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict | None:
        try:
            return self.resource(api_version, kind).get(name=name, namespace=namespace, serializer=_json)
        except NotFoundError:
            return None

    @_while_starting
    def list(self, api_version: str, kind: str, namespace: str | None = None, **selectors: str) -> list[dict]:
        return self.resource(api_version, kind).get(namespace=namespace, serializer=_json, **selectors)["items"]

    @_while_starting
    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> bool:
        """Delete one object, its dependents after it (Background propagation). False: it was not there."""
        try:
            self.resource(api_version, kind).delete(name=name, namespace=namespace,
                                                    body={"propagationPolicy": "Background"})
        except NotFoundError:
            return False
        return True

    @_while_starting
    def allowed(self, verb: str, group: str, resource: str, namespace: str, name: str) -> bool:
        """Whether this identity may do it (a SelfSubjectAccessReview, which every identity may ask)."""
        review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                  "spec": {"resourceAttributes": {"verb": verb, "group": group, "resource": resource,
                                                  "namespace": namespace, "name": name}}}
        answer = self.resource("authorization.k8s.io/v1", "SelfSubjectAccessReview").create(body=review)
        return bool(answer.to_dict().get("status", {}).get("allowed"))

    def pod_log(self, namespace: str, name: str, tail_lines: int = 20, timeout: float = 5) -> str:
        """The last lines of a pod's log. Raises ApiException when the node serves none (e.g. kwok's).
        Raw bytes: older clients parse a log that happens to be JSON and return its Python repr."""
        resp = self.core.read_namespaced_pod_log(name, namespace, tail_lines=tail_lines, limit_bytes=65536,
                                                 _request_timeout=timeout, _preload_content=False)
        return resp.data.decode("utf-8", "replace")

    def exec_in_pod(self, namespace: str, label_selector: str, argv: list[str], container: str | None = None,
                    timeout: float = 60) -> tuple[str, int, str]:
        """Run argv in the first running pod matching the selector (the API's exec, like kubectl exec).
        Returns (pod name, exit code, combined output)."""
        from kubernetes.stream import stream

        pods = [p for p in self.list("v1", "Pod", namespace, label_selector=label_selector)
                if (p.get("status") or {}).get("phase") == "Running"]
        if not pods:
            raise RuntimeError(f"no running pod in {namespace} matches {label_selector!r}")
        name = sorted(p["metadata"]["name"] for p in pods)[0]
        kwargs = {"container": container} if container else {}
        resp = stream(self.core.connect_get_namespaced_pod_exec, name, namespace, command=argv, stdout=True,
                      stderr=True, stdin=False, tty=False, _preload_content=False, **kwargs)
        resp.run_forever(timeout=timeout)
        out = (resp.read_stdout() or "") + (resp.read_stderr() or "")
        rc = resp.returncode
        resp.close()
        return name, (rc if rc is not None else -1), out

    @_while_starting
    def _ssa(self, obj: dict, *, dry_run: bool, force: bool) -> dict:
        meta = obj["metadata"]
        res = self.resource(obj["apiVersion"], obj["kind"])
        kwargs: dict[str, Any] = {"field_manager": FIELD_MANAGER, "force_conflicts": force}
        if dry_run:
            kwargs["dry_run"] = "All"
        return res.server_side_apply(body=obj, name=meta["name"],
                                     namespace=meta.get("namespace") if res.namespaced else None,
                                     **kwargs).to_dict()

    def apply(self, obj: dict, on_foreign: Literal["skip", "adopt"] = "skip") -> ApplyOutcome:
        meta = obj["metadata"]
        live = self.get(obj["apiVersion"], obj["kind"], meta["name"], meta.get("namespace"))
        outcome = ApplyOutcome(obj["kind"], meta["name"], meta.get("namespace"), "unchanged")
        force = False
        if live is not None:
            others = foreign_managers(live)
            if others and we_manage(live):
                # Ours already: someone edited it by hand (drift). Restore our fields, forcing them back.
                force, outcome.reason = True, f"restored fields changed by {', '.join(others)}"
            elif others:
                if on_foreign == "skip":
                    outcome.action, outcome.reason = "skipped", f"managed by {', '.join(others)}; left as is"
                    return outcome
                force, outcome.reason = True, f"adopted from {', '.join(others)}"
        try:
            preview = self._ssa(obj, dry_run=True, force=force)
        except ConflictError as exc:
            outcome.action, outcome.reason = "skipped", f"field conflict: {_api_message(exc)}"
            return outcome
        if live is None:
            self._ssa(obj, dry_run=False, force=force)
            outcome.action = "created"
            return outcome
        changes = diff_paths(comparable(live), comparable(preview))
        if not changes:
            outcome.reason = ""
            return outcome
        self._ssa(obj, dry_run=False, force=force)
        outcome.action = "adopted" if force and not we_manage(live) else "updated"
        outcome.changes = changes
        return outcome

    def apply_all(self, objs: Iterable[dict], on_foreign: Literal["skip", "adopt"] = "skip") -> list[ApplyOutcome]:
        return [self.apply(o, on_foreign) for o in objs]


def _json(_client, data: dict) -> dict:
    """The API's JSON as plain dicts: skips the DynamicClient's ResourceInstance wrapping and its
    `to_dict()` copy back (~0.3 ms per pod; 500 pods cost 0.16 s of CPU per list otherwise). List
    items get their apiVersion and kind, as ResourceInstance gives them."""
    kind = data.get("kind", "") if isinstance(data, dict) else ""
    if kind.endswith("List") and isinstance(data.get("items"), list):
        for item in data["items"]:
            item.setdefault("apiVersion", data.get("apiVersion"))
            item.setdefault("kind", kind[:-len("List")])
    return data


def _api_message(exc: ApiException) -> str:
    try:
        return json.loads(exc.body).get("message", str(exc))
    except (TypeError, ValueError, AttributeError):
        return str(exc)
