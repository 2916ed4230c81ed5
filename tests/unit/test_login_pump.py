"""login/pump.py: bytes both ways between stdio and a channel (a socketpair stands in for it)."""

from __future__ import annotations

import errno
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from slurm_proxy.login import pump

ED = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
ED2 = "AAAAC3NzaC1lZDI1NTE5AAAAIMCT6ebtbivVujCF5m9AbEkVzH/+CCcJgL5SXAtp0XcG"
RSA = "AAAAB3NzaC1yc2EAAAADAQABAAABAQC7"



class SocketChannel:
    """A socketpair end with the parts of paramiko.Channel the pump uses."""

    def __init__(self, sock: socket.socket, stderr: socket.socket | None = None, status: int = 0) -> None:
        self.sock, self.stderr, self.status = sock, stderr, status
        self.closed = threading.Event()
        self.eof_sent = threading.Event()

    def recv(self, nbytes: int) -> bytes:
        return self.sock.recv(nbytes)

    def recv_stderr(self, nbytes: int) -> bytes:
        return self.stderr.recv(nbytes) if self.stderr else b""

    def sendall(self, data: bytes) -> None:
        self.sock.sendall(data)

    def shutdown_write(self) -> None:
        self.eof_sent.set()
        self.sock.shutdown(socket.SHUT_WR)

    def recv_exit_status(self) -> int:
        return self.status

    def close(self) -> None:
        self.closed.set()
        self.sock.close()


def echo_then_trailer(peer: socket.socket, trailer: bytes) -> None:
    """The remote side: echo until our EOF, then (half-closed) send more, then close."""
    while data := peer.recv(65536):
        peer.sendall(data)
    peer.sendall(trailer)
    peer.close()


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def test_pump_round_trips_and_drains_after_our_eof(pair: tuple[socket.socket, socket.socket]) -> None:
    """10 MB echoed back, then bytes the peer sends only after it saw our EOF still arrive: the
    pump does not tear down on stdin EOF. With blocking sends on the draining thread this
    deadlocks (the socket buffers are far smaller than 10 MB)."""
    ours, peer = pair
    payload = os.urandom(10 * 1024 * 1024)
    threading.Thread(target=echo_then_trailer, args=(peer, b"after-eof"), daemon=True).start()
    got: list[bytes] = []
    channel = SocketChannel(ours, status=7)
    assert pump.pump(channel, pump.BytesSource(payload), got.append) == 7
    assert b"".join(got) == payload + b"after-eof"
    assert channel.eof_sent.is_set() and channel.closed.is_set()


def test_pump_copies_stderr_apart(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, peer = pair
    err_ours, err_peer = socket.socketpair()
    err_peer.sendall(b"warning: something\n")
    err_peer.close()
    threading.Thread(target=echo_then_trailer, args=(peer, b""), daemon=True).start()
    out: list[bytes] = []
    err: list[bytes] = []
    pump.pump(SocketChannel(ours, err_ours), pump.BytesSource(b"data"), out.append, err.append)
    assert (b"".join(out), b"".join(err)) == (b"data", b"warning: something\n")
    err_ours.close()


def test_pump_from_a_pipe_through_fd_writers(pair: tuple[socket.socket, socket.socket]) -> None:
    """The stdio path: a polled fd in, fd_writer out (the output pipe is non-blocking and read
    slowly, so writes come back partial or EAGAIN)."""
    ours, peer = pair
    payload = os.urandom(3 * 1024 * 1024)
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    os.set_blocking(out_w, False)
    threading.Thread(target=echo_then_trailer, args=(peer, b""), daemon=True).start()

    def feed() -> None:
        with os.fdopen(in_w, "wb") as f:
            f.write(payload)

    received = bytearray()

    def drain() -> None:
        while data := os.read(out_r, 4096):
            received.extend(data)
            time.sleep(0.0005)

    threading.Thread(target=feed, daemon=True).start()
    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    source = pump.PolledFd(in_r)
    try:
        pump.pump(SocketChannel(ours), source, pump.fd_writer(out_w))
    finally:
        source.close()
        os.close(in_r)
        os.close(out_w)
    reader.join(10)
    assert bytes(received) == payload


def test_pump_stops_when_the_output_reader_is_gone(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, peer = pair
    peer.sendall(b"x" * 1000)

    def broken(data: bytes) -> None:
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    in_r, in_w = os.pipe()  # stdin stays open: the pump must still end, and stop reading it
    source = pump.PolledFd(in_r)
    channel = SocketChannel(ours)
    try:
        assert pump.pump(channel, source, broken) == -1
    finally:
        source.close()
        os.close(in_r)
        os.close(in_w)
    assert channel.closed.is_set()


def test_polled_fd_stop_ends_a_pending_read() -> None:
    r, w = os.pipe()
    source = pump.PolledFd(r)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(source.read(100)))
    reader.start()
    time.sleep(0.05)
    assert reader.is_alive()  # waiting for stdin
    assert source.stop() is True
    reader.join(5)
    assert got == [b""]
    source.close()
    os.close(r)
    os.close(w)


def test_polled_fd_reads_a_regular_file(tmp_path: Path) -> None:
    path = tmp_path / "input"
    path.write_bytes(b"from a file")
    fd = os.open(path, os.O_RDONLY)
    source = pump.PolledFd(fd)  # epoll refuses regular files: read directly
    assert (source.read(100), source.read(100)) == (b"from a file", b"")
    source.close()
    os.close(fd)


def test_the_stdin_source_follows_slurm_proxy_no_exec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLURM_PROXY_NO_EXEC", raising=False)
    source = pump.stdin_source()
    assert isinstance(source, pump.PolledFd) if os.name != "nt" else isinstance(source, pump.BlockingFd)
    source.close()
    monkeypatch.setenv("SLURM_PROXY_NO_EXEC", "1")
    assert isinstance(pump.stdin_source(), pump.BlockingFd)


def test_blocking_fd_cannot_be_stopped() -> None:
    r, w = os.pipe()
    os.write(w, b"abc")
    os.close(w)
    source = pump.BlockingFd(r)
    assert (source.read(10), source.read(10), source.stop()) == (b"abc", b"", False)
    os.close(r)
