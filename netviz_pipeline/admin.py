"""`python -m netviz_pipeline.admin print|apply|check`: the install objects, for an administrator.

    print   YAML of the namespaces, Caretta's ClusterRole/binding and the pipeline's grant for the
            settings (NETVIZ_CONFIG or --settings): review it, or `kubectl apply --server-side -f -`
    apply   server-side apply them with the administrator's kubeconfig (--kubeconfig), field manager
            `netviz-install`; says what changed
    check   what is missing or drifted, read with the given kubeconfig (exit 1 if anything is)

With `--service-image` (and `--postgres-host`, as `service k8s` takes them) the objects that run netviz
itself in the cluster come too (render/service_k8s.py: code server, webserver, daemon, their Role, the
instance; the Secrets stay the user's), and the grant's subject defaults to their ServiceAccount.

The pipeline never writes these (render/install.py says why); run this once, and again when the
settings' namespaces, Prometheus mode or canary pod change. Given a kubeconfig (apply, check, and print
with --kubeconfig) the grant follows what the cluster shows, through the pipeline's own resolution
(targets.for_install): the namespace Grafana's dashboard sidecar watches, and under `prometheus.mode:
auto` the chart-shaped Prometheus server the pipeline would find.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import yaml

from . import loading, targets
from .render import install, service_k8s
from .service import add_k8s_args, k8s_objects
from .settings import SettingsError

FIELD_MANAGER = "netviz-install"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m netviz_pipeline.admin", description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=("print", "apply", "check"))
    ap.add_argument("--settings", help="settings file (default: $NETVIZ_CONFIG)")
    ap.add_argument("--subject", help="who the pipeline runs as: user:<name> or serviceaccount:<namespace>/<name> "
                    f"(default {install.DEFAULT_SUBJECT}; with --service-image, its runs' ServiceAccount)")
    ap.add_argument("--kubeconfig", help="the ADMINISTRATOR's kubeconfig (apply, check); never the pipeline's")
    ap.add_argument("--context")
    add_k8s_args(ap.add_argument_group("netviz itself in the cluster (optional)"), "--service-image", required=False)
    a = ap.parse_args(argv)
    try:
        # host checks off: an administrator's machine need not hold the pipeline's key files
        s = loading.load(a.settings, check_host=False)
        subject = install.Subject.parse(a.subject or (f"serviceaccount:{a.namespace}/{service_k8s.SERVICE_ACCOUNT}"
                                                      if a.image else install.DEFAULT_SUBJECT))
        service = k8s_objects(a, Path(a.settings or os.environ["NETVIZ_CONFIG"])) if a.image else []
    except (SettingsError, ValueError) as e:
        print(e, file=sys.stderr)
        return 2
    from kubernetes.client.exceptions import ApiException

    from .resources.kube import Kube

    kube = Kube(a.kubeconfig, a.context) if a.action != "print" or a.kubeconfig else None
    try:
        objs = install.install_objects(targets.for_install(s, kube), subject) + service
        if a.action == "print":
            sys.stdout.write(yaml.safe_dump_all(objs, sort_keys=False))
            return 0
        return _act(a.action, kube, objs)
    except ApiException as e:
        if e.status in (401, 403):
            print(f"{a.action}: the API server refused ({e.status} {e.reason}): this needs an administrator's "
                  "kubeconfig (--kubeconfig), not the pipeline's", file=sys.stderr)
            return 3
        raise


def _act(action: str, kube, objs: list[dict]) -> int:
    if action == "check":
        problems = [p for o in objs for p in install.drift(
            o, kube.get(o["apiVersion"], o["kind"], o["metadata"]["name"], o["metadata"].get("namespace")))]
        print("\n".join(problems) or f"all {len(objs)} install objects as wanted")
        return 1 if problems else 0
    changed = apply(kube, objs)
    print(f"{len(changed)} of {len(objs)} install objects changed" + "".join(f"\n  {c}" for c in changed))
    return 0


def apply(kube, objs: list[dict]) -> list[str]:
    """Server-side apply as `netviz-install` what differs from the live object; returns "kind ns/name:
    action" for what changed."""
    out = []
    for o in objs:
        res = kube.resource(o["apiVersion"], o["kind"])
        meta = o["metadata"]
        before = kube.get(o["apiVersion"], o["kind"], meta["name"], meta.get("namespace"))
        # As wanted already: no request at all. A no-op apply is not always a no-op: the API server
        # rewrote a ValidatingAdmissionPolicy on every apply (its status manager's entry reordered).
        if before is not None and install.contains(before, o):
            continue
        after = res.server_side_apply(body=o, name=meta["name"], namespace=meta.get("namespace"),
                                      field_manager=FIELD_MANAGER, force_conflicts=True).to_dict()
        rv_before = (before or {}).get("metadata", {}).get("resourceVersion")
        if rv_before != after["metadata"]["resourceVersion"]:
            out.append(f"{o['kind']} {meta.get('namespace', '') + '/' if meta.get('namespace') else ''}{meta['name']}: "
                       f"{'created' if before is None else 'updated'}")
    return out


if __name__ == "__main__":
    sys.exit(main())
