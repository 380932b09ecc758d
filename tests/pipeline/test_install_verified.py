"""The pipeline verifies what the administrator installed and never writes it: a widened or missing
install object stops the deploy before any change, naming the object and the fix."""
from __future__ import annotations

import os

import dagster as dg
import pytest

from netviz_lab import clusterapi
from netviz_lab import settings as lab_settings
from netviz_lab.lab import Lab

pytestmark = pytest.mark.lab
RBAC = "rbac.authorization.k8s.io/v1"


def _materialize_caretta(config):
    from netviz_pipeline.assets.caretta import caretta
    from netviz_pipeline.definitions import defs

    os.environ["NETVIZ_CONFIG"] = str(config)
    try:
        return dg.materialize([caretta], resources=dict(defs.resources), raise_on_error=False)
    finally:
        os.environ.pop("NETVIZ_CONFIG")


def _failure_text(res) -> str:
    return " ".join(str(e.event_specific_data) for e in res.all_events if e.is_failure)


def test_drifted_or_missing_install_objects_stop_the_deploy_and_say_what(lab: Lab, tmp_path):
    config = tmp_path / "netviz.yaml"
    config.write_text(lab_settings.render(lab))
    admin = clusterapi.dynamic(lab)
    roles = admin.resources.get(api_version=RBAC, kind="ClusterRole")
    bindings = admin.resources.get(api_version=RBAC, kind="ClusterRoleBinding")
    ds = admin.resources.get(api_version="apps/v1", kind="DaemonSet")
    try:
        # someone widened Caretta's ClusterRole (the escalation the old grant allowed)
        live = roles.get(name="caretta").to_dict()
        roles.patch(name="caretta", content_type="application/merge-patch+json", body={
            "rules": live["rules"] + [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]})
        # ... and Caretta's binding is gone
        bindings.delete(name="caretta")
        before = ds.get(name="caretta", namespace="caretta").metadata.resourceVersion \
            if ds.get(namespace="caretta").items else None
        res = _materialize_caretta(config)
        assert not res.success
        text = _failure_text(res)
        assert "ClusterRole caretta: extra rules" in text and "secrets" in text, text[:2000]
        assert "ClusterRoleBinding caretta is missing" in text, text[:2000]
        assert "python -m netviz_pipeline.admin apply" in text
        after = ds.get(name="caretta", namespace="caretta").metadata.resourceVersion \
            if ds.get(namespace="caretta").items else None
        assert after == before, "nothing may be applied while install objects are wrong"
        assert bindings.get(label_selector="app=caretta").items == []  # and the pipeline did not recreate it
    finally:
        changed = clusterapi.install(lab)  # the administrator puts it right
    assert {"ClusterRole caretta: updated", "ClusterRoleBinding caretta: created"} <= set(changed), changed
    assert _materialize_caretta(config).success
