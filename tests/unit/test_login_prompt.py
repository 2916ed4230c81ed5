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
