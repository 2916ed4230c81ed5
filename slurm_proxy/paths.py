"""Where slurm-proxy keeps its own files: state, locks, ssh control sockets.

``$SLURM_PROXY_HOME`` overrides the default (tests point it at a temporary directory).
Every directory is created 0700 and must be owned by the user.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Mapping
from pathlib import Path

from . import warm
from .errors import SlurmProxyError


class UnsafePath(SlurmProxyError):
    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"refusing to use {path}: {problem}")


def user_dir(kind: str, platform: str = sys.platform, env: Mapping[str, str] | None = None,
             user_home: Path | None = None) -> Path:
    """Where a platform keeps a user's ``kind`` of files: "config" (roaming settings) or "apps"
    (where applications such as VS Code keep their settings). Local state: ``state_dir``."""
    env = os.environ if env is None else env
    user_home = user_home or Path.home()
    if platform == "win32":
        return Path(env.get("APPDATA") or user_home / "AppData" / "Roaming")
    if kind == "apps" and platform == "darwin":
        return user_home / "Library" / "Application Support"
    return Path(env.get("XDG_CONFIG_HOME") or user_home / ".config")


def state_dir() -> Path:
    """slurm-proxy's own directory (state, locks, sockets, the agent's files): not $HOME, though
    ``$SLURM_PROXY_HOME`` overrides it. (``warm.state_dir``, which a warm connect reads first.)"""
    return Path(warm.state_dir())


def write_private(path: Path, text: str | bytes, mode: int = 0o600) -> None:
    """Replace ``path`` atomically with a file that is 0600 from its creation on (``mode`` once
    written: a file whose mode is the user's to keep). Bytes are written as they are."""
    import tempfile

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # Text in the platform's text mode (as before); bytes untouched.
        with os.fdopen(fd, "wb") if isinstance(text, bytes) else \
                os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)  # type: ignore[arg-type]  # bytes to "wb", str to "w"
            f.flush()
            os.fsync(f.fileno())
        if mode != 0o600:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def private_dir(path: Path) -> Path:
    """Create ``path`` 0700 if missing; refuse one that is a symlink, not ours, or open to others.
    A directory inside ours makes ours first, so that it is 0700 too."""
    ours = state_dir()
    if ours in path.parents:
        private_dir(ours)
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = path.lstat()
    except OSError as e:
        raise UnsafePath(path, e.strerror or str(e)) from None
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise UnsafePath(path, "not a directory (a symlink?)")
    if os.name != "nt":
        if st.st_uid != os.getuid():
            raise UnsafePath(path, "owned by another user")
        if st.st_mode & 0o077:
            os.chmod(path, 0o700)
    return path
