"""The agent backend: every connect's queries and tunnel ride the per-user login agent's one
login per login host (``agent_server``), reached over ``wire``.

The connect stays the ProxyCommand: it asks the agent for a channel (a command, or a TCP hop from
the login node) and pumps it between its own stdio and the agent, so its stdout is still only
tunnel bytes. The first connect that finds no agent starts one, detached from its stdio and
console, under a lock so that many connects at once start one. A login's questions (a one-time
code, a passphrase) are asked by the connect that needs the login, on its terminal or through
``SSH_ASKPASS``; the other connects wait for that login and use it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from .. import log, paths
from ..defaults import AGENT_IDLE
from ..errors import LoginError, SlurmProxyError
from . import prompt, wire
from .base import Result
from .pump import BytesSource, Source, fd_writer, pump, stdin_source
from .remote import Shell, forwarding_refusal

START_TIMEOUT = 20.0  # seconds for a new agent to listen
LOG_MAX = 1 << 20  # bytes of agent.log kept when a new agent starts

# Windows: a process with no console that leaves the ProxyCommand's process group and, where
# the job object allows, its job (VS Code ends the job of a ProxyCommand it closes).
DETACHED_PROCESS = 0x00000008
CREATE_NEW_PROCESS_GROUP = 0x00000200
CREATE_BREAKAWAY_FROM_JOB = 0x01000000


class AgentLogin:
    """The login node through the user's agent, which logs in once per login host."""

    logs_in_per_command = False

    def __init__(self, destination: str, idle: int = AGENT_IDLE, home: Path | None = None,
                 login_shell: bool | None = None) -> None:
        self.destination = destination
        self.shell = Shell(destination, login_shell)
        self.idle = idle
        self.home = home or paths.state_dir()
        self.since = time.time()  # a login that fails after this fails this connect too

    # The Login interface

    def run(self, argv: Sequence[str], stdin: str | None = None) -> Result:
        log.debug(f"run on {self.destination} (agent): {log.shown(argv)}")
        return self.shell.run(self._send, argv, stdin)

    def _send(self, command: str, stdin: str | None) -> Result:
        out: list[bytes] = []
        err: list[bytes] = []
        status = self._relay({"op": "exec", "command": command},
                             BytesSource((stdin or "").encode()), out.append, err.append)
        stdout = b"".join(out).decode(errors="replace")
        stderr = b"".join(err).decode(errors="replace")
        if status < 0:
            raise LoginError(self.destination, log.last_line(stderr) or
                             "the command ended without an exit status")
        return Result(status, stdout, stderr)

    def forward_stdio(self, host: str, port: int) -> int:
        log.debug(f"forward: {host}:{port} via {self.destination} (agent)")
        self._stdio({"op": "tcp", "host": host, "port": port})
        return 0

    def forwarding_refused(self, host: str, port: int) -> str:
        try:
            peer = self._open({"op": "tcp", "host": host, "port": port})
        except SlurmProxyError as e:
            return forwarding_refusal(str(e))
        peer.close()
        return ""

    def forward_command(self, argv: Sequence[str]) -> int:
        log.debug(f"forward command (agent): {log.shown(argv)}")
        status = self._stdio({"op": "exec", "command": self.shell.line(argv)}, fd_writer(2))
        return status if status >= 0 else 255

    def sharing(self) -> tuple[bool | None, str]:
        found = status(self.home)
        if found is None:
            return None, "the slurm-proxy agent starts with the first connect and logs in once per login host"
        return True, f"the slurm-proxy agent (pid {found.pid}) logs in once per login host for every connect"

    # Plumbing

    def _stdio(self, request: dict[str, Any], err: Callable[[bytes], None] | None = None) -> int:
        sys.stdout.flush()  # nothing of ours may trail into the stream
        source = stdin_source()
        try:
            return self._relay(request, source, fd_writer(1), err)
        finally:
            source.close()

    def _relay(self, request: dict[str, Any], source: Source, out: Callable[[bytes], None],
               err: Callable[[bytes], None] | None) -> int:
        peer = self._open(request)
        channel = _Channel(peer, err)
        try:
            status = pump(channel, source, out)
        except (EOFError, OSError):
            status = None
        if status is None or channel.lost:
            raise LoginError(self.destination, channel.lost or f"the slurm-proxy agent went away "
                             f"(its log: {self.home / 'agent.log'})")
        return status

    def _open(self, request: dict[str, Any]) -> wire.Wire:
        """A line to the agent on which ``request``'s channel is open; the login's questions
        are answered here, on our terminal or through SSH_ASKPASS."""
        peer = connect(self.home, self.idle)
        request = {**request, "destination": self.destination, "idle": self.idle, "since": self.since,
                   "auth_sock": os.environ.get("SSH_AUTH_SOCK")}
        try:
            peer.send(wire.REQUEST, json.dumps(request).encode())
            while True:
                tag, body = peer.recv()
                if tag == wire.READY:
                    return peer
                if tag == wire.ASK:
                    _answer(peer, json.loads(body))
                elif tag == wire.REFUSE:
                    raise _refusal(self.destination, json.loads(body))
                else:
                    raise LoginError(self.destination, f"the slurm-proxy agent said {tag!r}")
        except (EOFError, OSError):
            peer.close()
            raise LoginError(self.destination, "the slurm-proxy agent went away while logging in "
                             f"(its log: {self.home / 'agent.log'})") from None
        except BaseException:
            peer.close()
            raise


class _Channel:
    """What ``pump`` needs of a channel, over the line to the agent: the channel's output and
    stderr arrive as frames, our stdin leaves as frames."""

    def __init__(self, peer: wire.Wire, err: Callable[[bytes], None] | None) -> None:
        self.peer = peer
        self.err = err
        self.status = -1
        self.lost = ""  # why the agent ended the channel early

    def recv(self, nbytes: int) -> bytes:
        while True:
            tag, body = self.peer.recv()
            if tag == wire.OUT:
                return body
            if tag == wire.ERR:
                if self.err is not None:
                    self.err(body)
            elif tag == wire.EXIT:
                self.status = int(body)
                return b""
            else:
                self.lost = json.loads(body).get("login", "") if tag == wire.REFUSE else f"{tag!r}"
                return b""

    def recv_stderr(self, nbytes: int) -> bytes:
        return b""  # stderr comes in recv's frames

    def sendall(self, data: bytes) -> None:
        self.peer.send(wire.DATA, data)

    def shutdown_write(self) -> None:
        self.peer.send(wire.END)

    def recv_exit_status(self) -> int:
        return self.status

    def close(self) -> None:
        self.peer.close()


def _answer(peer: wire.Wire, question: dict[str, Any]) -> None:
    try:
        answer = prompt.ask(str(question["prompt"]), bool(question.get("echo")))
    except prompt.CannotAsk:
        peer.send(wire.REFUSE, json.dumps({"kind": "cannot"}).encode())
    except prompt.Cancelled:
        peer.send(wire.REFUSE, json.dumps({"kind": "cancelled"}).encode())
    except SlurmProxyError as e:
        peer.send(wire.REFUSE, json.dumps({"kind": "error", "message": str(e)}).encode())
    else:
        peer.send(wire.ANSWER, answer.encode())


def _refusal(destination: str, why: dict[str, Any]) -> SlurmProxyError:
    if "login" in why:
        return LoginError(destination, str(why["login"]))
    return SlurmProxyError(str(why.get("error", "the slurm-proxy agent refused")))


# --- the agent's lifecycle, seen from a connect ------------------------------------------------

def connect(home: Path, idle: int = AGENT_IDLE) -> wire.Wire:
    """A proven line to the user's agent, starting it if none runs: one connect starts it while
    the others wait on a lock, then use it."""
    try:
        return wire.dial_agent(home)
    except wire.Absent:
        pass
    from filelock import FileLock

    paths.private_dir(home)
    with FileLock(str(home / "agent.start.lock"), mode=0o600):
        try:
            return wire.dial_agent(home)  # another connect started it meanwhile
        except wire.Absent:
            pass
        started = start(home, idle)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                return wire.dial_agent(home)
            except wire.Absent:
                if started.poll() is not None or time.monotonic() > deadline:
                    break
                time.sleep(0.02)
    tail = log.last_line(_read_tail(home / "agent.log"))
    raise SlurmProxyError("the slurm-proxy agent did not start" + (f": {tail}" if tail else "")
                          + f" (its log: {home / 'agent.log'})")


def start(home: Path, idle: int) -> subprocess.Popen[bytes]:
    """The agent, detached from our stdio, session and console; its stderr is its log."""
    argv = [sys.executable, "-m", "slurm_proxy", *(["-v"] if log.verbosity >= 1 else []),
            "agent", "--foreground", "--idle", str(idle)]
    log.info("starting the slurm-proxy agent")
    log.debug(f"agent: {log.shown(argv)}")
    with open(home / "agent.log", "ab") as agent_log:
        if agent_log.tell() > LOG_MAX:  # each agent's lines follow the last agent's, up to a limit
            agent_log.truncate(0)

        def spawn(options: dict[str, Any]) -> subprocess.Popen[bytes]:
            return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=agent_log, cwd=home, **options)

        options = detached()
        try:
            return spawn(options)
        except PermissionError:  # pragma: no cover - Windows: a job that forbids breaking away
            options["creationflags"] &= ~CREATE_BREAKAWAY_FROM_JOB
            return spawn(options)


def detached(name: str = os.name) -> dict[str, Any]:
    """Popen's options for a process that outlives the connect that starts it."""
    if name == "nt":
        return {"creationflags": DETACHED_PROCESS | CREATE_NEW_PROCESS_GROUP | CREATE_BREAKAWAY_FROM_JOB}
    return {"start_new_session": True}


class HeldLogin(NamedTuple):
    destination: str
    since: float  # when the agent logged in (epoch seconds)
    channels: int  # open now
    idle_for: float  # seconds since the last channel closed (0 while one is open)


class AgentStatus(NamedTuple):
    pid: int
    since: float  # when the agent started (epoch seconds)
    idle: int  # it exits after this long with no login and no connect
    logins: list[HeldLogin]


def status(home: Path) -> AgentStatus | None:
    """What the running agent holds, or None when none runs (never starts one)."""
    return _ask_agent(home, "status")


def stop(home: Path) -> AgentStatus | None:
    """Stop the running agent (its open tunnels end); what it held, or None when none ran."""
    return _ask_agent(home, "stop")


def _ask_agent(home: Path, op: str) -> AgentStatus | None:
    try:
        peer = wire.dial_agent(home)
    except wire.Absent:
        return None
    try:
        peer.send(wire.REQUEST, json.dumps({"op": op}).encode())
        tag, body = peer.recv()
        if tag != wire.READY:
            return None
        held = json.loads(body)
        return AgentStatus(int(held["pid"]), float(held["since"]), int(held["idle"]),
                           [HeldLogin(str(h["destination"]), float(h["since"]), int(h["channels"]),
                                      float(h["idle_for"])) for h in held["logins"]])
    except (EOFError, OSError):
        return None
    finally:
        peer.close()


def _read_tail(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
            return f.read().decode(errors="replace")
    except OSError:
        return ""
