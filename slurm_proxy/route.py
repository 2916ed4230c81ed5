"""How this connection reaches its job, decided from the query's answer, the profile and what is
known of the login node: pure, it runs nothing.

Three routes: ``adopt``, ssh to the node's own sshd (pam_slurm_adopt puts the session into the
job); ``sshd``, ssh to the job's own sshd on its port; ``srun``, the user's sshd run in a step
of the job, speaking on the login's command channel. Mode adopt goes through srun when
pam_slurm_adopt could not tell which job a session is for (the node runs another job of the
user's), when the session needs the job's own sshd (a container), or when the login node refuses
TCP forwarding (srun needs none; mode sshd then goes through srun too).
"""

from __future__ import annotations

from collections.abc import Sequence

from . import log, slurm
from .config import Profile
from .slurm import Job

SSH_PORT = 22  # the node's own sshd


def neighbours(job: Job, jobs: Sequence[Job]) -> tuple[str, ...]:
    """The user's other jobs that hold ``job``'s node."""
    return tuple(j.job_id for j in jobs if j.job_id != job.job_id
                 and j.state in slurm.HOLDING_STATES and job.node in j.nodes)


def choose(profile: Profile, job: Job, neighbours: Sequence[str], forwarding_refused: bool = False) -> str:
    """The mode this session takes into ``job``: the profile's, or "srun" (and why, at -v).
    ``forwarding_refused``: the cluster's login node is known to refuse TCP forwarding."""
    mode = profile.mode
    if mode == "adopt" and neighbours:
        mode = "srun"
        log.info(f"{job.node} also runs your job{'s' if len(neighbours) > 1 else ''} "
                 f"{', '.join(neighbours)}: this session goes into job {job.job_id} through srun")
    elif mode == "adopt" and profile.container:
        mode = "srun"  # the node's sshd is the site's: only the job's own sshd runs the container
        log.debug("a container needs the job's own sshd: this session goes through srun")
    if mode != "srun" and forwarding_refused:
        mode = "srun"  # srun's sshd speaks on the login's exec channel: no forwarding needed
        log.debug(f"{profile.cluster.login} refuses TCP forwarding: this session goes through srun")
    return mode
