"""The loopback cluster itself: Slurm schedules, sshd admits only users with a job there."""

from __future__ import annotations

import subprocess

import pytest

from . import cluster
from .cluster import SSH, as_user, err, text


def test_sinfo_shows_both_nodes_with_gpus() -> None:
    out = text(as_user(["sinfo", "-N", "-h", "-p", "debug", "-o", "%N %t %G"], check=True))
    rows = sorted(line.split() for line in out.splitlines())
    assert [r[0] for r in rows] == ["node1", "node2"]
    assert all(r[2] == "gpu:2" for r in rows), rows
    assert all(r[1] in ("idle", "mix", "alloc") for r in rows), rows


def test_gpu_job_runs(clean: None) -> None:
    proc = as_user(["sbatch", "--wait", "--gres=gpu:2", "--output=/dev/null", "--wrap", "true"])
    assert proc.returncode == 0, err(proc)


def test_login_node_answers() -> None:
    proc = as_user([*SSH, "testlogin", "echo", "on-login"])
    assert proc.returncode == 0, err(proc)
    assert text(proc).strip() == "on-login"


@pytest.mark.smoke
def test_node_denies_without_job_and_admits_with_one(clean: None) -> None:
    denied = as_user([*SSH, "-J", "testlogin", "node2", "true"])
    assert denied.returncode == 255
    assert "Permission denied" in err(denied) or "Connection closed" in err(denied), err(denied)

    job_id = text(as_user(["sbatch", "--parsable", "-w", "node2", "--output=/dev/null",
                           "--wrap", "sleep 300"], check=True)).strip()
    cluster.wait_state(job_id, "RUNNING")
    admitted = as_user([*SSH, "-J", "testlogin", "node2", "cat /proc/self/cgroup"])
    assert admitted.returncode == 0, err(admitted)
    # pam_slurm_adopt put the session into the job (its extern step), like on a real cluster
    assert "proctrack/cgroup" in _proctrack()
    assert f"job_{job_id}/step_extern" in text(admitted), text(admitted)


def _proctrack() -> str:
    return subprocess.run([str(cluster.TESTCLUSTER / "status")], capture_output=True,
                          text=True).stdout


def test_up_is_idempotent_and_down_then_up_works() -> None:
    up = [str(cluster.TESTCLUSTER / "up"), "--slurm", cluster.SLURM_VERSION]
    again = subprocess.run(up, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    down = subprocess.run([str(cluster.TESTCLUSTER / "down")], capture_output=True, text=True)
    assert down.returncode == 0, down.stderr
    assert "DOWN" in _proctrack()
    restarted = subprocess.run(up, capture_output=True, text=True, timeout=300)
    assert restarted.returncode == 0, restarted.stderr
    assert "DOWN" not in _proctrack()
    assert as_user([*SSH, "testlogin", "true"]).returncode == 0
