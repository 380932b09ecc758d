"""The deployment's settings as a resource: the YAML file named by NETVIZ_CONFIG, validated once."""
from __future__ import annotations

from functools import cached_property

import dagster as dg

from .. import loading
from ..settings import Settings


class NetvizConfig(dg.ConfigurableResource):
    """Path of the settings YAML. Secrets are never in it: only env var names and file paths."""

    config_path: str

    @cached_property
    def settings(self) -> Settings:
        return loading.load(self.config_path)
