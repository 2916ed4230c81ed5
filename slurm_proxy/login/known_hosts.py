"""The user's known_hosts files, read and matched as ssh does (hashed names, ``[host]:port``,
wildcards and negations, ``@revoked``): the login node's host key is verified against them, and
never trusted on first use.

Not to be confused with ``slurm_proxy.node_keys``: the compute nodes' keys, as the login node
vouches for them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .. import log
from ..errors import LoginError
from .ssh_config import Target


@dataclass(frozen=True)
class KnownKey:
    patterns: tuple[str, ...]  # host patterns, hashed (|1|salt|hash) or plain with * ? and !
    key_type: str
    blob: bytes
    marker: str = ""           # "", "@revoked" or "@cert-authority"


def read_known_hosts(files: Sequence[str]) -> list[KnownKey]:
    keys = []
    for name in files:
        try:
            text = Path(name).read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        keys += parse_known_hosts(text)
    return keys


def parse_known_hosts(text: str) -> list[KnownKey]:
    keys = []
    for line in text.splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        marker = words.pop(0) if words[0].startswith("@") else ""
        if len(words) < 3:
            continue
        try:
            blob = base64.b64decode(words[2], validate=True)
        except ValueError:
            continue
        keys.append(KnownKey(tuple(words[0].split(",")), words[1], blob, marker))
    return keys


def host_matches(patterns: Sequence[str], name: str) -> bool:
    """OpenSSH's rule: some pattern matches and no negated (``!``) one does."""
    name = name.lower()
    found = False
    for pattern in patterns:
        if pattern.startswith("|1|"):
            found = found or _hashed_match(pattern, name)
            continue
        negated = pattern.startswith("!")
        if _wildcard(pattern.lstrip("!").lower()).fullmatch(name):
            if negated:
                return False
            found = True
    return found


def _wildcard(pattern: str) -> re.Pattern[str]:
    """ssh's patterns know only ``*`` and ``?`` (``[`` is literal, as in ``[host]:port``)."""
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern))


def _hashed_match(pattern: str, name: str) -> bool:
    try:
        _, _, salt, digest = pattern.split("|")
        expected = base64.b64decode(digest)
        mine = hmac.new(base64.b64decode(salt), name.encode(), hashlib.sha1).digest()
    except ValueError:
        return False
    return hmac.compare_digest(mine, expected)


def check_host_key(known: Sequence[KnownKey], name: str, key_type: str, blob: bytes) -> str:
    """``"ok"``, ``"revoked"``, ``"mismatch"`` (this host has another key of the type) or
    ``"unknown"``."""
    if any(k.marker == "@revoked" and k.blob == blob for k in known):
        return "revoked"
    mine = [k for k in known if not k.marker and host_matches(k.patterns, name)]
    if any(k.blob == blob for k in mine):
        return "ok"
    return "mismatch" if any(k.key_type == key_type for k in mine) else "unknown"


def known_key_types(known: Sequence[KnownKey], name: str) -> list[str]:
    """The key types known_hosts holds for ``name``, to ask the server for one of them first."""
    types = [k.key_type for k in known if not k.marker and host_matches(k.patterns, name)]
    return list(dict.fromkeys(types))


def fingerprint_of(blob: bytes) -> str:
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def verify(known: Sequence[KnownKey], target: Target, key_type: str, blob: bytes, destination: str) -> None:
    """Refuse a host key known_hosts does not list for the host: never trust on first use."""
    name = target.host_key_name
    verdict = check_host_key(known, name, key_type, blob)
    got = f"{key_type} {fingerprint_of(blob)}"
    log.debug(f"host key {got} for {name}: {verdict}")
    if verdict == "ok":
        return
    if verdict == "unknown":
        detail = f"host key for {name} is not in your known_hosts: connect once with `ssh {target.name}`"
    elif verdict == "revoked":
        detail = f"host key for {name} ({got}) is marked @revoked in your known_hosts"
    else:
        detail = (f"host key for {name} does not match your known_hosts (got {got}); "
                  f"if it really changed: ssh-keygen -R {shlex.quote(name)}")
    raise LoginError(destination, detail)
