"""slurm-proxy's Slurm operations over a login connection: read the user's queue, tell which jobs
are slurm-proxy's own for a profile, submit one, cancel those and only those, and keep the local
records in step with what Slurm lists.

Words: a job is *made for* a profile when its name *and* its comment say so (``made_for``); the
profile's *live job* is the one of those a connect uses (``live_job``); a job is *recorded* when
the local state holds it for the profile, and only a job made for a profile *and* recorded is ever
cancelled (``cancel_recorded``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from . import jobscript, log, session, slurm
from .config import Profile
from .errors import ContainerMissing, SlurmError
from .login import Login
from .slurm import Job
from .state import JobRecord, State

SUCCESSOR = "+next"  # the record key suffix of a job submitted to follow the running one
# A record younger than this may belong to a job a concurrent connect just submitted, which an
# earlier squeue could not list yet: only older records of unlisted jobs are dropped.
FORGET_AFTER = 60.0


def user_jobs(login: Login) -> list[Job]:
    """All the user's jobs on the cluster, from one squeue."""
    res = login.run(slurm.squeue_argv())
    if res.returncode != 0:
        raise SlurmError("squeue", detail(res.stderr))
    skipped: list[str] = []
    jobs = slurm.parse_squeue(res.stdout, skipped)
    for line in skipped:
        log.debug(f"squeue: skipped a line that is not one of slurm-proxy's jobs: {line!r}")
    return jobs


def live_job(profile: Profile, jobs: Iterable[Job], record: JobRecord | None) -> Job | None:
    """slurm-proxy's live job for ``profile`` among ``jobs``: one with its name *and* comment;
    when there are several, a running one wins (a pending successor waits its turn), then the
    recorded one, then the oldest."""
    mine = [j for j in jobs if made_for(profile, j) and not j.ended]
    if not mine:
        return None
    return min(mine, key=lambda j: (j.state != "RUNNING", record is None or record.job_id != j.job_id,
                                    slurm.job_number(j)))


def record_of(state: State, profile: Profile) -> JobRecord | None:
    """The local record of ``profile``'s job, if it was made for its cluster's login."""
    rec = state.job(profile.key)
    return rec if rec and rec.login == profile.cluster.login else None


def submit(login: Login, profile: Profile, state: State, wall: Callable[[], float],
           successor: bool = False) -> str:
    """sbatch the profile's job and record it (a ``successor`` beside the running one) as
    submitted at ``wall()``; its id."""
    image = profile.container
    if image and login.run(session.image_check_argv(image)).returncode != 0:
        raise ContainerMissing(image, login.destination)
    argv = slurm.sbatch_argv(profile.sbatch_options(), slurm.job_name(profile.name),
                             slurm.job_comment(profile.key))
    res = login.run(argv, stdin=jobscript.batch_script(profile))
    if res.returncode != 0:
        raise SlurmError("sbatch", slurm.refusal(res.stderr) or detail(res.stderr))
    job_id = slurm.parse_sbatch(res.stdout)
    key = profile.key + (SUCCESSOR if successor else "")
    state.record(JobRecord(job_id=job_id, profile=key, submitted=wall(), login=profile.cluster.login))
    log.info(f"submitted job {job_id} for profile {profile.name}"
             + (" to follow the running one" if successor else ""))
    return job_id


def script_said(login: Login, job_id: str) -> str:
    """What the job's batch script last said (``error …``, ``timelimit``), or ""."""
    return login.run(jobscript.said_argv(job_id)).stdout.strip()


def forget_gone(state: State, login_host: str, jobs: Sequence[Job], now: float) -> None:
    """Drop the records of the cluster's (``login_host``'s) jobs that Slurm no longer lists
    among ``jobs``: their nodes' keys must not stay trusted. Nothing is written when nothing
    changes."""
    live = {j.job_id for j in jobs if not j.ended}
    old = now - FORGET_AFTER
    state.forget_where(lambda rec: rec.login == login_host and rec.job_id not in live
                       and rec.submitted < old)


def live_jobs(login: Login, profiles: list[Profile], state: State) -> dict[str, Job]:
    """Profile key → the live job slurm-proxy made for it, for profiles of one cluster, with one
    squeue."""
    jobs = user_jobs(login)
    records = state.jobs()
    found = {p.key: live_job(p, jobs, records.get(p.key)) for p in profiles}
    return {key: job for key, job in found.items() if job is not None}


def cancel_recorded(login: Login, profiles: list[Profile], state: State) -> list[str]:
    """Cancel slurm-proxy's jobs for ``profiles`` (of one cluster): only those that Slurm lists
    with our name and comment *and* that the local state records. The cancelled job ids."""
    records = state.jobs()
    live = {j.job_id for j in user_jobs(login) if not j.ended and any(made_for(p, j) for p in profiles)}
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
        raise SlurmError("scancel", detail(res.stderr))
    for key, job_id in jobs.items():
        state.forget(key, job_id)


def made_for(profile: Profile, job: Job) -> bool:
    """slurm-proxy's job for ``profile``: its name *and* its comment say so."""
    return job.name == slurm.job_name(profile.name) and job.comment == slurm.job_comment(profile.key)


def detail(stderr: str) -> str:
    """What a failed command said, for its one-line error."""
    return log.last_line(stderr) or "no error message"
