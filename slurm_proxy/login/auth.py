"""Authenticating to the login node with paramiko, in ssh's order: ssh-agent's keys, then key
files (an encrypted one's passphrase asked once), then what the server asks after the key (a
one-time code), answered on the terminal or through ``SSH_ASKPASS``, never on the SSH stream."""

from __future__ import annotations

import base64
import os
import socket
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import paramiko

from .. import log
from ..errors import LoginError
from ..log import one_line
from . import prompt
from .ssh_config import Target


def authenticate(transport: Any, target: Target, destination: str, ask: prompt.Ask = prompt.ask,
                 auth_sock: str | None = None) -> None:
    """Log in as ssh would; every question goes through ``ask`` (the agent asks through the
    connect that needs the login), the keys of the ssh-agent at ``auth_sock`` are offered (None:
    this process's SSH_AUTH_SOCK; "": no ssh-agent)."""
    skipped: list[str] = []
    for key, label in _keys(target, skipped, ask, auth_sock):
        log.debug(f"offering key {label}")
        try:
            remaining = transport.auth_publickey(target.user, key)
        except paramiko.BadAuthenticationType as e:
            allowed = ", ".join(e.allowed_types) or "none"
            raise LoginError(destination, f"{target.user}@{target.host} takes no keys (it allows: {allowed})"
                             ) from None
        except paramiko.SSHException as e:  # refused, or an agent that would not sign
            log.debug(f"key {label}: {one_line(e)}")
            if not transport.is_active():
                break
            continue
        if not remaining:
            log.debug(f"authenticated with {label}")
            return
        log.debug(f"authenticated with {label}; the server also wants {', '.join(remaining)}")
        _second_factor(transport, target, destination, remaining, ask)
        return
    tried = ", ".join(["ssh-agent", *(shown_path(p) for p in target.identity_files)])
    hint = f"; skipped {', '.join(skipped)}" if skipped else ""
    raise LoginError(destination, f"permission denied for {target.user}@{target.host} (publickey): "
                     f"no key from {tried} was accepted{hint}")


def _second_factor(transport: Any, target: Target, destination: str, methods: Sequence[str],
                   ask: prompt.Ask) -> None:
    """What the server asks after the key (a one-time code): its prompts answered on the terminal
    or through SSH_ASKPASS, never on the SSH stream; nothing answered is logged."""
    def answer(title: str, instructions: str, prompts: Sequence[tuple[str, bool]]) -> list[str]:
        return [ask(f"({target.user}@{target.host}) {text}", echo) for text, echo in prompts]

    try:
        if "keyboard-interactive" in methods:
            remaining = transport.auth_interactive(target.user, answer)
        elif "password" in methods:
            remaining = transport.auth_password(
                target.user, ask(f"({target.user}@{target.host}) Password: ", False))
        else:
            raise LoginError(destination, f"{target.user}@{target.host} wants {', '.join(methods)} "
                             "after the key, which slurm-proxy cannot answer")
    except paramiko.AuthenticationException:
        raise LoginError(destination, f"{target.user}@{target.host}: permission denied "
                         f"({', '.join(methods)})") from None
    if remaining:
        raise LoginError(destination, f"{target.user}@{target.host} still wants {', '.join(remaining)}")


def _keys(target: Target, skipped: list[str], ask: prompt.Ask,
          auth_sock: str | None = None) -> Iterator[tuple[Any, str]]:
    """Keys to offer in ssh's order: the agent's keys for the IdentityFiles, its others (unless
    IdentitiesOnly), then the key files the agent did not already offer."""
    wanted = {_public_blob(p) for p in target.identity_files} - {None}
    try:
        agent = _ssh_agent(auth_sock)
    except (paramiko.SSHException, OSError) as e:
        log.debug(f"ssh-agent: {one_line(e)}")
        agent = paramiko.agent.AgentSSH()  # none: no keys
    agent_keys = list(agent.get_keys())
    ordered = [k for k in agent_keys if k.asbytes() in wanted]
    if not target.identities_only:
        ordered += [k for k in agent_keys if k.asbytes() not in wanted]
    offered = set()
    try:
        for key in ordered:
            offered.add(key.asbytes())
            yield key, f"from ssh-agent ({key.comment or key.get_name()})"
    finally:  # each was tried (it signs through the agent), or one was taken
        agent._close()
    for path in target.identity_files:
        if not os.path.exists(path) or _public_blob(path) in offered:
            continue
        try:
            key = _key_from(path, ask)
        except _NoPassphrase:
            skipped.append(f"{shown_path(path)} (has a passphrase, and none was given)")
            continue
        except Exception as e:  # not a key paramiko can read (its errors share no base class)
            skipped.append(f"{shown_path(path)} ({one_line(e)})")
            continue
        if key.asbytes() not in offered:
            yield key, shown_path(path)


def _ssh_agent(auth_sock: str | None) -> Any:
    """The ssh-agent at ``auth_sock``, passed explicitly (the login agent logs in for connects
    of other environments, several at once: never through its own os.environ). None: as ssh
    finds it (SSH_AUTH_SOCK; on Windows Pageant or OpenSSH's pipe, as paramiko finds them)."""
    if auth_sock is None or sys.platform == "win32":
        return paramiko.Agent()
    agent = paramiko.agent.AgentSSH()
    if auth_sock:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(auth_sock)
        except OSError as e:  # a socket left by an ssh-agent that is gone, as paramiko says none
            sock.close()
            log.debug(f"ssh-agent at {auth_sock}: {one_line(e)}")
            return agent
        try:
            agent._connect(sock)
        except BaseException:
            sock.close()
            raise
    return agent


class _NoPassphrase(Exception):
    pass


def _key_from(path: str, ask: prompt.Ask) -> Any:
    """A private key file; an encrypted one's passphrase is asked once, like ssh does."""
    try:
        return paramiko.PKey.from_path(path)
    except (TypeError, paramiko.PasswordRequiredException):
        pass  # cryptography 45 and later say so
    except ValueError:
        if not encrypted(Path(path).read_bytes()):  # before 45 a locked key is a ValueError too
            raise
    try:
        passphrase = ask(f"Enter passphrase for key '{path}': ", False)
    except (prompt.CannotAsk, prompt.Cancelled) as e:
        log.debug(f"no passphrase for {shown_path(path)}: {e}")
        raise _NoPassphrase from None
    if not passphrase:
        raise _NoPassphrase
    try:
        return paramiko.PKey.from_path(path, passphrase.encode())
    except (paramiko.SSHException, ValueError):
        log.info(f"wrong passphrase for {shown_path(path)}")
        raise _NoPassphrase from None


def encrypted(key_file: bytes) -> bool:
    """Is this private key file locked with a passphrase? A PEM file says so in its header; an
    OpenSSH one names its cipher ("none" when it has none) right after its magic."""
    if b"ENCRYPTED" in key_file:
        return True
    lines = key_file.strip().splitlines()
    if not lines or lines[0].strip() != b"-----BEGIN OPENSSH PRIVATE KEY-----":
        return False
    try:
        blob = base64.b64decode(b"".join(line.strip() for line in lines[1:-1]))
    except ValueError:
        return False
    magic = b"openssh-key-v1\0"
    if not blob.startswith(magic) or len(blob) < len(magic) + 4:
        return False
    size = int.from_bytes(blob[len(magic):len(magic) + 4], "big")
    return blob[len(magic) + 4:len(magic) + 4 + size] != b"none"


def _public_blob(private_key_path: str) -> bytes | None:
    try:
        return base64.b64decode(Path(private_key_path + ".pub").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None


def shown_path(path: str) -> str:
    home = os.path.expanduser("~")
    return "~" + path[len(home):] if path.startswith(home + os.sep) else path
