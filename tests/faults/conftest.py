"""Fault-suite harness: the deployed pipeline on the lab, the health sensor ticked like the daemon
would, and the runs it requests executed in-process (the same job and assets the daemon launches).

Each fault records time to detect and time to recover in bench-results/faults.json; docs/operating.md's
"What it survives" table comes from that file.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import pytest
import yaml

from netviz_lab import settings as lab_settings
from netviz_lab.lab import Lab

RESULTS = Path(__file__).resolve().parents[2] / "bench-results" / "faults.json"
TICK_S = 2.0


@dataclass
class Healer:
    instance: dg.DagsterInstance
    cursor: str | None = None
    runs: list[dict] = field(default_factory=list)

    def tick(self):
        from netviz_pipeline.definitions import defs
        from netviz_pipeline.sensors import flow_freshness

        with dg.build_sensor_context(instance=self.instance, resources=dict(defs.resources),
                                     cursor=self.cursor) as ctx:
            result = flow_freshness(ctx)
        self.cursor = result.cursor
        for rr in result.run_requests or []:
            keys = [k.to_user_string() for k in rr.asset_selection]
            res = defs.resolve_job_def("netviz_deploy").execute_in_process(
                asset_selection=list(rr.asset_selection), instance=self.instance, tags=rr.tags,
                partition_key=rr.partition_key, raise_on_error=False)
            self.runs.append({"assets": keys, "success": res.success})
        return result

    def until(self, predicate, timeout: float, what: str) -> float:
        """Tick until predicate(result) holds; return seconds taken. Fails the test on timeout."""
        t0 = time.monotonic()
        while True:
            result = self.tick()
            if predicate(result):
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                pytest.fail(f"{what} not seen within {timeout:.0f}s; last evaluations: "
                            f"{[(e.check_name, e.passed, {k: v.value for k, v in e.metadata.items()}) for e in result.asset_events]}; "
                            f"runs: {self.runs}")
            time.sleep(TICK_S)


def passed(result, check: str) -> bool:
    return all(e.passed for e in result.asset_events if e.check_name == check)


def record(fault: str, **figures) -> None:
    RESULTS.parent.mkdir(exist_ok=True)
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    data[fault] = {k: (round(v, 1) if isinstance(v, float) else v) for k, v in figures.items()}
    RESULTS.write_text(json.dumps(data, indent=1, sort_keys=True))


COLLECTOR_DOWN_FOR_S = 30


@pytest.fixture(scope="session")
def fault_config(lab: Lab, tmp_path_factory) -> Path:
    """The lab's settings with short freshness windows so faults are seen in seconds, not minutes."""
    cfg = yaml.safe_load(lab_settings.render(lab))
    cfg["checks"]["freshness"] = {"netflow_max_age_seconds": 12, "caretta_max_age_seconds": 20}
    cfg["prometheus"]["scrape_interval_seconds"] = 5  # a 12 s window needs two samples in it
    # the setting users tune their paging with: the alert test proves the rule, not 2 min of waiting
    cfg["prometheus"]["alert_for_seconds"] = {"NetvizCollectorDown": COLLECTOR_DOWN_FOR_S}
    cfg["checks"]["deadline_seconds"] = 60
    path = tmp_path_factory.mktemp("faults") / "netviz.yaml"
    path.write_text(yaml.safe_dump(cfg))
    os.environ["NETVIZ_CONFIG"] = str(path)
    yield path
    os.environ.pop("NETVIZ_CONFIG", None)


@pytest.fixture(scope="session")
def deployed(fault_config: Path):
    from netviz_pipeline.definitions import defs

    with dg.instance_for_test() as instance:
        res = defs.resolve_job_def("netviz_deploy").execute_in_process(instance=instance, raise_on_error=False)
        assert res.success, [e.message for e in res.all_events if e.is_failure]
        yield instance


@pytest.fixture
def healer(deployed) -> Healer:
    h = Healer(deployed)
    h.until(lambda r: all(e.passed for e in r.asset_events), 90, "a healthy system before the fault")
    return h
