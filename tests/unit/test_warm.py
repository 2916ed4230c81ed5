"""warm.py: a connect replays the last one's decision only while everything it read is the same,
and hands the queue's answer to the full path otherwise."""

from __future__ import annotations

import marshal
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from slurm_proxy import paths, slurm, warm
from slurm_proxy.login import remote
from slurm_proxy.login.base import Result

LINE = "7|RUNNING|None|node1|2026-01-01T00:00:00|{left}|slurm-proxy-debug|slurm-proxy:hpc.debug"


class Exec(BaseException):  # past warm.connect's own except: what the connect would have become
    """os.execv, caught: the argv a connect handed the session to."""


@pytest.fixture
def master(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "m"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.listen()
    yield path
    s.close()


@pytest.fixture
def ssh(tmp_path: Path) -> Path:
    """An ``ssh`` that runs its last argument (the login shell's line) here."""
    path = tmp_path / "ssh"
    path.write_text('#!/bin/sh\nfor a; do last=$a; done\nexec sh -c "$last"\n')
    path.chmod(0o755)
    return path


@pytest.fixture
def execs(monkeypatch: pytest.MonkeyPatch) -> None:
    def execv(path: str, argv: list[str]) -> None:
        raise Exec(argv)

    monkeypatch.setattr(os, "execv", execv)


def write_memo(ssh: Path, master: Path, answer: str, replying: str, files: list[str],
               until: float | None = None, hop: list[str] | None = None, before: str = "",
               asker: bool = False) -> None:
    """A memo decided on ``answer`` whose query now answers ``replying`` (after ``before``, a
    line of sh), and hands the session to ``hop``; with an asker's loop if ``asker``."""
    shell, argv = remote.Shell("login", False), ["sh", "-c", before + 'printf %s "$1"', "sh", replying]
    query = [str(ssh), "-o", "X=y", "--", "login", shell.framed(argv)]
    ask = [str(ssh), "-o", "X=y", "--", "login", shell.loop(argv)] if asker else []
    memo = warm.memo(warm.stamps(files), time.time() + 60 if until is None else until, str(master), query,
                     answer, hop or ["/usr/bin/ssh", "-W", "node1:22", "--", "login"], ask)
    directory = paths.private_dir(paths.state_dir() / "warm")
    paths.write_private(directory / warm.memo_name("slurm-debug"), memo)


def test_the_time_left_is_the_sixth_field_and_left_out() -> None:
    assert slurm.SQUEUE_FORMAT.split("|")[warm.TIME_LEFT_FIELD] == "%L"
    assert warm.comparable(LINE.format(left="59:00") + "\n") == warm.comparable(LINE.format(left="1:00"))
    assert warm.comparable(LINE.format(left="1:00")) != warm.comparable(LINE.replace("node1", "node2"))


@pytest.fixture
def hop(tmp_path: Path) -> Path:
    """A session's hop: the node's greeting at once, then what the client sent, kept."""
    path = tmp_path / "hop"
    path.write_text(f'#!/bin/sh\necho $$ > {tmp_path}/hop.pid\necho node-greeting\n'
                    f'cat > {tmp_path}/client-sent\necho node-said-bye >&2\nexit 7\n')
    path.chmod(0o755)
    return path


# A connect as ssh runs it: what warm.connect did not take, the full path would (here: say so,
# and pass on the client's bytes it finds still unread).
CONNECT = ("import sys; from slurm_proxy import warm; answer = warm.connect('slurm-debug'); "
           "sys.stdout.write(f'full path, told {answer.stdout!r}: ' + sys.stdin.read())")


def waits_for_the_hop(tmp_path: Path) -> str:
    """sh that answers only once the hop has started, and notes that it had."""
    return (f"for i in $(seq 100); do [ -s {tmp_path}/hop.pid ] && break; sleep 0.05; done; "
            f"[ -s {tmp_path}/hop.pid ] && echo started-first > {tmp_path}/noted; ")


def test_the_same_answer_relays_the_hop_started_while_the_query_ran(ssh: Path, master: Path, hop: Path,
                                                                    tmp_path: Path) -> None:
    write_memo(ssh, master, LINE.format(left="59:00"), LINE.format(left="58:59"), [str(tmp_path / "config")],
               hop=[str(hop), "-W", "node1:22", "--", "login"], before=waits_for_the_hop(tmp_path))
    got = subprocess.run([sys.executable, "-c", CONNECT], input="client-greeting\n", capture_output=True,
                         text=True, timeout=30)
    assert (tmp_path / "noted").read_text() == "started-first\n"
    assert (got.returncode, got.stdout) == (7, "node-greeting\n")  # the hop's status, nothing of ours
    assert "node-said-bye" in got.stderr
    assert (tmp_path / "client-sent").read_text() == "client-greeting\n"


def test_another_answer_stops_the_early_hop_before_a_byte_has_passed(ssh: Path, master: Path, hop: Path,
                                                                     tmp_path: Path) -> None:
    ended = LINE.format(left="0:00").replace("RUNNING", "COMPLETING")
    write_memo(ssh, master, LINE.format(left="59:00"), ended, [],
               hop=[str(hop), "-W", "node1:22", "--", "login"], before=waits_for_the_hop(tmp_path))
    got = subprocess.run([sys.executable, "-c", CONNECT], input="client-greeting\n", capture_output=True,
                         text=True, timeout=30)
    assert (tmp_path / "noted").read_text() == "started-first\n"
    # Neither the node's greeting nor its stderr reached the client; its greeting waits for the
    # full path, which was given the answer.
    told, client = got.stdout.split("': ")
    assert told.startswith("full path, told ") and ended in told and client == "client-greeting\n"
    sent = tmp_path / "client-sent"
    assert "node-" not in got.stderr and (not sent.exists() or sent.read_text() == "")
    with pytest.raises(ProcessLookupError):
        os.kill(int((tmp_path / "hop.pid").read_text()), 0)


@pytest.mark.usefixtures("execs")
def test_a_session_that_runs_a_command_on_the_login_node_starts_only_after_the_answer(
        ssh: Path, master: Path, tmp_path: Path) -> None:
    srun = ["/usr/bin/ssh", "-T", "--", "login", "srun --jobid=7 ..."]
    write_memo(ssh, master, LINE.format(left="59:00"), LINE.format(left="58:59"), [], hop=srun)
    with pytest.raises(Exec) as handed:
        warm.connect("slurm-debug")
    assert handed.value.args[0] == srun


@pytest.mark.usefixtures("execs")
def test_another_answer_goes_to_the_full_path_which_takes_it_as_its_own(ssh: Path, master: Path,
                                                                         tmp_path: Path) -> None:
    ended = LINE.format(left="0:00").replace("RUNNING", "COMPLETING")
    write_memo(ssh, master, LINE.format(left="59:00"), ended, [])
    answer = warm.connect("slurm-debug")
    assert answer is not None
    shell = remote.Shell("login", False)
    shell.answered(["squeue"], answer)

    def send(line: str, stdin: str | None) -> Result:
        raise AssertionError("asked the queue twice")

    assert shell.run(send, ["squeue"]).stdout == ended
    assert shell.answers[("squeue",)] == ended


@pytest.mark.usefixtures("execs")
@pytest.mark.parametrize("change", ["file", "variable", "expired", "master", "format", "open to others"])
def test_anything_else_changed_takes_the_full_path_without_asking(change: str, ssh: Path, master: Path,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    watched = tmp_path / "config"
    watched.write_text("a")
    write_memo(ssh, master, LINE.format(left="9:00"), LINE.format(left="9:00"), [str(watched)],
               until=time.time() - 1 if change == "expired" else None)
    memo_file = Path(warm.memo_file("slurm-debug"))
    if change == "file":
        watched.write_text("bb")
    elif change == "variable":
        monkeypatch.setenv("SLURM_PROXY_SSH", "/elsewhere/ssh")
    elif change == "master":
        master.unlink()
    elif change == "format":
        memo = marshal.loads(memo_file.read_bytes())  # noqa: S302  # the test's own
        memo_file.write_bytes(marshal.dumps({**memo, "format": warm.FORMAT + 1}))
    elif change == "open to others":
        memo_file.chmod(0o660)
    ssh.write_text("#!/bin/sh\nexit 99\n")  # asking would be a mistake
    assert warm.connect("slurm-debug") is None


@pytest.mark.usefixtures("execs")
def test_the_asker_answers_the_next_connects_afresh_in_one_session_and_ends_with_its_socket(
        master: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log, queue = tmp_path / "ssh.log", tmp_path / "queue"
    ssh = tmp_path / "ssh"  # notes each query and each loop (its pid), then runs the line
    ssh.write_text(f'#!/bin/sh\nfor a; do last=$a; done\n'
                   f'case $last in *"while read"*) echo "loop $$" >> {log};; *) echo query >> {log};; esac\n'
                   'exec sh -c "$last"\n')
    ssh.chmod(0o755)
    monkeypatch.chdir(Path(__file__).parents[2])  # the asker is this checkout's (python -m)
    queue.write_text(LINE.format(left="59:00"))
    srun = ["/usr/bin/ssh", "-T", "--", "login", "srun --jobid=7 ..."]
    write_memo(ssh, master, LINE.format(left="59:00"), "", [], hop=srun, asker=True,
               before=f'set -- "$(cat {queue})"; ')
    path = Path(warm.asker_path(str(master)))

    def handed_over() -> None:  # the same answer
        with pytest.raises(Exec):
            warm.connect("slurm-debug")

    handed_over()  # no asker yet: asked over ssh, and one is started for the next connect
    for _ in range(100):
        if path.is_socket():
            break
        time.sleep(0.05)
    handed_over()
    handed_over()
    notes = log.read_text().split("\n")
    assert notes[0] == "query" and notes[1].startswith("loop ") and notes[2:] == [""]
    queue.write_text(LINE.format(left="0:00").replace("RUNNING", "COMPLETING"))  # the job ended
    answer = warm.connect("slurm-debug")
    assert answer is not None and "COMPLETING" in answer.stdout
    assert log.read_text().count("query") == 1  # every answer after the first was the asker's
    loop_pid = int(notes[1].split()[1])
    path.unlink()
    for _ in range(300):  # CHECK seconds at most
        try:
            os.kill(loop_pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the asker's session outlived its socket")


@pytest.mark.usefixtures("execs")
@pytest.mark.parametrize("reply", ["", "{n}\n", "{n}\n7|RUNNING", "{n}\n\n{n} 1\n"],
                         ids=["nothing", "begun", "cut short", "failed"])
def test_an_asker_without_a_whole_answer_is_none_and_ssh_asks(reply: str, ssh: Path, master: Path) -> None:
    import threading

    write_memo(ssh, master, LINE.format(left="59:00"), LINE.format(left="58:59"), [],
               hop=["/usr/bin/ssh", "-T", "--", "login", "srun"], asker=True)
    server = socket.socket(socket.AF_UNIX)
    server.bind(warm.asker_path(str(master)))
    server.listen()

    def answer() -> None:
        conn, _ = server.accept()
        nonce = conn.recv(65536).decode().split("\n")[0]
        conn.sendall(reply.format(n=nonce).encode())
        conn.close()

    threading.Thread(target=answer, daemon=True).start()
    with pytest.raises(Exec):  # never taken for an empty queue: ssh's same answer hands over
        warm.connect("slurm-debug")
    server.close()


def test_no_memo_or_an_ssh_failure_takes_the_full_path(ssh: Path, master: Path) -> None:
    assert warm.connect("slurm-debug") is None
    write_memo(ssh, master, "x", "x", [])
    ssh.write_text("#!/bin/sh\necho 'ssh: connect to host login port 22: Connection refused' >&2\nexit 255\n")
    assert warm.connect("slurm-debug") is None


@pytest.mark.parametrize("platform", ["linux", "darwin", "win32"])
def test_the_state_directory(platform: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", platform)
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("SLURM_PROXY_HOME", "XDG_STATE_HOME", "LOCALAPPDATA"):
        monkeypatch.delenv(name, raising=False)
    local = os.path.join(str(tmp_path), "AppData", "Local") if platform == "win32" else \
        os.path.join(str(tmp_path), ".local", "state")
    assert warm.state_dir() == os.path.join(local, "slurm-proxy")
    monkeypatch.setenv("XDG_STATE_HOME" if platform != "win32" else "LOCALAPPDATA", "/s")
    assert warm.state_dir() == os.path.join("/s", "slurm-proxy")
    monkeypatch.setenv("SLURM_PROXY_HOME", "~/sp")
    assert paths.state_dir() == tmp_path / "sp"
