"""The login connection's contract: what every backend offers (``Login``), what a command on the
login node returns (``Result``), and when a backend may not ``exec`` (``no_exec``); and, narrower,
a login the agent can hold (``ChannelLogin``: log in, open a command or TCP channel, close) with
the ``Channel`` it opens. Every backend imports this module; it imports none of them."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol

# The ssh config files an ssh client reads, the user's first (the first value found wins).
SSH_CONFIG_FILES = ("~/.ssh/config", "/etc/ssh/ssh_config")


class Result(NamedTuple):
    returncode: int
    stdout: str
    stderr: str
    chatter: str = ""  # what the login shell's rc files printed before the command (remote.py)


class Login(Protocol):
    destination: str
    # Does every command log in anew (OpenSSH for Windows, which shares no connection)? Then
    # the queue is polled at the slow pace from the start.
    logs_in_per_command: bool

    def run(self, argv: Sequence[str], stdin: str | None = None) -> Result:
        """Run ``argv`` on the login node (never reading our stdin)."""

    def forward_stdio(self, host: str, port: int) -> int:
        """Join our stdin/stdout to ``host:port`` as seen from the login node."""

    def forward_command(self, argv: Sequence[str]) -> int:
        """Join our stdin/stdout to ``argv`` run on the login node; its exit status."""

    def forwarding_refused(self, host: str, port: int) -> str:
        """Try a TCP forward to ``host:port`` (which takes connections from the login node):
        how the login node refused it (``AllowTcpForwarding no``), or "" when it did not."""

    def sharing(self) -> tuple[bool | None, str]:
        """Do connects share one login (True), is that broken (False), or not offered (None);
        and how, in a few words (for doctor)."""


# How a login asks the user: (prompt, echo) → the answer; raises ``prompt.CannotAsk`` or
# ``prompt.Cancelled``. ``prompt.ask``, or the agent's, which asks through the connect that needs
# the login.
Ask = Callable[[str, bool], str]


class Channel(Protocol):
    """A channel open on the login's connection (what ``pump`` uses of a ``paramiko.Channel``)."""

    def recv(self, nbytes: int) -> bytes: ...
    def recv_stderr(self, nbytes: int) -> bytes: ...
    def sendall(self, data: bytes) -> None: ...
    def shutdown_write(self) -> None: ...
    def recv_exit_status(self) -> int: ...
    def close(self) -> None: ...


class ChannelLogin(Protocol):
    """A login that keeps one connection and opens channels on it: what the agent holds for each
    login host, and all it uses of it."""

    destination: str

    @property
    def connected(self) -> bool:
        """Is the connection open (as far as is known without using it)?"""

    def connect(self, ask: Ask, auth_sock: str | None) -> None:
        """Log in unless connected, asking the user through ``ask`` and offering the keys of the
        ssh-agent at ``auth_sock`` ("": none; None: ``SSH_AUTH_SOCK``'s)."""

    def open_exec(self, command: str, log_in: bool = True) -> Channel:
        """A channel running ``command`` (one shell command line) on the login node; with
        ``log_in`` False, a connection lost since ``connect`` is a ``LoginError``."""

    def open_tcp(self, host: str, port: int, log_in: bool = True) -> Channel:
        """A channel to ``host:port`` as the login node connects to it (``log_in``: as above)."""

    def close(self) -> None:
        """Close the connection (a later ``connect`` logs in anew)."""


def no_exec() -> bool:
    """Windows has no exec that replaces the process (nor fork, nor select on pipes): there a
    child or a thread does the work. ``SLURM_PROXY_NO_EXEC`` takes that path anywhere."""
    return os.name == "nt" or bool(os.environ.get("SLURM_PROXY_NO_EXEC"))
