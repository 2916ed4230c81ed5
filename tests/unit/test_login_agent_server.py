"""login/agent_server.py: a real agent on a thread, serving real connects (AgentLogin) over a real
socket, with a stand-in for the paramiko login: one login shared by connects that arrive together,
a failed login failing the connects that waited for it without asking again, channels carried both
ways, and an idle exit. (The real thing: tests/integration/test_agent.py.)"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ClassVar

import pytest

from slurm_proxy import paths
from slurm_proxy.errors import LoginError
from slurm_proxy.login import agent, agent_server, paramiko_backend, paramiko_connect, prompt, wire
from slurm_proxy.login.pump import BytesSource

CODE = "424242"


class Pipe:
    """A channel that gives back what it is sent (``cat``), then an exit status."""

    def __init__(self, status: int) -> None:
        self.status = status
        self._data = b""
        self._ended = False
        self._changed = threading.Condition()

    def recv(self, nbytes: int) -> bytes:
        with self._changed:
            self._changed.wait_for(lambda: self._data or self._ended)
            data, self._data = self._data[:nbytes], self._data[nbytes:]
            return data

    def recv_stderr(self, nbytes: int) -> bytes:
        return b""

    def sendall(self, data: bytes) -> None:
        with self._changed:
            self._data += data
            self._changed.notify_all()

    def shutdown_write(self) -> None:
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def recv_exit_status(self) -> int:
        return self.status

    def close(self) -> None:
        self.shutdown_write()


class FakeLogin:
    """A ChannelLogin, all the agent uses of a login: one that asks for a code, and channels."""

    made: ClassVar[list[str]] = []

    together: ClassVar[threading.Barrier | None] = None  # logins that must overlap
    ssh_agents: ClassVar[dict[str, str | None]] = {}  # the ssh-agent each login used

    def __init__(self, destination: str) -> None:
        self.destination = destination
        self.connected = False

    def connect(self, ask: prompt.Ask, auth_sock: str | None) -> None:
        if self.together is not None:
            self.together.wait(timeout=10)
        self.ssh_agents[self.destination] = (auth_sock if auth_sock is not None  # None: the environment's
                                             else os.environ.get("SSH_AUTH_SOCK"))
        if ask(f"Code for {self.destination}: ", False) != CODE:
            raise LoginError(self.destination, "permission denied (keyboard-interactive)")
        self.made.append(self.destination)
        self.connected = True

    def open_exec(self, command: str, log_in: bool = True) -> Pipe:
        return Pipe(status=7 if "exit 7" in command else 0)

    def open_tcp(self, host: str, port: int, log_in: bool = True) -> Pipe:
        return Pipe(status=-1)

    def close(self) -> None:
        self.connected = False


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[agent_server.Agent]:
    """An agent serving on a thread; ``os._exit`` stops only the thread that calls it."""
    FakeLogin.made = []
    FakeLogin.together = None
    FakeLogin.ssh_agents = {}
    monkeypatch.setattr(agent_server, "TICK", 0.05)

    monkeypatch.setattr(os, "_exit", lambda status: threading.Event().wait())  # a daemon thread rests
    home = paths.state_dir()
    server = agent_server.Agent(home, idle=600, make_login=FakeLogin)
    listener = server.start()
    threading.Thread(target=server.accept, args=(listener,), daemon=True).start()
    yield server
    server.exiting = True
    server.listener.close()


@pytest.fixture
def home(server: agent_server.Agent) -> Path:
    return server.home


class Typist:
    """The user at the connects' terminals: what they were asked, and the code they type once
    ``together`` connects are at the agent (so that they all arrive during the login)."""

    def __init__(self, server: agent_server.Agent) -> None:
        self.server = server
        self.asked: list[str] = []
        self.code = CODE
        self.together = 1

    def ask(self, text: str, echo: bool = False) -> str:
        self.asked.append(text)
        deadline = time.monotonic() + 10
        while sum(held.channels for held in self.server.logins.held.values()) < self.together:
            assert time.monotonic() < deadline, f"{self.together} connects never came together"
            time.sleep(0.01)
        return self.code


@pytest.fixture
def user(server: agent_server.Agent, monkeypatch: pytest.MonkeyPatch) -> Typist:
    typist = Typist(server)
    monkeypatch.setattr(prompt, "ask", typist.ask)
    return typist


def run(home: Path, command: str, stdin: str = "") -> tuple[int, str]:
    """``command`` as the login shell gets it, unframed (the fake channel runs no shell)."""
    result = agent.AgentLogin("hpc", home=home)._send(command, stdin)
    return result.returncode, result.stdout


def test_connects_at_once_share_one_login_and_one_question(home: Path, user: Typist) -> None:
    user.together = 4
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda i: run(home, "cat", f"hello {i}"), range(4)))
    assert results == [(0, f"hello {i}") for i in range(4)]
    assert FakeLogin.made == ["hpc"] and user.asked == ["Code for hpc: "]
    assert run(home, "exit 7") == (7, "")
    assert FakeLogin.made == ["hpc"] and len(user.asked) == 1


def test_a_failed_login_fails_the_connects_that_waited_for_it_without_asking_again(
        home: Path, user: Typist) -> None:
    user.code = "000000"
    user.together = 4
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(run, home, "true") for _ in range(4)]
    errors = [f.exception() for f in futures]
    assert all(isinstance(e, LoginError) and "permission denied" in str(e) for e in errors), errors
    assert len(user.asked) == 1 and FakeLogin.made == []
    user.code, user.together = CODE, 1  # a later connect asks again, and gets in
    assert run(home, "true") == (0, "")
    assert len(user.asked) == 2


def test_a_tcp_channel_carries_bytes_both_ways(home: Path, user: Typist) -> None:
    out: list[bytes] = []
    login = agent.AgentLogin("hpc", home=home)
    payload = os.urandom(300_000)
    status = login._relay({"op": "tcp", "host": "node1", "port": 22}, BytesSource(payload), out.append, None)
    assert status == -1 and b"".join(out) == payload


def test_status_shows_the_login_and_its_open_channels(home: Path, user: Typist) -> None:
    assert run(home, "true") == (0, "")
    held = agent.status(home)
    assert held is not None and held.pid == os.getpid() and held.idle == 600
    assert [(h.destination, h.channels) for h in held.logins] == [("hpc", 0)]


def test_an_unused_agent_closes_its_login_and_exits(server: agent_server.Agent, user: Typist) -> None:
    home = server.home
    server.idle = 1  # as a connect with agent_idle = 1 starts it
    login = agent.AgentLogin("hpc", idle=1, home=home)
    assert login.run(["true"]).returncode == 0
    deadline = time.monotonic() + 10
    while os.path.exists(wire.address(home)):
        assert time.monotonic() < deadline, "the agent never left"
        time.sleep(0.05)
    assert agent.status(home) is None


def exec_with_ssh_agent(home: Path, destination: str, auth_sock: str) -> int:
    """``true`` on ``destination`` from a connect whose SSH_AUTH_SOCK is ``auth_sock`` (connects
    are processes of their own, each with its environment; here they share one)."""
    line = agent.connect(home)
    try:
        line.send(wire.REQUEST, json.dumps({"op": "exec", "command": "true", "destination": destination,
                                            "since": time.time(), "auth_sock": auth_sock}).encode())
        tag, body = line.recv()
        while tag == wire.ASK:
            line.send(wire.ANSWER, CODE.encode())
            tag, body = line.recv()
        assert tag == wire.READY, (tag, body)
        line.send(wire.END)
        while tag != wire.EXIT:
            tag, body = line.recv()
        return int(body)
    finally:
        line.close()


def test_logins_to_two_hosts_at_once_each_use_their_connects_ssh_agent(
        home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSH_AUTH_SOCK", "/the/agents/own")
    FakeLogin.together = threading.Barrier(2)  # both logins under way before either reads it
    with ThreadPoolExecutor(2) as pool:
        statuses = list(pool.map(lambda d: exec_with_ssh_agent(home, d, f"/agent/of/{d}"), ["a", "b"]))
    assert statuses == [0, 0]
    assert FakeLogin.ssh_agents == {"a": "/agent/of/a", "b": "/agent/of/b"}
    assert os.environ["SSH_AUTH_SOCK"] == "/the/agents/own"  # the process's own is never changed


def test_an_agent_that_restarted_after_its_key_was_read_is_dialled_once_more(
        home: Path, user: Typist, monkeypatch: pytest.MonkeyPatch) -> None:
    """The key read was the agent's before it restarted with a new one: the agent takes the connect
    for a stranger and hangs up, and the connect dials once more with the key now on disk."""
    read = wire.read_key
    stale = iter([b"the key of the agent before"])
    monkeypatch.setattr(wire, "read_key", lambda home: next(stale, None) or read(home))
    held = agent.status(home)
    assert held is not None and held.pid == os.getpid()
    stale = iter([b"the key of the agent before"])
    assert run(home, "true") == (0, "")


def test_a_key_that_stays_wrong_is_not_tried_forever(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[Path] = []

    def wrong_key(home: Path) -> bytes:
        reads.append(home)
        return b"not the agent's key"

    monkeypatch.setattr(wire, "read_key", wrong_key)
    with pytest.raises(wire.Absent):
        wire.dial_agent(home)
    assert len(reads) == 2


class DyingTransport:
    """A paramiko transport whose first login's connection dies at once (the laptop slept)."""

    def __init__(self, alive: bool) -> None:
        self.alive = alive

    def is_active(self) -> bool:
        return self.alive

    def open_session(self, **kw: object) -> Pipe:
        pipe = Pipe(status=0)
        pipe.exec_command = lambda command: None  # type: ignore[attr-defined]
        return pipe

    def open_channel(self, *args: object, **kw: object) -> Pipe:
        return Pipe(status=-1)

    def close(self) -> None:
        self.alive = False


@pytest.mark.parametrize("op", ["exec", "tcp"])
def test_a_login_lost_before_its_channel_is_made_again_under_the_hosts_login_lock(
        server: agent_server.Agent, monkeypatch: pytest.MonkeyPatch, op: str) -> None:
    logins: list[bool] = []  # per login: was the host's login lock held?

    def connect(link: paramiko_connect.Connector, config: object, target: object) -> DyingTransport:
        logins.append(server.logins.held[link.destination].logging_in.locked())
        return DyingTransport(alive=len(logins) > 1)

    monkeypatch.setattr(server.logins, "make_login", paramiko_backend.ParamikoLogin)
    monkeypatch.setattr(paramiko_connect.Connector, "_connect", connect)
    request = {"op": op, "command": "true", "host": "node1", "port": 22}
    out: list[bytes] = []
    status = agent.AgentLogin("hpc", home=server.home)._relay(request, BytesSource(b""), out.append, None)
    assert status == (0 if op == "exec" else -1)
    assert logins == [True, True]
