"""Find the profile's job or submit one, wait until it runs, and say how a session reaches it.

One query per connect: a ``squeue`` of the user's own jobs. It finds the profile's job (the
recorded one by its id, else one with slurm-proxy's name and comment, which is adopted) and shows
which of the user's other jobs share its node. Only when no usable job exists is the per-profile
lock taken (so that concurrent connects and ``up``\\ s make one job), the queue asked again under
it, and a job submitted. A signal while waiting cancels the job this very call submitted.

In mode adopt a node that also runs another job of the user's cannot tell pam_slurm_adopt which
job a session is for: such a connection goes into its own job through ``srun`` (mode srun's path).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import NamedTuple

from . import jobscript, log, node_keys, paths, session, slurm
from .config import Cluster, Config, Profile
from .errors import AllocationTimeout, ContainerMissing, Interrupted, JobEnded, NodeError, SlurmError
from .login import Login, open_login
from .slurm import Job
from .state import JobRecord, State, Trust

FIRST_POLL = 0.25  # a job on an idle cluster often runs within a second
FAST_POLL = 0.5  # until FAST_PERIOD: a job that starts is seen within half a second
FAST_PERIOD = 10.0
SLOW_POLL = 5.0  # then at most one query per 5 s, as cluster admins ask
LOCK_TIMEOUT = 900.0
# A record younger than this may belong to a job a concurrent connect just submitted, which an
# earlier squeue could not list yet: only older records of unlisted jobs are dropped.
FORGET_AFTER = 60.0
SUCCESSOR = "+next"  # the record key suffix of a job submitted to follow the running one


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

    # -- Slurm commands --------------------------------------------------------------------
    def query(self) -> tuple[Job | None, list[Job]]:
        """The profile's live job (if any) and all the user's jobs, from one squeue."""
        jobs = user_jobs(self.login)
        return ours(self.profile, jobs, self._record()), jobs

    def submit(self, successor: bool = False) -> str:
        """sbatch the profile's job (a ``successor`` is recorded beside the running one)."""
        image = self.profile.container
        if image and self.login.run(session.image_check_argv(image)).returncode != 0:
            raise ContainerMissing(image, self.login.destination)
        argv = slurm.sbatch_argv(self.profile.sbatch_options(), slurm.job_name(self.profile.name),
                                 slurm.job_comment(self.profile.key))
        res = self.login.run(argv, stdin=jobscript.batch_script(self.profile))
        if res.returncode != 0:
            raise SlurmError("sbatch", slurm.refusal(res.stderr) or _detail(res.stderr))
        job_id = slurm.parse_sbatch(res.stdout)
        self._submitted = job_id
        key = self.profile.key + (SUCCESSOR if successor else "")
        self.state.record(JobRecord(job_id=job_id, profile=key, submitted=time.time(),
                                    login=self.profile.cluster.login))
        log.info(f"submitted job {job_id} for profile {self.profile.name}"
                 + (" to follow the running one" if successor else ""))
        return job_id

    def cancel(self, job_id: str) -> None:
        cancel(self.login, self.state, {self.profile.key: job_id})

    # -- the whole dance -------------------------------------------------------------------
    def find_or_submit(self) -> tuple[Job | None, list[Job]]:
        """The profile's live job; or, when there is none, submit one (under the lock, so that
        concurrent callers make one job) and return None with the queue as it was."""
        job, jobs = self.query()
        if job is None:
            with self._lock():
                job, jobs = self.query()  # someone may have submitted while we waited for the lock
                if job is None:
                    rec = self._record()
                    # past its recorded end: did it reach its time limit? (its script says so)
                    if rec and rec.ends and self.wall() >= rec.ends - 60 \
                            and self._said(rec.job_id) == "timelimit":
                        log.info(f"job {rec.job_id} reached its time limit; submitting a new job "
                                 f"for {self.profile.name}")
                    self.submit()
        return job, jobs

    def ensure_running(self) -> Allocation:
        """Find or submit the job and wait until it runs; then check its node once."""
        with self._cancel_on_signal():
            job, jobs = self.find_or_submit()
            if job is None or not job.ready:
                job, jobs = self.wait(job)
        self._forget_ended(jobs)
        neighbours = tuple(j.job_id for j in jobs if j.job_id != job.job_id
                           and j.state in slurm.HOLDING_STATES and job.node in j.nodes)
        successor = self._mind_the_time_limit(job, jobs)
        if successor:  # it may start on this node at once, and be the newest job there
            neighbours += (successor,)
        mode = self.profile.mode
        if mode == "adopt" and neighbours:
            mode = "srun"
            log.info(f"{job.node} also runs your job{'s' if len(neighbours) > 1 else ''} "
                     f"{', '.join(neighbours)}: this session goes into job {job.job_id} through srun")
        elif mode == "adopt" and self.profile.container:
            mode = "srun"  # the node's sshd is the site's: only the job's own sshd runs the container
            log.debug("a container needs the job's own sshd: this session goes through srun")
        port = self._checked(job, mode)
        return Allocation(job, mode, port, self._submitted == job.job_id, neighbours)

    def _mind_the_time_limit(self, job: Job, jobs: Sequence[Job]) -> str:
        """Say when the job ends soon; ``renew_before`` it, submit its successor (one, ever).
        The successor's id when this call submitted it, else ""."""
        left = job.time_left
        if left is None:
            return ""
        if left < self.profile.warn_before:
            log.info(f"job {job.job_id} ends in {(left + 59) // 60} min (its time limit); the next "
                     "connect after that gets a new job")
        def has_successor(queue: Sequence[Job]) -> bool:
            return any(owns(self.profile, j) and j.job_id != job.job_id and not j.ended for j in queue)

        renew = self.profile.renew_before  # 0 = never, even for a job past its limit (0:00 left)
        if renew and left <= renew and not has_successor(jobs):
            with self._lock():
                if not has_successor(self.query()[1]):  # asked again under the lock
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
                said = self._said(job_id)
                raise JobEnded(job_id, "no longer in the queue",
                               said.removeprefix("error ") if said.startswith("error ") else "")
        log.info(f"job {job.job_id} running on {job.node}")
        return job, jobs

    def _said(self, job_id: str) -> str:
        """What the job's batch script last said (``error …``, ``timelimit``), or ""."""
        return self.login.run(jobscript.said_argv(job_id)).stdout.strip()

    def _record(self) -> JobRecord | None:
        """The local record of this profile's job, if it was made for this cluster's login."""
        rec = self.state.job(self.profile.key)
        return rec if rec and rec.login == self.profile.cluster.login else None

    def _checked(self, job: Job, mode: str) -> int:
        """Record the job (a job found by its name and comment is adopted), its node, and what
        the login node says of that node for ``mode`` (the host keys to trust, the port): asked
        once per job, node, alias and mode. The job's own sshd port, or 0."""
        rec = self._record()
        if rec and (rec.job_id, rec.node, rec.alias, rec.mode) == (job.job_id, job.node, self.alias, mode):
            return rec.port
        check = self.check_node(job, mode)
        submitted = rec.submitted if rec and rec.job_id == job.job_id else self.wall()
        ends = self.wall() + job.time_left if job.time_left is not None else 0.0
        self.state.record(JobRecord(job.job_id, self.profile.key, submitted, self.alias, job.node,
                                    tuple(check.keys), check.port, mode, self.profile.cluster.login,
                                    ends))
        return check.port

    def check_node(self, job: Job, mode: str) -> node_keys.NodeCheck:
        """Wait (on the login node) until the job's script is ready and its node takes
        connections; a node that never does is an error, a node without known keys a warning."""
        argv = jobscript.node_check_argv(mode, job.node, job.job_id, self.profile.cluster.keyscan)
        res = self.login.run(argv)
        check = node_keys.parse_check(res.stdout)
        if res.returncode != 0 or check.error:
            raise NodeError(job.job_id, job.node, check.error or _detail(res.stderr))
        if not check.keys:
            log.info(f"the login node knows no host key for {job.node}: ssh will ask you to confirm "
                     "the key it presents")
        return check

    def _forget_ended(self, jobs: Sequence[Job]) -> None:
        """Drop the records of this cluster's jobs that Slurm no longer lists: their nodes' keys
        must not stay trusted. Nothing is written when nothing changes."""
        live = {j.job_id for j in jobs if not j.ended}
        old = self.wall() - FORGET_AFTER
        self.state.forget_where(lambda rec: rec.login == self.profile.cluster.login
                                and rec.job_id not in live and rec.submitted < old)

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


def allocator(cfg: Config, profile: Profile,
              report: Callable[[Job, float], None] | None = None) -> Allocator:
    """The allocator for ``profile``: its cluster's login connection, the local state (whose
    host keys count only as ``cfg`` vouches for them), the profile's alias."""
    return Allocator(login_to(profile.cluster), profile, State(paths.home(), trust=trusted_by(cfg)),
                     cfg.prefix + profile.name, report=report)


def login_to(cluster: Cluster) -> Login:
    """The cluster's login connection, through the backend its config names."""
    return open_login(cluster.login, cluster.backend, cluster.agent_idle, cluster.login_shell)


def trusted_by(cfg: Config) -> Trust:
    """A record's host keys count only if the config in use makes that very profile, alias and
    cluster: records of another config, or of a removed profile or cluster, vouch for nothing."""
    made = {p.key: (cfg.prefix + p.name, p.cluster.login) for p in cfg.profiles.values()}
    return lambda key, rec: made.get(key) == (rec.alias, rec.login)


class _Signalled(BaseException):
    def __init__(self, signame: str) -> None:
        super().__init__(signame)
        self.signame = signame


def user_jobs(login: Login) -> list[Job]:
    """All the user's jobs on the cluster, from one squeue."""
    res = login.run(slurm.squeue_argv())
    if res.returncode != 0:
        raise SlurmError("squeue", _detail(res.stderr))
    skipped: list[str] = []
    jobs = slurm.parse_squeue(res.stdout, skipped)
    for line in skipped:
        log.debug(f"squeue: skipped a line that is not one of slurm-proxy's jobs: {line!r}")
    return jobs


def ours(profile: Profile, jobs: Iterable[Job], record: JobRecord | None) -> Job | None:
    """slurm-proxy's live job for ``profile`` among ``jobs``: one with its name *and* comment;
    when there are several, a running one wins (a pending successor waits its turn), then the
    recorded one, then the oldest."""
    mine = [j for j in jobs if owns(profile, j) and not j.ended]
    if not mine:
        return None
    return min(mine, key=lambda j: (j.state != "RUNNING", record is None or record.job_id != j.job_id,
                                    slurm.job_number(j)))


def owned_jobs(login: Login, profiles: list[Profile], state: State) -> dict[str, Job]:
    """Profile key → the live job slurm-proxy made for it, for profiles of one cluster, with one
    squeue."""
    jobs = user_jobs(login)
    records = state.jobs()
    found = {p.key: ours(p, jobs, records.get(p.key)) for p in profiles}
    return {key: job for key, job in found.items() if job is not None}


def cancel_owned(login: Login, profiles: list[Profile], state: State) -> list[str]:
    """Cancel slurm-proxy's jobs for ``profiles`` (of one cluster): only those that Slurm lists
    with our name and comment *and* that the local state records. The cancelled job ids."""
    records = state.jobs()
    live = {j.job_id for j in user_jobs(login) if not j.ended and any(owns(p, j) for p in profiles)}
    keys = [key for p in profiles for key in (p.key, p.key + SUCCESSOR) if key in records]
    mine = {key: records[key].job_id for key in keys if records[key].job_id in live}
    cancel(login, state, mine)
    for key in keys:  # records of jobs that are gone go too
        if key not in mine:
            state.forget(key, records[key].job_id)
    return sorted(set(mine.values()))


def cancel(login: Login, state: State, jobs: dict[str, str]) -> None:
    """scancel ``jobs`` (profile key → job id) in one call and drop their records."""
    if not jobs:
        return
    res = login.run(slurm.scancel_argv(sorted(set(jobs.values()))))
    if res.returncode != 0:
        raise SlurmError("scancel", _detail(res.stderr))
    for key, job_id in jobs.items():
        state.forget(key, job_id)


def owns(profile: Profile, job: Job) -> bool:
    """slurm-proxy's job for ``profile``: its name *and* its comment say so."""
    return job.name == slurm.job_name(profile.name) and job.comment == slurm.job_comment(profile.key)


def progress_line(job: Job, waited: float | None = None) -> str:
    line = f"job {job.job_id} {job.state.lower()}"
    if job.reason:
        line += f" ({job.reason})"
    if job.state == "PENDING" and job.start:
        line += f", expected start {job.start}"
    if waited is not None:
        line += f", waited {waited:.0f} s"
    return line


class ChangeReporter:
    """Progress on stderr: one line whenever the job's state or reason changes; with ``live``
    (``up`` on a terminal) one line rewritten in place, with the time waited."""

    def __init__(self, live: bool = False) -> None:
        self.live = live
        self.shown = ""

    def __call__(self, job: Job, waited: float) -> None:
        line = progress_line(job)
        if self.live:
            log.rewrite(progress_line(job, waited))
        elif line != self.shown:
            log.info(line)
        self.shown = line

    def done(self) -> None:
        if self.live and self.shown:
            log.rewrite(None)


def _detail(stderr: str) -> str:
    return log.last_line(stderr) or "no error message"
