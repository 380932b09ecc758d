"""Plan tasks 2 and 6: our dashboards as ConfigMaps where Grafana's sidecar finds them.

The sidecar's label and namespaces are read from the Grafana Deployment when one is in the cluster
(they override settings, with a warning when they differ), once per run or sensor tick
(ClusterResource.resolved, targets/grafana.py); when grafana.url and a token are set, Grafana's HTTP API must also
list the dashboard by uid.
"""

import json

import dagster as dg

from ..checks.dashboards import discoverable
from ..findings import Finding
from ..render import namespace as render_namespace
from ..render.dashboards import configmap_name, dashboard_configmaps
from ..resources.cluster import ClusterResource
from ..resources.grafana import GrafanaResource
from ..settings import url_join
from . import OWNERS
from .caretta import caretta
from .goflow2 import goflow2
from .report import apply_metadata
from .routers import router_softflowd

GROUP = "dashboards"


def resolved_dashboards(cluster: ClusterResource, context=None):
    """The run's settings with the grafana section as the cluster's sidecar shows it
    (ClusterResource.resolved, read once per run); warns when that overrides the settings."""
    r = cluster.resolved
    if r.grafana.overrides_settings and context is not None:
        context.log.warning(f"{r.grafana.describe()}; using that instead of the settings")
    return r


def _apply_dashboard(stem: str, context, cluster: ClusterResource) -> dg.MaterializeResult:
    r = resolved_dashboards(cluster, context)
    s = r.settings
    cms = [cm for cm in dashboard_configmaps(s) if cm["metadata"]["name"] == configmap_name(stem)]
    # the namespace is an install object: verified (it must exist), never created by the pipeline
    outcomes = cluster.apply([render_namespace(s.grafana.dashboards_namespace)] + cms)
    uid = json.loads(next(iter(cms[0]["data"].values())))["uid"]
    return dg.MaterializeResult(metadata=apply_metadata(outcomes) | {
        "configmap": dg.MetadataValue.text(f"{s.grafana.dashboards_namespace}/{configmap_name(stem)}"),
        "sidecar": dg.MetadataValue.text(r.grafana.sidecar.deployment if r.grafana.sidecar
                                         else r.grafana.describe()),
        "dashboard_uid": dg.MetadataValue.text(uid),
        **({"grafana_url": dg.MetadataValue.url(dashboard_url(s.grafana.url, uid))} if s.grafana.url else {}),
    })


def dashboard_url(grafana_url: str, uid: str) -> str:
    """The dashboard's page in Grafana, also when Grafana is served under a sub-path (root_url)."""
    return url_join(grafana_url, f"d/{uid}")


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
    return _check_result(discoverable("caretta", cluster.resolved, cluster.kube, grafana))


@dg.asset_check(asset=goflow2_dashboard, blocking=True, description="Where the Grafana sidecar will load it")
def goflow2_dashboard_discoverable(cluster: ClusterResource, grafana: GrafanaResource) -> dg.AssetCheckResult:
    return _check_result(discoverable("goflow2", cluster.resolved, cluster.kube, grafana))
