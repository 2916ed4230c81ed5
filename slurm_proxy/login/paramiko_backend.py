"""The login connection over paramiko: one SSH transport carries the Slurm queries and the tunnel.

``ParamikoLogin`` needs no ``ssh`` binary and no control socket: it logs in once, on first use
(``paramiko_connect``: the user's ssh config, known_hosts, keys, a second factor), and opens every
later command and TCP hop as a channel of that transport. It is a ``Login`` and, for the agent, a
``ChannelLogin``. Only the paramiko backend's modules import paramiko; the package's face imports
them only when this backend is chosen."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

import paramiko

from .. import log
from ..errors import LoginError
from . import prompt
from .base import SSH_CONFIG_FILES, Ask, Channel, Result
from .paramiko_connect import CHANNEL_TIMEOUT, PACKET, WINDOW, Connector
from .pump import BytesSource, fd_writer, pump, stdin_source
from .reasons import describe
from .remote import Shell, forwarding_refusal


class ParamikoLogin:
    """The login node over one ``paramiko.Transport``, connected on first use."""

    logs_in_per_command = False  # one transport for every command of a connect

    def __init__(self, destination: str, *, ssh_config_files: Sequence[str] = SSH_CONFIG_FILES,
                 ask: Ask = prompt.ask, login_shell: bool | None = None) -> None:
        self.destination = destination
        self.shell = Shell(destination, login_shell)
        self._link = Connector(destination, ssh_config_files, ask)

    # The Login interface

    def run(self, argv: Sequence[str], stdin: str | None = None) -> Result:
        log.debug(f"run on {self.destination}: {log.shown(argv)}")
        return self.shell.run(self._send, argv, stdin)

    def _send(self, command: str, stdin: str | None) -> Result:
        out: list[bytes] = []
        err: list[bytes] = []
        channel = self.open_exec(command)
        source = BytesSource((stdin or "").encode())
        status = self._pumped(lambda: pump(channel, source, out.append, err.append))
        stdout = b"".join(out).decode(errors="replace")
        stderr = b"".join(err).decode(errors="replace")
        if status < 0:  # killed by a signal: ssh would exit with 255, which is a LoginError too
            detail = log.last_line(stderr) or "the command ended without an exit status"
            raise LoginError(self.destination, detail)
        return Result(status, stdout, stderr)

    def forwarding_refused(self, host: str, port: int) -> str:
        try:
            channel = self.open_tcp(host, port)
        except LoginError as e:
            return forwarding_refusal(str(e))
        channel.close()
        return ""

    def forward_stdio(self, host: str, port: int) -> int:
        channel = self.open_tcp(host, port)
        self._pumped(lambda: self._stdio(channel))
        return 0

    def forward_command(self, argv: Sequence[str]) -> int:
        """Run ``argv`` on the login node with our stdin/stdout as its own (its stderr copied to
        ours); the remote exit status, 255 if there was none (killed by a signal)."""
        log.debug(f"forward command: {log.shown(argv)}")
        channel = self.open_exec(self.shell.line(argv))
        status = self._pumped(lambda: self._stdio(channel, fd_writer(2)))
        return status if status >= 0 else 255

    def sharing(self) -> tuple[bool | None, str]:
        return None, "paramiko logs in once per connect, for its queries and its tunnel together"

    # The ChannelLogin interface (the agent's), and open_exec/open_tcp below

    @property
    def connected(self) -> bool:
        return self._link.active

    def connect(self, ask: Ask, auth_sock: str | None) -> None:
        self._link.ask, self._link.auth_sock = ask, auth_sock
        self._transport_for(log_in=True)

    def close(self) -> None:
        self._link.close()

    # Plumbing

    def _stdio(self, channel: Channel, err: Callable[[bytes], None] | None = None) -> int:
        sys.stdout.flush()  # nothing of ours may trail into the stream
        source = stdin_source()
        try:
            return pump(channel, source, fd_writer(1), err)
        finally:
            source.close()

    def open_exec(self, command: str, log_in: bool = True) -> Channel:
        """A channel running ``command`` (one shell command line) on the login node (``log_in``:
        logging in first if need be)."""
        transport = self._transport_for(log_in)
        try:
            session = transport.open_session(window_size=WINDOW, max_packet_size=PACKET,
                                             timeout=CHANNEL_TIMEOUT)
            session.exec_command(command)
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise LoginError(self.destination, f"cannot run a command: {describe(e)}") from None
        return eof_before_close(session)

    def open_tcp(self, host: str, port: int, log_in: bool = True) -> Channel:
        """A channel to ``host:port`` as the login node connects to it (``log_in``: as above)."""
        transport = self._transport_for(log_in)
        log.debug(f"forward: {host}:{port} via {self.destination}")
        try:
            channel = transport.open_channel("direct-tcpip", (host, port), ("127.0.0.1", 0),
                                             window_size=WINDOW, max_packet_size=PACKET,
                                             timeout=CHANNEL_TIMEOUT)
        except paramiko.ChannelException as e:
            raise LoginError(self.destination, f"the login node cannot connect to {host}:{port} "
                             f"({str(e.text).lower()})") from None
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise LoginError(self.destination, describe(e)) from None
        return eof_before_close(channel)

    def _transport_for(self, log_in: bool) -> Any:
        """The open transport; a new login only with ``log_in`` (the agent logs in only under its
        per-host lock, so a login lost since is a LoginError it logs in again for)."""
        if self.connected:
            return self._link.transport
        if log_in:
            return self._link.connect()
        raise LoginError(self.destination, "connection lost")

    def _pumped(self, run: Callable[[], int]) -> int:
        """Run a pump; a connection that died under it is a LoginError, not an early EOF."""
        try:
            status = run()
        except (paramiko.SSHException, EOFError) as e:
            raise LoginError(self.destination, describe(e)) from None
        if not self._link.transport.is_active():
            cause = self._link.transport.get_exception()
            self.close()
            raise LoginError(self.destination, "connection lost" + (f": {describe(cause)}" if cause else ""))
        return status


def eof_before_close(channel: Any) -> Channel:
    """``channel``, whose ``shutdown_write`` never sends its EOF after its CLOSE.

    paramiko makes the EOF under the channel's lock but sends it after letting go, so a CLOSE
    sent in between (``close``, or its transport thread answering the server's CLOSE when the
    command has ended) can go first. OpenSSH then drops the whole login, every channel on it
    ("ieof packet referred to nonexistent channel": paramiko issue 1115, seen with eight connects
    at once through the agent). Here the EOF goes out under that lock, which any CLOSE needs,
    and never while a key exchange holds messages back (no lock is held while it waits)."""
    def shutdown_write() -> None:
        transport = channel.transport
        while True:
            with channel.lock:
                if channel.closed or channel.eof_sent or not transport.is_active():
                    return
                with transport.clear_to_send_lock:  # a key exchange starts only without it
                    if transport.clear_to_send.is_set():
                        transport._send_message(channel._send_eof())
                        return
            transport.clear_to_send.wait(0.1)

    if isinstance(channel, paramiko.Channel):  # not a stand-in
        channel.shutdown_write = shutdown_write
    ordered: Channel = channel
    return ordered
