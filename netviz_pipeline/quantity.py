"""Kubernetes resource quantities ("512Mi", "150m", "1.5G") to numbers, so settings and preflight can
compare a memory limit with what the kernel will charge instead of comparing strings."""
from __future__ import annotations

import re
from decimal import Decimal

_SUFFIX = {
    "": 1, "m": Decimal("0.001"), "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50,
}
_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)(m|k|M|G|T|P|Ki|Mi|Gi|Ti|Pi)?")


def parse_quantity(text: str) -> Decimal:
    """Value in base units (bytes for memory, cores for CPU). ValueError names the fix."""
    m = _RE.fullmatch(str(text).strip())
    if not m:
        raise ValueError(f"{text!r} is not a Kubernetes quantity (e.g. 512Mi, 1Gi, 150m)")
    return Decimal(m.group(1)) * _SUFFIX[m.group(2) or ""]


def mebibytes(text: str) -> float:
    return float(parse_quantity(text) / 2**20)
