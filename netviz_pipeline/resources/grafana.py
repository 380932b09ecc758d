"""Grafana's HTTP API, used only when settings give a URL and a token (env var or file)."""
from __future__ import annotations

import os
from functools import cached_property

import dagster as dg
import requests

from .config import NetvizConfig


class GrafanaResource(dg.ConfigurableResource):
    config: NetvizConfig

    @property
    def configured(self) -> bool:
        g = self.config.settings.grafana
        return bool(g.url and (g.token_env or g.token_file))

    @cached_property
    def _session(self) -> requests.Session:
        g = self.config.settings.grafana
        token = os.environ[g.token_env] if g.token_env else g.token_file.read_text().strip()
        s = requests.Session()
        s.headers["Authorization"] = f"Bearer {token}"  # never logged: only the session holds it
        return s

    def find_dashboard(self, uid: str) -> dict | None:
        url = f"{str(self.config.settings.grafana.url).rstrip('/')}/api/dashboards/uid/{uid}"
        resp = self._session.get(url, timeout=10)
        if resp.status_code == 404:
            return None
        resp.raise_for_status()
        return resp.json()
