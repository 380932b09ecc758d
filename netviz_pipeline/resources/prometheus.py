"""Prometheus as a resource: instant/range queries, targets, loaded rules, and the lifecycle reload (HTTP API)."""
from __future__ import annotations

import time
from functools import cached_property

import dagster as dg
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from .config import NetvizConfig


class PrometheusError(RuntimeError):
    pass


class PrometheusResource(dg.ConfigurableResource):
    config: NetvizConfig
    timeout_seconds: float = 10.0

    @cached_property
    def _session(self) -> requests.Session:
        s = requests.Session()
        retry = Retry(total=3, backoff_factor=0.3, status_forcelist=(502, 503, 504), allowed_methods=("GET",))
        s.mount("http://", HTTPAdapter(max_retries=retry))
        s.mount("https://", HTTPAdapter(max_retries=retry))
        return s

    @property
    def url(self) -> str:
        return str(self.config.settings.prometheus.url).rstrip("/")

    def _api(self, path: str, **params) -> dict:
        try:
            resp = self._session.get(f"{self.url}{path}", params=params, timeout=self.timeout_seconds)
        except requests.RequestException as exc:
            raise PrometheusError(f"Prometheus at {self.url} unreachable: {exc}") from exc
        try:
            body = resp.json()
        except ValueError:
            raise PrometheusError(f"Prometheus {path} answered {resp.status_code} with non-JSON: "
                                  f"{resp.text[:200]!r}") from None
        if not isinstance(body, dict) or body.get("status") != "success" or "data" not in body:
            raise PrometheusError(f"Prometheus {path} failed: {body.get('error') if isinstance(body, dict) else body!r}")
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        data = self._api("/api/v1/query", query=expr)
        return data.get("result") or [] if data.get("resultType") in ("vector", "matrix") else \
            ([{"metric": {}, "value": data["result"]}] if data.get("result") else [])

    def query_range(self, expr: str, seconds: int = 900, step: int = 15) -> list[dict]:
        end = time.time()
        return self._api("/api/v1/query_range", query=expr, start=end - seconds, end=end, step=step).get("result") or []

    def targets(self) -> list[dict]:
        return self._api("/api/v1/targets", state="active").get("activeTargets") or []

    def rules(self) -> list[dict]:
        """The alerting rule groups Prometheus has loaded (each with `name`, `file`, `rules`)."""
        return self._api("/api/v1/rules", type="alert").get("groups") or []

    def reload(self, reload_url: str) -> None:
        """POST /-/reload. A config Prometheus rejects answers 500 and the old config stays."""
        try:
            resp = self._session.post(reload_url, timeout=self.timeout_seconds * 3)
        except requests.RequestException as exc:
            raise PrometheusError(f"Prometheus reload at {reload_url} failed: {exc}") from exc
        if resp.status_code != 200:
            raise PrometheusError(f"Prometheus refused the new config ({resp.status_code}): {resp.text.strip()[:500]}")
