"""login/remote.py: one command line that every login shell runs alike, and only the command's
own output read back, whatever the rc files print."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from slurm_proxy.login import remote
from slurm_proxy.login.base import Result

PLAIN = ["a b", "it's", "$HOME", "*", "", "%h", "`id`", '"q"', "'", "a|b;c"]  # sent in single quotes
NASTY = [*PLAIN, "back\\slash", "!x", "line\nbreak", "ü"]  # sent as base64


def echo(words: list[str]) -> list[str]:
    return ["bash", "-c", 'printf "<%s>" "$@"; echo; echo "to stderr" >&2; exit 3', "n", *words]


ECHO = echo(NASTY)


@pytest.mark.parametrize("words", [PLAIN, NASTY], ids=["plain", "base64"])
@pytest.mark.parametrize("shell", ["sh", "bash", "zsh", "tcsh", "fish"])
def test_every_login_shell_runs_the_argv_as_given_and_only_its_output_is_read(shell: str,
                                                                              words: list[str]) -> None:
    if not shutil.which(shell):
        pytest.skip(f"no {shell} here")

    def send(line: str, stdin: str | None) -> Result:
        # What sshd does: the user's shell runs the line, after rc files that print.
        noisy = "echo Welcome; sh -c 'echo module loaded >&2'; "
        p = subprocess.run([shell, "-c", noisy + line], input=stdin or "", capture_output=True, text=True)
        return Result(p.returncode, p.stdout, p.stderr)

    res = remote.Shell("login", profile=False).run(send, echo(words))
    assert res.stdout == "".join(f"<{w}>" for w in words) + "\n"
    assert (res.returncode, res.stderr) == (3, "to stderr\n")
    assert "Welcome" in res.chatter and "loaded" in res.chatter


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # The markers missing (the shell never ran our script): the raw output is chatter.
        (Result(1, "Welcome\n", "bash: /bin/sh: No such file\n"),
         Result(1, "", "bash: /bin/sh: No such file\n", "Welcome\n")),
        # Output without a final newline, and our marker's look-alike inside it.
        (Result(0, "hi\nN\nN 9x\nN 0\n", "N\n"), Result(0, "N 9x", "", "hi\n")),
        # No end marker (killed): ssh's status stands.
        (Result(255, "N\npartial", "N\nkilled\n"), Result(255, "partial", "killed\n", "")),
    ],
)
def test_unframe(raw: Result, expected: Result) -> None:
    # "N" stands for the nonce; the begin marker's newline is part of it.
    assert remote.unframe(raw, "N") == expected


def test_a_command_not_found_is_tried_once_with_the_login_profile_and_that_is_remembered(
        tmp_path: Path) -> None:
    sent: list[bool] = []

    def send(line: str, stdin: str | None) -> Result:
        profile = "/etc/profile" in _script(line)
        sent.append(profile)
        nonce = line.split()[-1]  # the marker is the line's last word
        if not profile:
            return Result(127, f"{nonce}\n", f"{nonce}\nsh: 1: squeue: not found\n")
        return Result(0, f"{nonce}\nJOBS\n{nonce} 0\n", f"{nonce}\n")

    shell = remote.Shell("login")
    assert shell.run(send, ["squeue"]).stdout == "JOBS" and sent == [False, True]
    sent.clear()
    assert remote.Shell("login").run(send, ["squeue"]).stdout == "JOBS" and sent == [True]
    # Another login host finds out for itself; the config saying no is obeyed.
    sent.clear()
    assert remote.Shell("other").run(send, ["squeue"]).returncode == 0 and sent == [False, True]
    sent.clear()
    assert remote.Shell("login", profile=False).run(send, ["squeue"]).returncode == 127 and sent == [False]


def test_the_line_holds_nothing_a_shell_would_read_its_own_way() -> None:
    line = remote.Shell("login", profile=True).line(ECHO, "slurm-proxy-00")
    payload = line.split("echo ")[1].split(" |")[0]
    assert set(payload) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")
    assert line == f"exec /bin/sh -c 'eval \"$(echo {payload} | base64 -d)\"' sh slurm-proxy-00"
    # The marker is an argument: the line less it is the same for every command (warm's memo).
    assert remote.Shell("login", profile=True).line(ECHO, "slurm-proxy-11").startswith(line[:-2])


def test_a_line_without_such_characters_goes_in_single_quotes_with_no_base64_to_start() -> None:
    line = remote.Shell("login", profile=False).line(echo(PLAIN), "slurm-proxy-00")
    assert line.startswith("exec /bin/sh -c '__sp_n=$1; ") and line.endswith("' sh slurm-proxy-00")
    assert "base64" not in line and "\\" not in line.replace("'\\''", "")  # a quote is '\''


def _script(line: str) -> str:
    import base64

    if "base64 -d" not in line:
        return line  # sent in single quotes
    return base64.b64decode(line.split("echo ")[1].split(" |")[0]).decode()


@pytest.mark.parametrize(
    ("stderr", "command"),
    [("sh: 1: squeue: not found\n", "squeue"), ("sh: 1: exec: squeue: not found\n", "squeue"),
     ("bash: line 1: sbatch: command not found\n", "sbatch"), ("squeue: Command not found.\n", "a command"),
     ("Welcome\n", "a command")],
)
def test_missing(stderr: str, command: str) -> None:
    assert remote.missing(stderr) == command
