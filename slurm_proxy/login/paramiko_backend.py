"""The login connection over paramiko: one SSH transport carries the Slurm queries and the tunnel.

``ParamikoLogin`` needs no ``ssh`` binary and no control socket: it resolves the login host from
the user's ssh config, verifies it against the known_hosts files, authenticates (ssh-agent, key
files, a second factor), and keeps one ``paramiko.Transport`` for every later call. Only the
paramiko backend's modules import paramiko; the package's face imports them only when this
backend is chosen."""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import paramiko

from .. import log
from ..errors import LoginError
from . import prompt
from .auth import authenticate
from .base import SSH_CONFIG_FILES, Result
from .known_hosts import known_key_types, read_known_hosts, verify
from .pump import BytesSource, Channel, best_effort, copy, fd_writer, pump, stdin_source
from .reasons import describe
from .remote import Shell, forwarding_refusal
from .ssh_config import Target, parse_jump, read_ssh_config, resolve

MAX_HOPS = 8  # ProxyJump chains longer than this are taken for a loop in the ssh config


# Flow control for the channels we open: a window of 16 MiB keeps a fast link busy, while
# packets stay at the 32 KiB every SSH server accepts.
WINDOW = 16 * 1024 * 1024


PACKET = 32 * 1024


CHANNEL_TIMEOUT = 60.0  # seconds for the login node to answer a channel request


AEAD_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


_logging_set = False


def _quiet_paramiko() -> None:
    """paramiko logs to the ``paramiko`` logger: to stderr with ``-v``, else nowhere."""
    global _logging_set
    if _logging_set:
        return
    _logging_set = True
    logger = logging.getLogger("paramiko")
    logger.propagate = False
    if log.verbosity >= 1:
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("slurm-proxy: paramiko: %(message)s"))
        logger.setLevel(logging.DEBUG)
    else:
        handler = logging.NullHandler()
        logger.setLevel(logging.CRITICAL + 1)
    logger.addHandler(handler)


class ParamikoLogin:
    """The login node over one ``paramiko.Transport``, connected on first use."""

    logs_in_per_command = False  # one transport for every command of a connect
    auth_sock: str | None = None  # the ssh-agent whose keys to offer; None: SSH_AUTH_SOCK's

    def __init__(self, destination: str, *, ssh_config_files: Sequence[str] = SSH_CONFIG_FILES,
                 ask: prompt.Ask = prompt.ask, login_shell: bool | None = None) -> None:
        self.destination = destination
        self.shell = Shell(destination, login_shell)
        self.ask = ask  # how the login asks the user (a code, a passphrase)
        self.ssh_config_files = tuple(ssh_config_files)
        self._transport: Any = None
        self._under: list[Any] = []  # what the transport rides on: jump transports, ProxyCommands

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

    # Beyond the Login interface

    def forward_command(self, argv: Sequence[str]) -> int:
        """Run ``argv`` on the login node with our stdin/stdout as its own (its stderr copied to
        ours); the remote exit status, 255 if there was none (killed by a signal)."""
        log.debug(f"forward command: {log.shown(argv)}")
        channel = self.open_exec(self.shell.line(argv))
        status = self._pumped(lambda: self._stdio(channel, fd_writer(2)))
        return status if status >= 0 else 255

    def sharing(self) -> tuple[bool | None, str]:
        return None, "paramiko logs in once per connect, for its queries and its tunnel together"

    @property
    def connected(self) -> bool:
        return self._transport is not None and self._transport.is_active()

    def close(self) -> None:
        for part in [self._transport, *reversed(self._under)]:
            if part is not None:
                with contextlib.suppress(Exception):  # already gone
                    part.close()
        self._transport = None
        self._under = []

    # Plumbing

    def _stdio(self, channel: Channel, err: Callable[[bytes], None] | None = None) -> int:
        sys.stdout.flush()  # nothing of ours may trail into the stream
        source = stdin_source()
        try:
            return pump(channel, source, fd_writer(1), err)
        finally:
            source.close()

    def open_exec(self, command: str, log_in: bool = True) -> Any:
        """A channel running ``command`` (one shell command line) on the login node (``log_in``:
        logging in first if need be)."""
        transport = self._transport_for(log_in)
        try:
            channel = transport.open_session(window_size=WINDOW, max_packet_size=PACKET,
                                             timeout=CHANNEL_TIMEOUT)
            channel.exec_command(command)
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise LoginError(self.destination, f"cannot run a command: {describe(e)}") from None
        return channel

    def open_tcp(self, host: str, port: int, log_in: bool = True) -> Any:
        """A channel to ``host:port`` as the login node connects to it (``log_in``: as above)."""
        transport = self._transport_for(log_in)
        log.debug(f"forward: {host}:{port} via {self.destination}")
        try:
            return transport.open_channel("direct-tcpip", (host, port), ("127.0.0.1", 0),
                                          window_size=WINDOW, max_packet_size=PACKET,
                                          timeout=CHANNEL_TIMEOUT)
        except paramiko.ChannelException as e:
            raise LoginError(self.destination, f"the login node cannot connect to {host}:{port} "
                             f"({str(e.text).lower()})") from None
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise LoginError(self.destination, describe(e)) from None

    def _transport_for(self, log_in: bool) -> Any:
        """The open transport; a new login only with ``log_in`` (the agent logs in only under its
        per-host lock, so a login lost since is a LoginError it logs in again for)."""
        if log_in or self.connected:
            return self.connection()
        raise LoginError(self.destination, "connection lost")

    def _pumped(self, run: Callable[[], int]) -> int:
        """Run a pump; a connection that died under it is a LoginError, not an early EOF."""
        try:
            status = run()
        except (paramiko.SSHException, EOFError) as e:
            raise LoginError(self.destination, describe(e)) from None
        if not self._transport.is_active():
            cause = self._transport.get_exception()
            self.close()
            raise LoginError(self.destination, "connection lost" + (f": {describe(cause)}" if cause else ""))
        return status

    def connection(self) -> Any:
        """The authenticated transport: the open one, else a new login."""
        if self.connected:
            return self._transport
        self.close()
        _quiet_paramiko()
        try:
            config = read_ssh_config(self.ssh_config_files)
            self._transport = self._connect(config, resolve(config, self.destination))
        except LoginError:
            self.close()
            raise
        except (paramiko.SSHException, OSError, EOFError, ValueError) as e:
            self.close()
            raise LoginError(self.destination, describe(e)) from None
        return self._transport

    def _connect(self, config: paramiko.SSHConfig, target: Target, depth: int = 0) -> Any:
        """An authenticated transport to ``target``. What it rides on is kept in ``_under``."""
        if depth > MAX_HOPS:
            raise ValueError(f"more than {MAX_HOPS} ProxyJump hops (a loop in your ssh config?)")
        log.debug(f"connecting to {target.user}@{target.host} port {target.port} ({target.name})")
        sock = self._socket(config, target, depth)
        transport = paramiko.Transport(sock, default_window_size=WINDOW, default_max_packet_size=PACKET)
        try:
            _prefer_aead(transport)
            if target.connect_timeout:
                transport.banner_timeout = transport.handshake_timeout = target.connect_timeout
            known = read_known_hosts(target.known_hosts_files)
            _prefer_host_key_types(transport, known_key_types(known, target.host_key_name))
            try:
                transport.start_client(timeout=target.connect_timeout)
            except (paramiko.SSHException, OSError, EOFError) as e:
                raise LoginError(self.destination, _handshake_failure(e, sock, target)) from None
            key = transport.get_remote_server_key()
            verify(known, target, key.get_name(), key.asbytes(), self.destination)
            authenticate(transport, target, self.destination, self.ask, self.auth_sock)
        except BaseException:
            transport.close()
            raise
        if target.keepalive:
            transport.set_keepalive(target.keepalive)
        return transport

    def _socket(self, config: paramiko.SSHConfig, target: Target, depth: int) -> Any:
        """The byte stream to ``target``'s sshd: a jump host's channel, a ProxyCommand or TCP."""
        if target.proxy_jump:
            user, host, port = parse_jump(target.proxy_jump[-1])
            jump = resolve(config, host, user=user, port=port)
            if len(target.proxy_jump) > 1:  # the earlier hops lead to the last one
                jump = replace(jump, proxy_jump=target.proxy_jump[:-1], proxy_command=None)
            via = self._connect(config, jump, depth + 1)
            self._under.append(via)
            log.debug(f"jump: {jump.name} → {target.host} port {target.port}")
            try:
                return via.open_channel("direct-tcpip", (target.host, target.port), ("127.0.0.1", 0),
                                        timeout=target.connect_timeout or CHANNEL_TIMEOUT)
            except paramiko.ChannelException as e:
                raise LoginError(self.destination, f"jump host {jump.name} cannot connect to {target.host} "
                                 f"port {target.port} ({str(e.text).lower()})") from None
        if target.proxy_command:
            return self._proxy_command(target.proxy_command)
        try:
            sock = socket.create_connection((target.host, target.port), timeout=target.connect_timeout)
        except OSError as e:
            raise LoginError(self.destination, describe(e, target.host, target.port)) from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _proxy_command(self, command: str) -> Any:
        """The ProxyCommand, run as ssh runs it (through the user's shell), its stderr passed on
        to ours."""
        log.debug(f"ProxyCommand: {command}")
        if os.name != "nt":
            command = shlex.join([os.environ.get("SHELL") or "/bin/sh", "-c", f"exec {command}"])
        try:
            proxy = paramiko.ProxyCommand(command)
        except OSError as e:
            raise LoginError(self.destination, f"cannot run ProxyCommand: {describe(e)}") from None
        self._under.append(proxy)
        threading.Thread(target=copy, args=(proxy.process.stderr.read, best_effort(fd_writer(2))),
                         daemon=True, name="slurm-proxy-proxycommand").start()
        return proxy


def _handshake_failure(error: BaseException, sock: Any, target: Target) -> str:
    if isinstance(sock, paramiko.ProxyCommand) and sock.process.poll() is not None:
        return f"ProxyCommand exited with status {sock.process.returncode}"
    return describe(error, target.host, target.port)


def _prefer_aead(transport: Any) -> None:
    """AES-GCM first when the server offers it: one pass per packet instead of a cipher and a
    MAC, which on a busy login node or laptop costs a third less CPU per byte tunnelled."""
    options = transport.get_security_options()
    aead = [c for c in AEAD_CIPHERS if c in options.ciphers]
    options.ciphers = tuple(aead + [c for c in options.ciphers if c not in aead])


def _prefer_host_key_types(transport: Any, types: Sequence[str]) -> None:
    """Ask the server for a key type known_hosts holds for it, as ssh does."""
    options = transport.get_security_options()
    supported = list(options.key_types)
    first: list[str] = []
    for key_type in types:
        for name in ("rsa-sha2-512", "rsa-sha2-256") if key_type == "ssh-rsa" else (key_type,):
            if name in supported and name not in first:
                first.append(name)
    if first:
        options.key_types = tuple(first + [k for k in supported if k not in first])
