"""One line for what went wrong with a login connection made with paramiko (only its backends
import this module: it imports paramiko)."""

from __future__ import annotations

import socket

import paramiko

from ..log import one_line


def describe(error: BaseException, host: str = "", port: int = 0) -> str:
    """One line for a failure while connecting to ``host``:``port`` or using the connection."""
    where = f"connect to {host} port {port}" if host else "connection"
    if isinstance(error, socket.gaierror):
        return f"cannot resolve {host}: {error.strerror or one_line(error)}"
    if isinstance(error, ConnectionRefusedError):
        return f"{where}: connection refused"
    if isinstance(error, (TimeoutError, socket.timeout)):
        return f"{where}: timed out"
    if isinstance(error, paramiko.ProxyCommandFailure):
        return f"ProxyCommand failed: {error.command}: {error.error}"
    if isinstance(error, paramiko.ChannelException):
        return f"the server refused a channel ({str(error.text).lower()})"
    if isinstance(error, EOFError):
        return f"{where}: the server closed the connection"
    if isinstance(error, OSError) and error.strerror:
        return f"{where}: {error.strerror[:1].lower()}{error.strerror[1:]}"
    text = one_line(error)
    if "protocol banner" in text:
        return f"{where}: no SSH server answered ({text})"
    return text
