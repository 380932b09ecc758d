from __future__ import annotations

import pytest

from netviz_pipeline.preflight import blocks_rollout, caretta_preflight, mebibytes, parse_kernel_version


def node(name, kernel, os_name="linux"):
    return {"metadata": {"name": name}, "status": {"nodeInfo": {"kernelVersion": kernel, "operatingSystem": os_name}}}


@pytest.mark.parametrize("text,expected", [
    ("6.1.0-18-amd64", (6, 1, 0)), ("5.10.162+", (5, 10, 162)), ("4.14.355-275.582.amzn2.x86_64", (4, 14, 355)),
    ("6.18", (6, 18, 0)), ("5.15.0-1051-azure", (5, 15, 0)), ("", None), ("unknown", None), (None, None)])
def test_parse_kernel_version(text, expected):
    assert parse_kernel_version(text) == expected


def test_oom_trap_on_6_1_with_upstream_limit():
    (f,) = caretta_preflight([node("n1", "6.1.0-18-amd64")], "300Mi")
    assert f.severity == "error" and "memory_limit" in f.message and f.node == "n1"
    assert blocks_rollout([f], "block") and not blocks_rollout([f], "warn")


def test_default_limit_passes_on_new_kernels():
    assert caretta_preflight([node("n1", "6.18.0"), node("n2", "6.1.0")], "512Mi") == []


def test_old_kernel_unaffected_by_memcg_trap():
    assert caretta_preflight([node("n1", "5.15.0-91-generic")], "300Mi") == []


def test_too_old_kernel_is_an_error():
    (f,) = caretta_preflight([node("n1", "4.9.0")], "512Mi")
    assert f.severity == "error" and "4.14" in f.message


def test_btf_unlikely_warnings():
    fs = caretta_preflight([node("old", "4.19.0-20"), node("dd", "6.6.16-linuxkit"),
                            node("wsl", "5.15.153.1-microsoft-standard-WSL2")], "512Mi")
    assert [(f.node, f.severity) for f in fs] == [("old", "warning"), ("dd", "warning"), ("wsl", "warning")]
    assert not blocks_rollout(fs, "block")


def test_unknown_kernel_and_windows():
    fs = caretta_preflight([node("kwok", ""), node("win", "10.0.17763", "windows")], "512Mi")
    assert [(f.node, f.severity) for f in fs] == [("kwok", "warning"), ("win", "info")]


def test_limit_units():
    assert caretta_preflight([node("n", "6.1.0")], "0.5Gi") == []
    assert caretta_preflight([node("n", "6.1.0")], "400M")[0].severity == "error"


@pytest.mark.parametrize(("quantity", "mib"), [("512Mi", 512.0), ("0.5Gi", 512.0), ("1G", 1e9 / 2**20),
                                               ("1048576", 1.0), ("100m", 0.1 / 2**20)])
def test_mebibytes_as_kubernetes_parses_quantities(quantity, mib):
    assert mebibytes(quantity) == pytest.approx(mib)


def test_mebibytes_refuses_what_is_no_quantity():
    with pytest.raises(ValueError):
        mebibytes("lots")
