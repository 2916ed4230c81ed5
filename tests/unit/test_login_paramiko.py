"""login/paramiko_backend.py: a channel's EOF never goes out after its CLOSE (paramiko's own
Channel and Transport, with the transport's sending recorded instead of encrypted)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import paramiko
import pytest
from paramiko.common import MSG_CHANNEL_CLOSE, MSG_CHANNEL_EOF

from slurm_proxy.login.paramiko_backend import eof_before_close


@pytest.fixture
def channel() -> Iterator[Any]:
    """A paramiko Channel on a Transport that records what it sends (message types, in order)."""
    left, right = socket.socketpair()
    transport = paramiko.Transport(left)
    transport.active = True
    transport.clear_to_send.set()  # keys exchanged
    transport.sent = []
    transport.sending = threading.Event()
    transport.sending.set()

    def send(m: paramiko.Message) -> None:
        kind = m.asbytes()[0]
        if kind == MSG_CHANNEL_EOF:  # the EOF's way out takes a while (unless this test says)
            transport.sending.wait(5)
        transport.sent.append(kind)

    transport._send_message = send  # what eof_before_close sends with
    transport._send_user_message = send  # what paramiko's own shutdown and close send with
    chan = paramiko.Channel(7)
    chan._set_transport(transport)
    chan.remote_chanid, chan.active = 8, True
    yield eof_before_close(chan)
    transport.active = False
    left.close()
    right.close()


def test_the_eof_goes_once(channel: Any) -> None:
    channel.shutdown_write()
    channel.shutdown_write()
    assert channel.transport.sent == [MSG_CHANNEL_EOF]


def test_no_eof_once_the_channel_is_closed(channel: Any) -> None:
    with channel.lock:
        channel._set_closed()  # the server's CLOSE, answered by the transport thread
    channel.shutdown_write()
    assert channel.transport.sent == []


def test_a_close_meanwhile_goes_after_the_eof(channel: Any) -> None:
    channel.transport.sending.clear()
    eof = threading.Thread(target=channel.shutdown_write)
    eof.start()
    time.sleep(0.1)
    close = threading.Thread(target=channel.close)  # paramiko's own close would send first
    close.start()
    time.sleep(0.1)
    channel.transport.sending.set()
    eof.join(5)
    close.join(5)
    assert channel.transport.sent == [MSG_CHANNEL_EOF, MSG_CHANNEL_CLOSE]


def test_a_key_exchange_holds_the_eof_back_without_the_channel_lock(channel: Any) -> None:
    channel.transport.clear_to_send.clear()
    eof = threading.Thread(target=channel.shutdown_write)
    eof.start()
    time.sleep(0.2)
    assert channel.lock.acquire(timeout=1)  # the transport thread may still use the channel
    channel.lock.release()
    assert channel.transport.sent == []
    channel.transport.clear_to_send.set()
    eof.join(5)
    assert channel.transport.sent == [MSG_CHANNEL_EOF]
