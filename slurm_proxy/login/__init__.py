"""The connection to the login node: run a command there, or hand our stdio to a TCP hop.

Nothing here knows of Slurm. The contract is ``base`` (``Login``; ``ChannelLogin``, the narrower
one the agent holds); each backend is its own modules, none importing another's: ``openssh`` (+
``control``), ``paramiko_backend`` (+ ``paramiko_connect``), ``agent`` and ``agent_server`` (+
``wire``). What backends share is in modules that belong to none: ``pump``, ``prompt``,
``remote``, ``sockets``, ``ssh_config``, ``known_hosts``, ``auth``, ``reasons``. ``open_login``
chooses a backend, importing the others only when they are chosen, so the default path never pays
for paramiko; callers outside the package use only what this module exports.

Words: a *login* is a connection object (a ``Login``); its *destination* is the ssh name it
connects to (``user@host`` or a Host alias), a cluster's ``login`` in the config; a *connect* is
the slurm-proxy process of one ``ssh slurm-…``; the *agent* is the per-user process that holds one
login per destination for every connect, each connect talking to it over a ``wire``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..defaults import AGENT_IDLE
from ..errors import LoginError
from .base import Login, Result, no_exec
from .openssh import OpenSSHLogin, find_ssh, ssh_options

if TYPE_CHECKING:  # for annotations: the agent's module is imported only when used
    from .agent import AgentStatus as AgentStatus

__all__ = ["Login", "Result", "agent_status", "find_ssh", "no_exec", "open_login", "serve_agent",
           "ssh_client", "ssh_options", "start_agent", "stop_agent"]


def open_login(destination: str, backend: str = "", agent_idle: int = AGENT_IDLE,
               login_shell: bool | None = None) -> Login:
    """The login connection. By default the system ``ssh`` with connection sharing; on Windows,
    whose OpenSSH shares no connection, the agent, which logs in once per login host for every
    connect (``agent_idle``: seconds it keeps an unused login). Without an ``ssh`` client, the
    paramiko backend. ``login_shell``: load /etc/profile before each command (None: when a
    command is not found without it)."""
    if backend == "agent" or (not backend and windows()):
        from .agent import AgentLogin

        return AgentLogin(destination, agent_idle, login_shell=login_shell)
    if backend in ("openssh", ""):
        try:
            return OpenSSHLogin(destination, login_shell=login_shell)
        except LoginError:
            if backend == "openssh":
                raise
    from .paramiko_backend import ParamikoLogin

    return ParamikoLogin(destination, login_shell=login_shell)


def ssh_client(login: Login) -> str | None:
    """The ``ssh`` binary ``login`` runs, to ask it as the login does (``ssh -G``, a login with
    ``-v``); None for a login that runs no ssh client (paramiko, the agent)."""
    return login.ssh if isinstance(login, OpenSSHLogin) else None


# The login agent, for the `agent` command: each imported only when asked for.

def agent_status(home: Path) -> AgentStatus | None:
    """What the running agent of the state directory ``home`` holds; None when none runs."""
    from . import agent

    return agent.status(home)


def start_agent(home: Path, idle: int = AGENT_IDLE) -> None:
    """Start the agent unless it runs."""
    from . import agent

    agent.connect(home, idle).close()


def stop_agent(home: Path) -> AgentStatus | None:
    """Stop the running agent; what it held, or None when none ran."""
    from . import agent

    return agent.stop(home)


def serve_agent(home: Path, idle: int = AGENT_IDLE) -> int:
    """Be the agent, in this process, until it exits."""
    from .agent_server import serve
    from .paramiko_backend import ParamikoLogin  # the login the agent holds for each host

    return serve(home, idle, ParamikoLogin)


def windows() -> bool:
    return os.name == "nt"
