"""Pinned versions, read from versions.env (the single source the Makefile also reads)."""
from __future__ import annotations

from pathlib import Path


def load() -> dict[str, str]:
    values: dict[str, str] = {}
    for line in (Path(__file__).with_name("versions.env")).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


VERSIONS = load()
KUBERNETES = VERSIONS["KUBERNETES_VERSION"]
ETCD = VERSIONS["ETCD_VERSION"]
KWOK = VERSIONS["KWOK_VERSION"]
GOFLOW2 = VERSIONS["GOFLOW2_VERSION"]
PROMETHEUS = VERSIONS["PROMETHEUS_VERSION"]
PROMETHEUS_OPERATOR = VERSIONS["PROMETHEUS_OPERATOR_VERSION"]
KAFKA = VERSIONS["KAFKA_VERSION"]
