"""The line between a connect and the login agent: where the agent listens, how each end proves
it is the user's, and the framed messages both ends send. No paramiko here: the connect's end is
on the proxy path.

Where: POSIX, a Unix socket in a 0700 directory of ours (the state directory's ``cm``, or a
private directory under /tmp when that is too deep for a socket path); Windows, a named pipe.
Who: a fresh 32-byte key in a 0600 file, written by each agent before it listens, proved both
ways (an HMAC of the other end's nonce) before anything else is said, so a connect never talks to
a stranger's pipe and the agent never serves a stranger; on Linux and macOS the peer's uid is
checked first as well. Never a TCP port.
"""

from __future__ import annotations

import hmac
import os
import sys
import threading
from pathlib import Path
from typing import Any

from .. import log
from ..errors import SlurmProxyError
from . import sockets

# In the agent's address: a slurm-proxy that speaks another protocol starts its own agent.
PROTOCOL = 1

# A frame is one tag byte and its body.
REQUEST = b"r"  # connect → agent: what to do (JSON)
ASK = b"?"  # agent → connect: a question of the login (JSON: prompt, echo)
ANSWER = b"="  # connect → agent: the user's answer
REFUSE = b"!"  # either way: why not (JSON)
READY = b"+"  # agent → connect: the channel is open (or the status, as JSON)
DATA = b"i"  # connect → agent: the connect's stdin
END = b"I"  # connect → agent: its stdin ended
OUT = b"o"  # agent → connect: the channel's output
ERR = b"e"  # agent → connect: the command's stderr
EXIT = b"x"  # agent → connect: the channel ended (the exit status, -1 if none)

NONCE = 32
DIGEST = "sha256"
HANDSHAKE_MAX = 128  # bytes of a frame before the peer is known to be ours


class Absent(Exception):
    """No agent answers at the address (never started, exited, or killed)."""


class Stranger(SlurmProxyError):
    def __init__(self, who: str) -> None:
        super().__init__(f"the slurm-proxy agent's line: {who} does not hold the key")


def address(home: Path, platform: str = sys.platform, uid: int | None = None) -> str:
    """Where the agent of the state directory ``home`` (of the user ``uid``) listens."""
    name = f"slurm-proxy-agent {PROTOCOL} {home}"
    if platform == "win32":
        return rf"\\.\pipe\slurm-proxy-agent-{PROTOCOL}-{sockets.short_name(name)}"
    return str(sockets.socket_path(name, home, platform, uid))


def key_path(home: Path) -> Path:
    return home / "agent.key"


class Wire:
    """One connection, sending whole frames (one sender at a time) and receiving them."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self._sending = threading.Lock()

    def send(self, tag: bytes, body: bytes = b"") -> None:
        with self._sending:
            self.conn.send_bytes(tag + body)

    def recv(self, limit: int | None = None) -> tuple[bytes, bytes]:
        """The next frame's tag and body; EOFError when the other end has gone."""
        frame = self.conn.recv_bytes(limit)
        if not frame:
            raise EOFError("an empty frame")
        return frame[:1], frame[1:]

    def close(self) -> None:
        self.conn.close()


def listen(where: str) -> Any:
    """The agent's listener (a stale socket file of a dead agent is the caller's to remove)."""
    from multiprocessing.connection import Listener

    return Listener(where, backlog=64)


def dial_agent(home: Path) -> Wire:
    """A proven line to the agent of the state directory ``home``; ``Absent`` when none runs.
    An agent that restarted between our reading its key and dialling it holds a new key: its
    proof fails (or it hangs up on ours), and it is dialled once more with the key now on disk."""
    where = address(home)
    key = read_key(home)
    try:
        return dial(where, key)
    except (Absent, Stranger):
        fresh = read_key(home)
        if fresh == key:
            raise
    log.debug("the slurm-proxy agent's key changed while dialling it: dialling again")
    return dial(where, fresh)


def dial(where: str, key: bytes | None) -> Wire:
    """A proven line to the agent at ``where``; ``Absent`` when none listens."""
    from multiprocessing.connection import Client

    try:
        wire = Wire(Client(where))
    except (FileNotFoundError, ConnectionRefusedError) as e:
        raise Absent(str(e)) from None
    try:
        if key is None:
            raise Absent("no key")
        _, challenge = wire.recv(HANDSHAKE_MAX)
        nonce = os.urandom(NONCE)
        wire.send(ANSWER, nonce + _mac(key, "connect", challenge + nonce))
        _, proof = wire.recv(HANDSHAKE_MAX)
        if not hmac.compare_digest(proof, _mac(key, "agent", nonce + challenge)):
            raise Stranger("the agent")
    except (EOFError, ConnectionResetError, BrokenPipeError) as e:  # an agent on its way out
        wire.close()
        raise Absent(str(e) or "the agent hung up") from None
    except BaseException:
        wire.close()
        raise
    return wire


def challenge(wire: Wire, key: bytes) -> None:
    """The agent's half of the proof: the connect answers a nonce first (so a stranger learns
    nothing), then the agent answers the connect's."""
    challenge = os.urandom(NONCE)
    wire.send(REQUEST, challenge)
    _, answer = wire.recv(HANDSHAKE_MAX)
    nonce, proof = answer[:NONCE], answer[NONCE:]
    if len(nonce) != NONCE or not hmac.compare_digest(proof, _mac(key, "connect", challenge + nonce)):
        raise Stranger("the connect")
    wire.send(ANSWER, _mac(key, "agent", nonce + challenge))


def _mac(key: bytes, who: str, nonces: bytes) -> bytes:
    return hmac.new(key, who.encode() + b"\0" + nonces, DIGEST).digest()


def read_key(home: Path) -> bytes | None:
    try:
        return key_path(home).read_bytes()
    except OSError:
        return None


def peer_uid(conn: Any, platform: str = sys.platform) -> int | None:
    """The uid of the process at the other end of a Unix socket, where the OS says it (Linux's
    SO_PEERCRED, macOS's LOCAL_PEERCRED); None elsewhere."""
    import socket
    import struct

    if not (platform.startswith("linux") or platform == "darwin"):
        return None
    sock = socket.socket(fileno=os.dup(conn.fileno()))
    try:
        if platform == "darwin":  # struct xucred: cr_version, cr_uid, ...
            return int(struct.unpack_from("I", sock.getsockopt(0, 1, 76), 4)[0])
        _pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                              struct.calcsize("3i")))
        return int(uid)
    finally:
        sock.close()
