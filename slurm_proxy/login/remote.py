"""What crosses the login node's shell, the same for every backend.

ssh hands a command to the user's login shell (bash, zsh, tcsh, fish …) after the shell's rc
files have run, and rc files print ("Welcome", ``module load`` chatter, conda). So a command
goes over as one line every such shell reads alike: ``/bin/sh`` running a script in single
quotes when it holds nothing that tcsh or fish would read their way inside them (a backslash, a
newline, ``!``, anything but printable ASCII), else carried as base64 (which costs a ``base64``
to decode it). The script prints a marker of our own, fresh per command, on stdout and stderr
before the command and its exit status after it; only what lies between is the command's
output. Whatever stands before the markers is the rc files' (kept as ``Result.chatter``, shown
with ``-v`` and by ``doctor``).

Sites where Slurm's commands are on ``PATH`` only in a login shell (``/etc/profile.d``): with
``profile`` the script first sources ``/etc/profile`` and ``~/.profile``. A command that is
"not found" without them is tried once with them, and that is remembered per login host.
"""

from __future__ import annotations

import binascii
import shlex
from collections.abc import Callable, Sequence
from pathlib import Path

from .. import log, paths, warm
from .base import Result

NOT_FOUND = 127  # a shell's exit status for a command it cannot find

PROFILE = ('for __sp_f in /etc/profile "$HOME/.profile"; do [ -r "$__sp_f" ] && . "$__sp_f"; '
           'done </dev/null >/dev/null 2>&1; ')

# After a command: its status, and the end marker that ``warm.unframe`` looks for.
END = '__sp_s=$?; echo; echo "$__sp_n $__sp_s"'

Send = Callable[[str, "str | None"], Result]


class Shell:
    """How commands reach one login host's shell."""

    def __init__(self, destination: str, profile: bool | None = None) -> None:
        self.destination = destination
        self.forced = profile  # the config's login_shell: True, False, or None (find out)
        self._said_chatter = False
        self.answers: dict[tuple[str, ...], str] = {}  # each command's last output, when it succeeded
        self._given: tuple[tuple[str, ...], warm.Answer] | None = None

    @property
    def profile(self) -> bool:
        if self.forced is not None:
            return self.forced
        return self._memo().exists()

    def line(self, argv: Sequence[str], nonce: str = "", profile: bool | None = None) -> str:
        """The command line for ssh: ``argv`` run by ``/bin/sh``, framed by ``nonce`` if given."""
        if nonce:
            return f"{self.framed(argv, profile)} {nonce}"
        return self._sh(self._profile(profile) + "exec " + shlex.join(argv))

    def framed(self, argv: Sequence[str], profile: bool | None = None) -> str:
        """The framed command line less its marker, which is its last word (``$1`` of the
        script): the same from one command to the next (``warm``'s memo keeps it)."""
        return self._sh(
            "__sp_n=$1; " + self._profile(profile) + 'echo "$__sp_n"; echo "$__sp_n" >&2; '
            + shlex.join(argv) + "; " + END + '; exit "$__sp_s"') + " sh"

    def loop(self, argv: Sequence[str]) -> str:
        """The command line that runs ``argv`` once for each marker its stdin sends, framed by
        that marker as ``framed`` frames it (stdout only), until stdin ends: one session on the
        login node for many queries (``asker``)."""
        return self._sh(
            self._profile(None) + 'while read -r __sp_n; do echo "$__sp_n"; ' + shlex.join(argv)
            + " </dev/null 2>/dev/null; " + END + "; done")

    def _profile(self, profile: bool | None) -> str:
        return PROFILE if (self.profile if profile is None else profile) else ""

    @staticmethod
    def _sh(script: str) -> str:
        if all(" " <= c <= "~" and c not in "\\!" for c in script):
            return "exec /bin/sh -c '" + script.replace("'", "'\\''") + "'"
        payload = binascii.b2a_base64(script.encode(), newline=False).decode()
        return f"exec /bin/sh -c 'eval \"$(echo {payload} | base64 -d)\"'"

    def run(self, send: Send, argv: Sequence[str], stdin: str | None = None) -> Result:
        """``argv`` on the login node through ``send`` (line, stdin) → raw result; what the
        command itself printed, and its exit status."""
        res = self._framed(send, argv, stdin, None)
        if res.returncode == NOT_FOUND and self.forced is None and not self.profile \
                and "not found" in res.stderr:
            retried = self._framed(send, argv, stdin, True)
            if retried.returncode != NOT_FOUND:
                log.info(f"{missing(res.stderr)} is on PATH on {self.destination} only in a login shell: "
                         "slurm-proxy loads /etc/profile there from now on (login_shell = true)")
                remember(self._memo(), "")
                res = retried
        if res.returncode == 0:
            self.answers[tuple(argv)] = res.stdout
        return res

    def answered(self, argv: Sequence[str], answer: warm.Answer) -> None:
        """The next ``run`` of ``argv`` takes ``answer`` (a warm connect's query) as its own."""
        self._given = (tuple(argv), answer)

    def _framed(self, send: Send, argv: Sequence[str], stdin: str | None, profile: bool | None) -> Result:
        given, self._given = self._given, None
        if given and given[0] == tuple(argv) and profile is None:
            nonce, raw = given[1].nonce, Result(given[1].returncode, given[1].stdout, given[1].stderr)
        else:
            nonce = warm.marker()
            raw = send(self.line(argv, nonce, profile), stdin)
        res = unframe(raw, nonce)
        if res.chatter and not self._said_chatter:
            self._said_chatter = True
            log.debug(f"your login shell on {self.destination} printed before the command "
                      f"(ignored; it breaks scp, sftp and rsync there): {shown_chatter(res.chatter)}")
        return res

    def _memo(self) -> Path:
        """A file whose presence says: this host's Slurm needs a login shell's PATH."""
        return fact_file(self.destination, "login-shell")


def unframe(raw: Result, nonce: str) -> Result:
    """The command's own stdout, stderr and exit status out of what the login shell sent; when
    the markers are missing (the shell never ran our script) the raw result, as chatter."""
    status, out, err, chatter = warm.unframe(raw.returncode, raw.stdout, raw.stderr, nonce)
    return Result(status, out, err, chatter=chatter)


def missing(stderr: str) -> str:
    """The command a shell said it could not find (dash: ``sh: 1: squeue: not found``, bash:
    ``bash: line 1: squeue: command not found``), or "a command"."""
    for line in stderr.splitlines():
        words = line.replace("command not found", "not found").split(": ")
        if len(words) >= 2 and words[-1].strip() == "not found":
            return words[-2].strip()
    return "a command"


def shown_chatter(text: str) -> str:
    """What rc files printed, on one short line."""
    return " / ".join(line.strip() for line in text.splitlines() if line.strip())[:300]


def fact_file(destination: str, fact: str) -> Path:
    """Where slurm-proxy keeps what it learned about a login host: a file whose presence says
    ``fact`` ("login-shell": Slurm is on PATH only in a login shell; "no-forwarding": the login
    node refuses TCP forwarding, and the file says how)."""
    return paths.state_dir() / "login-hosts" / f"{destination.encode().hex()}.{fact}"


def remember(fact: Path, text: str) -> None:
    paths.write_private(paths.private_dir(fact.parent) / fact.name, text)


# How a login node that refuses TCP forwarding (AllowTcpForwarding no) says so: through a
# master connection, without one, to paramiko.
_NO_FORWARDING = ("administratively prohibited", "session open refused by peer")


def forwarding_refusal(message: str) -> str:
    """The line of ``message`` (ssh's stderr, an error) that says forwarding was refused, or ""."""
    for line in message.splitlines():
        if any(words in line.lower() for words in _NO_FORWARDING):
            return line.strip()
    return ""
