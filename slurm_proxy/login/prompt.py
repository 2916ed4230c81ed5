"""Asking the user for a secret (a one-time code, a key's passphrase) the way ssh does.

On the terminal when there is one, else through the ``SSH_ASKPASS`` program (VS Code sets one),
as ``SSH_ASKPASS_REQUIRE`` says; never on stdin or stdout, which carry the SSH stream. Nothing
asked or answered is logged.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

from ..errors import SlurmProxyError
from .base import Ask as Ask  # how a login asks the user: ``ask`` below, or the agent's


class CannotAsk(SlurmProxyError):
    """The server asks for something and there is no terminal and no askpass program."""

    def __init__(self, prompt: str) -> None:
        self.prompt = prompt
        super().__init__(f"the login node asks {prompt.strip()!r}, but there is no terminal to ask "
                         "you on and no SSH_ASKPASS program (VS Code sets one; or use ssh-agent)")


class Cancelled(SlurmProxyError):
    def __init__(self, prompt: str) -> None:
        self.prompt = prompt
        super().__init__(f"no answer to {prompt.strip()!r} (the askpass program was cancelled)")


def how(env: Mapping[str, str] | None = None, tty: bool | None = None) -> str:
    """``"tty"``, ``"askpass"`` or ``""`` (no way to ask): OpenSSH's rules (readpass.c). The
    askpass program is allowed with a display, or when ``SSH_ASKPASS_REQUIRE`` is ``force``;
    ``prefer`` takes it before the terminal, ``never`` forbids it."""
    env = os.environ if env is None else env
    tty = has_tty() if tty is None else tty
    program = env.get("SSH_ASKPASS", "")
    require = env.get("SSH_ASKPASS_REQUIRE", "").lower()
    allowed = bool(env.get("DISPLAY") or env.get("WAYLAND_DISPLAY")) or os.name == "nt"
    prefer = False
    if require == "force":
        allowed = prefer = True
    elif require == "prefer":
        prefer = allowed
    elif require == "never":
        allowed = False
    if program and allowed and (prefer or not tty):
        return "askpass"
    return "tty" if tty else ""


def ask(prompt: str, echo: bool = False, env: Mapping[str, str] | None = None) -> str:
    """The user's answer to ``prompt`` (shown as typed only with ``echo``)."""
    env = os.environ if env is None else env
    way = how(env)
    if way == "askpass":
        return _askpass(env["SSH_ASKPASS"], prompt, env)
    if way == "tty":
        return _from_tty(prompt, echo)
    raise CannotAsk(prompt)


def has_tty() -> bool:
    if os.name == "nt":
        return sys.stdin is not None and _console_attached()
    try:
        os.close(os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY))
    except OSError:
        return False
    return True


def _console_attached() -> bool:  # pragma: no cover - Windows only
    import ctypes

    return bool(ctypes.windll.kernel32.GetConsoleWindow())  # type: ignore[attr-defined]


def _askpass(program: str, prompt: str, env: Mapping[str, str]) -> str:
    try:
        proc = subprocess.run([program, prompt], stdin=subprocess.DEVNULL, capture_output=True,
                              env=dict(env), timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SlurmProxyError(f"cannot run SSH_ASKPASS program {program!r}: {e}") from None
    if proc.returncode != 0:
        raise Cancelled(prompt)
    return proc.stdout.decode(errors="replace").rstrip("\r\n")


def _from_tty(prompt: str, echo: bool) -> str:
    """Read one line from the terminal itself (not stdin), echo off unless asked."""
    if os.name == "nt":
        import msvcrt

        return _from_console(prompt, echo, msvcrt)
    import termios

    fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    with open(fd, "r+b", buffering=0) as tty:
        old = termios.tcgetattr(fd)
        new = list(old)
        if not echo:
            new[3] &= ~termios.ECHO
        try:
            tty.write(prompt.encode())
            termios.tcsetattr(fd, termios.TCSAFLUSH, new)
            line = b""
            while not line.endswith(b"\n"):
                chunk = tty.read(1)
                if not chunk:
                    break
                line += chunk
        finally:
            termios.tcsetattr(fd, termios.TCSAFLUSH, old)
            if not echo:
                tty.write(b"\n")
    return line.decode(errors="replace").rstrip("\r\n")


def _from_console(prompt: str, echo: bool, console: Any) -> str:
    """Windows: one line typed at the console itself (msvcrt's ``getwch``/``putwch``, which go
    to the console whatever stdin and stdout are), echo off unless asked; Ctrl-C interrupts."""
    for char in prompt:
        console.putwch(char)
    typed: list[str] = []
    while True:
        char = console.getwch()
        if char in "\r\n":
            break
        if char == "\x03":
            raise KeyboardInterrupt
        if char in "\x00\xe0":  # a function or arrow key: its second code is no character
            console.getwch()
        elif char == "\b":
            if typed:
                typed.pop()
                if echo:
                    for erase in "\b \b":
                        console.putwch(erase)
        else:
            typed.append(char)
            if echo:
                console.putwch(char)
    console.putwch("\r")
    console.putwch("\n")
    return "".join(typed)
