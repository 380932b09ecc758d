"""File mode: Prometheus outside the cluster, configured by a file on the pipeline's host.

The netviz jobs are merged into the config file (the user's own jobs kept), the alert rules go to their
own rule file listed in `rule_files`, then POST /-/reload. A reload Prometheus refuses puts both files
back, so what is in force is what the files say. With `discovery: file_sd` (Debian's Prometheus has no
kubernetes_sd) the pipeline lists the pods and writes the target files itself.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..render import alerts
from ..render.scrape import file_sd_jobs, file_sd_targets, merge_scrape_configs, pod_jobs, pod_scrape_jobs
from ..settings import PromFile, Settings
from .prometheus import Applied, ApplyError, PrometheusTarget


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.netviz-tmp")
    tmp.write_text(text)
    os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o644)
    os.replace(tmp, path)


@dataclass(frozen=True)
class FileTarget(PrometheusTarget):
    mode = "file"
    file: PromFile

    @classmethod
    def from_settings(cls, s: Settings) -> FileTarget:
        return cls(s.prometheus.file)

    @classmethod
    def section_problem(cls, s: Settings) -> str | None:
        return None if s.prometheus.file else "prometheus.mode: file needs a prometheus.file section"

    @classmethod
    def claim(cls, s: Settings, kube) -> FileTarget | None:
        return cls(s.prometheus.file) if s.prometheus.file else None

    def scrape_objects(self, s: Settings, exporters: list[str] | None = None) -> list[dict]:
        f = self.file
        if f.discovery == "file_sd":
            return file_sd_jobs(s, str(f.targets_dir), exporters)
        return pod_scrape_jobs(s, exporters, str(f.kubernetes_sd_kubeconfig) if f.kubernetes_sd_kubeconfig else None)

    def _write_targets(self, s: Settings, cluster) -> list[str]:
        changed = []
        self.file.targets_dir.mkdir(parents=True, exist_ok=True)
        for job, ns, app, port in pod_jobs(s):
            groups = file_sd_targets(cluster.kube.list("v1", "Pod", ns, label_selector=f"app={app}"), app, port)
            path = self.file.targets_dir / f"{job}.json"
            text = json.dumps(groups, indent=1, sort_keys=True) + "\n"
            if not path.exists() or path.read_text() != text:
                write_atomic(path, text)  # file_sd is re-read by Prometheus; no reload needed
                changed.append(str(path))
        return changed

    def apply(self, s: Settings, cluster, prom, exporters: list[str]) -> Applied:
        f = self.file
        changed = self._write_targets(s, cluster) if f.discovery == "file_sd" else []
        old = f.config_path.read_text()
        new, jobs_changed = merge_scrape_configs(old, self.scrape_objects(s, exporters))
        new, listed = alerts.merge_rule_files(new, str(f.rules_file))
        config_changed = jobs_changed or listed
        rules = f.rules_file
        old_rules = rules.read_text() if rules.exists() else None
        rules_text = alerts.rule_file_text(s)
        rules_changed = old_rules != rules_text
        if rules_changed:
            rules.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(rules, rules_text)
        if config_changed:
            write_atomic(f.config_path, new)
        if config_changed or rules_changed:  # Prometheus re-reads rule files only on a reload too
            try:
                prom.reload(s.prometheus.reload_url)
            except Exception as exc:  # noqa: BLE001 - refused or unanswered, the files go back either way
                raise ApplyError(f"{exc}; {' and '.join(self._undo(old, old_rules, config_changed, rules_changed))}, "
                                 "so Prometheus and the files agree; re-run when Prometheus answers") from exc
            changed += [str(p) for p, c in ((f.config_path, config_changed), (rules, rules_changed)) if c]
        return Applied(changed=tuple(changed),
                       summary=("updated " + ", ".join(changed)) if changed
                       else "converged: config, rules and targets unchanged, no reload",
                       paths={"config_path": str(f.config_path), "rules_path": str(rules)})

    def _undo(self, old: str, old_rules: str | None, config_changed: bool, rules_changed: bool) -> list[str]:
        """Both files back as they were; says what was done."""
        f, undone = self.file, []
        if config_changed:
            write_atomic(f.config_path, old)
            undone.append(f"{f.config_path} was restored to its previous content")
        if rules_changed:
            if old_rules is None:
                f.rules_file.unlink(missing_ok=True)
                undone.append(f"{f.rules_file} was removed (it did not exist before)")
            else:
                write_atomic(f.rules_file, old_rules)
                undone.append(f"{f.rules_file} was restored to its previous content")
        return undone

    def missing_rules(self, s: Settings) -> str:
        return f" (rule file {self.file.rules_file}, listed in rule_files)"

    def pod_problem(self, s: Settings) -> str | None:
        return ("prometheus: file mode edits a config file on the pipeline's host, which a pod cannot reach: use "
                "mode chart, operator or auto with a Prometheus in the cluster")
