"""up / down / status, idle auto-cancel and signals, through the real cluster."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from . import cluster
from .cluster import PROXY, SSH, as_user, err, jobs, text

pytestmark = [pytest.mark.usefixtures("clean"), pytest.mark.smoke]



def test_up_status_reuse_down(cfg: dict[str, str]) -> None:
    up = as_user([PROXY, "up", "debug"], env=cfg)
    assert up.returncode == 0, err(up)
    (job_id, _, state, node), = jobs("slurm-proxy-debug")
    assert state == "RUNNING"
    assert text(up).strip() == f"slurm-debug: job {job_id} running on {node}"

    rows = {r["profile"]: r for r in json.loads(text(as_user([PROXY, "status", "--json"], env=cfg)))}
    assert rows["debug"]["job_id"] == job_id and rows["debug"]["node"] == node
    assert 0 < rows["debug"]["time_left"] <= 600
    assert rows["idle"]["job_id"] is None
    table = text(as_user([PROXY, "status"], env=cfg))
    assert any(line.split()[:4] == ["slurm-debug", job_id, "running", node]
               for line in table.splitlines()), table

    ssh = as_user([*SSH, "slurm-debug", "true"], env=cfg)
    assert ssh.returncode == 0, err(ssh)
    assert [j[0] for j in jobs()] == [job_id]

    down = as_user([PROXY, "down", "debug"], env=cfg)
    assert down.returncode == 0, err(down)
    assert text(down).strip() == f"cancelled {job_id}"
    cluster.wait_gone(job_id)


def test_down_never_touches_a_job_it_did_not_submit(cfg: dict[str, str]) -> None:
    # Same name and even the same comment as slurm-proxy's, but submitted by hand.
    hand = text(as_user(["sbatch", "--parsable", "--job-name=slurm-proxy-debug",
                         "--comment=slurm-proxy:test.debug", "--output=/dev/null",
                         "--wrap", "sleep 300"], check=True)).strip()
    other = text(as_user(["sbatch", "--parsable", "--output=/dev/null", "--wrap", "sleep 300"],
                         check=True)).strip()
    down = as_user([PROXY, "down", "--all"], env=cfg)
    assert down.returncode == 0, err(down)
    assert text(down).strip() == "nothing to cancel"
    assert sorted(j[0] for j in jobs()) == sorted([hand, other])


def test_down_needs_a_profile_or_all(cfg: dict[str, str]) -> None:
    proc = as_user([PROXY, "down"], env=cfg)
    assert proc.returncode == 2 and "--all" in err(proc)


@pytest.mark.parametrize("profile", ["idle", "idle-sshd", "idle-srun"], ids=["adopt", "sshd", "srun"])
def test_idle_job_ends_only_after_the_last_session(cfg: dict[str, str], profile: str) -> None:
    session = as_user_popen([*SSH, f"slurm-{profile}", "sleep 9"], cfg)
    deadline = time.monotonic() + 30
    while not jobs(f"slurm-proxy-{profile}") and time.monotonic() < deadline:
        time.sleep(0.2)
    (job_id, *_), = jobs(f"slurm-proxy-{profile}")
    cluster.wait_state(job_id, "RUNNING")
    running = time.monotonic()
    deadline = running + 30
    while session.poll() is None:  # its 9 s, well past idle_timeout (4 s): the job runs throughout
        assert [j[2] for j in jobs(f"slurm-proxy-{profile}")] == ["RUNNING"]
        assert time.monotonic() < deadline, "the session never ended"
        time.sleep(0.5)
    assert time.monotonic() - running > 4 + 1, "the session ended before the job could have idled"
    _, stderr = session.communicate(timeout=30)
    assert session.returncode == 0, stderr.decode()
    cluster.wait_gone(job_id, timeout=20)  # 4 s idle + 1 s checks, after the session closed


def as_user_popen(argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start argv as sptest; its pid file is the shell that execs it (so signals reach it)."""
    return subprocess.Popen(cluster.user_argv(argv, env), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def start_proxy(user_tmp: Path, cfg: dict[str, str], alias: str) -> tuple[subprocess.Popen[bytes], int]:
    pidfile = user_tmp / "proxy.pid"
    proc = subprocess.Popen(cluster.user_argv(
        ["sh", "-c", f'echo $$ > {pidfile}; exec {PROXY} "$0"', alias], cfg),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while not (pidfile.exists() and pidfile.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return proc, int(pidfile.read_text())


def recorded_job_ids() -> set[str]:
    """The job ids in sptest's state file (none before it is written)."""
    try:
        data = json.loads((cluster.STATE / "state.json").read_text())
    except (FileNotFoundError, ValueError):  # not yet, or being replaced
        return set()
    return {str(rec.get("job_id")) for rec in data.get("jobs", {}).values()}


def test_sigterm_while_pending_cancels_the_job_it_submitted(user_tmp: Path, cfg: dict[str, str]) -> None:
    blockers = cluster.fill_cluster()
    proc, pid = start_proxy(user_tmp, cfg, "slurm-patient")
    deadline = time.monotonic() + 20
    while not [j for j in jobs("slurm-proxy-patient") if j[2] == "PENDING"]:
        assert time.monotonic() < deadline, "the job never pended"
        time.sleep(0.2)
    (job_id, *_), = jobs("slurm-proxy-patient")
    while job_id not in recorded_job_ids():  # sbatch has answered the proxy: it knows its job
        assert time.monotonic() < deadline, "the proxy never recorded its job"
        time.sleep(0.05)
    subprocess.run(["kill", "-TERM", str(pid)], check=True)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode != 0
    assert "interrupted by SIGTERM; cancelled pending job" in stderr.decode(), stderr.decode()
    deadline = time.monotonic() + 20
    while jobs("slurm-proxy-patient"):
        assert time.monotonic() < deadline, jobs()
        time.sleep(0.2)
    assert sorted(j[0] for j in jobs()) == sorted(blockers)


def test_sigterm_once_running_leaves_the_job(user_tmp: Path, cfg: dict[str, str]) -> None:
    proc, pid = start_proxy(user_tmp, cfg, "slurm-debug")
    # the proxy is now `ssh -W` (same pid): the node's banner on stdout says it connected
    assert proc.stdout is not None
    assert proc.stdout.read(8) == b"SSH-2.0-"
    subprocess.run(["kill", "-TERM", str(pid)], check=True)
    proc.communicate(timeout=30)  # it has exited: a cancel of its would have been made by now
    assert [j[2] for j in jobs("slurm-proxy-debug")] == ["RUNNING"]
