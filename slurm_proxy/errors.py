"""Every failure a user can cause or meet, each building its own one-line message.

The core raises these; only the command line (``cli.py``, and ``__main__`` for the ProxyCommand)
turns them into a line on stderr and an exit code, through ``run_reporting``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from . import log


class SlurmProxyError(Exception):
    """Base class: ``str(error)`` is the one line the user reads."""

    exit_code = 1


class ConfigError(SlurmProxyError):
    exit_code = 2

    def __init__(self, path: Path | str, problem: str, line: int | None = None) -> None:
        self.path = Path(path)
        self.problem = problem
        self.line = line
        where = f"{self.path}:{line}" if line else str(self.path)
        super().__init__(f"{where}: {problem}")


class BadAlias(SlurmProxyError):
    exit_code = 2

    def __init__(self, alias: str, reason: str) -> None:
        self.alias = alias
        self.reason = reason
        super().__init__(f"invalid host alias {alias[:80]!r}: {reason}")


class UnknownProfile(SlurmProxyError):
    exit_code = 2

    def __init__(self, name: str, known: Sequence[str], config_path: Path) -> None:
        self.name = name
        self.known = tuple(known)
        self.config_path = config_path
        choices = ", ".join(self.known) if self.known else "none"
        super().__init__(
            f"unknown profile {name!r} (configured in {config_path}: {choices})"
        )


class LoginError(SlurmProxyError):
    """The login node could not be reached, or ssh itself failed."""

    def __init__(self, destination: str, detail: str) -> None:
        self.destination = destination
        self.detail = detail
        super().__init__(f"cannot reach login node {destination!r}: {detail}")


class SlurmError(SlurmProxyError):
    """A Slurm command on the login node failed or refused the request."""

    def __init__(self, command: str, detail: str) -> None:
        self.command = command
        self.detail = detail
        super().__init__(f"{command} failed: {detail}")


class SlurmOutputError(SlurmProxyError):
    """Slurm printed something this tool cannot read."""

    def __init__(self, command: str, output: str, reason: str) -> None:
        self.command = command
        self.output = output
        self.reason = reason
        super().__init__(f"cannot read {command} output ({reason}): {output[:120]!r}")


class JobEnded(SlurmProxyError):
    def __init__(self, job_id: str, state: str, said: str = "") -> None:
        self.job_id = job_id
        self.state = state
        self.said = said  # the job script's own last words, when it gave up
        super().__init__(f"job {job_id} ended before it could be used: {said}" if said else
                         f"job {job_id} ended ({state}) before it could be used; connect again")


class ContainerMissing(SlurmProxyError):
    def __init__(self, image: str, login: str) -> None:
        self.image = image
        self.login = login
        super().__init__(f"container image {image} not found on {login} (checked before submitting; "
                         "no job submitted)")


class NodeError(SlurmProxyError):
    """The job runs, but its node cannot take the session."""

    def __init__(self, job_id: str, node: str, detail: str) -> None:
        self.job_id = job_id
        self.node = node
        self.detail = detail
        super().__init__(f"job {job_id} on {node}: {detail}")


class AllocationTimeout(SlurmProxyError):
    def __init__(self, job_id: str, waited: float, reason: str, cancelled: bool) -> None:
        self.job_id = job_id
        self.waited = waited
        self.reason = reason
        self.cancelled = cancelled
        what = "cancelled it" if cancelled else "left it queued"
        super().__init__(
            f"job {job_id} still not running after {waited:.0f} s (reason: {reason}); {what}. "
            "Raise pending_timeout or run `slurm-proxy up` ahead of time"
        )


class Interrupted(SlurmProxyError):
    exit_code = 130

    def __init__(self, signal_name: str, job_id: str | None, cancelled: bool) -> None:
        self.signal_name = signal_name
        self.job_id = job_id
        self.cancelled = cancelled
        tail = ""
        if job_id:
            tail = f"; cancelled pending job {job_id}" if cancelled else f"; job {job_id} kept"
        super().__init__(f"interrupted by {signal_name}{tail}")


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
