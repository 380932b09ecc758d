"""make bench-flows: the flow aggregator against real GoFlow2 on this machine (figures for docs/benchmarks.md and docs/flow-metrics.md).

(a) GoFlow2 JSON production: the real goflow2 v2.2.1 binary listens on 127.0.0.1; this script blasts
    valid NetFlow v9 datagrams at it (a template like softflowd's, 30 flows per datagram, template
    re-sent every 64 datagrams) for a fixed time and counts the JSON records it writes, with
    goflow2's own CPU seconds (utime+stime from /proc) -> records per CPU-second.
(b) The aggregator fed the JSON lines GoFlow2 just produced (same run), in 64 KiB chunks as from the
    FIFO -> records per CPU-second; the ratio aggregator/GoFlow2 must be >= 1.
(c) Peak RSS of a separate aggregator process after 10 million distinct (src, dst) pairs.
(d) Heavy-hitter error against exact counts on a Zipf(1.1)-skewed stream.
Prints a table and writes it to bench-results/flows.txt. Bounded: about 2-3 minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import os
import platform
import random
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "netviz_pipeline" / "flowagg"))
import flowagg  # noqa: E402  (standalone module, stdlib only)

GOFLOW2 = os.environ.get("GOFLOW2_BIN", "/var/cache/netviz-lab/bin/goflow2-v2.2.1")
ELASTIFLOW_V9_PER_CORE = (4500, 5000)
# softflowd-like v9 template: (field type, length)
TEMPLATE = [(8, 4), (12, 4), (21, 4), (22, 4), (1, 4), (2, 4), (10, 2), (14, 2), (7, 2), (11, 2), (4, 1),
            (6, 1), (60, 1), (5, 1)]
REC = struct.Struct("!4s4sIIIIHHHHBBBB")
FLOWS_PER_DATAGRAM = 30
DATAGRAMS_PER_S = 3000


def free_port(kind=socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def zipf_pairs(n_pairs: int, s: float, seed: int):
    rnd = random.Random(seed)
    pairs = [(struct.pack("!I", (10 << 24) | rnd.randrange(1 << 24)), struct.pack("!I", (172 << 24) | (16 << 16) | rnd.randrange(1 << 16)))
             for _ in range(n_pairs)]
    weights = [1.0 / (i + 1) ** s for i in range(n_pairs)]
    return pairs, weights


def datagrams(count: int, seed: int = 1) -> list[bytes]:
    """Pre-built NetFlow v9 datagrams (the sender must not be the bottleneck)."""
    rnd = random.Random(seed)
    pairs, weights = zipf_pairs(20000, 1.1, seed)
    tmpl_body = struct.pack("!HH", 256, len(TEMPLATE)) + b"".join(struct.pack("!HH", t, ln) for t, ln in TEMPLATE)
    tmpl_set = struct.pack("!HH", 0, 4 + len(tmpl_body)) + tmpl_body
    out = []
    up = 1_000_000
    for seq in range(count):
        chosen = rnd.choices(pairs, weights, k=FLOWS_PER_DATAGRAM)
        recs = b"".join(REC.pack(src, dst, up, up - 500, rnd.randrange(60, 150000), rnd.randrange(1, 100),
                                 1, 2, rnd.randrange(32768, 61000), rnd.choice((443, 80, 53, 22, 8080)),
                                 rnd.choice((6, 6, 6, 17)), 0x1b, 4, 0) for src, dst in chosen)
        pad = (-len(recs)) % 4
        data_set = struct.pack("!HH", 256, 4 + len(recs) + pad) + recs + b"\0" * pad
        with_tmpl = seq % 64 == 0
        body = (tmpl_set if with_tmpl else b"") + data_set
        hdr = struct.pack("!HHIIII", 9, FLOWS_PER_DATAGRAM + (1 if with_tmpl else 0), up, int(time.time()), seq, 1)
        out.append(hdr + body)
    return out


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_goflow2(seconds: float, keep: int) -> dict:
    nf, http = free_port(), free_port(socket.SOCK_STREAM)
    p = subprocess.Popen([GOFLOW2, "-listen", f"netflow://127.0.0.1:{nf}", "-transport", "file",
                          "-transport.file=", "-format", "json", "-addr", f"127.0.0.1:{http}", "-loglevel", "error"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    dgs = datagrams(2048)
    state = {"lines": 0, "kept": [], "stop": False}

    def reader():
        rest = b""
        kept = state["kept"]
        while True:
            chunk = os.read(p.stdout.fileno(), 1 << 16)
            if not chunk:
                return
            state["lines"] += chunk.count(b"\n")
            if len(kept) < keep:
                data = rest + chunk
                cut = data.rfind(b"\n")
                kept.extend(data[:cut].decode().split("\n"))
                rest = data[cut + 1:]

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
    sock.sendto(dgs[0], ("127.0.0.1", nf))  # template first
    time.sleep(0.2)
    cpu0, lines0, t0 = proc_cpu(p.pid), state["lines"], time.monotonic()
    sent = 0
    # Paced above what one core of goflow2 decodes (~1k datagrams/s here), so goflow2 stays busy
    # without burning its CPU on a flooded socket; the kernel drops the excess before goflow2.
    while (now := time.monotonic()) < t0 + seconds:
        target = int((now - t0) * DATAGRAMS_PER_S)
        while sent < target:
            try:
                sock.sendto(dgs[sent % len(dgs)], ("127.0.0.1", nf))
            except OSError:
                pass
            sent += 1
        time.sleep(0.001)
    time.sleep(1.0)  # let it drain
    cpu, lines, wall = proc_cpu(p.pid) - cpu0, state["lines"] - lines0, time.monotonic() - t0
    p.kill()  # goflow2 drains its queues on SIGTERM for a long time; the figures are taken
    p.wait(5)
    return {"records": lines, "cpu": cpu, "wall": wall, "sent_flows": sent * FLOWS_PER_DATAGRAM,
            "per_cpu_s": lines / cpu if cpu else 0.0, "per_s": lines / wall, "lines": state["kept"][:keep]}


def bench_aggregator(lines: list[str], repeat_to: int) -> dict:
    data = ("\n".join(lines) + "\n").encode()
    reps = max(1, repeat_to // max(1, len(lines)))
    agg = flowagg.Aggregator(networks={"lan": ["10.0.0.0/8"], "k8s-pods": ["172.16.0.0/16"]})
    split = flowagg.Splitter(agg)
    t0 = time.process_time()
    n = 0
    for _ in range(reps):
        for i in range(0, len(data), 1 << 16):
            n += agg.feed(split.lines(data[i:i + (1 << 16)]))
    cpu = time.process_time() - t0
    agg.render()
    return {"records": n, "cpu": cpu, "per_cpu_s": n / cpu, "malformed": sum(agg.malformed.values()),
            "series": agg.render().count("\n") - 0, "budget": agg.budget()}


MEM_CHILD = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
import flowagg
total, batch = int(sys.argv[2]), 20000
agg = flowagg.Aggregator(networks={"lan": ["10.0.0.0/8"]})
tmpl = ('{"type":"NETFLOW_V9","time_received_ns":1700000000000000000,"sequence_num":1,"sampling_rate":0,'
        '"sampler_address":"192.0.2.1","time_flow_start_ns":0,"time_flow_end_ns":0,"bytes":%d,"packets":1,'
        '"src_addr":"10.%d.%d.%d","dst_addr":"172.%d.%d.%d","etype":"IPv4","proto":"TCP","src_port":40000,'
        '"dst_port":443,"in_if":1,"out_if":2}')
marks = {}
i = 0
while i < total:
    lines = [tmpl % (64 + j % 1400, (j >> 16) & 255, (j >> 8) & 255, j & 255, 16 + (j >> 24), (j * 7) & 255, (j * 13) & 255)
             for j in range(i, min(total, i + batch))]
    agg.feed(lines)
    i += len(lines)
    if i % 1000000 == 0 or i == total:
        # VmHWM, not ru_maxrss: ru_maxrss survives execve and would report the parent's size
        hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
        marks[i] = int(hwm) / 1024
print(repr((marks, len(agg.sketch["talkers"].entries), agg.records)))
"""


def bench_memory(pairs: int) -> dict:
    out = subprocess.run([sys.executable, "-c", MEM_CHILD, str(ROOT / "netviz_pipeline" / "flowagg"), str(pairs)],
                         capture_output=True, text=True, check=True, timeout=900)
    marks, tracked, records = eval(out.stdout.strip())  # noqa: S307 - our own child's repr
    return {"marks": marks, "tracked": tracked, "records": records, "peak_mib": max(marks.values())}


def bench_error(records: int, n_keys: int, k: int, s: float = 1.1, seed: int = 7) -> dict:
    rnd = random.Random(seed)
    keys = list(range(n_keys))
    weights = [1.0 / (i + 1) ** s for i in range(n_keys)]
    exact: dict[int, int] = {}
    ss = flowagg.SpaceSaving(k)
    stream = rnd.choices(keys, weights, k=records)
    sizes = [rnd.randrange(60, 1500) for _ in range(records)]
    for key, b in zip(stream, sizes):
        exact[key] = exact.get(key, 0) + b
        ss.offer(key, b, 1, 1, 0.0)
    n = sum(exact.values())
    bound = n / k
    heavy = [key for key in exact if exact[key] > bound]  # guaranteed to be tracked
    top10 = sorted(exact, key=exact.get, reverse=True)[:10]
    est = [(ss.entries[key][0] - exact[key]) / exact[key] for key in heavy if key in ss.entries]
    exported = [abs(ss.entries[key][2] - exact[key]) / exact[key] for key in heavy if key in ss.entries]
    ss_top10 = set(sorted(ss.entries, key=lambda x: ss.entries[x][0], reverse=True)[:10])
    return {"records": records, "keys": n_keys, "k": k, "N": n, "bound": bound, "heavy": len(heavy),
            "heavy_tracked": sum(key in ss.entries for key in heavy),
            "max_abs_err": max(ss.entries[key][0] - exact.get(key, 0) for key in ss.entries),
            "est_rel_err_max": max(est, default=0.0), "exported_rel_err_max": max(exported, default=0.0),
            "top10_recall": len(ss_top10 & set(top10)) / 10}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="goflow2 blast duration")
    ap.add_argument("--pairs", type=int, default=10_000_000, help="distinct pairs for the memory run")
    ap.add_argument("--out", type=Path, default=ROOT / "bench-results" / "flows.txt")
    a = ap.parse_args()
    if not os.access(GOFLOW2, os.X_OK):
        print(f"{GOFLOW2} missing: run `make go-binaries` (or set GOFLOW2_BIN)", file=sys.stderr)
        return 2
    cpu_model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                      if ln.startswith("model name")), platform.processor())
    machine = (f"{cpu_model}, {os.cpu_count()} vCPU, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') >> 30} GiB, "
               f"Linux {platform.release()}, Python {platform.python_version()}")
    print(f"machine: {machine}", flush=True)
    print(f"(a) goflow2 v2.2.1 for {a.seconds:.0f}s ...", flush=True)
    g = bench_goflow2(a.seconds, keep=200_000)
    print(f"(b) aggregator on {len(g['lines'])} of those lines ...", flush=True)
    ag = bench_aggregator(g["lines"], repeat_to=1_000_000)
    print("(d) heavy-hitter error ...", flush=True)
    err = bench_error(2_000_000, 100_000, 100)
    print(f"(c) memory with {a.pairs:,} distinct pairs ...", flush=True)
    mem = bench_memory(a.pairs)
    ratio = ag["per_cpu_s"] / g["per_cpu_s"] if g["per_cpu_s"] else float("inf")
    lo, hi = ELASTIFLOW_V9_PER_CORE
    rows = [
        ("machine", machine),
        ("goflow2 v2.2.1 JSON records (NetFlow v9, 30 flows/datagram)",
         f"{g['records']:,} in {g['wall']:.1f}s wall, {g['cpu']:.2f} CPU-s -> {g['per_cpu_s']:,.0f} records/CPU-s "
         f"({g['per_s']:,.0f}/s wall; {g['sent_flows']:,} flows sent)"),
        ("aggregator (same lines)", f"{ag['records']:,} in {ag['cpu']:.2f} CPU-s -> {ag['per_cpu_s']:,.0f} records/CPU-s "
                                    f"({ag['malformed']} malformed)"),
        ("ratio aggregator / goflow2 (per CPU-s)", f"{ratio:.2f} ({'OK' if ratio >= 1 else 'BOTTLENECK'}: must be >= 1)"),
        ("ElastiFlow published (v9, per core)", f"{lo:,}-{hi:,} flows/s -> aggregator is {ag['per_cpu_s'] / hi:.0f}-"
                                                f"{ag['per_cpu_s'] / lo:.0f}x, goflow2 {g['per_cpu_s'] / hi:.1f}-{g['per_cpu_s'] / lo:.1f}x"),
        (f"peak RSS, {mem['records']:,} distinct pairs",
         f"{mem['peak_mib']:.1f} MiB (RSS MiB at 1M..10M records: "
         + ", ".join(f"{v:.1f}" for _, v in sorted(mem['marks'].items())) + f"; {mem['tracked']} talkers tracked)"),
        (f"heavy hitters, Zipf 1.1, {err['records']:,} records over {err['keys']:,} keys, k={err['k']}",
         f"{err['heavy_tracked']}/{err['heavy']} keys above N/k tracked; for them max rel. error of the "
         f"Space-Saving estimate {err['est_rel_err_max']:.2%}, of the exported counter {err['exported_rel_err_max']:.3%}; "
         f"top-10 recall {err['top10_recall']:.0%}; max abs over-estimate {err['max_abs_err']:,} B <= N/k = "
         f"{err['bound']:,.0f} B"),
    ]
    width = max(len(k) for k, _ in rows)
    table = "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows) + "\n"
    print("\n" + table)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(f"# make bench-flows, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}\n" + table)
    print(f"written to {a.out}")
    return 0 if ratio >= 1 else 1


if __name__ == "__main__":
    sys.exit(main())
