"""The login agent: one background process per user that holds one authenticated connection per
login host (a paramiko login, chosen at the package's face), and opens on it the channels
connects ask for over ``wire``: a command (the Slurm queries, mode srun's session) or a TCP hop
(the node's sshd).

One agent per user: it holds a lock on ``agent.lock`` for its whole life (the OS lets go of it
when the process dies, however it dies), so a second one started at the same moment gives up, and
a socket file left by a killed agent is known to be stale and replaced. A login no connect has
used for its ``idle`` seconds is closed; with no login and no connect left, the agent exits.

``Agent`` is the process's life and its connects (each on a ``wire.Wire`` of its own, its
``peer``); ``Logins`` the logins it holds, one ``ChannelLogin`` per login host (the contract in
``base``: the agent uses nothing else of the backend that ``serve``'s caller chose).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, NoReturn

from .. import log, paths
from ..errors import LoginError, SlurmProxyError
from . import prompt, wire
from .base import Channel, ChannelLogin
from .pump import pump

MakeLogin = Callable[[str], ChannelLogin]  # destination → a login not yet made (the backend's)

LOCK_WAIT = 5.0  # seconds a new agent waits for one on its way out to let go of the lock
TICK = 1.0  # seconds between looks for idle logins
FINISH_WAIT = 10.0  # seconds a connect has to hang up after its channel's end


class _Held:
    """One login host's login and what uses it."""

    def __init__(self, login: ChannelLogin, idle: int) -> None:
        self.login = login
        self.logging_in = threading.Lock()
        self.idle = idle
        self.channels = 0
        self.used = time.monotonic()
        self.since: float | None = None  # when its login succeeded
        self.failed: tuple[float, SlurmProxyError] | None = None  # the last login's failure


class Logins:
    """The logins the agent holds, one per login host, and the channels connects open on them."""

    def __init__(self, make_login: MakeLogin, lock: threading.Lock) -> None:
        self.make_login = make_login
        self.lock = lock  # the agent's: guards ``held`` and the counts
        self.held: dict[str, _Held] = {}

    @contextmanager
    def using(self, destination: str, idle: int) -> Iterator[_Held]:
        """The host's login (made if need be), counted as in use while the block runs."""
        with self.lock:
            held = self.held.get(destination)
            if held is None:
                held = self.held[destination] = _Held(self.make_login(destination), idle)
            held.idle = idle
            held.channels += 1
        try:
            yield held
        finally:
            with self.lock:
                held.channels -= 1
                held.used = time.monotonic()

    def open(self, held: _Held, peer: wire.Wire, request: dict[str, Any]) -> Channel:
        """The channel ``request`` asks for, logging in first if need be. A login found dead
        only now (the laptop slept, the network changed) is made again, once."""
        for attempt in (1, 2):
            self._log_in(held, peer, request)
            try:
                if request["op"] == "exec":  # the login is made above, under the host's lock
                    return held.login.open_exec(str(request["command"]), log_in=False)
                return held.login.open_tcp(str(request["host"]), int(request["port"]), log_in=False)
            except LoginError as e:
                if attempt == 2 or held.login.connected:
                    raise
                log.info(f"agent: the login to {held.login.destination} was lost ({e.detail})")
        raise AssertionError("unreachable")  # pragma: no cover

    def _log_in(self, held: _Held, peer: wire.Wire, request: dict[str, Any]) -> None:
        """One login at a time per host, its questions asked through the connect that needs it;
        a connect that started before a login failed fails with it, asking nothing (connects
        started at once share one prompt, right or wrong)."""
        started = float(request.get("since") or time.time())
        with held.logging_in:
            if held.login.connected:
                return
            if held.failed is not None and held.failed[0] >= started:
                raise held.failed[1]  # the login this connect waited for failed: no second prompt
            held.since = None
            sock = request.get("auth_sock")  # the connect's ssh-agent, or none
            try:
                held.login.connect(_asker(peer), sock if isinstance(sock, str) else "")
            except SlurmProxyError as e:
                held.failed = (time.time(), e)
                raise
            held.since = time.time()
            log.info(f"agent: logged in to {held.login.destination}")

    def close_idle(self, now: float) -> None:
        """Close the logins no connect has used for their ``idle`` seconds (under the lock)."""
        for destination, held in list(self.held.items()):
            if held.channels == 0 and now - held.used >= held.idle:
                log.info(f"agent: closing the login to {destination} (idle)")
                held.login.close()
                del self.held[destination]

    def close_all(self) -> None:
        for held in list(self.held.values()):
            held.login.close()

    def status(self, now: float) -> list[dict[str, Any]]:
        """The logins made, for ``agent --status`` (under the lock)."""
        return [{"destination": d, "since": h.since, "channels": h.channels,
                 "idle_for": 0 if h.channels else now - h.used}
                for d, h in self.held.items() if h.since is not None]


class Agent:
    """The agent's life (its lock, key and listener; idle exit) and the connects it serves."""

    def __init__(self, home: Path, idle: int, make_login: MakeLogin) -> None:
        self.home = home
        self.idle = idle
        self.lock = threading.Lock()
        self.logins = Logins(make_login, self.lock)
        self.connects = 0  # connects being served now
        self.used = time.monotonic()  # when a channel last opened or closed (a status is no use)
        self.started = time.time()
        self.where = wire.address(home)
        self.key = b""
        self.listener: Any = None
        self.life: Any = None  # the lock held for the agent's whole life (freed when it is freed)
        self.exiting = False

    # Lifecycle

    def start(self) -> Any:
        """Take the agent's lock, write a fresh key, listen: the listener, or None when another
        agent runs."""
        from filelock import FileLock, Timeout

        paths.private_dir(self.home)
        life = FileLock(str(self.home / "agent.lock"), mode=0o600)
        try:
            life.acquire(timeout=LOCK_WAIT)
        except Timeout:
            log.info("agent: another agent is running")
            return None
        self.life = life
        if not self.where.startswith("\\\\"):  # a socket file with no agent behind it
            paths.private_dir(Path(self.where).parent)
            with suppress(FileNotFoundError):
                os.unlink(self.where)
        self.key = os.urandom(32).hex().encode()
        paths.write_private(wire.key_path(self.home), self.key.decode())
        self.listener = wire.listen(self.where)
        log.info(f"agent: pid {os.getpid()} listening on {self.where}")
        threading.Thread(target=self._reaper, daemon=True, name="slurm-proxy-reaper").start()
        return self.listener

    def accept(self, listener: Any) -> None:
        """Serve each connect on a thread of its own, until the agent exits."""
        while True:
            try:
                conn = listener.accept()
            except OSError as e:
                if self.exiting:
                    return
                log.error(f"agent: accept: {e}")
                time.sleep(0.1)
                continue
            with self.lock:
                self.connects += 1
            threading.Thread(target=self._serve_connect, args=(conn,), daemon=True,
                             name="slurm-proxy-line").start()

    def _reaper(self) -> None:
        while True:
            time.sleep(TICK)
            with self.lock:
                now = time.monotonic()
                self.logins.close_idle(now)
                if not self.logins.held and not self.connects and now - self.used >= self.idle:
                    self._exit("idle")

    def _exit(self, why: str) -> NoReturn:
        log.info(f"agent: exiting ({why})")
        self.exiting = True
        with suppress(OSError):
            self.listener.close()  # a Unix socket's file goes with it
        self.logins.close_all()
        os._exit(0)

    # One connect

    def _serve_connect(self, conn: Any) -> None:
        peer = wire.Wire(conn)
        try:
            uid = wire.peer_uid(conn)  # None on Windows: the pipe's key decides
            if uid is not None and uid != os.getuid():
                log.info(f"agent: refused a connection from uid {uid}")
                return
            wire.challenge(peer, self.key)
            tag, body = peer.recv()
            request = json.loads(body) if tag == wire.REQUEST else {}
            self._serve(peer, request)
        except wire.Stranger as e:
            log.info(f"agent: refused a connection: {e}")
        except (EOFError, OSError, ValueError) as e:
            log.debug(f"agent: a connect hung up: {e}")
        finally:
            with suppress(OSError):
                peer.close()
            with self.lock:
                self.connects -= 1

    def _serve(self, peer: wire.Wire, request: dict[str, Any]) -> None:
        op = request.get("op")
        if op in ("status", "stop"):
            peer.send(wire.READY, json.dumps(self._status()).encode())
            if op == "stop":
                with self.lock:
                    self._exit("asked to stop")
            return
        if op not in ("exec", "tcp") or not isinstance(request.get("destination"), str):
            peer.send(wire.REFUSE, json.dumps({"error": f"unknown request {op!r}"}).encode())
            return
        idle = int(request.get("idle") or self.idle)
        self._touch(idle)
        try:
            with self.logins.using(request["destination"], idle) as held:
                try:
                    channel = self.logins.open(held, peer, request)
                except LoginError as e:
                    peer.send(wire.REFUSE, json.dumps({"login": e.detail}).encode())
                    return
                except SlurmProxyError as e:
                    peer.send(wire.REFUSE, json.dumps({"error": str(e)}).encode())
                    return
                _relay(channel, peer, op)
        finally:
            self._touch(idle)

    def _touch(self, idle: int) -> None:
        """A channel opens or closes: the agent is in use (and lives at least ``idle``)."""
        with self.lock:
            self.idle = max(self.idle, idle)
            self.used = time.monotonic()

    def _status(self) -> dict[str, Any]:
        with self.lock:
            return {"pid": os.getpid(), "since": self.started, "idle": self.idle,
                    "logins": self.logins.status(time.monotonic())}


def _relay(channel: Channel, peer: wire.Wire, op: str) -> None:
    """Pump the open channel to and from the connect on ``peer``, until both ends are done."""
    peer.send(wire.READY)
    frames = _Frames(peer)
    send_err = (lambda data: peer.send(wire.ERR, data)) if op == "exec" else None
    status = pump(channel, frames, lambda data: peer.send(wire.OUT, data), send_err)
    peer.send(wire.EXIT, str(status).encode())
    frames.done.wait(FINISH_WAIT)


class _Frames:
    """``pump``'s source: the connect's stdin, frame by frame, until it ends or hangs up."""

    def __init__(self, peer: wire.Wire) -> None:
        self.peer = peer
        self.done = threading.Event()

    def read(self, size: int) -> bytes:
        try:
            tag, body = self.peer.recv()
        except BaseException:
            self.done.set()
            raise
        if tag == wire.DATA:
            return body
        self.done.set()
        return b""

    def stop(self) -> bool:
        return False  # a pending recv ends when the connect hangs up


def _asker(peer: wire.Wire) -> prompt.Ask:
    """The login's questions, asked through the connect on ``peer``."""
    def ask(text: str, echo: bool) -> str:
        try:
            peer.send(wire.ASK, json.dumps({"prompt": text, "echo": echo}).encode())
            tag, body = peer.recv()
        except (EOFError, OSError):
            raise prompt.Cancelled(text) from None
        if tag == wire.ANSWER:
            return body.decode(errors="replace")
        why = json.loads(body)
        if why.get("kind") == "cannot":
            raise prompt.CannotAsk(text)
        if why.get("kind") == "error":
            raise SlurmProxyError(str(why.get("message")))
        raise prompt.Cancelled(text)
    return ask


def serve(home: Path, idle: int, make_login: MakeLogin) -> int:
    """Run the agent of the state directory ``home`` in this process, until it exits, holding
    the logins ``make_login`` makes."""
    log.stamped = True
    os.umask(0o077)  # whatever the agent creates is the user's alone
    agent = Agent(home, idle, make_login)
    listener = agent.start()
    if listener is None:
        return 0
    signal.signal(signal.SIGTERM, lambda signum, frame: agent._exit("terminated"))
    try:
        agent.accept(listener)
    except KeyboardInterrupt:
        agent._exit("interrupted")
    return 0
