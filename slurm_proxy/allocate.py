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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import NamedTuple

from . import jobscript, log, node_keys, paths, queue, session, slurm
from .config import Cluster, Config, Profile
from .errors import AllocationTimeout, ContainerMissing, Interrupted, JobEnded, NodeError, SlurmError
from .login import Login, open_login, remote
from .progress import ChangeReporter
from .slurm import Job
from .state import JobRecord, State, Trust

SSH_PORT = 22
FIRST_POLL = 0.25  # a job on an idle cluster often runs within a second
FAST_POLL = 0.5  # until FAST_PERIOD: a job that starts is seen within half a second
FAST_PERIOD = 10.0
SLOW_POLL = 5.0  # then at most one query per 5 s, as cluster admins ask
LOCK_TIMEOUT = 900.0
# A record younger than this may belong to a job a concurrent connect just submitted, which an
# earlier squeue could not list yet: only older records of unlisted jobs are dropped.
FORGET_AFTER = 60.0


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
        jobs = queue.user_jobs(self.login)
        return queue.ours(self.profile, jobs, self._record()), jobs

    def submit(self, successor: bool = False) -> str:
        """sbatch the profile's job (a ``successor`` is recorded beside the running one)."""
        image = self.profile.container
        if image and self.login.run(session.image_check_argv(image)).returncode != 0:
            raise ContainerMissing(image, self.login.destination)
        argv = slurm.sbatch_argv(self.profile.sbatch_options(), slurm.job_name(self.profile.name),
                                 slurm.job_comment(self.profile.key))
        res = self.login.run(argv, stdin=jobscript.batch_script(self.profile))
        if res.returncode != 0:
            raise SlurmError("sbatch", slurm.refusal(res.stderr) or queue.detail(res.stderr))
        job_id = slurm.parse_sbatch(res.stdout)
        self._submitted = job_id
        key = self.profile.key + (queue.SUCCESSOR if successor else "")
        self.state.record(JobRecord(job_id=job_id, profile=key, submitted=self.wall(),
                                    login=self.profile.cluster.login))
        log.info(f"submitted job {job_id} for profile {self.profile.name}"
                 + (" to follow the running one" if successor else ""))
        return job_id

    def cancel(self, job_id: str) -> None:
        queue.cancel(self.login, self.state, {self.profile.key: job_id})

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
        if mode != "srun" and self._no_forwarding().exists():
            mode = "srun"  # srun's sshd speaks on the login's exec channel: no forwarding needed
            log.debug(f"{self.login.destination} refuses TCP forwarding: this session goes through srun")
        mode, port = self._checked(job, mode)
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
        def has_successor(listed: Sequence[Job]) -> bool:
            return any(queue.owns(self.profile, j) and j.job_id != job.job_id and not j.ended for j in listed)

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

    def _checked(self, job: Job, mode: str) -> tuple[str, int]:
        """Record the job (a job found by its name and comment is adopted), its node, and what
        the login node says of that node for ``mode`` (the host keys to trust, the port): asked
        once per job, node, alias and mode. A login node found to refuse TCP forwarding then
        sends this and later sessions through srun. The mode and the job's own sshd port (or 0)."""
        rec = self._record()
        if rec and (rec.job_id, rec.node, rec.alias, rec.mode) == (job.job_id, job.node, self.alias, mode):
            return mode, rec.port
        check = self.check_node(job, mode)
        if mode != "srun":
            refused = self.login.forwarding_refused(job.node, check.port or SSH_PORT)
            if refused:
                log.info(f"{self.login.destination} refuses TCP forwarding ({refused}): sessions go "
                         "into the job through srun (mode srun's path) from now on")
                remote.remember(self._no_forwarding(), refused + "\n")
                return self._checked(job, "srun")
        submitted = rec.submitted if rec and rec.job_id == job.job_id else self.wall()
        ends = self.wall() + job.time_left if job.time_left is not None else 0.0
        self.state.record(JobRecord(job.job_id, self.profile.key, submitted, self.alias, job.node,
                                    tuple(check.keys), check.port, mode, self.profile.cluster.login,
                                    ends))
        return mode, check.port

    def _no_forwarding(self) -> Path:
        """Present when the cluster's login node was found to refuse TCP forwarding."""
        return remote.fact_file(self.profile.cluster.login, "no-forwarding")

    def check_node(self, job: Job, mode: str) -> node_keys.NodeCheck:
        """Wait (on the login node) until the job's script is ready and its node takes
        connections; a node that never does is an error, a node without known keys a warning."""
        argv = jobscript.node_check_argv(mode, job.node, job.job_id, self.profile.cluster.keyscan)
        res = self.login.run(argv)
        check = node_keys.parse_check(res.stdout)
        if res.returncode != 0 or check.error:
            raise NodeError(job.job_id, job.node, check.error or queue.detail(res.stderr))
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
