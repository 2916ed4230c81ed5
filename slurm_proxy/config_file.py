"""The configuration file's bytes, read only if it is a regular file that no one but its owner
(the user, or root) can change: whoever can change it chooses what runs on the login node."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import ConfigError


def read(path: Path) -> bytes:
    """The file's bytes, if it is a regular file only its owner (or root) can change."""
    try:
        real = Path(os.path.realpath(path))
        st = real.stat()
    except FileNotFoundError:
        raise ConfigError(path, "no configuration file (create one with `slurm-proxy init`)") from None
    except OSError as e:
        raise ConfigError(path, f"cannot read: {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):  # a FIFO or a device would hang or never end
        raise ConfigError(path, f"{real} is not a regular file")
    problem = unsafe_path(real)
    if problem:
        raise ConfigError(path, problem)
    try:
        return real.read_bytes()
    except OSError as e:
        raise ConfigError(path, f"cannot read: {e.strerror or e}") from None


def unsafe_path(real: Path, uid: int | None = None, home: Path | None = None) -> str:
    """Whoever can change the config chooses what runs on the login node. OpenSSH's rule for its
    own config file: the file, and every directory from it up to the home directory (or to / for
    a file elsewhere), owned by the user or root and writable by no one else; a sticky directory
    (like /tmp) may be writable by all. The problem and its fix in one line, or ""."""
    if os.name == "nt":
        return ""
    uid = os.getuid() if uid is None else uid
    home = Path(os.path.realpath(home or Path.home()))
    p = real
    while True:
        try:
            st = p.stat()
        except OSError:
            return ""
        what = "file" if p == real else "directory"
        if st.st_uid not in (0, uid):
            return (f"the config {what} {p} belongs to another user (uid {st.st_uid}); keep the "
                    "config in a directory of your own")
        sticky = stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX
        if st.st_mode & 0o022 and not sticky:
            return f"the config {what} {p} is writable by others; run: chmod go-w {p}"
        if p == home or p.parent == p:
            return ""
        p = p.parent
