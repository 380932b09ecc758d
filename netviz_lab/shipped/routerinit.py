"""A tiny "init" that turns a network namespace into a bootable router (stdlib only, run as a file).

Run inside the router's netns (`ip netns exec <router> /usr/bin/python3 routerinit.py <spec.json>`).
Why a home-made init instead of starting sshd directly:

- each router gets its own **mount namespace and chroot** built from bind mounts and overlays
  (`/etc` and, on Linux, `/usr/local` are overlays whose writes land under lab.root/routers/<name>;
  `/usr` is a read-only bind; `/run`, `/tmp`, `/root`, `/var`, `/cf` are lab directories). Nothing a
  pipeline does over SSH can write to the host outside lab.root, and pfSense paths like
  `/cf/conf/config.xml` exist without creating them on the host;
- each router gets its own **PID namespace** (and UTS namespace: `hostname` is the router's name): `killall -9 softflowd` (what pfSense's rc script does),
  `pgrep`, `ps` and pid files only see that router's processes, and this init is PID 1 there, so
  daemons that fork away (softflowd) are reaped at once (the VM's real PID 1 reaps late);
- a **reboot** is real: SIGHUP to this process SIGKILLs the router's PID 1 (the kernel then kills every
  process of the router), and the router boots again from its persisted files: `/run` and `/tmp`
  emptied, then the spec's daemons (sshd) and boot commands (softflowd start-up) run.

Process tree: outer (this file, supervisor's child, host PID ns) -> intermediate (unshares mount+pid
ns) -> router PID 1 (builds the root, chroots, boots, reaps). SIGTERM to outer = clean shutdown.
Outer records `{"outer", "intermediate", "pid1", "generation"}` in spec["state_file"]; PID 1 writes
`/run/netviz-booted` (generation number) when the boot commands are done.
"""
from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

CLONE_NEWNS = 0x00020000
CLONE_NEWPID = 0x20000000
CLONE_NEWUTS = 0x04000000
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} routerinit[{os.getpid()}]: {msg}", flush=True)


def sh(*argv: str) -> None:
    res = subprocess.run(argv, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {res.stderr.strip()}")


def unshare(flags: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare: {os.strerror(err)}")


# -- router PID 1 -------------------------------------------------------------------------------
def build_root(spec: dict) -> None:
    root = spec["rootfs"]
    sh("mount", "--make-rprivate", "/")
    for m in spec["mounts"]:
        dst = os.path.join(root, m["dst"].lstrip("/"))
        kind = m["type"]
        if kind == "bind":
            sh("mount", "--bind", m["src"], dst)
            if m.get("ro"):
                sh("mount", "-o", "remount,bind,ro", dst)
        elif kind == "rbind":
            sh("mount", "--rbind", m["src"], dst)
        elif kind == "overlay":
            opts = f"lowerdir={m['lower']},upperdir={m['upper']},workdir={m['work']}"
            sh("mount", "-t", "overlay", "overlay", "-o", opts, dst)
        elif kind == "proc":
            sh("mount", "-t", "proc", "proc", dst)
        else:
            raise ValueError(f"unknown mount type {kind}")
    for d in spec.get("clear", []):
        path = os.path.join(root, d.lstrip("/"))
        for entry in os.listdir(path):
            p = os.path.join(path, entry)
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p, ignore_errors=True)
            else:
                os.unlink(p)
    os.chroot(root)
    os.chdir("/")


class _Stop(Exception):
    pass


class Pid1:
    def __init__(self, spec: dict, generation: int):
        self.spec = spec
        self.generation = generation
        self.stopping = False
        self.reaping = False
        self.daemons: dict[int, list[str]] = {}

    def on_term(self, *_: object) -> None:
        self.stopping = True
        if self.reaping:
            raise _Stop  # break out of the blocking waitpid()

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.on_term)
        signal.signal(signal.SIGINT, self.on_term)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        socket.sethostname(self.spec["hostname"])
        build_root(self.spec)
        env = {"PATH": PATH, "HOME": "/root", "LANG": "C.UTF-8", "USER": "root"}
        for d in self.spec.get("mkdirs", []):
            os.makedirs(d, mode=0o755, exist_ok=True)
        for argv in self.spec.get("daemons", []):
            p = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, cwd="/")
            self.daemons[p.pid] = argv
            log(f"started {argv[0]} (pid {p.pid} in router)")
        for argv in self.spec.get("boot", []):
            try:
                res = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, cwd="/", timeout=120)
                log(f"boot: {' '.join(argv)} -> {res.returncode}")
            except (OSError, subprocess.TimeoutExpired) as exc:
                log(f"boot: {' '.join(argv)} failed: {exc}")
        with open("/run/netviz-booted", "w") as f:
            f.write(f"{self.generation}\n")
        log(f"{self.spec['name']} booted (generation {self.generation})")
        return self.reap_forever()

    def reap_forever(self) -> int:
        """Reap at once (blocking wait): a SIGKILLed daemon must not linger as a zombie, or the next
        start sees its pid file pointing at a "live" process (softflowd then refuses to start)."""
        self.reaping = True
        try:
            while not self.stopping:
                try:
                    pid, status = os.waitpid(-1, 0)
                except ChildProcessError:
                    time.sleep(0.05)
                    continue
                if pid in self.daemons:
                    log(f"daemon {self.daemons.pop(pid)[0]} exited ({status}); router goes down")
                    self.reaping = False
                    self.shutdown()
                    return 1
        except _Stop:
            pass
        self.reaping = False
        self.shutdown()
        return 0

    def shutdown(self) -> None:
        for sig, grace in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 2.0)):
            try:
                os.kill(-1, sig)  # PID 1 of a PID namespace: every other process of the router
            except ProcessLookupError:
                return
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                try:
                    if os.waitpid(-1, os.WNOHANG)[0] == 0:
                        time.sleep(0.05)
                except ChildProcessError:
                    return


# -- outer / intermediate (host PID namespace) ------------------------------------------------------
class Outer:
    def __init__(self, spec: dict):
        self.spec = spec
        self.stopping = False
        self.rebooting = False
        self.pid1 = 0
        self.intermediate = 0
        self.generation = 0

    def record(self) -> None:
        tmp = self.spec["state_file"] + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"outer": os.getpid(), "intermediate": self.intermediate, "pid1": self.pid1,
                       "generation": self.generation}, f)
        os.replace(tmp, self.spec["state_file"])

    def on_term(self, *_: object) -> None:
        self.stopping = True
        self._signal_pid1(signal.SIGTERM)

    def on_hup(self, *_: object) -> None:
        self.rebooting = True
        self._signal_pid1(signal.SIGKILL)

    def _signal_pid1(self, sig: int) -> None:
        if self.pid1:
            try:
                os.kill(self.pid1, sig)
            except ProcessLookupError:
                pass

    def boot_once(self) -> int:
        self.generation += 1
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # intermediate
            try:
                os.close(r)
                for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    signal.signal(s, signal.SIG_IGN)
                unshare(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS)
                child = os.fork()
                if child == 0:  # router PID 1
                    os.close(w)
                    for s in (signal.SIGTERM, signal.SIGINT):
                        signal.signal(s, signal.SIG_DFL)
                    try:
                        code = Pid1(self.spec, self.generation).run()
                    except BaseException as exc:  # noqa: BLE001 - reported in the service log
                        log(f"router init failed: {exc!r}")
                        code = 2
                    os._exit(code)
                os.write(w, str(child).encode())
                os.close(w)
                _, status = os.waitpid(child, 0)
                os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
            except BaseException as exc:  # noqa: BLE001
                log(f"intermediate failed: {exc!r}")
                os._exit(3)
        os.close(w)
        self.intermediate = pid
        self.pid1 = int(os.read(r, 32) or b"0")
        os.close(r)
        self.record()
        if self.stopping:
            self._signal_pid1(signal.SIGTERM)
        _, status = os.waitpid(pid, 0)
        self.pid1 = 0
        return os.waitstatus_to_exitcode(status)

    def power_off_seconds(self) -> float:
        """How long this reboot keeps the router off (as a real one takes to boot): `<state_file>.poweroff`,
        written by the lab's reboot for that one reboot."""
        path = self.spec["state_file"] + ".poweroff"
        try:
            with open(path) as f:
                seconds = float(f.read().strip() or 0)
            os.unlink(path)
            return max(0.0, min(seconds, 600.0))
        except (OSError, ValueError):
            return 0.0

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.on_term)
        signal.signal(signal.SIGINT, self.on_term)
        signal.signal(signal.SIGHUP, self.on_hup)
        while True:
            self.rebooting = False
            code = self.boot_once()
            if self.stopping:
                return 0
            if self.rebooting:
                down = self.power_off_seconds()
                log(f"{self.spec['name']} rebooting" + (f" after {down:.0f}s powered off" if down else ""))
                time.sleep(down)
                continue
            log(f"router PID 1 exited with {code}")
            return code or 1


def main() -> int:
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    return Outer(spec).run()


if __name__ == "__main__":
    sys.exit(main())
