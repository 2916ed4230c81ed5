"""The login connection's contract: what every backend offers (``Login``), what a command on the
login node returns (``Result``), and when a backend may not ``exec`` (``no_exec``). Every backend
imports this module; it imports none of them."""

from __future__ import annotations

import os
from collections.abc import Sequence
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


def no_exec() -> bool:
    """Windows has no exec that replaces the process (nor fork, nor select on pipes): there a
    child or a thread does the work. ``SLURM_PROXY_NO_EXEC`` takes that path anywhere."""
    return os.name == "nt" or bool(os.environ.get("SLURM_PROXY_NO_EXEC"))
