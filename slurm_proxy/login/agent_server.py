"""The login agent: one background process per user that holds one authenticated paramiko
connection per login host, and opens on it the channels connects ask for over ``wire``: a
command (the Slurm queries, mode srun's session) or a TCP hop (the node's sshd).

One agent per user: it holds a lock on ``agent.lock`` for its whole life (the OS lets go of it
when the process dies, however it dies), so a second one started at the same moment gives up, and
a socket file left by a killed agent is known to be stale and replaced. A login no connect has
used for its ``idle`` seconds is closed; with no login and no connect left, the agent exits.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, NoReturn

from .. import log, paths
from ..errors import LoginError, SlurmProxyError
from . import prompt, wire
from .paramiko_backend import ParamikoLogin
from .pump import pump

LOCK_WAIT = 5.0  # seconds a new agent waits for one on its way out to let go of the lock
TICK = 1.0  # seconds between looks for idle logins
FINISH_WAIT = 10.0  # seconds a connect has to hang up after its channel's end


class _Held:
    """One login host's connection and what uses it."""

    def __init__(self, destination: str, idle: int) -> None:
        self.login = ParamikoLogin(destination)
        self.logging_in = threading.Lock()
        self.idle = idle
        self.channels = 0
        self.used = time.monotonic()
        self.since: float | None = None  # when its login succeeded
        self.failed: tuple[float, SlurmProxyError] | None = None  # the last login's failure


class Agent:
    def __init__(self, home: Path, idle: int) -> None:
        self.home = home
        self.idle = idle
        self.held: dict[str, _Held] = {}
        self.lines = 0  # connects on the line now
        self.used = time.monotonic()  # when a channel last opened or closed (a status is no use)
        self.started = time.time()
        self.lock = threading.Lock()
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
                self.lines += 1
            threading.Thread(target=self._serve_line, args=(conn,), daemon=True,
                             name="slurm-proxy-line").start()

    def _reaper(self) -> None:
        while True:
            time.sleep(TICK)
            with self.lock:
                now = time.monotonic()
                for destination, held in list(self.held.items()):
                    if held.channels == 0 and now - held.used >= held.idle:
                        log.info(f"agent: closing the login to {destination} (idle)")
                        held.login.close()
                        del self.held[destination]
                if not self.held and not self.lines and now - self.used >= self.idle:
                    self._exit("idle")

    def _exit(self, why: str) -> NoReturn:
        log.info(f"agent: exiting ({why})")
        self.exiting = True
        with suppress(OSError):
            self.listener.close()  # a Unix socket's file goes with it
        for held in list(self.held.values()):
            held.login.close()
        os._exit(0)

    # One connect

    def _serve_line(self, conn: Any) -> None:
        line = wire.Wire(conn)
        try:
            uid = wire.peer_uid(conn)  # None on Windows: the pipe's key decides
            if uid is not None and uid != os.getuid():
                log.info(f"agent: refused a connection from uid {uid}")
                return
            wire.challenge(line, self.key)
            tag, body = line.recv()
            request = json.loads(body) if tag == wire.REQUEST else {}
            self._serve(line, request)
        except wire.Stranger as e:
            log.info(f"agent: refused a connection: {e}")
        except (EOFError, OSError, ValueError) as e:
            log.debug(f"agent: a connect hung up: {e}")
        finally:
            with suppress(OSError):
                line.close()
            with self.lock:
                self.lines -= 1

    def _serve(self, line: wire.Wire, request: dict[str, Any]) -> None:
        op = request.get("op")
        if op in ("status", "stop"):
            line.send(wire.READY, json.dumps(self._status()).encode())
            if op == "stop":
                with self.lock:
                    self._exit("asked to stop")
            return
        if op not in ("exec", "tcp") or not isinstance(request.get("destination"), str):
            line.send(wire.REFUSE, json.dumps({"error": f"unknown request {op!r}"}).encode())
            return
        with self._using(request["destination"], int(request.get("idle") or self.idle)) as held:
            try:
                channel = self._open(held, line, request)
            except LoginError as e:
                line.send(wire.REFUSE, json.dumps({"login": e.detail}).encode())
                return
            except SlurmProxyError as e:
                line.send(wire.REFUSE, json.dumps({"error": str(e)}).encode())
                return
            line.send(wire.READY)
            frames = _Frames(line)
            send_err = (lambda data: line.send(wire.ERR, data)) if op == "exec" else None
            status = pump(channel, frames, lambda data: line.send(wire.OUT, data), send_err)
            line.send(wire.EXIT, str(status).encode())
            frames.done.wait(FINISH_WAIT)

    @contextmanager
    def _using(self, destination: str, idle: int) -> Iterator[_Held]:
        with self.lock:
            held = self.held.get(destination)
            if held is None:
                held = self.held[destination] = _Held(destination, idle)
            held.idle = idle
            held.channels += 1
            self.idle = max(self.idle, idle)
            self.used = time.monotonic()
        try:
            yield held
        finally:
            with self.lock:
                held.channels -= 1
                held.used = self.used = time.monotonic()

    def _open(self, held: _Held, line: wire.Wire, request: dict[str, Any]) -> Any:
        """The channel ``request`` asks for, logging in first if need be. A login found dead
        only now (the laptop slept, the network changed) is made again, once."""
        for attempt in (1, 2):
            self._log_in(held, line, request)
            try:
                if request["op"] == "exec":  # the login is made above, under the host's lock
                    return held.login.open_exec(str(request["command"]), log_in=False)
                return held.login.open_tcp(str(request["host"]), int(request["port"]), log_in=False)
            except LoginError as e:
                if attempt == 2 or held.login.connected:
                    raise
                log.info(f"agent: the login to {held.login.destination} was lost ({e.detail})")
        raise AssertionError("unreachable")  # pragma: no cover

    def _log_in(self, held: _Held, line: wire.Wire, request: dict[str, Any]) -> None:
        """One login at a time per host, its questions asked through the connect that needs it;
        a connect that started before a login failed fails with it, asking nothing (connects
        started at once share one prompt, right or wrong)."""
        started = float(request.get("since") or time.time())
        with held.logging_in:
            if not held.login.connected:
                if held.failed is not None and held.failed[0] >= started:
                    raise held.failed[1]  # the login this connect waited for failed: no second prompt
                held.since = None
                sock = request.get("auth_sock")  # the connect's ssh-agent, or none
                held.login.auth_sock = sock if isinstance(sock, str) else ""
                held.login.ask = _asker(line)
                try:
                    held.login.connection()
                except SlurmProxyError as e:
                    held.failed = (time.time(), e)
                    raise
                held.since = time.time()
                log.info(f"agent: logged in to {held.login.destination}")

    def _status(self) -> dict[str, Any]:
        with self.lock:
            now = time.monotonic()
            return {
                "pid": os.getpid(), "since": self.started, "idle": self.idle,
                "logins": [{"destination": d, "since": h.since, "channels": h.channels,
                            "idle_for": 0 if h.channels else now - h.used}
                           for d, h in self.held.items() if h.since is not None],
            }


class _Frames:
    """``pump``'s source: the connect's stdin, frame by frame, until it ends or hangs up."""

    def __init__(self, line: wire.Wire) -> None:
        self.line = line
        self.done = threading.Event()

    def read(self, size: int) -> bytes:
        try:
            tag, body = self.line.recv()
        except BaseException:
            self.done.set()
            raise
        if tag == wire.DATA:
            return body
        self.done.set()
        return b""

    def stop(self) -> bool:
        return False  # a pending recv ends when the connect hangs up


def _asker(line: wire.Wire) -> prompt.Ask:
    """The login's questions, asked through the connect on ``line``."""
    def ask(text: str, echo: bool) -> str:
        try:
            line.send(wire.ASK, json.dumps({"prompt": text, "echo": echo}).encode())
            tag, body = line.recv()
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


def serve(home: Path, idle: int) -> int:
    """Run the agent of the state directory ``home`` in this process, until it exits."""
    log.stamped = True
    os.umask(0o077)  # whatever the agent creates is the user's alone
    agent = Agent(home, idle)
    listener = agent.start()
    if listener is None:
        return 0
    signal.signal(signal.SIGTERM, lambda signum, frame: agent._exit("terminated"))
    try:
        agent.accept(listener)
    except KeyboardInterrupt:
        agent._exit("interrupted")
    return 0
