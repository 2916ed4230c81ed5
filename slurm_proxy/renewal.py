"""A job near its time limit: what the user is told, and when its successor is due (one, ever).
Pure: the allocator submits the successor, under the profile's lock."""

from __future__ import annotations

from collections.abc import Sequence

from . import log, queue
from .config import Profile
from .slurm import Job
from .state import JobRecord

SAID_GRACE = 60.0  # seconds before its recorded end a job's script may say it reached its limit


def warn(profile: Profile, job: Job) -> None:
    """Say when the job ends within the profile's ``warn_before``."""
    left = job.time_left
    if left is not None and left < profile.warn_before:
        log.info(f"job {job.job_id} ends in {(left + 59) // 60} min (its time limit); the next "
                 "connect after that gets a new job")


def successor_due(profile: Profile, job: Job, jobs: Sequence[Job]) -> bool:
    """Is it time to submit ``job``'s successor: within ``renew_before`` of its end (0 = never,
    even for a job past its limit, showing 0:00 left), and none among ``jobs`` yet?"""
    left, renew = job.time_left, profile.renew_before
    return bool(renew) and left is not None and left <= renew and not any(
        queue.made_for(profile, j) and j.job_id != job.job_id and not j.ended for j in jobs)


def past_its_end(record: JobRecord | None, now: float) -> bool:
    """Is the recorded job past its recorded end (did it perhaps reach its time limit)?"""
    return bool(record and record.ends and now >= record.ends - SAID_GRACE)


def quiet_until(profile: Profile, job: Job, now: float) -> float:
    """Until when connects to ``job`` have nothing to say or submit: before its warning and its
    successor are due (for ``warm``'s memo, which leaves the time left out of the queue)."""
    if job.time_left is None:
        return float("inf")
    return now + job.time_left - max(profile.warn_before, profile.renew_before)
