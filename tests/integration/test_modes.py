"""Every way to reach the job, through the real cluster: modes adopt, sshd and srun, each with
the openssh and the paramiko login backend and the login agent."""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import socket
import stat
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from slurm_proxy import jobscript

from . import cluster, faults
from .cluster import SSH, as_user, config_env, err, jobs, text

pytestmark = pytest.mark.usefixtures("clean")

MODES = ("adopt", "sshd", "srun")
BACKENDS = ("openssh", "paramiko", "agent")
# The smoke tests (every Slurm version) connect in each mode through ssh itself.
COMBINATIONS = [pytest.param(m, b, id=f"{m}-{b}", marks=[pytest.mark.smoke] if b == "openssh" else [])
                for m in MODES for b in BACKENDS]
STRICT = [*SSH, "-o", "StrictHostKeyChecking=yes"]


@pytest.mark.timeout(180)
@pytest.mark.parametrize(("mode", "backend"), COMBINATIONS)
def test_session_copy_and_concurrency(mode: str, backend: str, user_tmp: Path) -> None:
    env = config_env(user_tmp, mode, backend)
    with ThreadPoolExecutor(4) as pool:
        procs = list(pool.map(lambda _: as_user([*STRICT, "slurm-debug", "echo $SLURM_JOB_ID"], env=env),
                              range(4)))
    assert [p.returncode for p in procs] == [0] * 4, [err(p) for p in procs]
    (job_id, _name, state, _node), = jobs("slurm-proxy-debug")
    assert state == "RUNNING"
    assert {text(p).strip() for p in procs} == {job_id}  # every session knows its job
    if mode != "adopt":  # the user's own sshd: the per-user host key, private, is what ssh trusts
        key = cluster.HOME / ".slurm-proxy" / "hostkey" / "ssh_host_ed25519_key"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600 and stat.S_IMODE(key.parent.stat().st_mode) == 0o700
        assert key.stat().st_uid == key.parent.stat().st_uid == pwd.getpwnam(cluster.USER).pw_uid
        kind, blob, *_ = Path(f"{key}.pub").read_text().split()
        assert (cluster.STATE / "known_hosts").read_text() == f"slurm-debug {kind} {blob}\n"

    src = user_tmp / "payload.bin"
    src.write_bytes(os.urandom(50 * 1024 * 1024))
    os.chmod(src, 0o644)
    back = user_tmp / "back.bin"
    remote = f"slurm-debug:{user_tmp}/remote.bin"  # the nodes share this machine's /tmp
    for args in ([str(src), remote], [remote, str(back)]):
        copy = as_user(["scp", "-q", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", *args],
                       env=env)
        assert copy.returncode == 0, err(copy)
    assert hashlib.sha256(back.read_bytes()).digest() == hashlib.sha256(src.read_bytes()).digest()
    assert [j[0] for j in jobs()] == [job_id]


@pytest.fixture
def node_sshds_stopped() -> Iterator[None]:
    try:
        for node in ("node1", "node2"):
            faults.stop_daemon(f"sshd-{node}")
        yield
    finally:
        faults.restore_cluster()


@pytest.fixture
def node_names_unresolvable(request: pytest.FixtureRequest) -> Iterator[None]:
    """Mode srun only: node1 and node2 resolve to nothing (slurmd talks by NodeAddr)."""
    if request.node.callspec.params["mode"] != "srun":
        yield
        return
    hosts = cluster.cluster_path("/etc/hosts")
    original = hosts.read_bytes()
    hosts.write_bytes(b"".join(ln for ln in original.splitlines(keepends=True)
                               if not re.search(rb"\snode[12]\s", ln)))
    try:
        getent = subprocess.run(cluster.on_cluster(["getent", "hosts", "node1"]), capture_output=True)
        assert getent.returncode != 0
        yield
    finally:
        hosts.write_bytes(original)


@pytest.mark.parametrize("mode", ["sshd", "srun"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_modes_sshd_and_srun_need_no_node_sshd(mode: str, backend: str, user_tmp: Path,
                                               node_sshds_stopped: None,
                                               node_names_unresolvable: None) -> None:
    env = config_env(user_tmp, mode, backend)
    proc = as_user([*STRICT, "-o", "ProxyCommand=slurm-proxy -v %h", "slurm-debug", "echo $SLURM_JOB_ID"],
                   env=env)
    assert proc.returncode == 0, err(proc)
    assert text(proc).strip() == jobs()[0][0]
    if mode == "srun":  # nothing ever connects to a node address: the session is srun's stdio
        assert "-W" not in err(proc) and "direct-tcpip" not in err(proc)


def test_mode_adopt_fails_clearly_without_the_node_sshd(user_tmp: Path, node_sshds_stopped: None) -> None:
    proc = as_user([*STRICT, "slurm-debug", "true"], env=config_env(user_tmp, "adopt", "openssh"))
    assert proc.returncode != 0
    assert "node1:22 refuses connections from the login node" in err(proc) \
        or "node2:22 refuses connections from the login node" in err(proc), err(proc)
    assert "Traceback" not in err(proc)


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_windows_path_without_exec(backend: str, user_tmp: Path) -> None:
    env = {**config_env(user_tmp, "adopt", backend), "SLURM_PROXY_NO_EXEC": "1"}
    payload = os.urandom(4 * 1024 * 1024)
    proc = as_user([*STRICT, "slurm-debug", "sha256sum"], env=env, input=payload)
    assert proc.returncode == 0, err(proc)
    assert text(proc).split()[0] == hashlib.sha256(payload).hexdigest()


def test_the_openssh_backend_never_imports_paramiko(user_tmp: Path) -> None:
    env = config_env(user_tmp, "adopt", "openssh")
    log = user_tmp / "imports.log"
    proc = as_user([*SSH, "-o", f"ProxyCommand=python -X importtime -m slurm_proxy %h 2>{log}",
                    "slurm-debug", "true"], env=env)
    assert proc.returncode == 0, err(proc)
    imported = log.read_text()
    assert "slurm_proxy.proxy" in imported and "paramiko" not in imported


def test_mode_sshd_takes_another_port_when_its_first_choice_is_taken(user_tmp: Path) -> None:
    seeded = "RANDOM=7\n"  # bash's RANDOM, seeded, picks the same ports every run
    first = int(text(as_user(["bash", "-c", seeded + "echo $((20000 + RANDOM % 30000))"])))
    script = (seeded + f"ready={user_tmp}/ready\n" + 'say() { echo "$1"; }\n' + jobscript._SSHD_START
              + 'kill "$sshd_pid"\n')
    with socket.create_server(("127.0.1.1", first)):
        proc = as_user(["bash", "-c", script], env={"SLURMD_NODENAME": "127.0.1.1"})
    assert proc.returncode == 0, err(proc)
    port = int(text(proc).split()[-1])
    assert text(proc).startswith("port ") and port != first


@pytest.fixture
def hostkey_blocked() -> Iterator[Path]:
    """A file where the per-user host key directory belongs: the job's sshd cannot start."""
    keydir = cluster.HOME / ".slurm-proxy" / "hostkey"
    aside = keydir.with_name("hostkey.aside")
    cluster.sh(f"mkdir -p {keydir.parent} && rm -rf {aside} && "
               f"if [ -e {keydir} ]; then mv {keydir} {aside}; fi && echo blocked > {keydir}", check=True)
    yield keydir
    cluster.sh(f"rm -f {keydir} && if [ -e {aside} ]; then mv {aside} {keydir}; fi", check=True)


def test_mode_sshd_that_cannot_start_ends_in_one_line_and_ends_its_job(user_tmp: Path,
                                                                      hostkey_blocked: Path) -> None:
    proc = as_user([*STRICT, "slurm-debug", "true"], env=config_env(user_tmp, "sshd", "openssh"))
    assert proc.returncode != 0
    lines = [ln for ln in err(proc).splitlines() if ln.startswith("slurm-proxy:")]
    assert f"cannot create {hostkey_blocked} (is ssh-keygen installed?)" in lines[-1], err(proc)
    assert "Traceback" not in err(proc)
    submitted = re.findall(r"submitted job (\d+)", err(proc))
    assert len(submitted) == 1, err(proc)  # a job was made, and
    cluster.wait_gone(submitted[0])  # its batch script gave up: it ends by itself
