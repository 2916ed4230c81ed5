"""login/wire.py and login/agent.py: where the agent listens on each platform, the proof both
ends give, and the connect's side of the line against a scripted agent (the real agent is tested
through the cluster, tests/integration/test_agent.py)."""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from slurm_proxy.errors import LoginError, SlurmProxyError
from slurm_proxy.login import agent, prompt, wire

KEY = b"0123456789abcdef" * 4
LONG_HOME = Path("/Users/firstname.lastname-with-a-rather-long-name/Library/x/.local/state/slurm-proxy")


def test_windows_listens_on_a_named_pipe_per_state_directory() -> None:
    one = wire.address(Path(r"C:\Users\ana\AppData\Local\slurm-proxy"), "win32")
    other = wire.address(Path(r"C:\Users\bo\AppData\Local\slurm-proxy"), "win32")
    assert one.startswith(rf"\\.\pipe\slurm-proxy-agent-{wire.PROTOCOL}-") and one != other
    assert one == wire.address(Path(r"C:\Users\ana\AppData\Local\slurm-proxy"), "win32")


@pytest.mark.parametrize("platform", ["darwin", "linux"])
def test_a_long_home_puts_the_socket_in_a_short_private_dir(platform: str) -> None:
    where = wire.address(LONG_HOME, platform)
    assert where.startswith(f"/tmp/slurm-proxy-{os.getuid()}/")
    assert wire.address(LONG_HOME.parent / "other", platform) != where  # one agent per state dir


def test_a_short_home_keeps_the_socket_in_its_cm_dir(tmp_path: Path) -> None:
    assert Path(wire.address(tmp_path, "linux")).parent == tmp_path / "cm"


def test_windows_starts_the_agent_with_no_console_outside_the_connects_job() -> None:
    flags = agent.detached("nt")["creationflags"]
    assert flags & agent.DETACHED_PROCESS and flags & agent.CREATE_NEW_PROCESS_GROUP
    assert flags & agent.CREATE_BREAKAWAY_FROM_JOB
    assert agent.detached("posix") == {"start_new_session": True}


def test_the_peers_uid_is_read_from_the_socket() -> None:
    a, b = socket.socketpair()
    with a, b:
        assert wire.peer_uid(a, "linux") == os.getuid()
        assert wire.peer_uid(a, "freebsd14") is None  # no way to ask: the 0700 dir and key decide


def test_macos_peer_credentials_are_read_from_xucred(monkeypatch: pytest.MonkeyPatch) -> None:
    xucred = struct.pack("IIhh16I", 0, 501, 1, 0, *([20] * 16))
    monkeypatch.setattr(socket.socket, "getsockopt", lambda self, *args: xucred)
    a, b = socket.socketpair()
    with a, b:
        assert wire.peer_uid(a, "darwin") == 501


# --- the proof, both ways -----------------------------------------------------------------------

def impostor(line: wire.Wire, key: bytes) -> None:
    """An agent that does not hold the key: it asks, takes the answer, and proves nothing."""
    line.send(wire.REQUEST, os.urandom(wire.NONCE))
    line.recv()
    line.send(wire.ANSWER, os.urandom(32))


class Serving:
    """A scripted agent's thread; ``done()`` waits for it to finish and raises what failed in it
    (a script's own assertion)."""

    def __init__(self, run: Callable[[], None]) -> None:
        self.failed: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(run,), daemon=True)
        self.thread.start()

    def _run(self, run: Callable[[], None]) -> None:
        try:
            run()
        except BaseException as e:  # handed to the test by done()
            self.failed = e

    def done(self, timeout: float = 5.0) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"the scripted agent did not finish within {timeout} s"
        if self.failed is not None:
            raise self.failed


def serve_once(where: str, key: bytes, script: Callable[[wire.Wire], None],
               prove: Callable[[wire.Wire, bytes], None] = wire.challenge) -> Serving:
    """A listener at ``where`` that proves ``key`` to one connect and then runs ``script``."""
    listener = wire.listen(where)

    def run() -> None:
        line = wire.Wire(listener.accept())
        try:
            prove(line, key)
            script(line)
        except (wire.Stranger, EOFError, OSError):
            pass  # the connect hung up, or was refused: what the test looks at is its side
        finally:
            line.close()
            listener.close()

    return Serving(run)


@pytest.fixture
def where(tmp_path: Path) -> str:
    return str(tmp_path / "agent.sock")


def test_nobody_listening_is_absent(where: str) -> None:
    with pytest.raises(wire.Absent):
        wire.dial(where, KEY)


def test_a_socket_file_with_no_agent_behind_it_is_absent(where: str) -> None:
    s = socket.socket(socket.AF_UNIX)
    s.bind(where)
    s.close()  # the file stays, as after a SIGKILL
    assert os.path.exists(where)
    with pytest.raises(wire.Absent):
        wire.dial(where, KEY)


def test_both_ends_holding_the_key_talk(where: str) -> None:
    serving = serve_once(where, KEY, lambda line: line.send(wire.READY, line.recv()[1]))
    line = wire.dial(where, KEY)
    line.send(wire.REQUEST, b"hello")
    assert line.recv() == (wire.READY, b"hello")
    line.close()
    serving.done()


def test_an_agent_without_the_key_is_not_talked_to(where: str) -> None:
    heard: list[bytes] = []
    serving = serve_once(where, KEY, lambda line: heard.append(line.recv()[1]), prove=impostor)
    with pytest.raises(wire.Stranger, match="the agent does not hold the key"):
        wire.dial(where, KEY)
    serving.done()
    assert heard == []  # the connect said nothing after the agent failed its proof


def test_a_connect_without_the_key_is_not_served(where: str) -> None:
    served: list[bytes] = []
    serving = serve_once(where, KEY, lambda line: served.append(b"served"))
    with pytest.raises(wire.Absent):  # the agent hangs up: to the connect, nobody is there
        wire.dial(where, b"a guess")
    serving.done()
    assert served == []


# --- the connect's side against a scripted agent --------------------------------------------------

@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "sp-home"
    home.mkdir(mode=0o700)
    wire.key_path(home).write_bytes(KEY)
    return home


@contextmanager
def scripted(home: Path, script: Callable[[wire.Wire, dict[str, object]], None]) -> Iterator[None]:
    def run(line: wire.Wire) -> None:
        tag, body = line.recv()
        assert tag == wire.REQUEST
        script(line, json.loads(body))

    where = wire.address(home)
    Path(where).parent.mkdir(mode=0o700, exist_ok=True)
    serving = serve_once(where, KEY, run)
    yield
    serving.done()


def test_run_gets_the_status_stdout_and_stderr_and_sends_stdin(home: Path) -> None:
    seen: dict[str, object] = {}

    def script(line: wire.Wire, request: dict[str, object]) -> None:
        # What the agent's login does: the login shell runs the command line, after an rc file
        # that prints.
        seen.update(request)
        line.send(wire.READY)
        stdin = b""
        while (frame := line.recv())[0] == wire.DATA:
            stdin += frame[1]
        ran = subprocess.run(["sh", "-c", f"echo Welcome; {request['command']}"], input=stdin,
                             capture_output=True)
        line.send(wire.OUT, ran.stdout)
        line.send(wire.ERR, ran.stderr)
        line.send(wire.EXIT, str(ran.returncode).encode())

    with scripted(home, script):
        result = agent.AgentLogin("hpc", idle=42, home=home).run(
            ["sh", "-c", "tr a-z A-Z; echo warning >&2; exit 3"], stdin="hi\n")
    assert result[:3] == (3, "HI\n", "warning\n") and result.chatter == "Welcome\n"
    assert seen["op"] == "exec" and seen["destination"] == "hpc" and seen["idle"] == 42


def test_the_logins_question_is_asked_here_and_answered_to_the_agent(
        home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[str, bool]] = []

    def ask(text: str, echo: bool = False) -> str:
        asked.append((text, echo))
        return "424242"

    monkeypatch.setattr(prompt, "ask", ask)
    answers: list[bytes] = []

    def script(line: wire.Wire, request: dict[str, object]) -> None:
        line.send(wire.ASK, json.dumps({"prompt": "Code: ", "echo": False}).encode())
        answers.append(line.recv()[1])
        line.send(wire.READY)
        line.send(wire.EXIT, b"0")

    with scripted(home, script):
        assert agent.AgentLogin("hpc", home=home).run(["true"]).returncode == 0
    assert asked == [("Code: ", False)] and answers == [b"424242"]


def test_no_way_to_ask_is_told_to_the_agent(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def cannot(text: str, echo: bool = False) -> str:
        raise prompt.CannotAsk(text)

    monkeypatch.setattr(prompt, "ask", cannot)
    told: list[object] = []

    def script(line: wire.Wire, request: dict[str, object]) -> None:
        line.send(wire.ASK, json.dumps({"prompt": "Code: ", "echo": False}).encode())
        told.append(json.loads(line.recv()[1]))
        line.send(wire.REFUSE, json.dumps({"error": str(prompt.CannotAsk("Code: "))}).encode())

    with scripted(home, script), pytest.raises(SlurmProxyError, match="no terminal"):
        agent.AgentLogin("hpc", home=home).run(["true"])
    assert told == [{"kind": "cannot"}]


def test_a_failed_login_is_a_login_error(home: Path) -> None:
    def script(line: wire.Wire, request: dict[str, object]) -> None:
        line.send(wire.REFUSE, json.dumps({"login": "connection refused"}).encode())

    refused = pytest.raises(LoginError, match="cannot reach login node 'hpc': connection refused")
    with scripted(home, script), refused:
        agent.AgentLogin("hpc", home=home).run(["true"])


def test_an_agent_that_dies_mid_channel_ends_it_with_one_line(home: Path) -> None:
    def script(line: wire.Wire, request: dict[str, object]) -> None:
        line.send(wire.READY)
        line.send(wire.OUT, b"partial")
        # and the agent is gone: the line closes with no EXIT

    with scripted(home, script), pytest.raises(LoginError, match="the slurm-proxy agent went away"):
        agent.AgentLogin("hpc", home=home).run(["cat"])


def test_status_reads_what_the_agent_holds(home: Path) -> None:
    def script(line: wire.Wire, request: dict[str, object]) -> None:
        assert request == {"op": "status"}
        line.send(wire.READY, json.dumps({
            "pid": 7, "since": 100.0, "idle": 600,
            "logins": [{"destination": "hpc", "since": 200.0, "channels": 2, "idle_for": 0}],
        }).encode())

    with scripted(home, script):
        held = agent.status(home)
    assert held == agent.AgentStatus(7, 100.0, 600, [agent.HeldLogin("hpc", 200.0, 2, 0.0)])


def test_status_with_no_agent_starts_none(home: Path) -> None:
    assert agent.status(home) is None and agent.stop(home) is None
    assert not os.path.exists(wire.address(home))
