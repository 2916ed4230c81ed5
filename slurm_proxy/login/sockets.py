"""Short paths for Unix sockets, shared by the backends (the OpenSSH control socket, the agent's
socket): a path named after what it serves, short by construction, in a 0700 directory of ours.

ssh binds a ControlPath as ``<path>.<16 random characters>`` before renaming it into place, and a
Unix socket path is limited to 104 bytes on macOS and the BSDs, 108 on Linux: the name is 16 hex
characters, under the state directory, or in a private directory under /tmp when the state
directory is too deep for that.
"""

from __future__ import annotations

import os
import sys
import zlib
from pathlib import Path

from ..errors import SlurmProxyError

SSH_SUFFIX = 17  # ssh binds "<ControlPath>.XXXXXXXXXXXXXXXX" and renames it into place


def sun_path_max(platform: str = sys.platform) -> int:
    """The longest Unix socket path the platform takes, in bytes (without the final NUL)."""
    return 103 if platform == "darwin" or "bsd" in platform else 107


def short_name(text: str) -> str:
    """16 hex characters named after ``text``: short enough for any socket path."""
    data = text.encode()
    return f"{zlib.crc32(data):08x}{zlib.adler32(data):08x}"


def socket_path(name_of: str, state_dir: Path, platform: str = sys.platform,
                uid: int | None = None, tmp: Path = Path("/tmp")) -> Path:  # noqa: S108 (checked 0700, ours)
    """The socket named after ``name_of`` (a login destination): under ``state_dir``, or /tmp
    when that is too long for ssh's temporary name to fit the platform's limit."""
    name = short_name(name_of)
    uid = os.getuid() if uid is None else uid
    limit = sun_path_max(platform)
    for directory in (state_dir / "cm", tmp / f"slurm-proxy-{uid}"):
        if len(os.fsencode(directory / name)) + SSH_SUFFIX <= limit:
            return directory / name
    raise SlurmProxyError(f"no path for ssh's control socket is short enough ({limit} bytes on "
                          f"this system): set SLURM_PROXY_HOME to a shorter directory")
