"""A warm connect replays the last one's decision only while Slurm's answer is the same: a job
cancelled behind slurm-proxy's back, another job of the user's that starts on the node, a burst
of connects: each session lands in the job its alias names (through the real cluster)."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from . import cluster
from .cluster import PROXY, SSH, as_user, err, jobs, text, wait_gone, wait_state

CONFIG = """
[defaults]
partition = "debug"
time = "30:00"  # more than warn_before: connects have nothing to say
sbatch_args = ["--nodelist=node1"]
[clusters.test]
login = "testlogin"
[profiles.debug]
cpus = 1
"""
PROBE = 'echo "job=$SLURM_JOB_ID"; cat /proc/self/cgroup'
pytestmark = pytest.mark.smoke


@pytest.fixture
def env(user_tmp: Path, clean: None) -> dict[str, str]:
    path = user_tmp / "config.toml"
    cluster.write_config(path, CONFIG)
    return {"SLURM_PROXY_CONFIG": str(path)}


def session(env: dict[str, str]) -> tuple[str, bool, str]:
    """(the job whose cgroup the session is in, did the connect replay its memo, stderr)."""
    proc = as_user([*SSH, "slurm-debug", PROBE], env={**env, "PYTHONPROFILEIMPORTTIME": "1"})
    assert proc.returncode == 0, err(proc)
    cgroup = re.search(r"/job_(\d+)/", text(proc))
    said = err(proc)
    replayed = "slurm_proxy.warm" in said and "slurm_proxy.proxy" not in said
    return (cgroup.group(1) if cgroup else ""), replayed, said


def our_job() -> str:
    (found,) = [j for j in jobs("slurm-proxy-debug") if j[2] == "RUNNING"]
    return found[0]


def test_a_warm_connect_replays_the_decision_of_the_last(env: dict[str, str]) -> None:
    first = session(env)
    second = session(env)  # the first connect to a job checks its node: this one decides anew
    third = session(env)
    assert first[0] == second[0] == third[0] == our_job()
    assert (first[1], third[1]) == (False, True), third[2]
    # -v shows every step: the full path
    proc = as_user([PROXY, "-v", "slurm-debug"], env=env, input=b"")
    assert re.search(r"exec: .*ssh .*-W node1:22", err(proc)), err(proc)


def test_replays_ask_the_asker_one_session_on_the_login_node_keeps_open(env: dict[str, str],
                                                                        user_tmp: Path) -> None:
    log, ssh = user_tmp / "ssh.log", user_tmp / "ssh"
    ssh.write_text('#!/bin/sh\ncase "$*" in *" -W "*) echo hop;; *"while read"*) echo loop;; '
                   f'*) echo command;; esac >> {log}\nexec /usr/bin/ssh "$@"\n')
    ssh.chmod(0o755)
    env = {**env, "SLURM_PROXY_SSH": str(ssh)}
    for _ in range(3):
        session(env)
    assert cluster.sh(f"ls {cluster.STATE}/warm/*.ask").returncode == 0  # an asker listens
    for _ in range(50):  # and has started its loop
        if "loop" in log.read_text():
            break
        time.sleep(0.1)
    before = log.read_text().split()
    for _ in range(3):
        landed, replayed, said = session(env)
        assert replayed and landed == our_job(), said
    # One loop for them all; each replay asked it, and ssh ran nothing but the hop.
    assert before.count("loop") == 1 and log.read_text().split()[len(before):] == ["hop"] * 3


def test_a_job_cancelled_behind_its_back_is_noticed_on_the_same_connect(env: dict[str, str]) -> None:
    for _ in range(3):
        job, _, _ = session(env)
    as_user(["scancel", job], check=True)
    wait_gone(job)
    landed, replayed, said = session(env)
    assert not replayed and "submitted job" in said
    assert landed == our_job() != job


def test_a_new_job_of_the_users_on_the_node_is_noticed_on_the_same_connect(env: dict[str, str]) -> None:
    for _ in range(3):
        job, replayed, _ = session(env)
    assert replayed
    out = text(as_user(["sbatch", "--parsable", "--nodelist=node1", "--cpus-per-task=1", "--time=5",
                        "--output=/dev/null", "--wrap=sleep 300"], check=True))
    neighbour = out.strip().split(";")[0]
    wait_state(neighbour, "RUNNING")
    landed, replayed, said = session(env)
    assert not replayed and f"also runs your job {neighbour}" in said
    assert landed == job
    landed, _, _ = session(env)
    assert landed == job


def test_a_burst_of_four_connects_each_lands_in_the_one_job(env: dict[str, str]) -> None:
    for _ in range(2):
        session(env)
    with ThreadPoolExecutor(4) as pool:
        warm = list(pool.map(lambda _: session(env), range(4)))
    job = our_job()
    assert [w[0] for w in warm] == [job] * 4 and all(w[1] for w in warm)
    as_user(["scancel", job], check=True)
    wait_gone(job)
    with ThreadPoolExecutor(4) as pool:
        cold = list(pool.map(lambda _: session(env), range(4)))
    assert [c[0] for c in cold] == [our_job()] * 4 and len(jobs()) == 1
