"""Reading a command's output over a real SSH transport (paramiko on both ends of a socketpair),
with a server that sends the exit status before the output, as sshd may do under load."""
from __future__ import annotations

import socket
import threading
import time

import paramiko
import pytest

from netviz_pipeline.resources.router import collect

PAYLOAD = b"<pfsense>\n" + b"x" * 100_000 + b"\n</pfsense>\n"


class _Server(paramiko.ServerInterface):
    def __init__(self, reply):
        self.reply = reply

    def get_allowed_auths(self, username):
        return "none"

    def check_auth_none(self, username):
        return paramiko.AUTH_SUCCESSFUL

    def check_channel_request(self, kind, chanid):
        return paramiko.OPEN_SUCCEEDED

    def check_channel_exec_request(self, channel, command):
        threading.Thread(target=self.reply, args=(channel,), daemon=True).start()
        return True


def _exit_first(chan: paramiko.Channel) -> None:
    chan.send_exit_status(0)
    time.sleep(0.3)  # the output is still in sshd's buffers
    chan.sendall(PAYLOAD)
    chan.sendall_stderr(b"warning\n")
    chan.shutdown_write()  # EOF
    time.sleep(0.1)
    chan.close()


def _holds_stdout(chan: paramiko.Channel) -> None:
    chan.sendall(b"started\n")
    chan.send_exit_status(0)  # a daemon it started keeps stdout open: no EOF ever comes


@pytest.fixture
def channel_with(request):
    made = []

    def make(reply) -> paramiko.Channel:
        a, b = socket.socketpair()
        server = paramiko.Transport(b)
        server.add_server_key(paramiko.RSAKey.generate(2048))
        server.start_server(event=threading.Event(), server=_Server(reply))  # negotiates in its thread
        client = paramiko.Transport(a)
        client.start_client(timeout=10)
        client.auth_none("root")
        chan = client.open_session(timeout=10)
        chan.exec_command("cat /cf/conf/config.xml")
        made.extend([client, server])
        return chan

    yield make
    for t in made:
        t.close()


def test_output_after_the_exit_status_is_still_read(channel_with):
    res = collect(channel_with(_exit_first), timeout=10, eof_grace=5, what="test")
    assert (res.rc, res.out.encode(), res.err) == (0, PAYLOAD, "warning\n")


def test_output_with_no_eof_ends_after_the_grace_period(channel_with):
    # without the grace period this would wait for the command timeout and raise
    res = collect(channel_with(_holds_stdout), timeout=10, eof_grace=0.5, what="test")
    assert (res.rc, res.out) == (0, "started\n")


def _streams_forever(chan: paramiko.Channel) -> None:
    try:
        while True:
            chan.sendall(b"y" * 65536)
    except Exception:  # the reader closed the channel
        pass


def test_output_beyond_the_cap_is_refused_not_buffered(channel_with):
    from netviz_pipeline.resources.router import RouterError
    with pytest.raises(RouterError, match="printed more than 1 MiB"):
        collect(channel_with(_streams_forever), timeout=20, eof_grace=1, what="test", max_bytes=2**20)
    res = collect(channel_with(_exit_first), timeout=10, eof_grace=5, what="test", max_bytes=2**20)
    assert res.out.encode() == PAYLOAD  # below the cap: read whole
