"""login/reasons.py: one line for what went wrong with a paramiko connection."""

from __future__ import annotations

import errno
import socket

import paramiko
import pytest

from slurm_proxy.login import reasons

ED = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
ED2 = "AAAAC3NzaC1lZDI1NTE5AAAAIMCT6ebtbivVujCF5m9AbEkVzH/+CCcJgL5SXAtp0XcG"
RSA = "AAAAB3NzaC1yc2EAAAADAQABAAABAQC7"



@pytest.mark.parametrize(
    ("error", "line"),
    [
        (socket.gaierror(-2, "Name or service not known"),
         "cannot resolve h.example: Name or service not known"),
        (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"),
         "connect to h.example port 22: connection refused"),
        (TimeoutError("timed out"), "connect to h.example port 22: timed out"),
        (OSError(errno.EHOSTUNREACH, "No route to host"), "connect to h.example port 22: no route to host"),
        (EOFError(), "connect to h.example port 22: the server closed the connection"),
        (paramiko.SSHException("Error reading SSH protocol banner[Errno 104] Connection reset by peer"),
         "connect to h.example port 22: no SSH server answered (Error reading SSH protocol banner[Errno 104] "
         "Connection reset by peer)"),
        (paramiko.ChannelException(2, "Connect failed"), "the server refused a channel (connect failed)"),
        (paramiko.ProxyCommandFailure("nc h 22", "Broken pipe"), "ProxyCommand failed: nc h 22: Broken pipe"),
        (paramiko.SSHException("first line\n  second line\n"), "first line"),
        (paramiko.SSHException(""), "SSHException"),
    ],
)
def test_describe_is_one_line(error: BaseException, line: str) -> None:
    assert reasons.describe(error, "h.example", 22) == line
