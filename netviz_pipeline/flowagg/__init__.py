"""Flow aggregator: GoFlow2 JSON records -> bounded Prometheus series (see flowagg.py).

`flowagg.py` is a standalone, stdlib-only program: the pipeline ships its source in a ConfigMap and
runs it in a stock `python:3.x-alpine` sidecar of the GoFlow2 pod. Nothing else in this package may
be imported by it.
"""
from __future__ import annotations

from pathlib import Path

SOURCE = Path(__file__).with_name("flowagg.py")


def source() -> str:
    return SOURCE.read_text()
