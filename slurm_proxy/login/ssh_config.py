"""The user's ssh config as ssh reads it for one host: ``HostName``, ``User``, ``Port``,
``IdentityFile``, known_hosts files, ``HostKeyAlias``, ``ProxyCommand`` and ``ProxyJump`` chains,
with ``Include`` lines followed. Used by the paramiko backend (the OpenSSH backend lets ssh read
its own config)."""

from __future__ import annotations

import contextlib
import getpass
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from glob import glob
from pathlib import Path
from typing import Any

import paramiko

from ..log import one_line
from .base import SSH_CONFIG_FILES

USER_KNOWN_HOSTS = "~/.ssh/known_hosts ~/.ssh/known_hosts2"


GLOBAL_KNOWN_HOSTS = "/etc/ssh/ssh_known_hosts /etc/ssh/ssh_known_hosts2"


DEFAULT_KEYS = ("~/.ssh/id_rsa", "~/.ssh/id_ecdsa", "~/.ssh/id_ed25519")


@dataclass(frozen=True)
class Target:
    """Where and how to connect, as the ssh config resolves a host name."""

    name: str                          # the name the user wrote (a Host alias)
    host: str                          # HostName
    port: int
    user: str
    identity_files: tuple[str, ...]    # IdentityFile, else the default ~/.ssh/id_* keys
    identities_only: bool
    known_hosts_files: tuple[str, ...]  # UserKnownHostsFile, then GlobalKnownHostsFile
    host_key_alias: str | None
    proxy_command: str | None
    proxy_jump: tuple[str, ...]        # jump hosts, first hop first
    connect_timeout: float | None
    keepalive: int                     # ServerAliveInterval, 0 for none

    @property
    def host_key_name(self) -> str:
        """The name known_hosts lists this host under (``[host]:port`` off port 22)."""
        if self.host_key_alias:
            return self.host_key_alias
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"


def read_ssh_config(files: Sequence[str] = SSH_CONFIG_FILES) -> paramiko.SSHConfig:
    """The ssh config files in order (the first value found wins, as in ssh), with their
    ``Include`` lines expanded."""
    config = paramiko.SSHConfig()
    for name in files:
        path = Path(os.path.expanduser(name))
        try:
            text = _with_includes(path, path.parent)
        except OSError:
            continue  # a missing config file is an empty one
        try:
            config.parse(text.splitlines())
        except paramiko.SSHException as e:
            raise ValueError(f"cannot read {path}: {one_line(e)}") from None
    return config


def _with_includes(path: Path, base: Path, depth: int = 0) -> str:
    """The text of ``path`` with each ``Include`` replaced by the files it names (relative
    names are under ``base``: ~/.ssh for the user's config, /etc/ssh for the system's)."""
    lines = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        m = re.match(r"\s*include\s*[=\s]\s*(.+)$", line, re.I)
        if not m or depth >= 8:
            lines.append(line)
            continue
        for pattern in _words(m.group(1)):
            pattern = os.path.expanduser(pattern)
            for included in sorted(glob(os.path.join(base, pattern))):
                with contextlib.suppress(OSError):  # unreadable: skipped, as ssh does
                    lines.append(_with_includes(Path(included), base, depth + 1))
    return "\n".join(lines)


def resolve(config: paramiko.SSHConfig, name: str, *, user: str | None = None,
            port: int | None = None) -> Target:
    """``name`` as the ssh config resolves it; ``user``/``port`` (from a ProxyJump spec) win.
    A value ssh would refuse is a ValueError."""
    try:
        opts = config.lookup(name)
    except paramiko.SSHException as e:
        raise ValueError(f"ssh config for {name}: {one_line(e)}") from None
    host = str(opts.get("hostname", name))
    port = port or _number(opts, "port") or 22
    user = user or opts.get("user") or getpass.getuser()

    def expand(path: str) -> str:
        for token, value in (("%d", os.path.expanduser("~")), ("%u", getpass.getuser()),
                             ("%h", host), ("%p", str(port)), ("%r", user)):
            path = path.replace(token, value)
        return os.path.expanduser(path.replace("%%", "%"))

    identity = [expand(p) for p in opts.get("identityfile", []) if p.lower() != "none"]
    known = [expand(p) for p in _words(opts.get("userknownhostsfile", USER_KNOWN_HOSTS))]
    known += [expand(p) for p in _words(opts.get("globalknownhostsfile", GLOBAL_KNOWN_HOSTS))]
    jump = opts.get("proxyjump") or ""
    timeout = _number(opts, "connecttimeout")
    return Target(
        name=name,
        host=host,
        port=port,
        user=str(user),
        identity_files=tuple(identity) or tuple(os.path.expanduser(k) for k in DEFAULT_KEYS),
        identities_only=str(opts.get("identitiesonly", "no")).lower() == "yes",
        known_hosts_files=tuple(p for p in known if p.lower() != "none"),
        host_key_alias=opts.get("hostkeyalias"),
        proxy_command=opts.get("proxycommand") or None,  # paramiko reads "none" as None
        proxy_jump=() if jump.lower() == "none" else tuple(h.strip() for h in jump.split(",") if h.strip()),
        connect_timeout=float(timeout) if timeout else None,
        keepalive=_number(opts, "serveraliveinterval") or 0,
    )


def _words(value: str) -> list[str]:
    """A list of paths in an ssh config value: split on blanks, "double quotes" keep a path with
    blanks whole; backslashes are left alone (Windows paths)."""
    return [quoted or bare for quoted, bare in re.findall(r'"([^"]*)"|(\S+)', value)]


def _number(opts: dict[str, Any], key: str) -> int | None:
    value = opts.get(key)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"ssh config: {key} {value!r} is not a number") from None


def parse_jump(spec: str) -> tuple[str | None, str, int | None]:
    """A ProxyJump hop ``[ssh://][user@]host[:port]`` (``[v6]:port`` too) → (user, host, port)."""
    rest = spec[len("ssh://"):] if spec.startswith("ssh://") else spec
    user, at, hostport = rest.rpartition("@")
    m = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?|([^:]+)(?::(\d+))?", hostport)
    if not m or not (m.group(1) or m.group(3)):
        raise ValueError(f"ssh config: cannot read ProxyJump host {spec!r}")
    host = m.group(1) or m.group(3)
    port = m.group(2) or m.group(4)
    return (user if at else None), host, (int(port) if port else None)
