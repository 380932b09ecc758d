"""Flow aggregator: GoFlow2 JSON records -> bounded Prometheus series (see flowagg.py).

`flowagg.py` is a standalone, stdlib-only program: the pipeline ships its source in a ConfigMap and
runs it in a stock `python:3.x-alpine` sidecar of the GoFlow2 pod. It imports `names.py` (also
stdlib-only, shipped next to it); nothing else in this package may be imported by either.
"""
from __future__ import annotations

from pathlib import Path

SOURCE = Path(__file__).with_name("flowagg.py")
NAMES_SOURCE = Path(__file__).with_name("names.py")  # imported by flowagg.py from its own directory


def source() -> str:
    return SOURCE.read_text()


def sources() -> dict[str, str]:
    """Every file the aggregator runs, by file name (they ship together in one ConfigMap)."""
    return {SOURCE.name: source(), NAMES_SOURCE.name: NAMES_SOURCE.read_text()}
