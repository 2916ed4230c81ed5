"""Find the profile's job or submit one, wait until it runs, and say how a session reaches it
(the choice itself is ``route``'s, the node's check ``node_trust``'s, renewal ``renewal``'s).

One query per connect: a ``squeue`` of the user's own jobs. It finds the profile's job (the
recorded one by its id, else one with slurm-proxy's name and comment, which is adopted) and shows
which of the user's other jobs share its node. Only when no usable job exists is the per-profile
lock taken (so that concurrent connects and ``up``\\ s make one job), the queue asked again under
it, and a job submitted. A signal while waiting cancels the job this very call submitted.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import NamedTuple

from . import log, node_trust, paths, queue, renewal, route
from .config import Profile
from .errors import AllocationTimeout, Interrupted, JobEnded, SlurmError
from .login import Login
from .progress import ChangeReporter
from .slurm import Job
from .state import State

FIRST_POLL = 0.25  # a job on an idle cluster often runs within a second
FAST_POLL = 0.5  # until FAST_PERIOD: a job that starts is seen within half a second
FAST_PERIOD = 10.0
SLOW_POLL = 5.0  # then at most one query per 5 s, as cluster admins ask
LOCK_TIMEOUT = 900.0


def poll_delays(slow: bool = False) -> Iterator[float]:
    """Seconds between queue queries while a job is pending (``slow``: when each query is a new
    login, at most one per 5 s from the start)."""
    if slow:
        while True:
            yield SLOW_POLL
    elapsed = FIRST_POLL
    yield FIRST_POLL
    while elapsed < FAST_PERIOD:
        elapsed += FAST_POLL
        yield FAST_POLL
    while True:
        yield SLOW_POLL


class Allocation(NamedTuple):
    """What a connect needs to reach its job."""

    job: Job
    mode: str  # how this session reaches the job: the profile's mode, or "srun" (see neighbours)
    port: int = 0  # the job's own sshd (mode sshd); 0 = the node's sshd
    submitted: bool = False  # this very call submitted the job
    neighbours: tuple[str, ...] = ()  # the user's other jobs on the node


class Allocator:
    """Find the profile's job or submit one, under its lock, and wait until it runs; a signal
    while waiting cancels what this very call submitted."""

    def __init__(self, login: Login, profile: Profile, state: State, alias: str = "",
                 report: Callable[[Job, float], None] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, wall: Callable[[], float] = time.time) -> None:
        self.login = login
        self.profile = profile
        self.alias = alias or profile.name
        self.report = report or ChangeReporter()
        self.state = state
        self.clock, self.wall = clock, wall  # for waiting; epoch seconds, for the records
        self.sleep = sleep
        self._submitted: str | None = None  # for a signal handler: what this call submitted

    def query(self) -> tuple[Job | None, list[Job]]:
        """The profile's live job (if any) and all the user's jobs, from one squeue."""
        jobs = queue.user_jobs(self.login)
        return queue.live_job(self.profile, jobs, queue.record_of(self.state, self.profile)), jobs

    def submit(self, successor: bool = False) -> str:
        """sbatch the profile's job (a ``successor`` is recorded beside the running one)."""
        self._submitted = queue.submit(self.login, self.profile, self.state, self.wall, successor)
        return self._submitted

    def cancel(self, job_id: str) -> None:
        queue.cancel(self.login, self.state, {self.profile.key: job_id})

    def find_or_submit(self) -> tuple[Job | None, list[Job]]:
        """The profile's live job; or, when there is none, submit one (under the lock, so that
        concurrent callers make one job) and return None with the queue as it was."""
        job, jobs = self.query()
        if job is None:
            with self._lock():
                job, jobs = self.query()  # someone may have submitted while we waited for the lock
                if job is None:
                    rec = queue.record_of(self.state, self.profile)
                    # past its recorded end: did it reach its time limit? (its script says so)
                    if rec and renewal.past_its_end(rec, self.wall()) \
                            and queue.script_said(self.login, rec.job_id) == "timelimit":
                        log.info(f"job {rec.job_id} reached its time limit; submitting a new job "
                                 f"for {self.profile.name}")
                    self.submit()
        return job, jobs

    def ensure_running(self) -> Allocation:
        """Find or submit the job and wait until it runs; then route this session to it and
        check its node once."""
        with self._cancel_on_signal():
            job, jobs = self.find_or_submit()
            if job is None or not job.ready:
                job, jobs = self.wait(job)
        queue.forget_gone(self.state, self.profile.cluster.login, jobs, self.wall())
        neighbours = route.neighbours(job, jobs)
        successor = self._submit_successor_if_due(job, jobs)
        if successor:  # it may start on this node at once, and be the newest job there
            neighbours += (successor,)
        refused = node_trust.no_forwarding_file(self.profile.cluster.login).exists()
        mode = route.choose(self.profile, job, neighbours, refused)
        mode, port = node_trust.trust_node(self.login, self.state, self.profile, self.alias, job,
                                           mode, self.wall)
        return Allocation(job, mode, port, self._submitted == job.job_id, neighbours)

    def _submit_successor_if_due(self, job: Job, jobs: Sequence[Job]) -> str:
        """Say when the job ends soon; ``renew_before`` it, submit its successor (one, ever: asked
        again under the lock). The successor's id when this call submitted it, else ""."""
        renewal.warn(self.profile, job)
        if renewal.successor_due(self.profile, job, jobs):
            with self._lock():
                if renewal.successor_due(self.profile, job, self.query()[1]):
                    return self.submit(successor=True)
        return ""

    def wait(self, job: Job | None) -> tuple[Job, list[Job]]:
        """Poll until the job runs; give up (cancelling only what we submitted) on timeout."""
        start = self.clock()
        job_id = job.job_id if job else self._submitted or ""
        delays = poll_delays(slow=self.login.logs_in_per_command)
        while job is None or not job.ready:
            waited = self.clock() - start
            if job is not None:
                self.report(job, waited)
            if waited >= self.profile.pending_timeout:
                cancelled = self._submitted == job_id
                if cancelled:
                    self.cancel(job_id)
                raise AllocationTimeout(job_id, waited, job.reason if job else "unknown", cancelled)
            self.sleep(next(delays))
            job, jobs = self.query()
            if job is None or job.job_id != job_id:
                said = queue.script_said(self.login, job_id)
                raise JobEnded(job_id, "no longer in the queue",
                               said.removeprefix("error ") if said.startswith("error ") else "")
        log.info(f"job {job.job_id} running on {job.node}")
        return job, jobs

    @contextmanager
    def _cancel_on_signal(self) -> Iterator[None]:
        """SIGTERM/SIGHUP/SIGINT while waiting (VS Code closing its window) cancel the job this
        very call submitted; a job that runs already is left to the idle timer."""
        if threading.current_thread() is not threading.main_thread():
            yield  # only the main thread may take signals
            return

        def handler(signum: int, frame: FrameType | None) -> None:
            raise _Signalled(signal.Signals(signum).name)

        sigs = [getattr(signal, n) for n in ("SIGTERM", "SIGINT", "SIGHUP") if hasattr(signal, n)]
        previous = {s: signal.signal(s, handler) for s in sigs}
        try:
            yield
        except _Signalled as s:
            for sig in sigs:
                signal.signal(sig, signal.SIG_IGN)
            if self._submitted:
                self.cancel(self._submitted)
            raise Interrupted(s.signame, self._submitted, bool(self._submitted)) from None
        finally:
            for sig, h in previous.items():
                signal.signal(sig, h)

    @contextmanager
    def _lock(self) -> Iterator[None]:
        from filelock import FileLock, Timeout  # the warm path never needs it

        lock_dir = paths.private_dir(self.state.dir / "locks")
        lock = FileLock(str(lock_dir / f"{self.profile.key}.lock"), mode=0o600)
        try:
            lock.acquire(timeout=LOCK_TIMEOUT, poll_interval=0.05)
        except Timeout:
            raise SlurmError("lock", f"another slurm-proxy held {lock.lock_file} for "
                             f"{LOCK_TIMEOUT:.0f} s") from None
        try:
            yield
        finally:
            lock.release()


class _Signalled(BaseException):
    def __init__(self, signame: str) -> None:
        super().__init__(signame)
        self.signame = signame
