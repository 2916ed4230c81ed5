"""Find the profile's job or submit one, and wait until it runs.

Warm path: one query for the recorded job by its id (a single slurmctld RPC), no lock. A job
found by name and comment instead (one ``squeue``) is adopted. Only when no usable job exists is
the per-profile lock taken (so concurrent connections make one job), the queue checked again
under it, and a job submitted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from . import hostkeys, jobscript, log, paths, slurm
from .config import Profile
from .errors import AllocationTimeout, JobEnded, NodeError, SlurmError
from .login import Login
from .slurm import Job
from .state import JobRecord, State

FIRST_POLL = 0.25  # a job on an idle cluster often runs within a second
FAST_POLL = 0.5  # until FAST_PERIOD: a job that starts is seen within half a second
FAST_PERIOD = 10.0
SLOW_POLL = 5.0  # then at most one query per 5 s, as cluster admins ask
LOCK_TIMEOUT = 900.0


def poll_delays() -> Iterator[float]:
    """Seconds between queue queries while a job is pending."""
    elapsed = FIRST_POLL
    yield FIRST_POLL
    while elapsed < FAST_PERIOD:
        elapsed += FAST_POLL
        yield FAST_POLL
    while True:
        yield SLOW_POLL


class Allocator:
    def __init__(self, login: Login, profile: Profile, state: State, alias: str = "",
                 report: Callable[[Job, float], None] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.login = login
        self.profile = profile
        self.alias = alias or profile.name
        self.report = report or ChangeReporter()
        self.state = state
        self.clock = clock
        self.sleep = sleep
        self.submitted: str | None = None  # job id this invocation submitted, if any
        self.port = 0  # after ensure_running: the job's own sshd port (mode sshd), else 0
        self.record: JobRecord | None = None  # the local record as the last query read it

    # -- Slurm commands --------------------------------------------------------------------
    def query(self) -> Job | None:
        """Our job for this profile, if Slurm still lists it: the recorded one by its id (one
        slurmctld RPC), else one found by name and comment (one squeue, two RPCs)."""
        rec = self.record = self.state.job(self.profile.key)
        if rec:
            res = self.login.run(slurm.job_argv(rec.job_id))
            job = slurm.parse_job(res.stdout) if res.returncode == 0 else None
            if job and owns(self.profile, job) and not job.ended:
                return job
        return owned_jobs(self.login, [self.profile], self.state).get(self.profile.key)

    def submit(self) -> str:
        argv = slurm.sbatch_argv(self.profile.sbatch_options(), slurm.job_name(self.profile.name),
                                 slurm.job_comment(self.profile.key))
        res = self.login.run(argv, stdin=jobscript.batch_script(self.profile))
        if res.returncode != 0:
            raise SlurmError("sbatch", _detail(res.stderr))
        job_id = slurm.parse_sbatch(res.stdout)
        self.submitted = job_id
        self.state.record(JobRecord(job_id=job_id, profile=self.profile.key, submitted=time.time()))
        log.info(f"submitted job {job_id} for profile {self.profile.name}")
        return job_id

    def cancel(self, job_id: str) -> None:
        res = self.login.run(slurm.scancel_argv([job_id]))
        if res.returncode != 0:
            log.error(f"scancel {job_id} failed: {_detail(res.stderr)}")
        self.state.forget(self.profile.key, job_id)

    # -- the whole dance -------------------------------------------------------------------
    def ensure_running(self) -> Job:
        job = self.query()
        if job is None or not job.ready:
            if job is None:
                with self._lock():
                    job = self.query()  # someone may have submitted while we waited for the lock
                    if job is None:
                        self.submit()
            job = self.wait(job)
        self._remember_node(job)
        return job

    def wait(self, job: Job | None) -> Job:
        """Poll until the job runs; give up (cancelling only what we submitted) on timeout."""
        start = self.clock()
        job_id = job.job_id if job else self.submitted or ""
        delays = poll_delays()
        while job is None or not job.ready:
            waited = self.clock() - start
            if job is not None:
                self.report(job, waited)
            if waited >= self.profile.pending_timeout:
                cancelled = self.submitted == job_id
                if cancelled:
                    self.cancel(job_id)
                raise AllocationTimeout(job_id, waited, job.reason if job else "unknown", cancelled)
            self.sleep(next(delays))
            job = self.query()
            if job is None or job.job_id != job_id:
                said = self.login.run(jobscript.said_argv(job_id)).stdout.strip()
                raise JobEnded(job_id, "no longer in the queue",
                               said.removeprefix("error ") if said.startswith("error ") else "")
        log.info(f"job {job.job_id} running on {job.node}")
        return job

    def _remember_node(self, job: Job) -> None:
        """Record the job (a job found by its name and comment is adopted), its node, and what
        the login node says of that node (the host keys to trust, the port): asked once per job,
        node and mode. It follows a query, which read the record (nothing wrote it since)."""
        rec = self.record
        mode = self.profile.mode
        if rec and (rec.job_id, rec.node, rec.alias, rec.mode) == (job.job_id, job.node, self.alias, mode):
            self.port = rec.port
            return
        check = self.check_node(job)
        self.port = check.port
        submitted = rec.submitted if rec and rec.job_id == job.job_id else time.time()
        self.state.record(JobRecord(job.job_id, self.profile.key, submitted, self.alias, job.node,
                                    tuple(check.keys), check.port, mode))

    def check_node(self, job: Job) -> hostkeys.NodeCheck:
        """Wait (on the login node) until the job's script is ready and its node takes
        connections; a node that never does is an error, a node without known keys a warning."""
        argv = jobscript.node_check_argv(self.profile.mode, job.node, job.job_id,
                                         self.profile.cluster.keyscan)
        res = self.login.run(argv)
        check = hostkeys.parse_check(res.stdout)
        if res.returncode != 0 or check.error:
            raise NodeError(job.job_id, job.node, check.error or _detail(res.stderr))
        if not check.keys:
            log.info(f"the login node knows no host key for {job.node}: ssh will ask you to confirm "
                     "the key it presents")
        return check

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


def owned_jobs(login: Login, profiles: list[Profile], state: State) -> dict[str, Job]:
    """Profile key → the live job slurm-proxy made for it, for profiles of one cluster, with one
    squeue. A job counts only with slurm-proxy's name *and* comment for that profile; when there
    are several, the one recorded locally wins, then a running one, then the oldest."""
    by_comment = {slurm.job_comment(p.key): p for p in profiles}
    res = login.run(slurm.squeue_argv(names=sorted({slurm.job_name(p.name) for p in profiles})))
    if res.returncode != 0:
        raise SlurmError("squeue", _detail(res.stderr))
    records = state.jobs()
    found: dict[str, list[Job]] = {}
    for job in slurm.parse_squeue(res.stdout):
        p = by_comment.get(job.comment)
        if p and owns(p, job) and not job.ended:
            found.setdefault(p.key, []).append(job)
    def rank(key: str, job: Job) -> tuple[bool, bool, int]:
        rec = records.get(key)
        return (not rec or rec.job_id != job.job_id, job.state != "RUNNING", slurm.job_number(job))
    return {key: min(jobs, key=lambda j: rank(key, j)) for key, jobs in found.items()}


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
    """Default progress: one stderr line whenever the job's state or reason changes."""

    def __init__(self) -> None:
        self.shown = ""

    def __call__(self, job: Job, waited: float) -> None:
        line = progress_line(job)
        if line != self.shown:
            log.info(line)
            self.shown = line


def _detail(stderr: str) -> str:
    return log.last_line(stderr) or "no error message"
