"""How a waiting job is shown on stderr: a line per change of state or reason, or (``up`` on a
terminal) one line rewritten in place with the time waited."""

from __future__ import annotations

from . import log
from .slurm import Job


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
