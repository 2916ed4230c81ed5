"""The everyday commands' core: what `up`, `down` and `status` do, returning data for the CLI."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from itertools import groupby
from typing import NamedTuple

from . import log, paths, proxy, slurm
from .allocate import owned_jobs
from .config import Config, Profile
from .login import open_login
from .slurm import Job
from .state import State


def _by_cluster(profiles: Iterable[Profile]) -> Iterable[tuple[str, list[Profile]]]:
    ordered = sorted(profiles, key=lambda p: (p.cluster.name, p.name))
    for name, group in groupby(ordered, key=lambda p: p.cluster.name):
        yield name, list(group)


def up(cfg: Config, profile: Profile, wait: bool,
       report: Callable[[Job, float], None] | None = None) -> Job | None:
    """Allocate ahead of time; with ``wait``, until the job runs."""
    alloc = proxy.allocator(profile, cfg.prefix + profile.name, report)
    if wait:
        return proxy.ensure_running(alloc)
    job = alloc.query()
    if job is None:
        alloc.submit()
    return job


def down(profiles: Iterable[Profile]) -> list[str]:
    """Cancel the jobs slurm-proxy submitted for ``profiles``: only those Slurm lists with our
    name and comment *and* that the local state records. Returns the cancelled job ids."""
    state = State(paths.home())
    records = state.jobs()
    cancelled = []
    for _, group in _by_cluster(profiles):
        login = open_login(group[0].cluster.login, group[0].cluster.backend)
        jobs = owned_jobs(login, group, state)
        mine = {p.key: jobs[p.key].job_id for p in group
                if p.key in jobs and p.key in records and records[p.key].job_id == jobs[p.key].job_id}
        if mine:
            res = login.run(slurm.scancel_argv(sorted(mine.values())))
            if res.returncode != 0:
                log.error(f"scancel: {res.stderr.strip()}")
                continue
            cancelled += sorted(mine.values())
        for p in group:
            if p.key in records:
                state.forget(p.key, records[p.key].job_id)
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
    state = State(paths.home())
    rows = []
    for _, group in _by_cluster(cfg.profiles.values()):
        jobs = owned_jobs(open_login(group[0].cluster.login, group[0].cluster.backend), group, state)
        for p in group:
            job = jobs.get(p.key)
            rows.append(StatusRow(
                p.name, cfg.prefix + p.name, p.cluster.name,
                job.job_id if job else None, job.state if job else None,
                job.reason if job else None, job.node if job else None,
                job.time_left if job else None, p.idle_timeout,
            ))
    return rows
