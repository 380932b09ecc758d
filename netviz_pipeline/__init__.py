"""netviz: deploys and keeps verifying network-traffic visualisation (Caretta, GoFlow2, softflowd,
Prometheus, Grafana) as a Dagster pipeline. `defs` is the code location, loaded on first use: importing
a part (netviz_pipeline.settings, say) must not load Dagster and every client library with it."""

__all__ = ["defs"]


def __getattr__(name: str):
    if name == "defs":
        from .definitions import defs

        globals()["defs"] = defs
        return defs
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), "defs"})
