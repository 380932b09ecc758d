"""Talking to a router over SSH: a thin, platform-independent session (paramiko). What a platform does
with it, and a platform's own client where it has one (OPNsense's HTTP API), live in routers/<platform>.py,
dispatched through routers/registry.py.

Why so strict:
- Host keys are ALWAYS checked against the router's configured known_hosts file (RejectPolicy; the
  user's ~/.ssh/known_hosts and the system file are never consulted or written). An unknown or
  changed key is an error naming the router and the file: this code runs as root on edge routers.
- Commands are argv lists. `run` quotes every element with shlex (POSIX single quotes, which also
  mean "literal" to tcsh, the root shell on older FreeBSD); nothing is assembled from settings into
  a shell string. Newlines and `!` (tcsh history) are refused in arguments; multi-line input goes
  through stdin.
- The private key is only passed to paramiko by path; it is never read into our logs or metadata.
"""
from __future__ import annotations

import posixpath
import secrets
import shlex
import socket
import time
from typing import NamedTuple

import paramiko

from ..settings import Router

CONNECT_TIMEOUT = 10.0  # TCP connect, SSH banner and auth, each
COMMAND_TIMEOUT = 180.0  # one remote command (package installs can take a while)


class RouterError(RuntimeError):
    """Something on or about a router failed; the message says which router and what to do."""


class HostKeyError(RouterError):
    """The router's host key is not in, or differs from, the configured known_hosts file."""


class Result(NamedTuple):
    rc: int
    out: str
    err: str


def quote_argv(argv: list[str] | tuple[str, ...]) -> str:
    """argv -> one command line for the remote login shell (sh, bash, tcsh all parse it back)."""
    if not argv:
        raise ValueError("empty command")
    for a in argv:
        if not isinstance(a, str):
            raise TypeError(f"argument {a!r} is not a string")
        if any(c in a for c in "\n\r\x00!"):
            raise ValueError(f"argument {a!r} contains a newline, NUL or '!': pass such data on stdin")
    return shlex.join(argv)


# The most a router command may print (stdout and stderr together). The largest read is a router's
# name files (dhcpd.leases is an append log): megabytes at most; a router that streams without end must
# not fill the pipeline's memory.
MAX_OUTPUT_BYTES = 32 * 2**20


def collect(chan: paramiko.Channel, timeout: float, eof_grace: float, what: str,
            max_bytes: int = MAX_OUTPUT_BYTES) -> Result:
    """Read a running command's stdout and stderr to the end, then its exit status.

    sshd may send exit-status before the last of the output (a CI run read `cat` of a file as ''
    with rc 0), so the output's EOF is awaited too; a daemon the command left holding stdout never
    sends one, hence the grace period after the exit status. More than `max_bytes` of output is an
    error (the channel is closed), not a partial answer."""
    out, err = bytearray(), bytearray()
    deadline = time.monotonic() + timeout
    exited_at = None
    while True:
        busy = False
        while chan.recv_ready():
            out += chan.recv(65536)
            busy = True
        while chan.recv_stderr_ready():
            err += chan.recv_stderr(65536)
            busy = True
        if len(out) + len(err) > max_bytes:
            chan.close()
            raise RouterError(f"{what} printed more than {max_bytes // 2**20} MiB: refused (a router "
                              "command's output is bounded)")
        if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
            exited_at = exited_at or time.monotonic()
            if chan.eof_received or time.monotonic() - exited_at > eof_grace:
                break
        if time.monotonic() > deadline:
            raise RouterError(f"{what} did not finish within {timeout:.0f}s")
        if not busy:
            time.sleep(0.005)
    return Result(chan.recv_exit_status(), out.decode(errors="replace"), err.decode(errors="replace"))


class RouterSession:
    """One SSH connection to one router. Use as a context manager; every call is synchronous."""

    EOF_GRACE = 2.0  # seconds to wait for the output's EOF once the exit status is in

    def __init__(self, router: Router, *, connect_timeout: float = CONNECT_TIMEOUT,
                 command_timeout: float = COMMAND_TIMEOUT):
        self.router = router
        self.name = router.name
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.connect_seconds: float | None = None
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None

    # -- connection ---------------------------------------------------------------------------
    def connect(self) -> "RouterSession":
        r = self.router
        known_hosts = str(r.known_hosts_file)
        client = paramiko.SSHClient()
        try:
            client.load_host_keys(known_hosts)  # only this file; load_system_host_keys is never called
        except (OSError, paramiko.SSHException) as e:
            raise RouterError(f"router {r.name}: cannot read known_hosts {known_hosts}: {e}") from None
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        t0 = time.monotonic()
        try:
            client.connect(r.host, port=r.port, username=r.user, key_filename=str(r.ssh_key_file),
                           look_for_keys=False, allow_agent=False, timeout=self.connect_timeout,
                           banner_timeout=self.connect_timeout, auth_timeout=self.connect_timeout)
        except paramiko.BadHostKeyException as e:
            client.close()
            raise HostKeyError(
                f"router {r.name} ({r.host}:{r.port}) presented a {e.key.get_name()} host key "
                f"(SHA256 fingerprint {e.key.fingerprint}) that DIFFERS from the one in {known_hosts}. "
                "Refusing to connect: this is what a man-in-the-middle looks like. If the router was "
                "reinstalled, verify the new key out of band, then replace its line in that file.") from None
        except paramiko.SSHException as e:
            client.close()
            if "not found in known_hosts" in str(e):
                raise HostKeyError(
                    f"router {r.name} ({r.host}:{r.port}) is not in {known_hosts}: refusing an unknown host "
                    f"key. Verify the router's key out of band and add it, e.g. `ssh-keyscan -p {r.port} "
                    f"{r.host}` compared with the key shown on the router's console.") from None
            if isinstance(e, paramiko.AuthenticationException):
                raise RouterError(f"router {r.name}: {r.user}@{r.host} refused the key {r.ssh_key_file} "
                                  "(add its public key to the user's authorized_keys)") from None
            raise RouterError(f"router {r.name} ({r.host}:{r.port}): SSH failed: {e}") from None
        except (OSError, socket.timeout) as e:
            client.close()
            raise RouterError(f"router {r.name}: cannot reach {r.host}:{r.port}: {e}") from None
        self.connect_seconds = time.monotonic() - t0
        self._client = client
        return self

    def close(self) -> None:
        if self._sftp is not None:
            self._sftp.close()
            self._sftp = None
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> "RouterSession":
        return self if self._client is not None else self.connect()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def client(self) -> paramiko.SSHClient:
        if self._client is None:
            raise RouterError(f"router {self.name}: not connected")
        return self._client

    # -- commands -----------------------------------------------------------------------------
    def run(self, argv: list[str] | tuple[str, ...], *, stdin: str | None = None,
            timeout: float | None = None) -> Result:
        """Run argv on the router; returns (rc, stdout, stderr). Never raises on a non-zero rc."""
        command = quote_argv(argv)
        timeout = timeout or self.command_timeout
        chan = self.client.get_transport().open_session(timeout=self.connect_timeout)
        try:
            chan.settimeout(timeout)
            chan.exec_command(command)
            if stdin is not None:
                chan.sendall(stdin.encode())
            chan.shutdown_write()
            return collect(chan, timeout, self.EOF_GRACE, what=f"router {self.name}: `{command}`")
        finally:
            chan.close()

    def check(self, argv: list[str] | tuple[str, ...], *, stdin: str | None = None,
              timeout: float | None = None, what: str = "") -> Result:
        """run() that raises RouterError (with the command's stderr) on a non-zero exit code."""
        res = self.run(argv, stdin=stdin, timeout=timeout)
        if res.rc != 0:
            detail = (res.err.strip() or res.out.strip())[-800:]
            raise RouterError(f"router {self.name}: {what + ': ' if what else ''}`{quote_argv(argv)}` "
                              f"exited {res.rc}: {detail}")
        return res

    # -- files --------------------------------------------------------------------------------
    def _sftp_client(self) -> paramiko.SFTPClient | None:
        if self._sftp is None:
            try:
                self._sftp = self.client.open_sftp()
            except (paramiko.SSHException, OSError):
                return None  # no sftp subsystem: fall back to cat
        return self._sftp

    def read_file(self, path: str) -> str | None:
        """The file's text, or None when it does not exist."""
        if not path.startswith("/"):
            raise ValueError(f"{path!r} is not absolute")
        res = self.run(["cat", path])
        if res.rc == 0:
            return res.out
        probe = self.run(["test", "-e", path])
        if probe.rc != 0:
            return None
        raise RouterError(f"router {self.name}: cannot read {path}: {res.err.strip()}")

    def write_file_atomic(self, path: str, text: str, mode: int = 0o644) -> None:
        """Write to a temporary file next to `path`, then rename over it (readers never see half a
        file; a failed write leaves the old one). sftp posix-rename when available, else cat+mv."""
        if not path.startswith("/"):
            raise ValueError(f"{path!r} is not absolute")
        tmp = posixpath.join(posixpath.dirname(path), f".{posixpath.basename(path)}.netviz-{secrets.token_hex(4)}")
        sftp = self._sftp_client()
        if sftp is not None:
            try:
                with sftp.open(tmp, "w") as f:
                    f.write(text.encode())
                sftp.chmod(tmp, mode)
                sftp.posix_rename(tmp, path)
                return
            except (OSError, paramiko.SSHException):
                try:
                    sftp.remove(tmp)
                except (OSError, paramiko.SSHException):
                    pass
        # Fixed script; the paths and mode are positional parameters, never part of the script text.
        script = 'umask 077 && cat > "$1" && chmod "$3" "$1" && mv -f "$1" "$2" || { rm -f "$1"; exit 1; }'
        self.check(["sh", "-c", script, "sh", tmp, path, f"{mode:o}"], stdin=text, what=f"write {path}")

