"""Inside the session: a profile's setup lines, its container, and its time limit (through the
real cluster; the container runtime is bubblewrap, through the same path as Apptainer's)."""

from __future__ import annotations

import hashlib
import re
import subprocess
import time
from pathlib import Path

import pytest

from . import cluster
from .cluster import SSH, as_user, err, jobs, text

pytestmark = pytest.mark.usefixtures("clean")
IMAGE = "/var/lib/slurm-proxy-testcluster/image"
# /etc/os-release is a link to /usr/lib/os-release (Debian 11-13); bwrap 0.11 will not mount on a link
BWRAP = ('["bwrap", "--ro-bind", "/", "/", "--ro-bind", "{image}/etc/os-release", "/usr/lib/os-release", '
         '"--dev", "/dev", "--proc", "/proc", "--bind", "/home", "/home", "--bind", "/tmp", "/tmp", '
         '"--unshare-user", "--unshare-pid", "--die-with-parent"]')
SETUP = '["export SP_SETUP=yes", "false", "echo setup-says-hello"]'
CONFIG = f"""
[defaults]
partition = "debug"
time = "10:00"
cpus = 1
[clusters.test]
login = "testlogin"
[profiles.setup-sshd]
mode = "sshd"
setup = {SETUP}
[profiles.setup-srun]
mode = "srun"
setup = {SETUP}
[profiles.setup-adopt]
setup = {SETUP}
[profiles.ctr]
mode = "sshd"
container = "{IMAGE}"
container_runtime = {BWRAP}
[profiles.ctr-adopt]
container = "{IMAGE}"
container_runtime = {BWRAP}
[profiles.missing]
container = "~/no-such-image.sif"
[profiles.gpu-srun]
mode = "srun"
gres = "gpu:1"
[profiles.short]
time = "2:00"
warn_before = "1:30"
renew_before = "1:45"
idle_check = 1
"""


@pytest.fixture
def env(user_tmp: Path) -> dict[str, str]:
    path = user_tmp / "config.toml"
    cluster.write_config(path, CONFIG)
    return {"SLURM_PROXY_CONFIG": str(path)}


@pytest.mark.parametrize("mode", ["sshd", "srun"])
def test_setup_runs_in_every_kind_of_session(env: dict[str, str], mode: str) -> None:
    alias = f"slurm-setup-{mode}"
    command = as_user([*SSH, alias, 'echo "v=$SP_SETUP"'], env=env)
    assert (command.returncode, text(command)) == (0, "v=yes\n"), err(command)  # setup's output: stderr
    assert "setup-says-hello" in err(command)
    assert "slurm-proxy: setup line failed (exit 1): false" in err(command)
    vscode = as_user([*SSH, alias, "bash"], env=env, input=b'echo "v=$SP_SETUP"\n')
    assert text(vscode) == "v=yes\n", err(vscode)
    # a login shell, as `ssh alias` opens (without a terminal: this machine's /dev/pts is mounted
    # without gid=5, so a user's own sshd cannot hand out terminals here)
    login_shell = as_user([*SSH, "-T", alias], env=env, input=b'echo "v=$SP_SETUP"; exit\n')
    assert "v=yes" in text(login_shell), text(login_shell) + err(login_shell)


def test_setup_in_mode_adopt_through_env_sh(env: dict[str, str]) -> None:
    proc = as_user([*SSH, "slurm-setup-adopt", '. ~/.slurm-proxy/env.sh; echo "v=$SP_SETUP"'], env=env)
    assert text(proc) == "v=yes\n", err(proc)


@pytest.mark.parametrize("alias", ["slurm-ctr", "slurm-ctr-adopt"])
def test_every_session_runs_in_the_container(env: dict[str, str], user_tmp: Path, alias: str) -> None:
    proc = as_user([*SSH, alias, 'head -n 1 /etc/os-release; echo "job=$SLURM_JOB_ID"'], env=env)
    lines = text(proc).splitlines()
    assert lines[0] == 'NAME="slurm-proxy test image"', err(proc)
    assert re.fullmatch(r"job=\d+", lines[1]), lines
    data = user_tmp / "blob"
    data.write_bytes(hashlib.sha256(b"seed").digest() * (20 * 1024 * 1024 // 32))
    data.chmod(0o644)
    scp = as_user(["scp", "-o", "BatchMode=yes", str(data), f"{alias}:/tmp/sp-ctr-blob"], env=env)
    assert scp.returncode == 0, err(scp)
    remote = as_user([*SSH, alias, "sha256sum < /tmp/sp-ctr-blob; rm -f /tmp/sp-ctr-blob"], env=env)
    assert text(remote).split()[0] == hashlib.sha256(data.read_bytes()).hexdigest()
    sftp = as_user(["sftp", "-o", "BatchMode=yes", "-b", "-", alias], env=env, input=b"pwd\n")
    assert sftp.returncode == 0 and "Remote working directory: /home/sptest" in text(sftp), err(sftp)


def test_a_missing_image_is_one_line_and_no_job(env: dict[str, str]) -> None:
    proc = as_user([*SSH, "slurm-missing", "true"], env=env)
    lines = [ln for ln in err(proc).splitlines() if ln.startswith("slurm-proxy:")]
    assert lines == ["slurm-proxy: container image ~/no-such-image.sif not found on testlogin (checked "
                     "before submitting; no job submitted)"], err(proc)
    assert jobs() == []


def open_session(env: dict[str, str]) -> subprocess.Popen[bytes]:
    """An ``ssh -tt`` session to slurm-short for 55 s, once its command has started (and a
    second later, so one that ends at once has ended)."""
    session = subprocess.Popen(cluster.user_argv([*SSH, "-tt", "slurm-short", "echo up; exec sleep 55"], env),
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert session.stdout is not None
    session.stdout.readline()
    time.sleep(1)
    return session


@pytest.mark.timeout(240)
def test_walltime_warns_renews_once_and_the_next_connect_does_not_wait(env: dict[str, str]) -> None:
    first = as_user([*SSH, "slurm-short", "true"], env=env)
    assert first.returncode == 0 and "ends in" not in err(first), err(first)
    (old, *_), = jobs("slurm-proxy-short")
    start = time.monotonic()
    # a session that is open when the warning comes (90 s before the end: 30 s after the start)
    session, ended = open_session(env), None
    if session.poll() is not None:
        # Slurm 24.11 has (rarely, not reproduced alone) ended such a session on the node at once
        ended = (session.returncode, *session.communicate())
        session = open_session(env)
    assert session.poll() is None, (ended, session.returncode, *session.communicate())
    # 80 s left (under renew_before): the successor starts 40 s after the old job, more than
    # slurmctld's 30 s between time-limit sweeps, so one sweep never ends both
    time.sleep(max(0.0, start + 40 - time.monotonic()))
    renew = as_user([*SSH, "slurm-short", "true"], env=env)
    assert "to follow the running one" in err(renew), err(renew)
    again = as_user([*SSH, "slurm-short", "true"], env=env)
    assert "submitted" not in err(again) and len(jobs("slurm-proxy-short")) == 2  # never two successors
    new = next(j[0] for j in jobs("slurm-proxy-short") if j[0] != old)
    time.sleep(max(0.0, start + 45 - time.monotonic()))  # under 90 s left: warn_before
    warned = as_user([*SSH, "slurm-short", "true"], env=env)
    assert f"job {old} ends in" in err(warned) and "its time limit" in err(warned), err(warned)
    out, said = session.communicate(timeout=60)
    told = f"slurm-proxy: job {old} ends in" in out.decode(errors="replace")
    assert told, (ended, session.returncode, out, said)
    deadline = time.monotonic() + 150  # until the old job stops running (not until squeue forgets it)
    while any(j[0] == old and j[2] == "RUNNING" for j in jobs()):
        assert time.monotonic() < deadline, jobs()
        time.sleep(0.5)
    after = as_user([*SSH, "slurm-short", 'echo "job=$SLURM_JOB_ID"'], env=env)
    # at once on the successor (which, with a 2-minute limit, soon wants its own successor)
    assert text(after) == f"job={new}\n" and "pending" not in err(after), err(after)


@pytest.mark.smoke
def test_doctor_node_says_what_a_nested_srun_shares_on_this_slurm(env: dict[str, str]) -> None:
    out = text(as_user([cluster.PROXY, "doctor", "setup-adopt", "--node"], env=env))
    if cluster.version() < (22, 5):
        assert f"! nested srun: Slurm {cluster.SLURM_VERSION}." in out and "--gres=none" in out, out
        assert f"! pam_slurm_adopt: Slurm {cluster.SLURM_VERSION}." in out, out
        # what it warns of: a nested srun waits while the job's GPU is held by another step
        proc = as_user([*SSH, "slurm-gpu-srun", "timeout 10 srun --overlap -n1 true; echo rc=$?"], env=env)
        assert "rc=124" in text(proc), text(proc) + err(proc)
        proc = as_user([*SSH, "slurm-gpu-srun", "srun --overlap --gres=none --mem=0 -n1 echo nested"],
                       env=env)
        assert text(proc) == "nested\n", err(proc)
    else:
        assert f"✓ nested srun: Slurm {cluster.SLURM_VERSION}." in out, out
        proc = as_user([*SSH, "slurm-gpu-srun", "srun --overlap -n1 printenv CUDA_VISIBLE_DEVICES"], env=env)
        assert text(proc) == "0\n", err(proc)


def test_doctor_node_finds_stray_output_and_a_memory_cap(env: dict[str, str]) -> None:
    bashrc = cluster.HOME / ".bashrc"
    original = bashrc.read_bytes()
    # only in sessions on a node, inside a job: the login node's commands stay quiet
    bashrc.write_bytes(b"grep -q job_ /proc/self/cgroup && echo stray-hello\n"
                       b"grep -q job_ /proc/self/cgroup && ulimit -v 4000000\n" + original)
    try:
        proc = as_user([cluster.PROXY, "doctor", "setup-adopt", "--node"], env=env)
    finally:
        bashrc.write_bytes(original)
    out = text(proc)
    assert proc.returncode == 1, out + err(proc)
    assert f"✗ quiet sessions: a non-interactive session prints 'stray-hello' (from {bashrc}:1)" in out, out
    assert "✗ virtual memory: ulimit -v is 4000000 KB" in out, out
    glibc = subprocess.run(cluster.on_cluster(["getconf", "GNU_LIBC_VERSION"]), capture_output=True,
                           text=True, check=True).stdout.split()[-1]  # the nodes' own: 2.36 on Debian 12
    assert f"✓ glibc: {glibc}" in out and "internet" in out, out


@pytest.mark.parametrize("mode", ["sshd", "srun"])
def test_a_nested_srun_in_a_session_runs_in_the_job(env: dict[str, str], mode: str) -> None:
    nested = 'echo "step=${SLURM_STEP_ID-none}"; srun --overlap -N1 -n1 printenv SLURM_JOB_ID'
    proc = as_user([*SSH, f"slurm-setup-{mode}", nested], env=env)
    lines = text(proc).splitlines()
    assert lines[0] == "step=none" and re.fullmatch(r"\d+", lines[1]), text(proc) + err(proc)
