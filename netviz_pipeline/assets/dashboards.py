"""Plan tasks 2 and 6: our dashboards as ConfigMaps where Grafana's sidecar finds them.

The sidecar's label and namespaces are read from the Grafana Deployment when one is in the cluster
(they override settings, with a warning when they differ), once per run or sensor tick
(ClusterResource.grafana_sidecar); when grafana.url and a token are set, Grafana's HTTP API must also
list the dashboard by uid.
"""

import json

import dagster as dg

from ..findings import Finding
from ..grafana_sidecar import SidecarTarget
from ..render import namespace as render_namespace
from ..render.dashboards import configmap_name, dashboard_configmaps
from ..resources.cluster import ClusterResource
from ..resources.grafana import GrafanaResource
from ..settings import Settings, url_join
from . import OWNERS
from .caretta import caretta
from .goflow2 import goflow2
from .report import apply_metadata
from .routers import router_softflowd

GROUP = "dashboards"


def effective_settings(cluster: ClusterResource, context=None) -> tuple[Settings, SidecarTarget | None]:
    s = cluster.settings
    sidecar = cluster.grafana_sidecar
    if sidecar is None:
        return s, None
    g = s.grafana
    ns = g.dashboards_namespace if sidecar.watches(g.dashboards_namespace) else (sidecar.namespaces or ("default",))[0]
    changed = (sidecar.label_key, sidecar.label_value, ns) != (g.sidecar_label_key, g.sidecar_label_value,
                                                                g.dashboards_namespace)
    if changed and context is not None:
        context.log.warning(f"Grafana sidecar in {sidecar.deployment} loads {sidecar.label_key}="
                            f"{sidecar.label_value} from {ns}; using that instead of the settings")
    return s.model_copy(update={"grafana": g.model_copy(update={
        "sidecar_label_key": sidecar.label_key, "sidecar_label_value": sidecar.label_value,
        "dashboards_namespace": ns})}), sidecar


def _apply_dashboard(stem: str, context, cluster: ClusterResource) -> dg.MaterializeResult:
    s, sidecar = effective_settings(cluster, context)
    cms = [cm for cm in dashboard_configmaps(s) if cm["metadata"]["name"] == configmap_name(stem)]
    # the namespace is an install object: verified (it must exist), never created by the pipeline
    outcomes = cluster.apply([render_namespace(s.grafana.dashboards_namespace)] + cms)
    uid = json.loads(next(iter(cms[0]["data"].values())))["uid"]
    return dg.MaterializeResult(metadata=apply_metadata(outcomes) | {
        "configmap": dg.MetadataValue.text(f"{s.grafana.dashboards_namespace}/{configmap_name(stem)}"),
        "sidecar": dg.MetadataValue.text(sidecar.deployment if sidecar else "no Grafana Deployment found; "
                                         "label and namespace from settings"),
        "dashboard_uid": dg.MetadataValue.text(uid),
        **({"grafana_url": dg.MetadataValue.url(dashboard_url(s.grafana.url, uid))} if s.grafana.url else {}),
    })


def dashboard_url(grafana_url: str, uid: str) -> str:
    """The dashboard's page in Grafana, also when Grafana is served under a sub-path (root_url)."""
    return url_join(grafana_url, f"d/{uid}")


def _discoverable(stem: str, cluster: ClusterResource, grafana: GrafanaResource) -> Finding:
    """Where the Grafana sidecar will load it. Details: `problems` (list) and `checked_via`."""
    s, sidecar = effective_settings(cluster)
    g = s.grafana
    wanted = next(c for c in dashboard_configmaps(s) if c["metadata"]["name"] == configmap_name(stem))
    cm = cluster.kube.get("v1", "ConfigMap", configmap_name(stem), g.dashboards_namespace)
    problems = _configmap_problems(s, wanted, cm)
    if sidecar and not sidecar.watches(g.dashboards_namespace):
        problems.append(f"the sidecar of {sidecar.deployment} does not watch {g.dashboards_namespace}")
    api = grafana.find_dashboard(json.loads((cm or {}).get("data", {}).get(f"{stem}.json", "{}")).get("uid", "")) \
        if grafana.configured and cm else None
    if grafana.configured and cm and api is None:
        problems.append("Grafana's HTTP API does not list the dashboard (sidecar not loading it?)")
    return Finding(f"dashboard:{stem}", not problems, "; ".join(problems) or "where the sidecar loads it",
                   {"problems": problems,
                    "checked_via": "Grafana HTTP API and ConfigMap" if grafana.configured else "ConfigMap"})


def _check_result(f: Finding) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=f.healthy, severity=dg.AssetCheckSeverity.ERROR,
                               metadata={"problems": dg.MetadataValue.text("; ".join(f.details["problems"]) or "none"),
                                         "checked_via": dg.MetadataValue.text(f.details["checked_via"])})


@dg.asset(group_name=GROUP, deps=[caretta], kinds={"kubernetes", "grafana"}, owners=OWNERS,
          description="Changes the cluster: a ConfigMap with the Caretta service-map dashboard "
                      "(dashboards/caretta.json) in Grafana's namespace, labelled so Grafana's sidecar loads it")
def caretta_dashboard(context: dg.AssetExecutionContext, cluster: ClusterResource) -> dg.MaterializeResult:
    return _apply_dashboard("caretta", context, cluster)


@dg.asset(group_name=GROUP, deps=[goflow2, router_softflowd], kinds={"kubernetes", "grafana"}, owners=OWNERS,
          description="Changes the cluster: a ConfigMap with the flows dashboard (dashboards/goflow2.json) in "
                      "Grafana's namespace, labelled so Grafana's sidecar loads it")
def goflow2_dashboard(context: dg.AssetExecutionContext, cluster: ClusterResource) -> dg.MaterializeResult:
    return _apply_dashboard("goflow2", context, cluster)


@dg.asset_check(asset=caretta_dashboard, blocking=True, description="Where the Grafana sidecar will load it")
def caretta_dashboard_discoverable(cluster: ClusterResource, grafana: GrafanaResource) -> dg.AssetCheckResult:
    return _check_result(_discoverable("caretta", cluster, grafana))


@dg.asset_check(asset=goflow2_dashboard, blocking=True, description="Where the Grafana sidecar will load it")
def goflow2_dashboard_discoverable(cluster: ClusterResource, grafana: GrafanaResource) -> dg.AssetCheckResult:
    return _check_result(_discoverable("goflow2", cluster, grafana))


def _configmap_problems(s: Settings, wanted: dict, live: dict | None) -> list[str]:
    """How a live dashboard ConfigMap differs from the rendered one (empty: as deployed)."""
    g, meta = s.grafana, wanted["metadata"]
    if live is None:
        return [f"ConfigMap {meta['namespace']}/{meta['name']} missing"]
    problems = []
    if (live["metadata"].get("labels") or {}).get(g.sidecar_label_key) != g.sidecar_label_value:
        problems.append(f"ConfigMap lacks the sidecar label {g.sidecar_label_key}={g.sidecar_label_value}")
    if live.get("data") != wanted["data"]:
        problems.append("ConfigMap content differs from dashboards/ (edited by hand?)")
    return problems


def dashboard_drift(cluster: ClusterResource) -> list[Finding]:
    """Per dashboard (subject `dashboard:<stem>`): is its ConfigMap as rendered, else what is wrong (for
    the health sensor). Details: `problems` (list)."""
    s, _ = effective_settings(cluster)
    out = []
    for cm in dashboard_configmaps(s):
        stem = next(iter(cm["data"])).removesuffix(".json")
        live = cluster.kube.get("v1", "ConfigMap", cm["metadata"]["name"], cm["metadata"]["namespace"])
        problems = _configmap_problems(s, cm, live)
        out.append(Finding(f"dashboard:{stem}", not problems, "; ".join(problems) or "as deployed",
                           {"problems": problems}))
    return out
