"""A new job's node, as the login node vouches for it: asked once per job, node, alias and mode,
and recorded with the job (its host keys, the job's own sshd port), so that warm connects ask
nothing. The keys' format and the check's output are ``node_keys``'s; the script that looks is
``jobscript.node_check_argv``.

The first session of a job in a mode that needs TCP forwarding also tries a forward to the node:
a login node found to refuse it is remembered (a fact file of the login host) and this and later
sessions go through srun.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from . import jobscript, log, node_keys, queue
from .config import Profile
from .errors import NodeError
from .login import Login, remote
from .route import SSH_PORT
from .slurm import Job
from .state import JobRecord, State


def trust_node(login: Login, state: State, profile: Profile, alias: str, job: Job, mode: str,
               wall: Callable[[], float]) -> tuple[str, int]:
    """Record the job (a job found by its name and comment is adopted), its node, and what the
    login node says of that node for ``mode`` (the host keys to trust, the port), unless the
    record says so already. The mode (srun once the login is found to refuse TCP forwarding) and
    the job's own sshd port (or 0)."""
    rec = queue.record_of(state, profile)
    if rec and (rec.job_id, rec.node, rec.alias, rec.mode) == (job.job_id, job.node, alias, mode):
        return mode, rec.port
    check = check_node(login, profile, job, mode)
    if mode != "srun":
        refused = login.forwarding_refused(job.node, check.port or SSH_PORT)
        if refused:
            log.info(f"{login.destination} refuses TCP forwarding ({refused}): sessions go "
                     "into the job through srun (mode srun's path) from now on")
            remote.remember(no_forwarding_file(profile.cluster.login), refused + "\n")
            return trust_node(login, state, profile, alias, job, "srun", wall)
    submitted = rec.submitted if rec and rec.job_id == job.job_id else wall()
    ends = wall() + job.time_left if job.time_left is not None else 0.0
    state.record(JobRecord(job.job_id, profile.key, submitted, alias, job.node, tuple(check.keys),
                           check.port, mode, profile.cluster.login, ends))
    return mode, check.port


def check_node(login: Login, profile: Profile, job: Job, mode: str) -> node_keys.NodeCheck:
    """Wait (on the login node) until the job's script is ready and its node takes
    connections; a node that never does is an error, a node without known keys a warning."""
    argv = jobscript.node_check_argv(mode, job.node, job.job_id, profile.cluster.keyscan)
    res = login.run(argv)
    check = node_keys.parse_check(res.stdout)
    if res.returncode != 0 or check.error:
        raise NodeError(job.job_id, job.node, check.error or queue.detail(res.stderr))
    if not check.keys:
        log.info(f"the login node knows no host key for {job.node}: ssh will ask you to confirm "
                 "the key it presents")
    return check


def no_forwarding_file(login_host: str) -> Path:
    """Present when the login node ``login_host`` was found to refuse TCP forwarding."""
    return remote.fact_file(login_host, "no-forwarding")
