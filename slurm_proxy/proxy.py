"""What ``ssh slurm-<profile>`` runs: alias → profile → running job → stdio joined to its node.

This is the hot path: it imports only what it needs (no click; filelock only to submit).
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from . import config, jobscript, log, paths
from .allocate import Allocator
from .config import Profile
from .errors import Interrupted, SlurmProxyError
from .login import open_login
from .slurm import Job
from .state import State

SSH_PORT = 22


class _Signalled(BaseException):
    def __init__(self, signame: str) -> None:
        super().__init__(signame)
        self.signame = signame


@contextmanager
def _signals_raise() -> Iterator[None]:
    """SIGTERM/SIGHUP/SIGINT (VS Code closing its window) become an exception while we wait."""
    def handler(signum: int, frame: FrameType | None) -> None:
        raise _Signalled(signal.Signals(signum).name)

    names = ["SIGTERM", "SIGINT"] + (["SIGHUP"] if hasattr(signal, "SIGHUP") else [])
    sigs = [getattr(signal, n) for n in names]
    previous = {s: signal.signal(s, handler) for s in sigs}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def allocator(profile: Profile, alias: str,
              report: Callable[[Job, float], None] | None = None) -> Allocator:
    login = open_login(profile.cluster.login, profile.cluster.backend)
    return Allocator(login, profile, State(paths.home()), alias, report=report)


def connect(alias: str, config_path: Path | None = None) -> int:
    alloc = allocator(config.load(config_path).profile_for_alias(alias), alias)
    job = ensure_running(alloc)
    if alloc.profile.mode == "srun":
        return alloc.login.forward_command(jobscript.srun_argv(job.job_id))
    return alloc.login.forward_stdio(job.node, alloc.port or SSH_PORT)


def ensure_running(alloc: Allocator) -> Job:
    """The allocator's find-or-submit-and-wait; a signal while waiting cancels the job this very
    invocation submitted (a job that runs already is left to the idle timer)."""
    try:
        with _signals_raise():
            return alloc.ensure_running()
    except _Signalled as s:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        job_id, cancelled = alloc.submitted, False
        if job_id:
            alloc.cancel(job_id)
            cancelled = True
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise Interrupted(s.signame, job_id, cancelled) from None


def run_reporting(func: Callable[..., int], *args: object) -> int:
    """Run a core function; a domain error becomes one stderr line and its exit code."""
    try:
        return func(*args)
    except SlurmProxyError as e:
        log.error(str(e))
        return e.exit_code
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
