"""The OpenSSH backend's shared connection to a login node: is its master alive, and one creator
at a time (where its socket lives is ``sockets``'s, shared with the agent).

A master that is not there (never started, or dead after a network drop or the laptop's sleep)
is made by exactly one connect: the others wait on a lock and then use it, so a login that asks
for a one-time code asks once. A failed login fails the connects that waited for it with the
same line instead of prompting again.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .. import log, paths
from ..errors import LoginError
from ..warm import master_alive

CREATE_TIMEOUT = 300.0  # seconds a connect waits for another one's login (a code being typed)


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
