"""Where slurm-proxy keeps its own files: state, locks, ssh control sockets.

``$SLURM_PROXY_HOME`` overrides the default (tests point it at a temporary directory).
Every directory is created 0700 and must be owned by the user.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import SlurmProxyError


class UnsafePath(SlurmProxyError):
    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"refusing to use {path}: {problem}")


def home() -> Path:
    env = os.environ.get("SLURM_PROXY_HOME")
    if env:
        return Path(env).expanduser()
    if os.name == "nt":
        return Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local") / "slurm-proxy"
    return Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "slurm-proxy"


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` atomically with a file that is 0600 from its creation on."""
    import tempfile

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def private_dir(path: Path) -> Path:
    """Create ``path`` 0700 if missing; refuse one that is a symlink, not ours, or open to others."""
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
