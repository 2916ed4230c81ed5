"""Faults on the real cluster and what a connect does about them: slurmctld, the login sshd or the
nodes' sshds gone, a job that ends under an open session, a proxy killed after sbatch, two
profiles at once, stale locks.

Each test leaves every daemon running again (even when it fails) and ends by checking that no job
of slurm-proxy's is left that nothing owns."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from . import cluster, faults
from .cluster import PROXY, SSH, VENV, as_user, err, jobs, text
from .faults import (
    LOCKS,
    assert_jobs_accounted,
    close_masters,
    popen_as_user,
    proxy_jobs,
    proxy_lines,
    state_jobs,
    stop_daemon,
    wait_for,
)


@pytest.fixture(autouse=True)
def restored(clean: None) -> Iterator[None]:
    """Every daemon a test stopped runs again afterwards, failed test or not; this runs before
    `clean` cancels the jobs, which needs slurmctld."""
    try:
        yield
    finally:
        faults.restore_cluster()



def status(cfg: dict[str, str]) -> dict[str, dict[str, object]]:
    """`slurm-proxy status --json`, by profile."""
    proc = as_user([PROXY, "status", "--json"], env=cfg)
    assert proc.returncode == 0, err(proc)
    return {row["profile"]: row for row in json.loads(text(proc))}


# -- 1. slurmctld ------------------------------------------------------------------------------
@pytest.mark.timeout(180)
def test_slurmctld_stopped_while_waiting(cfg: dict[str, str]) -> None:
    blockers = cluster.fill_cluster()
    start = time.monotonic()
    proc, _ = popen_as_user([*SSH, "slurm-patient", "true"], cfg)
    wait_for("the job to pend", lambda: [j for j in jobs("slurm-proxy-patient") if j[2] == "PENDING"], 20)
    (job_id, *_), = jobs("slurm-proxy-patient")
    stop_daemon("slurmctld")
    _, stderr_bytes = proc.communicate(timeout=120)
    took = time.monotonic() - start
    stderr = stderr_bytes.decode(errors="replace")

    assert proc.returncode != 0
    # squeue gives up on an unreachable slurmctld within MessageTimeout and its retries (under
    # 40 s here): the connect fails then, long before the profile's pending_timeout of 120 s.
    assert took < 40 + 15, f"the connect took {took:.0f} s: squeue should have failed by now"
    assert "still not running" not in stderr, stderr  # not the pending timeout
    assert "Traceback" not in stderr, stderr
    lines = proxy_lines(stderr)
    failures = [ln for ln in lines if "squeue failed" in ln or "controller" in ln.lower()]
    assert len(failures) == 1 and failures[0] == lines[-1], stderr
    print(f"after {took:.0f} s: {failures[0]}")

    faults.restore_cluster()
    as_user(["scancel", *blockers], check=True)
    again = as_user([*SSH, "slurm-patient", "true"], env=cfg)
    assert again.returncode == 0, err(again)
    assert "submitted" not in err(again)  # the queued job, not a second one
    assert_jobs_accounted({job_id})


# -- 2. the login node's sshd ---------------------------------------------------------------------
@pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])
def test_login_sshd_stopped(cfg: dict[str, str], warm: bool) -> None:
    before: set[str] = set()
    if warm:
        first = as_user([*SSH, "slurm-debug", "true"], env=cfg)
        assert first.returncode == 0, err(first)
        before = {j[0] for j in proxy_jobs()}
    close_masters()  # a live master would carry on without the login sshd
    stop_daemon("sshd-login")

    proc = as_user([*SSH, "slurm-debug", "true"], env=cfg, timeout=60)
    assert proc.returncode == 255
    assert "Traceback" not in err(proc)
    lines = proxy_lines(err(proc))
    assert len(lines) == 1, err(proc)
    assert lines[0].startswith("slurm-proxy: cannot reach login node 'testlogin': "), err(proc)
    assert "port 2222: Connection refused" in lines[0]
    print(lines[0])
    assert not faults.lock_held(LOCKS / "test.debug.lock")
    assert {j[0] for j in proxy_jobs()} == before

    faults.restore_cluster()
    start = time.monotonic()
    again = as_user([*SSH, "slurm-debug", "true"], env=cfg)
    took = time.monotonic() - start
    assert again.returncode == 0, err(again)
    assert took < 10, f"the connect after the restart took {took:.1f} s"
    (job_id, *_), = proxy_jobs()
    if warm:
        assert {job_id} == before
    assert_jobs_accounted({job_id})


# -- 3, 4. the job ends while a session is open -------------------------------------------------
@pytest.mark.timeout(240)
@pytest.mark.parametrize("end", ["scancel", "time-limit"])
def test_job_ends_under_an_open_session(cfg: dict[str, str], end: str) -> None:
    profile = "short" if end == "time-limit" else "debug"  # short: time = "1" (minute)
    alias, name = f"slurm-{profile}", f"slurm-proxy-{profile}"
    session, _ = popen_as_user([*SSH, alias, "echo started; exec sleep 300"], cfg)
    assert session.stdout is not None
    assert session.stdout.readline() == b"started\n", session.stderr.read() if session.stderr else ""
    (old, _, state, _), = jobs(name)
    assert state == "RUNNING"

    start = time.monotonic()
    if end == "scancel":
        as_user(["scancel", old], check=True)  # from outside: not through slurm-proxy
    session.communicate(timeout=150)  # the session ends with its job
    print(f"the session ended {time.monotonic() - start:.0f} s later, ssh exit {session.returncode}")
    assert session.returncode != 0
    cluster.wait_gone(old, timeout=60)
    assert status(cfg)[profile]["job_id"] is None

    again = as_user([*SSH, alias, "true"], env=cfg)
    assert again.returncode == 0, err(again)
    assert "submitted job" in err(again)
    (new, _, _, node), = jobs(name)
    assert new != old
    row = status(cfg)[profile]
    assert (row["job_id"], row["state"], row["node"]) == (new, "RUNNING", node)
    rec = state_jobs()[f"test.{profile}"]
    assert (rec["job_id"], rec["node"], rec["alias"]) == (new, node, alias)
    assert_jobs_accounted({new})


# -- 5. the node's sshd refuses right after the job starts --------------------------------------
NODE_SSHDS = ("sshd-node1", "sshd-node2")


@pytest.mark.timeout(150)
def test_node_sshd_refusing_ends_in_one_line_naming_node_and_port(cfg: dict[str, str]) -> None:
    for d in NODE_SSHDS:
        stop_daemon(d)
    start = time.monotonic()
    proc = as_user([*SSH, "slurm-debug", "true"], env=cfg, timeout=120)
    took = time.monotonic() - start
    assert proc.returncode == 255
    (job_id, _, state, node), = proxy_jobs()
    assert state == "RUNNING"
    assert "Traceback" not in err(proc)
    lines = proxy_lines(err(proc))
    assert lines and re.search(rf"\b{node}\b.*\b22\b", lines[-1]), err(proc)
    assert took < 60, f"gave up only after {took:.0f} s"
    print(f"after {took:.0f} s: {lines[-1]}")
    assert_jobs_accounted({job_id})  # running: reused by the next connect, or ended when idle


@pytest.mark.timeout(150)
def test_node_sshd_back_during_the_retry_connects(cfg: dict[str, str]) -> None:
    for d in NODE_SSHDS:
        stop_daemon(d)
    start = time.monotonic()
    proc, _ = popen_as_user([*SSH, "slurm-debug", "true"], cfg)
    wait_for("the job to run", lambda: [j for j in jobs("slurm-proxy-debug") if j[2] == "RUNNING"], 30)
    wait_for("the node check to be refused", node_check_probing, 30)
    with ThreadPoolExecutor(1) as pool:
        pool.submit(faults.start_stopped).result(timeout=60)
    _, stderr = proc.communicate(timeout=100)
    print(f"connected after {time.monotonic() - start:.0f} s")
    assert proc.returncode == 0, stderr.decode(errors="replace")
    (job_id, *_), = proxy_jobs()
    assert_jobs_accounted({job_id})


def node_check_probing() -> bool:
    """The proxy's node check, on the login node, has seen the job ready and is probing the
    node's sshd (its script's refusal line is in its command line)."""
    (job_id, *_), = jobs("slurm-proxy-debug")
    ready = cluster.HOME / ".slurm-proxy" / "jobs" / job_id
    checks = subprocess.run(["pgrep", "-u", cluster.USER, "-f", "refuses connections from the login node"],
                            capture_output=True)
    return ready.is_file() and ready.stat().st_size > 0 and checks.returncode == 0


# -- 6. the proxy killed between sbatch and writing its state ------------------------------------
def test_job_of_a_killed_proxy_is_adopted(cfg: dict[str, str], user_tmp: Path) -> None:
    proc, pid = popen_as_user([PROXY, "slurm-debug"], cfg, pidfile=user_tmp / "proxy.pid")
    assert pid is not None
    wait_for("the job to be submitted", lambda: jobs("slurm-proxy-debug"), 20, interval=0.02)
    os.kill(pid, signal.SIGKILL)
    proc.communicate(timeout=10)
    (job_id, *_), = jobs("slurm-proxy-debug")
    cluster.reset_state()  # as if the kill came before the state was written

    again = as_user([*SSH, "slurm-debug", "true"], env=cfg)
    assert again.returncode == 0, err(again)
    assert "submitted" not in err(again)
    assert [j[0] for j in jobs()] == [job_id]
    assert state_jobs()["test.debug"]["job_id"] == job_id  # adopted: `down` may cancel it now
    assert_jobs_accounted({job_id})


# -- 7. two profiles at once -----------------------------------------------------------------
def test_two_aliases_at_once_make_two_jobs(cfg: dict[str, str]) -> None:
    close_masters()  # both connects start without a shared connection to the login node
    aliases = ["slurm-gpu1", "slurm-gpu2"]
    with ThreadPoolExecutor(2) as pool:
        procs = dict(zip(aliases, pool.map(
            lambda a: as_user([*SSH, a, "cat /proc/self/cgroup"], env=cfg), aliases)))
    for alias, proc in procs.items():
        assert proc.returncode == 0, (alias, err(proc))
    by_name = {j[1]: j for j in proxy_jobs()}
    assert sorted(by_name) == ["slurm-proxy-gpu1", "slurm-proxy-gpu2"], jobs()
    for alias, proc in procs.items():
        job_id = by_name[f"slurm-proxy-{alias.removeprefix('slurm-')}"][0]
        assert f"job_{job_id}/step_extern" in text(proc), (alias, text(proc))
    assert_jobs_accounted({j[0] for j in by_name.values()})


# -- 8. a stale lock ------------------------------------------------------------------------------
HOLD_LOCK = """
import os, signal, sys, time
from filelock import FileLock
lock = FileLock(sys.argv[1], mode=0o600)
lock.acquire()
if sys.argv[2] == "die":
    os.kill(os.getpid(), signal.SIGKILL)
print("held", flush=True)
time.sleep(300)
"""


def test_lock_left_by_a_dead_process_never_blocks(cfg: dict[str, str]) -> None:
    lock = LOCKS / "test.debug.lock"
    as_user(["mkdir", "-p", "-m", "700", str(LOCKS)], check=True)
    holder = as_user([str(VENV / "bin" / "python"), "-c", HOLD_LOCK, str(lock), "die"])
    assert holder.returncode == -signal.SIGKILL or holder.returncode == 128 + signal.SIGKILL, err(holder)
    assert lock.exists() and not faults.lock_held(lock)

    start = time.monotonic()
    proc = as_user([*SSH, "slurm-debug", "true"], env=cfg)
    took = time.monotonic() - start
    assert proc.returncode == 0, err(proc)
    assert took < 10, f"the connect took {took:.1f} s"
    (job_id, *_), = proxy_jobs()
    assert_jobs_accounted({job_id})


def test_lock_holder_dying_releases_the_waiting_connect(cfg: dict[str, str], user_tmp: Path) -> None:
    lock = LOCKS / "test.debug.lock"
    as_user(["mkdir", "-p", "-m", "700", str(LOCKS)], check=True)
    holder, holder_pid = popen_as_user([str(VENV / "bin" / "python"), "-c", HOLD_LOCK, str(lock), "hold"],
                                       pidfile=user_tmp / "holder.pid")
    assert holder.stdout is not None and holder_pid is not None
    assert holder.stdout.readline() == b"held\n"
    try:
        proc, _ = popen_as_user([*SSH, "slurm-debug", "true"], cfg)
        held_back = time.monotonic() + 3
        while time.monotonic() < held_back:  # all along, not only at the end
            assert proc.poll() is None and not jobs("slurm-proxy-debug"), "the lock did not hold it back"
            time.sleep(0.1)
    finally:
        os.kill(holder_pid, signal.SIGKILL)
        holder.communicate(timeout=10)
    start = time.monotonic()
    _, stderr = proc.communicate(timeout=60)
    took = time.monotonic() - start
    assert proc.returncode == 0, stderr.decode(errors="replace")
    assert took < 10, f"the connect went on only {took:.1f} s after the holder died"
    (job_id, *_), = proxy_jobs()
    assert_jobs_accounted({job_id})
