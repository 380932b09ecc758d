"""netviz: deploys and keeps verifying network-traffic visualisation (Caretta, GoFlow2, softflowd,
Prometheus, Grafana) as a Dagster pipeline. `defs` is the code location."""
from .definitions import defs

__all__ = ["defs"]
