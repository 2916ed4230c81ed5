"""Load on the real cluster: many connects at once, many in a row, and what they cost slurmctld
(counted by `sdiag`, per user)."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from . import cluster
from .cluster import PROXY, SSH, as_user, err, jobs, text
from .faults import close_masters, popen_as_user, reset_rpc_counts, rpc_count, wait_for

pytestmark = pytest.mark.usefixtures("clean")



def test_sixteen_concurrent_cold_connects_make_one_job() -> None:
    close_masters()  # cold all the way: no job and no shared connection to the login node
    with ThreadPoolExecutor(16) as pool:
        procs = list(pool.map(lambda _: as_user([*SSH, "slurm-debug", "echo ok"]), range(16)))
    failed = [err(p) for p in procs if p.returncode != 0 or text(p) != "ok\n"]
    assert not failed, f"{len(failed)}/16 failed: {failed}"
    assert len(jobs("slurm-proxy-debug")) == 1, jobs()
    assert sum("submitted job" in err(p) for p in procs) == 1


def test_up_no_wait_and_connects_at_once_make_one_job() -> None:
    """A login script's `up --no-wait` in four terminals and two connects: one lock, one job."""
    close_masters()
    commands = [[PROXY, "up", "debug", "--no-wait"]] * 4 + [[*SSH, "slurm-debug", "echo ok"]] * 2
    with ThreadPoolExecutor(len(commands)) as pool:
        procs = list(pool.map(as_user, commands))
    failed = [err(p) for p in procs if p.returncode != 0]
    assert not failed, failed
    assert [text(p) for p in procs[4:]] == ["ok\n", "ok\n"]
    assert len(jobs("slurm-proxy-debug")) == 1, jobs()
    assert sum("submitted job" in err(p) for p in procs) == 1


def test_hundred_sequential_warm_connects() -> None:
    first = as_user([*SSH, "slurm-debug", "true"])
    assert first.returncode == 0, err(first)
    (job_id, *_), = jobs()
    start = time.monotonic()
    failures = []
    for i in range(100):
        proc = as_user([*SSH, "slurm-debug", "true"])
        if proc.returncode != 0:
            failures.append((i, proc.returncode, err(proc)))
    took = time.monotonic() - start
    print(f"100 warm connects: {took:.1f} s, {took * 10:.0f} ms each")
    assert not failures, f"{len(failures)}/100 failed: {failures[:3]}"
    assert [j[0] for j in jobs()] == [job_id]


def test_warm_connect_costs_one_query() -> None:
    """A warm connect is one squeue of the user's jobs: two slurmctld RPCs (the jobs and the
    partition table, which squeue always loads)."""
    first = as_user([*SSH, "slurm-debug", "true"])
    assert first.returncode == 0, err(first)
    reset_rpc_counts()
    for _ in range(10):
        proc = as_user([*SSH, "slurm-debug", "true"])
        assert proc.returncode == 0, err(proc)
    rpcs = rpc_count()
    print(f"warm connect: {rpcs / 10:g} slurmctld RPCs")
    assert rpcs <= 20, f"{rpcs} RPCs for 10 warm connects"


WINDOW = 20.0
RPCS_PER_QUERY = 2  # squeue: the user's jobs, and the partition table


@pytest.mark.timeout(150)
def test_pending_job_is_queried_at_most_every_5_s(cfg: dict[str, str], user_tmp: Path) -> None:
    proc, pid = popen_as_user([PROXY, "slurm-later"], cfg, pidfile=user_tmp / "proxy.pid")
    assert pid is not None
    wait_for("the job to pend", lambda: [j for j in jobs("slurm-proxy-later") if j[2] == "PENDING"], 20)
    (job_id, *_), = jobs("slurm-proxy-later")
    # From here on nothing else of sptest's may talk to slurmctld: the counts are the proxy's.
    seen = time.monotonic()
    reset_rpc_counts()
    time.sleep(10)
    first = rpc_count() / RPCS_PER_QUERY
    time.sleep(max(0.0, seen + 12 - time.monotonic()))
    reset_rpc_counts()
    time.sleep(WINDOW)
    later = rpc_count() / RPCS_PER_QUERY
    still_waiting = proc.poll() is None
    print(f"pending job: {first:g} queries in its first 10 s, {later:g} in the {WINDOW:g} s after")

    os.kill(pid, signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert still_waiting, stderr.decode(errors="replace")
    assert f"cancelled pending job {job_id}" in stderr.decode(errors="replace")
    assert later <= WINDOW / 5 + 1, f"{later:g} queries in {WINDOW:g} s"
    assert later >= WINDOW / 5 - 1, f"only {later:g} queries in {WINDOW:g} s: did it stop polling?"
    cluster.wait_gone(job_id)
