"""Login nodes as users have them, through the real cluster: rc files that print, the shells
tcsh, zsh and fish, Slurm variables exported in an rc file, Slurm on PATH only in a login shell,
other jobs of every kind in the queue, a site rule that refuses jobs, a PTY on every route.
Every fixture changes the test cluster for one test and puts it back."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from . import cluster
from .cluster import PROXY, SSH, as_user, err, jobs, text, wait_gone, wait_state

pytestmark = pytest.mark.usefixtures("clean")

# What rc files print, on stdout and on stderr, before any interactive check: in each shell's
# own file and syntax.
CHATTER = "Welcome to the cluster"
RC_FILES = {
    "bash": (".bashrc", f'echo "{CHATTER}"; echo "module: loaded" >&2\n'),
    "zsh": (".zshenv", f'echo "{CHATTER}"; echo "module: loaded" >&2\n'),
    "tcsh": (".cshrc", f'echo "{CHATTER}"; sh -c "echo module: loaded >&2"\n'),
    "fish": (".config/fish/config.fish", f'echo "{CHATTER}"; echo "module: loaded" >&2\n'),
}
SHELLS = {"bash": "/bin/bash", "zsh": "/usr/bin/zsh", "tcsh": "/usr/bin/tcsh", "fish": "/usr/bin/fish"}
# What users export in an rc file that changes what Slurm's commands say or ask for.
SLURM_VARIABLES = ("SQUEUE_STATES=RUNNING", "SQUEUE_FORMAT=%i", "SQUEUE_SORT=-i",
                   "SLURM_TIME_FORMAT=relative", "SBATCH_CLUSTERS=elsewhere", "SLURM_CLUSTERS=elsewhere",
                   "SBATCH_PARTITION=strict")
Write = Callable[[str, str], None]


def config(tmp: Path, mode: str = "adopt", login: str = "testlogin", *lines: str,
           backend: str = "openssh") -> dict[str, str]:
    path = tmp / f"{mode}-{login}-{backend}.toml"
    extra = "".join(f"{line}\n" for line in lines)
    cluster.write_config(path, f"""
[defaults]
partition = "debug"
time = "10:00"
[clusters.test]
login = "{login}"
mode = "{mode}"
backend = "{backend}"
[profiles.debug]
cpus = 1
{extra}""")
    return {"SLURM_PROXY_CONFIG": str(path)}


@pytest.fixture
def rc_file() -> Iterator[Write]:
    """Put lines at the top of one of sptest's rc files (before any interactive check), for one
    test; the file comes back as it was."""
    saved: dict[Path, bytes | None] = {}

    def write(name: str, lines: str) -> None:
        path = cluster.HOME / name
        if path not in saved:
            saved[path] = path.read_bytes() if path.exists() else None
        cluster.sh(f"mkdir -p {path.parent}", check=True)
        path.write_bytes(lines.encode() + (saved[path] or b""))
        subprocess.run(["chown", f"{cluster.USER}:{cluster.USER}", str(path)], check=True)

    yield write
    for path, content in saved.items():
        if content is None:
            path.unlink()
        else:
            path.write_bytes(content)


@pytest.fixture
def login_shell() -> Iterator[Callable[[str], None]]:
    """sptest's login shell, on the login node and the compute nodes alike (the running
    cluster's, inside its chroot if it has one), for one test."""
    def use(shell: str) -> None:
        subprocess.run(cluster.on_cluster(["usermod", "-s", SHELLS[shell], cluster.USER]), check=True)

    yield use
    subprocess.run(cluster.on_cluster(["usermod", "-s", "/bin/bash", cluster.USER]), check=True)


def lifecycle(env: dict[str, str]) -> None:
    """Everything a user does, on a cluster that is busy at first: 3 concurrent cold connects
    make one job, a warm connect reuses it, status shows it, down cancels it, up makes one."""
    fillers = cluster.fill_cluster()
    argv = cluster.user_argv([*SSH, "slurm-debug", "echo landed"], env)
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)]
    try:
        deadline = time.monotonic() + 60
        while not jobs("slurm-proxy-debug"):
            assert time.monotonic() < deadline, "no job was submitted"
            time.sleep(0.3)
        # A pending job is what an rc file's SQUEUE_STATES=RUNNING would hide: each connect
        # polls the queue while it pends (the first poll comes within a second).
        time.sleep(3)
        assert len(jobs("slurm-proxy-debug")) == 1, jobs()
    finally:
        as_user(["scancel", *fillers], check=True)
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 3, [e.decode() for _, e in results]
    assert all("landed" in out.decode() for out, _ in results)
    (job_id, _, state, _), = jobs("slurm-proxy-debug")
    assert state == "RUNNING"

    warm = as_user([*SSH, "slurm-debug", "echo warm"], env=env)
    assert warm.returncode == 0 and "warm" in text(warm), err(warm)
    assert "submitted" not in err(warm)
    rows = json.loads(text(as_user([PROXY, "status", "--json"], env=env, check=True)))
    assert [(r["profile"], r["job_id"], r["state"]) for r in rows] == [("debug", job_id, "RUNNING")]
    down = as_user([PROXY, "down", "debug"], env=env)
    assert down.returncode == 0 and job_id in text(down), err(down)
    wait_gone(job_id)

    up = as_user([PROXY, "up", "debug"], env=env)
    assert up.returncode == 0, err(up)
    (new_id, _, state, _), = jobs("slurm-proxy-debug")
    assert new_id != job_id and state == "RUNNING"
    assert as_user([PROXY, "down", "debug"], env=env).returncode == 0
    wait_gone(new_id)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("mode", ["adopt", "sshd", "srun"])
@pytest.mark.parametrize("shell", ["bash", "zsh", "tcsh", "fish"])
def test_a_login_shell_whose_rc_file_prints(shell: str, mode: str, rc_file: Write,
                                            login_shell: Callable[[str], None], user_tmp: Path) -> None:
    login_shell(shell)
    rc_file(*RC_FILES[shell])
    # The fixture works: the login shell prints on both streams before any command.
    seen = as_user([*SSH, "testlogin", "true"])
    assert CHATTER in text(seen) and "module: loaded" in err(seen)
    lifecycle(config(user_tmp, mode))


def test_what_the_rc_file_printed_shows_with_v(rc_file: Write, user_tmp: Path) -> None:
    rc_file(*RC_FILES["bash"])
    proc = as_user([PROXY, "-v", "up", "debug"], env=config(user_tmp))
    assert proc.returncode == 0, err(proc)
    said = [line for line in err(proc).splitlines() if "printed before the command" in line]
    assert len(said) == 1 and CHATTER in said[0] and "scp, sftp and rsync" in said[0], err(proc)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("mode", ["adopt", "sshd"])
def test_slurm_variables_in_the_rc_file_change_nothing(mode: str, rc_file: Write, user_tmp: Path) -> None:
    rc_file(".bashrc", "".join(f"export {v}\n" for v in SLURM_VARIABLES))
    lifecycle(config(user_tmp, mode))


@pytest.mark.timeout(300)
@pytest.mark.parametrize("mode", ["adopt", "srun"])
def test_slurm_only_on_a_login_shells_path(mode: str, user_tmp: Path) -> None:
    env = config(user_tmp, mode, "testlogin-nopath")
    # The fixture works: a plain command on that login finds no squeue.
    assert "not found" in err(as_user([*SSH, "testlogin-nopath", "squeue"]))
    first = as_user([PROXY, "status"], env=env)
    assert first.returncode == 0, err(first)
    assert "squeue is on PATH on testlogin-nopath only in a login shell" in err(first), err(first)
    lifecycle(env)


def test_login_shell_false_in_the_config_is_obeyed(user_tmp: Path) -> None:
    env = config(user_tmp, "adopt", "testlogin-nopath")
    path = Path(env["SLURM_PROXY_CONFIG"])
    text_ = path.read_text().replace('mode = "adopt"', 'mode = "adopt"\nlogin_shell = false')
    cluster.write_config(path, text_)
    proc = as_user([PROXY, "status"], env=env)
    assert proc.returncode == 1
    assert "squeue failed" in err(proc) and "not found" in err(proc)


@pytest.fixture
def other_jobs() -> Iterator[list[str]]:
    """sptest's own jobs of every kind beside slurm-proxy's: a held pending array, a running
    array task, a heterogeneous job (one component on each node)."""
    def sbatch(*args: str, script: str = "") -> str:
        argv = ["sbatch", "--parsable", "--output=/dev/null", "-c", "1", *args]
        proc = as_user(argv, input=script.encode() if script else None, check=True)
        return text(proc).strip()

    held = sbatch("--array=1-4%1", "--hold", "--wrap", "sleep 300")
    task = sbatch("--array=7", "-w", "node2", "--wrap", "sleep 300")
    het = sbatch(script="#!/bin/sh\n#SBATCH -w node1\n#SBATCH hetjob\n#SBATCH -c 1 -w node2\nsleep 300\n")
    wait_state(f"{task}_7", "RUNNING")
    wait_state(f"{het}+0", "RUNNING")
    yield [held, task, het]


def test_any_queue(other_jobs: list[str], user_tmp: Path) -> None:
    env = config(user_tmp)
    before = {j[0] for j in jobs()}
    assert any("_[" in j for j in before) and any("+" in j for j in before), before
    for argv in ([*SSH, "slurm-debug", "echo landed"], [PROXY, "up", "debug"]):
        proc = as_user(argv, env=env)
        assert proc.returncode == 0, err(proc)
    rows = json.loads(text(as_user([PROXY, "status", "--json"], env=env, check=True)))
    (job_id, *_), = jobs("slurm-proxy-debug")
    assert [(r["profile"], r["job_id"]) for r in rows] == [("debug", job_id)]
    down = as_user([PROXY, "down", "--all"], env=env)
    assert down.returncode == 0 and text(down) == f"cancelled {job_id}\n", text(down) + err(down)
    wait_gone(job_id)
    assert {j[0] for j in jobs()} == before


@pytest.mark.parametrize("mode", ["adopt", "sshd", "srun", "adopt-shared"])
def test_a_pty_on_every_route(mode: str, user_tmp: Path) -> None:
    if mode == "adopt-shared":  # another job of the user's on the node: the session goes by srun
        env = config(user_tmp, "adopt", "testlogin", 'sbatch_args = ["--nodelist=node1"]')
        other = text(as_user(["sbatch", "--parsable", "-w", "node1", "-c", "1", "--output=/dev/null",
                              "--wrap", "sleep 300"], check=True)).strip()
        wait_state(other, "RUNNING")
    else:
        env = config(user_tmp, mode)
    proc = as_user([*SSH, "-tt", "slurm-debug", "tty; echo job=$SLURM_JOB_ID"], env=env)
    assert proc.returncode == 0, err(proc)
    assert re.search(r"^/dev/pts/\d+\r?$", text(proc), re.M), text(proc) + err(proc)
    (job_id, *_), = jobs("slurm-proxy-debug")
    if mode != "adopt":  # the sshd of the job's own, or srun's step: it knows its job
        assert f"job={job_id}" in text(proc)
    if mode == "adopt-shared":
        assert "through srun" in err(proc)


def test_a_site_rule_that_refuses_the_job_is_one_line_and_nothing_is_queued(user_tmp: Path) -> None:
    env = config(user_tmp, "adopt", "testlogin", "[profiles.strict]", 'partition = "strict"')
    for argv in ([*SSH, "slurm-strict", "true"], [PROXY, "up", "strict"]):
        proc = as_user(argv, env=env)
        assert proc.returncode != 0
        said = [line for line in err(proc).splitlines() if line.startswith("slurm-proxy:")]
        assert len(said) == 1, err(proc)
        assert "sbatch failed: partition strict: every job must name an account" in said[0]
        assert "Traceback" not in err(proc)
    assert jobs() == []


@pytest.mark.parametrize("backend", ["openssh", "paramiko", "agent"])
def test_a_login_that_refuses_tcp_forwarding_sends_sessions_through_srun(backend: str,
                                                                        user_tmp: Path) -> None:
    env = config(user_tmp, "adopt", "testlogin-nofwd", backend=backend)
    # The fixture works: that login node refuses ssh -W.
    refused = as_user([*SSH, "-W", "127.0.1.1:22", "testlogin-nofwd"], input=b"")
    assert refused.returncode == 255 and "prohibited" in err(refused), err(refused)
    first = as_user([*SSH, "slurm-debug", "echo job=$SLURM_JOB_ID"], env=env)
    assert first.returncode == 0, err(first)
    (job_id, *_), = jobs("slurm-proxy-debug")
    assert f"job={job_id}" in text(first)  # srun's step in the job: it knows its job
    said = [line for line in err(first).splitlines() if "refuses TCP forwarding" in line]
    assert len(said) == 1 and "through srun" in said[0], err(first)
    warm = as_user([*SSH, "slurm-debug", "echo job=$SLURM_JOB_ID"], env=env)
    assert warm.returncode == 0 and f"job={job_id}" in text(warm), err(warm)
    assert "refuses" not in err(warm)
    doctor = as_user([PROXY, "doctor"], env=env)
    assert "TCP forwarding: testlogin-nofwd refuses it" in text(doctor), text(doctor)


def test_doctor_says_a_login_forwards(user_tmp: Path) -> None:
    doctor = as_user([PROXY, "doctor"], env=config(user_tmp))
    assert "TCP forwarding: testlogin forwards (ssh -W): mode adopt works" in text(doctor), text(doctor)
