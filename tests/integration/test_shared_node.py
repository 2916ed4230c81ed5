"""A node shared by several jobs of the user's: every session lands in the job its alias names,
whatever pam_slurm_adopt's action_unknown is (through the real cluster)."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import cluster
from .cluster import PROXY, SSH, as_user, err, jobs, text, wait_gone, wait_state

CONFIG = """
[defaults]
partition = "debug"
time = "10:00"
sbatch_args = ["--nodelist=node1"]
[clusters.test]
login = "testlogin"
[profiles.debug]
cpus = 1
[profiles.gpu1]
gres = "gpu:1"
[profiles.watched]
cpus = 1
idle_timeout = 6
idle_check = 1
"""
pytestmark = pytest.mark.smoke
PAM_FILES = [cluster.cluster_path("/etc/pam.d/sshd-node1"), cluster.cluster_path("/etc/pam.d/sshd-node2")]
PROBE = 'echo "job=$SLURM_JOB_ID"; cat /proc/self/cgroup'


@pytest.fixture(params=["newest", "allow", "deny"])
def action_unknown(request: pytest.FixtureRequest) -> Iterator[str]:
    """The node sshds' pam_slurm_adopt with this action_unknown; restored afterwards."""
    originals = {p: p.read_text() for p in PAM_FILES}
    for p, body in originals.items():
        p.write_text(re.sub(r"action_unknown=\w+", f"action_unknown={request.param}", body))
    try:
        yield str(request.param)
    finally:
        for p, body in originals.items():
            p.write_text(body)


@pytest.fixture
def env(user_tmp: Path, clean: None) -> dict[str, str]:
    path = user_tmp / "config.toml"
    cluster.write_config(path, CONFIG)
    return {"SLURM_PROXY_CONFIG": str(path)}


def session(alias: str, env: dict[str, str], command: str = PROBE) -> tuple[str, str, str]:
    """(SLURM_JOB_ID, the job of /proc/self/cgroup, stderr) of one session through ``alias``."""
    proc = as_user([*SSH, alias, command], env=env)
    assert proc.returncode == 0, err(proc)
    out = text(proc)
    found = re.search(r"job=(\d*)", out)
    cgroup = re.search(r"/job_(\d+)/", out)
    return (found.group(1) if found else "", cgroup.group(1) if cgroup else "", err(proc))


def job_of(profile: str) -> str:
    (found,) = [j for j in jobs(f"slurm-proxy-{profile}") if j[2] == "RUNNING"]
    assert found[3] == "node1"
    return found[0]


def test_each_alias_lands_in_its_own_job_in_both_orders(env: dict[str, str], action_unknown: str) -> None:
    if cluster.version() < (22, 5) and action_unknown != "newest":
        # Slurm 20.11's pam_slurm_adopt may apply action_unknown even to the only job on the node
        # (doctor --node says so; seen in one environment, not in another): allow then lets the
        # session in outside the job, deny refuses it. Either way nothing lands in another job.
        proc = as_user([*SSH, "slurm-debug", PROBE], env=env)
        adopted = proc.returncode == 0 and "/job_" in text(proc)
        if action_unknown == "deny":
            refused = proc.returncode == 255 and "unable to determine source job" in err(proc)
            assert adopted or refused, err(proc)
        else:
            assert adopted or (proc.returncode == 0 and "job=\n" in text(proc)), text(proc)
        return
    for first, second in (("debug", "gpu1"), ("gpu1", "debug")):
        cluster.cancel_all()
        cluster.reset_state()
        sessions = [(alias, session(f"slurm-{alias}", env)) for alias in (first, second, first, second)]
        for alias, (job_env, job_cgroup, _) in sessions:
            assert job_env == job_cgroup == job_of(alias), (action_unknown, sessions)


def test_the_users_own_sbatch_jobs_never_capture_a_session(env: dict[str, str]) -> None:
    older = sbatch_on_node1()
    got_env, got_cgroup, said = session("slurm-debug", env)
    assert got_env == got_cgroup == job_of("debug")
    assert f"also runs your job {older}" in said and "through srun" in said
    as_user(["scancel", older], check=True)  # node1 has room for two jobs of one CPU
    wait_gone(older)
    newer = sbatch_on_node1()
    got_env, got_cgroup, said = session("slurm-debug", env)
    assert got_env == got_cgroup == job_of("debug")
    assert f"also runs your job {newer}" in said


def test_a_second_laptop_with_no_local_state_lands_right(env: dict[str, str]) -> None:
    session("slurm-debug", env)
    session("slurm-gpu1", env)
    for alias in ("debug", "gpu1", "debug"):
        cluster.reset_state()  # another laptop: it knows nothing of either job
        got_env, got_cgroup, _ = session(f"slurm-{alias}", env)
        assert got_env == got_cgroup == job_of(alias)


def test_an_unshared_node_takes_the_direct_path(env: dict[str, str]) -> None:
    session("slurm-debug", env)
    proc = as_user([PROXY, "-v", "slurm-debug"], env=env, input=b"")
    said = err(proc)
    assert re.search(r"exec: .*ssh .*-W node1:22", said), said
    assert "srun" not in said


def test_down_of_the_neighbour_leaves_the_session_alive_and_its_job_counts_it(env: dict[str, str]) -> None:
    session("slurm-gpu1", env)
    command = 'echo "job=$SLURM_JOB_ID"; sleep 20; echo alive'
    holder = subprocess.Popen(cluster.user_argv([*SSH, "slurm-watched", command], env),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert holder.stdout is not None
        first = holder.stdout.readline().decode()
        assert first.strip() == f"job={job_of('watched')}", first
        down = as_user([PROXY, "down", "gpu1"], env=env)
        assert down.returncode == 0, err(down)
        out, stderr = holder.communicate(timeout=60)
        assert holder.returncode == 0 and out.decode().strip() == "alive", stderr.decode()
        # idle_timeout is 6 s: the session's 20 s kept the job alive
        assert [j for j in jobs("slurm-proxy-watched") if j[2] == "RUNNING"]
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def sbatch_on_node1() -> str:
    proc = as_user(["sbatch", "--parsable", "--nodelist=node1", "--partition=debug", "--time=10:00",
                    "--cpus-per-task=1", "--job-name=users-own", "--output=/dev/null",
                    "--wrap=sleep 600"])
    assert proc.returncode == 0, err(proc)
    job_id = text(proc).strip().split(";")[0]
    wait_state(job_id, "RUNNING")
    deadline = time.monotonic() + 30
    while f"{job_id}.extern" not in text(as_user(["squeue", "-h", "-s", "-j", job_id, "-o", "%i"])).split():
        assert time.monotonic() < deadline, f"job {job_id} has no extern step"  # pam_slurm_adopt's
        time.sleep(0.1)
    return job_id

