"""login/prompt.py: where a secret is asked, by OpenSSH's rules, and the askpass program's answer."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from slurm_proxy.login import prompt


@pytest.mark.parametrize(
    ("env", "tty", "way"),
    [
        ({}, True, "tty"),
        ({}, False, ""),
        ({"SSH_ASKPASS": "/a"}, True, "tty"),
        ({"SSH_ASKPASS": "/a"}, False, ""),  # no display: ssh does not run it either
        ({"SSH_ASKPASS": "/a", "DISPLAY": ":0"}, False, "askpass"),
        ({"SSH_ASKPASS": "/a", "WAYLAND_DISPLAY": "w"}, False, "askpass"),
        ({"SSH_ASKPASS": "/a", "DISPLAY": ":0"}, True, "tty"),
        ({"SSH_ASKPASS": "/a", "SSH_ASKPASS_REQUIRE": "force"}, True, "askpass"),  # VS Code
        ({"SSH_ASKPASS": "/a", "SSH_ASKPASS_REQUIRE": "force"}, False, "askpass"),
        ({"SSH_ASKPASS": "/a", "SSH_ASKPASS_REQUIRE": "prefer", "DISPLAY": ":0"}, True, "askpass"),
        ({"SSH_ASKPASS": "/a", "SSH_ASKPASS_REQUIRE": "prefer"}, True, "tty"),
        ({"SSH_ASKPASS": "/a", "SSH_ASKPASS_REQUIRE": "never", "DISPLAY": ":0"}, False, ""),
        ({"SSH_ASKPASS_REQUIRE": "force"}, True, "tty"),  # forced, but no program
    ],
)
def test_how_follows_openssh(env: dict[str, str], tty: bool, way: str) -> None:
    assert prompt.how(env, tty) == way


def askpass(tmp_path: Path, body: str) -> dict[str, str]:
    program = tmp_path / "askpass"
    program.write_text(f"#!/bin/sh\necho \"$1\" >> {tmp_path}/asked\n{body}\n")
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    return {"SSH_ASKPASS": str(program), "SSH_ASKPASS_REQUIRE": "force", "PATH": os.defpath}


def test_askpass_gets_the_prompt_and_its_answer_is_the_line(tmp_path: Path) -> None:
    env = askpass(tmp_path, "echo 424242")
    assert prompt.ask("Verification code: ", env=env) == "424242"
    assert (tmp_path / "asked").read_text() == "Verification code: \n"


def test_a_cancelled_askpass_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(prompt.Cancelled, match="no answer to 'Password:'"):
        prompt.ask("Password: ", env=askpass(tmp_path, "exit 1"))


def test_no_way_to_ask_says_what_would_help(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prompt, "has_tty", lambda: False)
    with pytest.raises(prompt.CannotAsk) as info:
        prompt.ask("Password: ", env={})
    assert "no terminal" in str(info.value) and "SSH_ASKPASS" in str(info.value)


class FakeConsole:
    """Windows' console as msvcrt reaches it: keys typed, characters shown."""

    def __init__(self, typed: str) -> None:
        self.typed = list(typed)
        self.shown = ""

    def getwch(self) -> str:
        return self.typed.pop(0)

    def putwch(self, char: str) -> None:
        self.shown += char


@pytest.mark.parametrize(("question", "echo", "typed", "shown"), [
    ("Code: ", True, "12x\b34\r", "Code: 12x\b \b34\r\n"),
    ("Passphrase: ", False, "s3cr\x00;et\r", "Passphrase: \r\n"),  # F1 (\x00 ;) is no character
])
def test_windows_asks_on_the_console_never_on_the_ssh_stream(
        monkeypatch: pytest.MonkeyPatch, question: str, echo: bool, typed: str, shown: str) -> None:
    import io
    import sys

    console = FakeConsole(typed)
    stream_in, stream_out = io.StringIO("the SSH stream\n"), io.StringIO()
    monkeypatch.setitem(sys.modules, "msvcrt", console)
    monkeypatch.setattr(sys, "stdin", stream_in)
    monkeypatch.setattr(sys, "stdout", stream_out)
    with monkeypatch.context() as windows:
        windows.setattr(os, "name", "nt")
        answer = prompt._from_tty(question, echo)
    assert answer == ("1234" if echo else "s3cret")
    assert console.shown == shown
    assert (stream_in.tell(), stream_out.getvalue()) == (0, "")


def test_ctrl_c_on_the_windows_console_cancels(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "msvcrt", FakeConsole("12\x03"))
    with monkeypatch.context() as windows, pytest.raises(KeyboardInterrupt):
        windows.setattr(os, "name", "nt")
        prompt._from_tty("Code: ", True)
