from __future__ import annotations

import pytest

from netviz_pipeline.checks.preflight import (blocks_rollout, caretta_preflight, mebibytes, overridden, parse_kernel_version,
                                      probe_findings, recorded_findings)
from netviz_pipeline.render.preflight_probe import parse_answer, probe_result


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


# -- the probe on the node (render/preflight_probe.py) and what it means (probe_findings) ------------

KALLSYMS = ("0000000000000000 T _stext\n0000000000000000 t unregister_kprobe_x\n"
            "0000000000000000 T register_kprobes\n0000000000000000 T tcp_data_queue\n")
WITH_KPROBES = KALLSYMS + "0000000000000000 T register_kprobe\n0000000000000000 t kprobe_mod\t[mod]\n"


def answer(kprobes=False, btf=True, kernel="6.18.0"):
    return {"kernel": kernel, "kprobes": kprobes, "btf": btf, "source": "/proc/kallsyms", "node": "n1"}


def test_probe_reads_kallsyms_for_exactly_register_kprobe():
    assert probe_result(KALLSYMS, None, True, "6.18.0", "n1") == {
        "kernel": "6.18.0", "kprobes": False, "btf": True, "source": "/proc/kallsyms", "node": "n1"}
    assert probe_result(WITH_KPROBES, None, False, "6.1.0", "n2")["kprobes"] is True
    module = KALLSYMS + "ffffffffc0000000 t register_kprobe\t[some_module]\n"  # symbol field still exact
    assert probe_result(module, None, True, "k", "n")["kprobes"] is True


def test_probe_prefers_the_kernel_config_either_way():
    unset = "CONFIG_HAVE_KPROBES=y\n# CONFIG_KPROBES is not set\nCONFIG_BPF=y\n"
    r = probe_result(WITH_KPROBES, unset, True, "k", "n")
    assert (r["kprobes"], r["source"]) == (False, "/proc/config.gz")  # config wins over kallsyms
    assert probe_result(KALLSYMS, "CONFIG_BPF=y\nCONFIG_KPROBES=y\n", True, "k", "n")["kprobes"] is True
    assert probe_result(None, "CONFIG_HAVE_KPROBES=y\n", True, "k", "n")["kprobes"] is False


def test_probe_with_nothing_readable_says_unknown():
    r = probe_result(None, None, True, "k", "n")
    assert r["kprobes"] is None and "neither" in r["source"]


def test_parse_answer_takes_the_json_line():
    line = '{"kernel": "6.18.0", "kprobes": false, "btf": true, "source": "/proc/config.gz", "node": "n1"}'
    assert parse_answer(f"some warning\n{line}\n")["kprobes"] is False
    assert parse_answer("") is None and parse_answer('{"other": 1}\nnot json') is None


def test_probe_findings_per_node():
    nodes = [node("off", "6.18.0"), node("ok", "6.1.0"), node("nobtf", "5.4.0"), node("kwok", "6.1.0"),
             node("gone", "6.1.0"), node("unknown", "6.1.0"), node("win", "10.0", "windows")]
    results = {"off": answer(False), "ok": answer(True), "nobtf": answer(True, btf=False, kernel="5.4.0"),
               "kwok": "its probe pod's log cannot be read (500)", "unknown": answer(None)}
    fs = probe_findings(results, nodes)
    assert [(f.node, f.severity, f.check) for f in fs] == [
        ("off", "error", "kprobes"), ("nobtf", "warning", ""), ("kwok", "warning", ""), ("gone", "warning", ""),
        ("unknown", "warning", "")]
    assert fs[0].message == ("kernel 6.18.0 has no kprobes (CONFIG_KPROBES unset): Caretta's probe (a kprobe on "
                             "tcp_data_queue) cannot attach; its map stays empty")
    assert "log cannot be read (500)" in fs[2].message and "no probe pod ran there" in fs[3].message


def test_blocking_rules_with_the_probe():
    fs = probe_findings({"n1": answer(False), "n2": answer(False)}, [node("n1", "6.18.0"), node("n2", "6.18.0")])
    assert blocks_rollout(fs, "block") and not blocks_rollout(fs, "warn") and not blocks_rollout(fs, "standin")
    assert overridden(fs, "standin") == ["n1", "n2"] and overridden(fs, "warn") == overridden(fs, "block") == []
    memory = caretta_preflight([node("n1", "6.18.0")], "300Mi")  # a stand-in does not excuse other errors
    assert blocks_rollout(fs + memory, "standin")
    warnings_only = probe_findings({"n1": answer(True, btf=False)}, [node("n1", "6.18.0"), node("n2", "6.18.0")])
    assert not blocks_rollout(warnings_only, "block")


def test_recorded_findings_repeat_the_kprobes_errors():
    (f,) = recorded_findings(["n1"], [node("n1", "6.18.0"), node("n2", "6.1.0")])
    assert (f.node, f.severity, f.check) == ("n1", "error", "kprobes") and "kernel 6.18.0 has no kprobes" in f.message
