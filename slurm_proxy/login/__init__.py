"""The connection to the login node: run a command there, or hand our stdio to a TCP hop.

Nothing here knows of Slurm. The contract is ``base``; each backend is a module of its own
(``openssh``, ``paramiko_backend``), and ``open_login`` chooses one, importing the paramiko backend
only when it is chosen, so the default path never pays for paramiko.
"""

from __future__ import annotations

import os

from ..errors import LoginError
from .base import Login, Result, no_exec
from .openssh import OpenSSHLogin, find_ssh

__all__ = ["Login", "OpenSSHLogin", "Result", "find_ssh", "no_exec", "open_login"]


def open_login(destination: str, backend: str = "") -> Login:
    """The login connection: the system ``ssh`` unless the paramiko backend is asked for, no
    ``ssh`` client is installed, or on Windows, whose OpenSSH shares no connection: there one
    paramiko login per connect beats one ssh login (and 2FA prompt) per command."""
    if backend == "openssh" or (not backend and not windows()):
        try:
            return OpenSSHLogin(destination)
        except LoginError:
            if backend == "openssh":
                raise
    from .paramiko_backend import ParamikoLogin

    return ParamikoLogin(destination)


def windows() -> bool:
    return os.name == "nt"
