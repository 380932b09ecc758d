"""Kubernetes resource quantities ("512Mi", "150m", "1.5G") to numbers, so settings and preflight can
compare a memory limit with what the kernel will charge instead of comparing strings. The parsing is
the kubernetes client's own (`kubernetes.utils.parse_quantity`); this adds an error that names the fix."""
from __future__ import annotations

from decimal import Decimal

from kubernetes.utils import parse_quantity as _k8s_parse_quantity


def parse_quantity(text: str) -> Decimal:
    """Value in base units (bytes for memory, cores for CPU). ValueError names the fix."""
    try:
        return _k8s_parse_quantity(str(text).strip())
    except (ValueError, ArithmeticError, TypeError):
        raise ValueError(f"{text!r} is not a Kubernetes quantity (e.g. 512Mi, 1Gi, 150m)") from None


def mebibytes(text: str) -> float:
    return float(parse_quantity(text) / 2**20)
