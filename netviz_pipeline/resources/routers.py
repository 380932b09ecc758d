"""The routers as a Dagster resource: opens a host-key-verified SSH session per configured router."""
from __future__ import annotations

import dagster as dg

from ..settings import Router
from .config import NetvizConfig
from .router import RouterSession


class RoutersResource(dg.ConfigurableResource):
    config: NetvizConfig

    def session(self, router: Router) -> RouterSession:
        """Use as a context manager: `with routers.session(r) as ssh: ...`."""
        return RouterSession(router)
