"""The paramiko backend's login: one authenticated ``paramiko.Transport`` to a login host, made as
ssh makes it (the user's ssh config: ProxyJump, ProxyCommand, ConnectTimeout, keepalive; the
known_hosts files; ssh-agent and key files, a second factor), and what it rides on (jump hosts'
transports, a ProxyCommand). Only the paramiko backend imports it."""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import socket
import sys
import threading
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import paramiko

from .. import log
from ..errors import LoginError
from .auth import authenticate
from .base import Ask
from .known_hosts import known_key_types, read_known_hosts, verify
from .pump import best_effort, copy, fd_writer
from .reasons import describe
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


class Connector:
    """Logs in to ``destination`` over paramiko; keeps the transport and what it rides on."""

    def __init__(self, destination: str, ssh_config_files: Sequence[str], ask: Ask,
                 auth_sock: str | None = None) -> None:
        self.destination = destination
        self.ssh_config_files = tuple(ssh_config_files)
        self.ask = ask  # how the login asks the user (a code, a passphrase)
        self.auth_sock = auth_sock  # the ssh-agent whose keys to offer; None: SSH_AUTH_SOCK's
        self.transport: Any = None
        self._under: list[Any] = []  # what the transport rides on: jump transports, ProxyCommands

    @property
    def active(self) -> bool:
        return self.transport is not None and self.transport.is_active()

    def close(self) -> None:
        for part in [self.transport, *reversed(self._under)]:
            if part is not None:
                with contextlib.suppress(Exception):  # already gone
                    part.close()
        self.transport = None
        self._under = []

    def connect(self) -> Any:
        """A new authenticated transport (the one before, if any, closed)."""
        self.close()
        _quiet_paramiko()
        try:
            config = read_ssh_config(self.ssh_config_files)
            self.transport = self._connect(config, resolve(config, self.destination))
        except LoginError:
            self.close()
            raise
        except (paramiko.SSHException, OSError, EOFError, ValueError) as e:
            self.close()
            raise LoginError(self.destination, describe(e)) from None
        return self.transport

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
