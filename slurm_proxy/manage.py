"""The everyday commands' core: what `up`, `down` and `status` do, returning data for the CLI;
and the wiring every command (and a connect) shares: a cluster's login, the local state a config
vouches for, a profile's allocator."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from itertools import groupby
from typing import NamedTuple

from . import paths
from .allocate import Allocator
from .config import Cluster, Config, Profile
from .login import Login, open_login
from .queue import cancel_recorded, live_jobs
from .slurm import Job
from .state import State, Trust


def allocator(cfg: Config, profile: Profile,
              report: Callable[[Job, float], None] | None = None) -> Allocator:
    """The allocator for ``profile``: its cluster's login connection, the local state (whose
    host keys count only as ``cfg`` vouches for them), the profile's alias."""
    return Allocator(login_to(profile.cluster), profile, State(paths.state_dir(), trust=trusted_by(cfg)),
                     cfg.prefix + profile.name, report=report)


def login_to(cluster: Cluster) -> Login:
    """The cluster's login connection, through the backend its config names."""
    return open_login(cluster.login, cluster.backend, cluster.agent_idle, cluster.login_shell)


def trusted_by(cfg: Config) -> Trust:
    """A record's host keys count only if the config in use makes that very profile, alias and
    cluster: records of another config, or of a removed profile or cluster, vouch for nothing."""
    made = {p.key: (cfg.prefix + p.name, p.cluster.login) for p in cfg.profiles.values()}
    return lambda key, rec: made.get(key) == (rec.alias, rec.login)


def _by_cluster(profiles: Iterable[Profile]) -> Iterable[tuple[str, list[Profile]]]:
    ordered = sorted(profiles, key=lambda p: (p.cluster.name, p.name))
    for name, group in groupby(ordered, key=lambda p: p.cluster.name):
        yield name, list(group)


def up(cfg: Config, profile: Profile, wait: bool,
       report: Callable[[Job, float], None] | None = None) -> Job | None:
    """Allocate ahead of time; with ``wait``, until the job runs. Without, the job if one was
    there already, else None (one was submitted), under the same lock as every connect."""
    alloc = allocator(cfg, profile, report)
    if wait:
        return alloc.ensure_running().job
    return alloc.find_or_submit()[0]


def down(cfg: Config, profiles: Iterable[Profile]) -> list[str]:
    """Cancel the jobs slurm-proxy submitted for ``profiles`` (of ``cfg``): only those Slurm lists
    with our name and comment *and* that the local state records. Returns the cancelled job ids.
    The known_hosts it rewrites holds only the keys ``cfg`` vouches for, as a connect's does."""
    state = State(paths.state_dir(), trust=trusted_by(cfg))
    cancelled = []
    for _, group in _by_cluster(profiles):
        login = login_to(group[0].cluster)
        cancelled += cancel_recorded(login, group, state)
    return cancelled


class StatusRow(NamedTuple):
    profile: str
    alias: str
    cluster: str
    job_id: str | None
    state: str | None
    reason: str | None
    node: str | None
    time_left: int | None  # seconds; None when unlimited or no job
    idle_timeout: int  # seconds; 0 = never


def status(cfg: Config) -> list[StatusRow]:
    """One row per profile: its job (if any), state, node, time left. One squeue per cluster."""
    state = State(paths.state_dir())
    rows = []
    for _, group in _by_cluster(cfg.profiles.values()):
        jobs = live_jobs(login_to(group[0].cluster), group, state)
        for p in group:
            job = jobs.get(p.key)
            rows.append(StatusRow(
                p.name, cfg.prefix + p.name, p.cluster.name,
                job.job_id if job else None, job.state if job else None,
                job.reason if job else None, job.node if job and job.node else None,
                job.time_left if job else None, p.idle_timeout,
            ))
    return rows
