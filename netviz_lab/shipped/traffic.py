"""Steady, modest lab traffic across each router (stdlib only), so softflowd always has flows to export.

    server (in the router's wan ns): TCP "HTTP-ish" responder on --tcp-port, UDP echo on --udp-port
    client (in the router's lan ns): every --interval seconds one short TCP connection (request,
                                     response, close), one UDP datagram and its echo, one ICMP echo;
                                     sends nothing while --pause-file exists (a quiet link, on demand)

A few packets per second per router; every TCP connection is new, so finished TCP flows keep coming.
Bounded (`--duration`, default forever) and stops promptly on SIGTERM/SIGINT.
"""
from __future__ import annotations

import argparse
import os
import selectors
import signal
import socket
import struct
import sys
import time

def _on_signal(*_: object) -> None:
    # Raise instead of setting a flag: sleeps and socket waits would otherwise finish first.
    raise SystemExit(0)


def serve(bind: str, tcp_port: int, udp_port: int, deadline: float) -> None:
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind((bind, tcp_port))
    tcp.listen(16)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((bind, udp_port))
    sel = selectors.DefaultSelector()
    sel.register(tcp, selectors.EVENT_READ, "tcp")
    sel.register(udp, selectors.EVENT_READ, "udp")
    print(f"traffic server on {bind} tcp/{tcp_port} udp/{udp_port}", flush=True)
    while time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.5):
            if key.data == "udp":
                data, peer = udp.recvfrom(2048)
                udp.sendto(data, peer)
                continue
            conn, _peer = tcp.accept()
            conn.settimeout(2)
            try:
                conn.recv(2048)
                body = b"netviz-lab traffic\n"
                conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            except OSError:
                pass
            finally:
                conn.close()


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def ping(server: str, seq: int, timeout: float = 1.0) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as s:
        s.settimeout(timeout)
        ident = os.getpid() & 0xFFFF
        payload = b"netviz-lab"
        header = struct.pack("!BBHHH", 8, 0, 0, ident, seq & 0xFFFF)
        header = struct.pack("!BBHHH", 8, 0, _checksum(header + payload), ident, seq & 0xFFFF)
        s.sendto(header + payload, (server, 0))
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                pkt, addr = s.recvfrom(2048)
            except socket.timeout:
                return False
            ihl = (pkt[0] & 0x0F) * 4
            typ, _, _, rid, rseq = struct.unpack("!BBHHH", pkt[ihl:ihl + 8])
            if addr[0] == server and typ == 0 and rid == ident and rseq == seq & 0xFFFF:
                return True
    return False


def http_get(host: str, port: int) -> None:
    """One HTTP/1.0 GET, the answer read to its end; raises OSError when it fails."""
    with socket.create_connection((host, port), timeout=2) as c:
        c.sendall(b"GET / HTTP/1.0\r\nHost: %s\r\n\r\n" % host.encode())
        while c.recv(2048):
            pass


def client(server: str, tcp_port: int, udp_port: int, interval: float, deadline: float,
           pause_file: str | None = None, also_tcp: list[tuple[str, int]] = ()) -> None:
    print(f"traffic client -> {server} every {interval}s", flush=True)
    seq = 0
    ok = {"tcp": 0, "udp": 0, "icmp": 0}
    while time.monotonic() < deadline:
        t0 = time.monotonic()
        if pause_file and os.path.exists(pause_file):
            time.sleep(interval)
            continue
        seq += 1
        try:
            http_get(server, tcp_port)
            ok["tcp"] += 1
        except OSError:
            pass
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.settimeout(1)
                u.sendto(b"netviz-lab %d" % seq, (server, udp_port))
                u.recvfrom(2048)
            ok["udp"] += 1
        except OSError:
            pass
        try:
            ok["icmp"] += ping(server, seq)
        except OSError:
            pass
        for host, port in also_tcp:
            try:
                http_get(host, port)
                ok[f"{host}:{port}"] = ok.get(f"{host}:{port}", 0) + 1
            except OSError:
                pass
        if seq % 60 == 0:
            print(f"{time.strftime('%H:%M:%S')} rounds={seq} ok={ok}", flush=True)
        time.sleep(max(0.0, interval - (time.monotonic() - t0)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("role", choices=["server", "client"])
    ap.add_argument("--bind", default="0.0.0.0")
    ap.add_argument("--server")
    ap.add_argument("--tcp-port", type=int, default=8080)
    ap.add_argument("--udp-port", type=int, default=9999)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--duration", type=float, default=0, help="seconds; 0 = until SIGTERM")
    ap.add_argument("--pause-file", help="client: send nothing while this file exists")
    ap.add_argument("--also-tcp", action="append", default=[], metavar="HOST:PORT",
                    help="client: also an HTTP GET to HOST:PORT each round (repeatable)")
    a = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    deadline = time.monotonic() + a.duration if a.duration > 0 else float("inf")
    if a.role == "server":
        serve(a.bind, a.tcp_port, a.udp_port, deadline)
    else:
        if not a.server:
            ap.error("client needs --server")
        also = [(h, int(p)) for h, _, p in (x.rpartition(":") for x in a.also_tcp)]
        client(a.server, a.tcp_port, a.udp_port, a.interval, deadline, a.pause_file, also)
    return 0


if __name__ == "__main__":
    sys.exit(main())
