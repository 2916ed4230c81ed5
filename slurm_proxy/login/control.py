"""The shared ssh connection to a login node: where its socket lives, and one creator at a time.

ssh binds a ControlPath as ``<path>.<16 random characters>`` before renaming it into place, and a
Unix socket path is limited to 104 bytes on macOS and the BSDs, 108 on Linux: the path is short
by construction (16 hex characters named after the destination, in a 0700 directory of ours),
and when the state directory is too deep for that, in a private directory under /tmp.

A master that is not there (never started, or dead after a network drop or the laptop's sleep)
is made by exactly one connect: the others wait on a lock and then use it, so a login that asks
for a one-time code asks once. A failed login fails the connects that waited for it with the
same line instead of prompting again.
"""

from __future__ import annotations

import os
import sys
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .. import log, paths
from ..errors import LoginError, SlurmProxyError

SSH_SUFFIX = 17  # ssh binds "<ControlPath>.XXXXXXXXXXXXXXXX" and renames it into place
CREATE_TIMEOUT = 300.0  # seconds a connect waits for another one's login (a code being typed)


def sun_path_max(platform: str = sys.platform) -> int:
    """The longest Unix socket path the platform takes, in bytes (without the final NUL)."""
    return 103 if platform == "darwin" or "bsd" in platform else 107


def short_name(text: str) -> str:
    """16 hex characters named after ``text``: short enough for any socket path."""
    data = text.encode()
    return f"{zlib.crc32(data):08x}{zlib.adler32(data):08x}"


def socket_path(destination: str, state_dir: Path, platform: str = sys.platform,
                uid: int | None = None, tmp: Path = Path("/tmp")) -> Path:  # noqa: S108 (checked 0700, ours)
    """The control socket for ``destination``: under ``state_dir``, or /tmp when that is too
    long for ssh's temporary name to fit the platform's limit."""
    name = short_name(destination)
    uid = os.getuid() if uid is None else uid
    limit = sun_path_max(platform)
    for directory in (state_dir / "cm", tmp / f"slurm-proxy-{uid}"):
        if len(os.fsencode(directory / name)) + SSH_SUFFIX <= limit:
            return directory / name
    raise SlurmProxyError(f"no path for ssh's control socket is short enough ({limit} bytes on "
                          f"this system): set SLURM_PROXY_HOME to a shorter directory")


def master_alive(path: Path) -> bool:
    """Does a master listen on ``path``? (a connect, not a process: cheap on every connect)"""
    import _socket  # the C module: ``socket`` would cost 6 ms of imports on the hot path

    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    s.settimeout(2.0)  # a master too busy to take us at once is still there
    try:
        s.connect(str(path))
    except (TimeoutError, _socket.timeout):  # the same class from Python 3.10 on
        return True
    except OSError:
        return False
    finally:
        s.close()
    return True


@contextmanager
def one_creator(path: Path, destination: str) -> Iterator[None]:
    """Around the command that may create the master on ``path``: with a live master, nothing;
    else under a lock, so that one connect logs in while the others wait and then share it."""
    if master_alive(path):
        yield
        return
    from filelock import FileLock, Timeout

    paths.private_dir(path.parent)
    lock = FileLock(f"{path}.lock", mode=0o600)
    failed = Path(f"{path}.failed")
    since, waited = time.time(), False
    try:
        lock.acquire(timeout=0)
    except Timeout:
        waited = True
        log.info(f"waiting for the login connection to {destination} (another slurm-proxy is "
                 "authenticating)")
        try:
            lock.acquire(timeout=CREATE_TIMEOUT, poll_interval=0.05)
        except Timeout:
            raise LoginError(destination, f"another slurm-proxy took over {CREATE_TIMEOUT:.0f} s "
                             "to log in") from None
    try:
        if waited and not master_alive(path):
            reason = _failure_since(failed, since)
            if reason:  # the login this connect waited for failed: no second prompt
                raise LoginError(destination, reason)
        try:
            yield
        except LoginError as e:
            paths.write_private(failed, e.detail)
            raise
        failed.unlink(missing_ok=True)
    finally:
        lock.release()


def _failure_since(failed: Path, since: float) -> str:
    try:
        if failed.stat().st_mtime >= since:
            return failed.read_text(encoding="utf-8").strip() or "the login failed"
    except OSError:
        pass
    return ""
