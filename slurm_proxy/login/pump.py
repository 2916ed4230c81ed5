"""Bytes both ways between our stdio (or a buffer) and an SSH channel, until both directions
end: shared by every backend that relays a channel itself. The sender runs on its own thread, so
a peer that echoes can never wait on us; stdin is polled on POSIX and read with blocking reads on
Windows (and under ``SLURM_PROXY_NO_EXEC``, the same path on Linux)."""

from __future__ import annotations

import contextlib
import os
import selectors
import threading
from collections.abc import Callable
from typing import Protocol

from .. import log
from ..log import one_line
from .base import Channel as Channel  # what the pump relays: the contract's
from .base import no_exec

READ_SIZE = 64 * 1024  # bytes asked of stdin / the channel per call


class Source(Protocol):
    """The bytes sent into the channel; ``read`` returns b"" at the end."""

    def read(self, size: int) -> bytes: ...

    def stop(self) -> bool:
        """Make a pending ``read`` return b"". False if it cannot be interrupted."""


class PolledFd:
    """A file descriptor read after a selector reports it ready, so that ``stop`` can end the
    wait (POSIX: a pipe or socket can be polled; a regular file is simply read)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._wake_r, self._wake_w = os.pipe()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        try:
            self._selector.register(fd, selectors.EVENT_READ)
            self._polled = True
        except (OSError, ValueError):  # regular files and /dev/null cannot be polled; never block
            self._polled = False

    def read(self, size: int) -> bytes:
        while True:
            if self._polled:
                ready = [key.fd for key, _ in self._selector.select()]
                if self._wake_r in ready:
                    return b""
            try:
                return os.read(self.fd, size)
            except BlockingIOError:  # a non-blocking fd another reader emptied first
                continue

    def stop(self) -> bool:
        os.write(self._wake_w, b"x")
        return True

    def close(self) -> None:
        self._selector.close()
        os.close(self._wake_r)
        os.close(self._wake_w)


class BlockingFd:
    """A file descriptor read with plain blocking reads by the pump's sending thread: what works
    on Windows, where select() cannot wait on a pipe. A pending read cannot be interrupted."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def read(self, size: int) -> bytes:
        return os.read(self.fd, size)

    def stop(self) -> bool:
        return False

    def close(self) -> None:
        pass


class BytesSource:
    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)

    def read(self, size: int) -> bytes:
        chunk, self._data = self._data[:size], self._data[size:]
        return bytes(chunk)

    def stop(self) -> bool:
        return True


def stdin_source() -> PolledFd | BlockingFd:
    """fd 0, polled on POSIX; read by blocking reads on Windows and with SLURM_PROXY_NO_EXEC
    (the same path, testable on Linux)."""
    if no_exec():
        log.debug("stdin: blocking reads")
        return BlockingFd(0)
    log.debug("stdin: polled")
    return PolledFd(0)


def fd_writer(fd: int) -> Callable[[bytes], None]:
    """Write all of each chunk to ``fd``, however many ``os.write`` calls it takes."""
    def write(data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(fd, view):]
            except BlockingIOError:  # a non-blocking pipe that is full: wait until it drains
                with selectors.DefaultSelector() as sel:
                    sel.register(fd, selectors.EVENT_WRITE)
                    sel.select()
    return write


def pump(channel: Channel, source: Source, out: Callable[[bytes], None],
         err: Callable[[bytes], None] | None = None) -> int:
    """Carry bytes both ways until both directions end: ``source`` → channel, then EOF on it
    (``shutdown_write``); the channel → ``out`` (and its stderr → ``err``) until the channel's
    EOF. Returns the remote exit status, -1 when none came (a TCP forward never sends one).

    Sending runs on its own thread: a sender waiting for the peer's window must never stop the
    channel from being drained, or a peer that echoes (``cat``) would wait on us forever.
    """
    sender = threading.Thread(target=_send_all, args=(channel, source), daemon=True,
                              name="slurm-proxy-send")
    sender.start()
    copier = None
    if err is not None:
        copier = threading.Thread(target=copy, args=(channel.recv_stderr, best_effort(err)), daemon=True,
                                  name="slurm-proxy-stderr")
        copier.start()
    status = -1
    try:
        if copy(channel.recv, out):
            status = channel.recv_exit_status()  # the command's status, or the channel's close
    finally:
        channel.close()
        stopped = source.stop()
        if copier is not None:
            copier.join()
        if stopped:
            sender.join()
    return status


def _send_all(channel: Channel, source: Source) -> None:
    try:
        while data := source.read(READ_SIZE):
            channel.sendall(data)
    except Exception as e:  # stdin unreadable, or the channel closed under us: end this direction
        log.debug(f"sending stopped: {one_line(e)}")
    with contextlib.suppress(Exception):  # the channel is already gone
        channel.shutdown_write()


def copy(recv: Callable[[int], bytes], write: Callable[[bytes], None]) -> bool:
    """Copy until EOF (True) or until the writer's reader has gone (False)."""
    while data := recv(READ_SIZE):
        try:
            write(data)
        except OSError as e:
            log.debug(f"output closed: {one_line(e)}")
            return False
    return True


def best_effort(write: Callable[[bytes], None]) -> Callable[[bytes], None]:
    """For diagnostics (stderr): a write that fails loses the bytes, never stops the reading."""
    def write_or_drop(data: bytes) -> None:
        with contextlib.suppress(OSError):
            write(data)
    return write_or_drop
