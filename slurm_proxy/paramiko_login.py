"""The login connection over paramiko: one SSH transport carries the Slurm queries and the tunnel.

``ParamikoLogin`` needs no ``ssh`` binary and no control socket: it reads the user's ssh config,
verifies the login node against the known_hosts files, authenticates with ssh-agent and key
files, and keeps one ``paramiko.Transport`` for every later call.

This is the only module that imports paramiko; callers import it only when the ``paramiko``
backend is chosen, so the default proxy path never pays for it.
"""

from __future__ import annotations

import base64
import contextlib
import getpass
import hashlib
import hmac
import logging
import os
import re
import selectors
import shlex
import socket
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from glob import glob
from pathlib import Path
from typing import Any, Protocol

import paramiko

from . import log
from .errors import LoginError
from .login import Result, no_exec

SSH_CONFIG_FILES = ("~/.ssh/config", "/etc/ssh/ssh_config")
USER_KNOWN_HOSTS = "~/.ssh/known_hosts ~/.ssh/known_hosts2"
GLOBAL_KNOWN_HOSTS = "/etc/ssh/ssh_known_hosts /etc/ssh/ssh_known_hosts2"
DEFAULT_KEYS = ("~/.ssh/id_rsa", "~/.ssh/id_ecdsa", "~/.ssh/id_ed25519")
MAX_HOPS = 8  # ProxyJump chains longer than this are taken for a loop in the ssh config

# Flow control for the channels we open: a window of 16 MiB keeps a fast link busy, while
# packets stay at the 32 KiB every SSH server accepts.
WINDOW = 16 * 1024 * 1024
PACKET = 32 * 1024
READ_SIZE = 64 * 1024  # bytes asked of stdin / the channel per call
CHANNEL_TIMEOUT = 60.0  # seconds for the login node to answer a channel request
AEAD_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


# --- the ssh config ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    """Where and how to connect, as the ssh config resolves a host name."""

    name: str                          # the name the user wrote (a Host alias)
    host: str                          # HostName
    port: int
    user: str
    identity_files: tuple[str, ...]    # IdentityFile, else the default ~/.ssh/id_* keys
    identities_only: bool
    known_hosts_files: tuple[str, ...]  # UserKnownHostsFile, then GlobalKnownHostsFile
    host_key_alias: str | None
    proxy_command: str | None
    proxy_jump: tuple[str, ...]        # jump hosts, first hop first
    connect_timeout: float | None
    keepalive: int                     # ServerAliveInterval, 0 for none

    @property
    def host_key_name(self) -> str:
        """The name known_hosts lists this host under (``[host]:port`` off port 22)."""
        if self.host_key_alias:
            return self.host_key_alias
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"


def read_ssh_config(files: Sequence[str] = SSH_CONFIG_FILES) -> paramiko.SSHConfig:
    """The ssh config files in order (the first value found wins, as in ssh), with their
    ``Include`` lines expanded."""
    config = paramiko.SSHConfig()
    for name in files:
        path = Path(os.path.expanduser(name))
        try:
            text = _with_includes(path, path.parent)
        except OSError:
            continue  # a missing config file is an empty one
        try:
            config.parse(text.splitlines())
        except paramiko.SSHException as e:
            raise ValueError(f"cannot read {path}: {_one_line(e)}") from None
    return config


def _with_includes(path: Path, base: Path, depth: int = 0) -> str:
    """The text of ``path`` with each ``Include`` replaced by the files it names (relative
    names are under ``base``: ~/.ssh for the user's config, /etc/ssh for the system's)."""
    lines = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        m = re.match(r"\s*include\s*[=\s]\s*(.+)$", line, re.I)
        if not m or depth >= 8:
            lines.append(line)
            continue
        for pattern in _words(m.group(1)):
            pattern = os.path.expanduser(pattern)
            for included in sorted(glob(os.path.join(base, pattern))):
                with contextlib.suppress(OSError):  # unreadable: skipped, as ssh does
                    lines.append(_with_includes(Path(included), base, depth + 1))
    return "\n".join(lines)


def resolve(config: paramiko.SSHConfig, name: str, *, user: str | None = None,
            port: int | None = None) -> Target:
    """``name`` as the ssh config resolves it; ``user``/``port`` (from a ProxyJump spec) win.
    A value ssh would refuse is a ValueError."""
    try:
        opts = config.lookup(name)
    except paramiko.SSHException as e:
        raise ValueError(f"ssh config for {name}: {_one_line(e)}") from None
    host = str(opts.get("hostname", name))
    port = port or _number(opts, "port") or 22
    user = user or opts.get("user") or getpass.getuser()

    def expand(path: str) -> str:
        for token, value in (("%d", os.path.expanduser("~")), ("%u", getpass.getuser()),
                             ("%h", host), ("%p", str(port)), ("%r", user)):
            path = path.replace(token, value)
        return os.path.expanduser(path.replace("%%", "%"))

    identity = [expand(p) for p in opts.get("identityfile", []) if p.lower() != "none"]
    known = [expand(p) for p in _words(opts.get("userknownhostsfile", USER_KNOWN_HOSTS))]
    known += [expand(p) for p in _words(opts.get("globalknownhostsfile", GLOBAL_KNOWN_HOSTS))]
    jump = opts.get("proxyjump") or ""
    timeout = _number(opts, "connecttimeout")
    return Target(
        name=name,
        host=host,
        port=port,
        user=str(user),
        identity_files=tuple(identity) or tuple(os.path.expanduser(k) for k in DEFAULT_KEYS),
        identities_only=str(opts.get("identitiesonly", "no")).lower() == "yes",
        known_hosts_files=tuple(p for p in known if p.lower() != "none"),
        host_key_alias=opts.get("hostkeyalias"),
        proxy_command=opts.get("proxycommand") or None,  # paramiko reads "none" as None
        proxy_jump=() if jump.lower() == "none" else tuple(h.strip() for h in jump.split(",") if h.strip()),
        connect_timeout=float(timeout) if timeout else None,
        keepalive=_number(opts, "serveraliveinterval") or 0,
    )


def _words(value: str) -> list[str]:
    """A list of paths in an ssh config value: split on blanks, "double quotes" keep a path with
    blanks whole; backslashes are left alone (Windows paths)."""
    return [quoted or bare for quoted, bare in re.findall(r'"([^"]*)"|(\S+)', value)]


def _number(opts: dict[str, Any], key: str) -> int | None:
    value = opts.get(key)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"ssh config: {key} {value!r} is not a number") from None


def parse_jump(spec: str) -> tuple[str | None, str, int | None]:
    """A ProxyJump hop ``[ssh://][user@]host[:port]`` (``[v6]:port`` too) → (user, host, port)."""
    rest = spec[len("ssh://"):] if spec.startswith("ssh://") else spec
    user, at, hostport = rest.rpartition("@")
    m = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?|([^:]+)(?::(\d+))?", hostport)
    if not m or not (m.group(1) or m.group(3)):
        raise ValueError(f"ssh config: cannot read ProxyJump host {spec!r}")
    host = m.group(1) or m.group(3)
    port = m.group(2) or m.group(4)
    return (user if at else None), host, (int(port) if port else None)


# --- known_hosts --------------------------------------------------------------------------------

@dataclass(frozen=True)
class KnownKey:
    patterns: tuple[str, ...]  # host patterns, hashed (|1|salt|hash) or plain with * ? and !
    key_type: str
    blob: bytes
    marker: str = ""           # "", "@revoked" or "@cert-authority"


def read_known_hosts(files: Sequence[str]) -> list[KnownKey]:
    keys = []
    for name in files:
        try:
            text = Path(name).read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        keys += parse_known_hosts(text)
    return keys


def parse_known_hosts(text: str) -> list[KnownKey]:
    keys = []
    for line in text.splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        marker = words.pop(0) if words[0].startswith("@") else ""
        if len(words) < 3:
            continue
        try:
            blob = base64.b64decode(words[2], validate=True)
        except ValueError:
            continue
        keys.append(KnownKey(tuple(words[0].split(",")), words[1], blob, marker))
    return keys


def host_matches(patterns: Sequence[str], name: str) -> bool:
    """OpenSSH's rule: some pattern matches and no negated (``!``) one does."""
    name = name.lower()
    found = False
    for pattern in patterns:
        if pattern.startswith("|1|"):
            found = found or _hashed_match(pattern, name)
            continue
        negated = pattern.startswith("!")
        if _wildcard(pattern.lstrip("!").lower()).fullmatch(name):
            if negated:
                return False
            found = True
    return found


def _wildcard(pattern: str) -> re.Pattern[str]:
    """ssh's patterns know only ``*`` and ``?`` (``[`` is literal, as in ``[host]:port``)."""
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern))


def _hashed_match(pattern: str, name: str) -> bool:
    try:
        _, _, salt, digest = pattern.split("|")
        expected = base64.b64decode(digest)
        mine = hmac.new(base64.b64decode(salt), name.encode(), hashlib.sha1).digest()
    except ValueError:
        return False
    return hmac.compare_digest(mine, expected)


def check_host_key(known: Sequence[KnownKey], name: str, key_type: str, blob: bytes) -> str:
    """``"ok"``, ``"revoked"``, ``"mismatch"`` (this host has another key of the type) or
    ``"unknown"``."""
    if any(k.marker == "@revoked" and k.blob == blob for k in known):
        return "revoked"
    mine = [k for k in known if not k.marker and host_matches(k.patterns, name)]
    if any(k.blob == blob for k in mine):
        return "ok"
    return "mismatch" if any(k.key_type == key_type for k in mine) else "unknown"


def known_key_types(known: Sequence[KnownKey], name: str) -> list[str]:
    """The key types known_hosts holds for ``name``, to ask the server for one of them first."""
    types = [k.key_type for k in known if not k.marker and host_matches(k.patterns, name)]
    return list(dict.fromkeys(types))


def fingerprint_of(blob: bytes) -> str:
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


# --- errors -------------------------------------------------------------------------------------

def describe(error: BaseException, host: str = "", port: int = 0) -> str:
    """One line for a failure while connecting to ``host``:``port`` or using the connection."""
    where = f"connect to {host} port {port}" if host else "connection"
    if isinstance(error, socket.gaierror):
        return f"cannot resolve {host}: {error.strerror or _one_line(error)}"
    if isinstance(error, ConnectionRefusedError):
        return f"{where}: connection refused"
    if isinstance(error, (TimeoutError, socket.timeout)):
        return f"{where}: timed out"
    if isinstance(error, paramiko.ProxyCommandFailure):
        return f"ProxyCommand failed: {error.command}: {error.error}"
    if isinstance(error, paramiko.ChannelException):
        return f"the server refused a channel ({str(error.text).lower()})"
    if isinstance(error, EOFError):
        return f"{where}: the server closed the connection"
    if isinstance(error, OSError) and error.strerror:
        return f"{where}: {error.strerror[:1].lower()}{error.strerror[1:]}"
    text = _one_line(error)
    if "protocol banner" in text:
        return f"{where}: no SSH server answered ({text})"
    return text


def _one_line(error: BaseException) -> str:
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    return (" ".join(lines[0].split()) if lines else type(error).__name__)[:300]


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


# --- the pump -----------------------------------------------------------------------------------

class Channel(Protocol):
    """What the pump uses of a ``paramiko.Channel``."""

    def recv(self, nbytes: int) -> bytes: ...
    def recv_stderr(self, nbytes: int) -> bytes: ...
    def sendall(self, data: bytes) -> None: ...
    def shutdown_write(self) -> None: ...
    def recv_exit_status(self) -> int: ...
    def close(self) -> None: ...


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
        copier = threading.Thread(target=_copy, args=(channel.recv_stderr, best_effort(err)), daemon=True,
                                  name="slurm-proxy-stderr")
        copier.start()
    status = -1
    try:
        if _copy(channel.recv, out):
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
        log.debug(f"sending stopped: {_one_line(e)}")
    with contextlib.suppress(Exception):  # the channel is already gone
        channel.shutdown_write()


def _copy(recv: Callable[[int], bytes], write: Callable[[bytes], None]) -> bool:
    """Copy until EOF (True) or until the writer's reader has gone (False)."""
    while data := recv(READ_SIZE):
        try:
            write(data)
        except OSError as e:
            log.debug(f"output closed: {_one_line(e)}")
            return False
    return True


def best_effort(write: Callable[[bytes], None]) -> Callable[[bytes], None]:
    """For diagnostics (stderr): a write that fails loses the bytes, never stops the reading."""
    def write_or_drop(data: bytes) -> None:
        with contextlib.suppress(OSError):
            write(data)
    return write_or_drop


# --- the connection -----------------------------------------------------------------------------

class ParamikoLogin:
    """The login node over one ``paramiko.Transport``, connected on first use."""

    def __init__(self, destination: str, *, ssh_config_files: Sequence[str] = SSH_CONFIG_FILES) -> None:
        self.destination = destination
        self.ssh_config_files = tuple(ssh_config_files)
        self._transport: Any = None
        self._under: list[Any] = []  # what the transport rides on: jump transports, ProxyCommands

    # The Login interface

    def run(self, argv: Sequence[str], stdin: str | None = None) -> Result:
        command = shlex.join(argv)
        log.debug(f"run on {self.destination}: {log.shown(argv)}")
        out: list[bytes] = []
        err: list[bytes] = []
        channel = self._session(command)
        source = BytesSource((stdin or "").encode())
        status = self._pumped(lambda: pump(channel, source, out.append, err.append))
        stdout = b"".join(out).decode(errors="replace")
        stderr = b"".join(err).decode(errors="replace")
        if status < 0:  # killed by a signal: ssh would exit with 255, which is a LoginError too
            detail = log.last_line(stderr) or f"`{command}` ended without an exit status"
            raise LoginError(self.destination, detail)
        return Result(status, stdout, stderr)

    def forward_stdio(self, host: str, port: int) -> int:
        transport = self._connection()
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
        self._pumped(lambda: self._stdio(channel))
        return 0

    # Beyond the Login interface

    def forward_command(self, argv: Sequence[str]) -> int:
        """Run ``argv`` on the login node with our stdin/stdout as its own (its stderr copied to
        ours); the remote exit status, 255 if there was none (killed by a signal)."""
        command = shlex.join(argv)
        log.debug(f"forward command: {log.shown(argv)}")
        channel = self._session(command)
        status = self._pumped(lambda: self._stdio(channel, fd_writer(2)))
        return status if status >= 0 else 255

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

    def _session(self, command: str) -> Any:
        transport = self._connection()
        try:
            channel = transport.open_session(window_size=WINDOW, max_packet_size=PACKET,
                                             timeout=CHANNEL_TIMEOUT)
            channel.exec_command(command)
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise LoginError(self.destination, f"cannot run a command: {describe(e)}") from None
        return channel

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

    def _connection(self) -> Any:
        if self._transport is not None and self._transport.is_active():
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
            _verify(known, target, key.get_name(), key.asbytes(), self.destination)
            _authenticate(transport, target, self.destination)
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
        threading.Thread(target=_copy, args=(proxy.process.stderr.read, best_effort(fd_writer(2))),
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


def _verify(known: Sequence[KnownKey], target: Target, key_type: str, blob: bytes, destination: str) -> None:
    """Refuse a host key known_hosts does not list for the host: never trust on first use."""
    name = target.host_key_name
    verdict = check_host_key(known, name, key_type, blob)
    got = f"{key_type} {fingerprint_of(blob)}"
    log.debug(f"host key {got} for {name}: {verdict}")
    if verdict == "ok":
        return
    if verdict == "unknown":
        detail = f"host key for {name} is not in your known_hosts: connect once with `ssh {target.name}`"
    elif verdict == "revoked":
        detail = f"host key for {name} ({got}) is marked @revoked in your known_hosts"
    else:
        detail = (f"host key for {name} does not match your known_hosts (got {got}); "
                  f"if it really changed: ssh-keygen -R {shlex.quote(name)}")
    raise LoginError(destination, detail)


def _authenticate(transport: Any, target: Target, destination: str) -> None:
    skipped: list[str] = []
    for key, label in _keys(target, skipped):
        log.debug(f"offering key {label}")
        try:
            remaining = transport.auth_publickey(target.user, key)
        except paramiko.BadAuthenticationType as e:
            allowed = ", ".join(e.allowed_types) or "none"
            raise LoginError(destination, f"{target.user}@{target.host} takes no keys (it allows: {allowed})"
                             ) from None
        except paramiko.SSHException as e:  # refused, or an agent that would not sign
            log.debug(f"key {label}: {_one_line(e)}")
            if not transport.is_active():
                break
            continue
        if not remaining:
            log.debug(f"authenticated with {label}")
            return
        log.debug(f"authenticated with {label}; the server also wants {', '.join(remaining)}")
        _second_factor(transport, target, destination, remaining)
        return
    tried = ", ".join(["ssh-agent", *(_home(p) for p in target.identity_files)])
    hint = f"; skipped {', '.join(skipped)}" if skipped else ""
    raise LoginError(destination, f"permission denied for {target.user}@{target.host} (publickey): "
                     f"no key from {tried} was accepted{hint}")


def _second_factor(transport: Any, target: Target, destination: str, methods: Sequence[str]) -> None:
    """What the server asks after the key (a one-time code): its prompts answered on the terminal
    or through SSH_ASKPASS, never on the SSH stream; nothing answered is logged."""
    from . import prompt

    def answer(title: str, instructions: str, prompts: Sequence[tuple[str, bool]]) -> list[str]:
        return [prompt.ask(f"({target.user}@{target.host}) {text}", echo) for text, echo in prompts]

    try:
        if "keyboard-interactive" in methods:
            remaining = transport.auth_interactive(target.user, answer)
        elif "password" in methods:
            remaining = transport.auth_password(
                target.user, prompt.ask(f"({target.user}@{target.host}) Password: "))
        else:
            raise LoginError(destination, f"{target.user}@{target.host} wants {', '.join(methods)} "
                             "after the key, which slurm-proxy cannot answer")
    except paramiko.AuthenticationException:
        raise LoginError(destination, f"{target.user}@{target.host}: permission denied "
                         f"({', '.join(methods)})") from None
    if remaining:
        raise LoginError(destination, f"{target.user}@{target.host} still wants {', '.join(remaining)}")


def _keys(target: Target, skipped: list[str]) -> Iterator[tuple[Any, str]]:
    """Keys to offer in ssh's order: the agent's keys for the IdentityFiles, its others (unless
    IdentitiesOnly), then the key files the agent did not already offer."""
    wanted = {_public_blob(p) for p in target.identity_files} - {None}
    try:
        agent_keys = list(paramiko.Agent().get_keys())
    except (paramiko.SSHException, OSError) as e:
        log.debug(f"ssh-agent: {_one_line(e)}")
        agent_keys = []
    ordered = [k for k in agent_keys if k.asbytes() in wanted]
    if not target.identities_only:
        ordered += [k for k in agent_keys if k.asbytes() not in wanted]
    offered = set()
    for key in ordered:
        offered.add(key.asbytes())
        yield key, f"from ssh-agent ({key.comment or key.get_name()})"
    for path in target.identity_files:
        if not os.path.exists(path) or _public_blob(path) in offered:
            continue
        try:
            key = _key_from(path)
        except _NoPassphrase:
            skipped.append(f"{_home(path)} (has a passphrase, and none was given)")
            continue
        except Exception as e:  # not a key paramiko can read (its errors share no base class)
            skipped.append(f"{_home(path)} ({_one_line(e)})")
            continue
        if key.asbytes() not in offered:
            yield key, _home(path)


class _NoPassphrase(Exception):
    pass


def _key_from(path: str) -> Any:
    """A private key file; an encrypted one's passphrase is asked once, like ssh does."""
    from . import prompt

    try:
        return paramiko.PKey.from_path(path)
    except (TypeError, paramiko.PasswordRequiredException):
        pass
    try:
        passphrase = prompt.ask(f"Enter passphrase for key '{path}': ")
    except (prompt.CannotAsk, prompt.Cancelled) as e:
        log.debug(f"no passphrase for {_home(path)}: {e}")
        raise _NoPassphrase from None
    if not passphrase:
        raise _NoPassphrase
    try:
        return paramiko.PKey.from_path(path, passphrase.encode())
    except (paramiko.SSHException, ValueError):
        log.info(f"wrong passphrase for {_home(path)}")
        raise _NoPassphrase from None


def _public_blob(private_key_path: str) -> bytes | None:
    try:
        return base64.b64decode(Path(private_key_path + ".pub").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _home(path: str) -> str:
    home = os.path.expanduser("~")
    return "~" + path[len(home):] if path.startswith(home + os.sep) else path
