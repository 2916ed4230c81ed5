"""Hostile or broken input through the real cluster: what Slurm prints, what the state directory
holds, and host keys the login node does not know. Each ends in one line on stderr, never a
traceback, and nothing is submitted or followed."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import cluster
from .cluster import HOME, SSH, STATE, as_user, err, jobs, text

pytestmark = pytest.mark.usefixtures("clean")
STRICT = [*SSH, "-o", "StrictHostKeyChecking=yes"]


@pytest.fixture
def fake_squeue(user_tmp: Path) -> Iterator[Path]:
    """The login node's `squeue` replaced, for sptest's non-interactive shells, by a script that
    prints the file this fixture returns (bash sources ~/.bashrc for commands run by sshd)."""
    bin_dir = user_tmp / "bin"
    bin_dir.mkdir()
    output = user_tmp / "squeue.out"
    output.write_text("")
    squeue = bin_dir / "squeue"
    squeue.write_text(f"#!/bin/sh\ncat {output}\n")
    squeue.chmod(0o755)
    for p in (bin_dir, output):
        shutil.chown(p, cluster.USER, cluster.USER)
    bashrc = HOME / ".bashrc"
    original = bashrc.read_bytes()
    bashrc.write_bytes(f'export PATH="{bin_dir}:$PATH"\n'.encode() + original)
    try:
        yield output
    finally:
        bashrc.write_bytes(original)


@pytest.mark.parametrize(
    ("squeue_output", "problem"),
    [
        # A line of one of slurm-proxy's own jobs that cannot be read; other jobs' lines are
        # skipped (test_login_nodes), but output in which no line at all is a job is an error.
        pytest.param("12|RUNNING|slurm-proxy-debug|slurm-proxy:test.debug\n", "expected 8 fields",
                     id="truncated"),
        pytest.param("12|RUNNING|None|node1|N/A|soon|slurm-proxy-debug|slurm-proxy:test.debug\n",
                     "bad time left 'soon'", id="bad-time-left"),
        pytest.param("$(id)|RUNNING|None|node1|N/A|59:00|slurm-proxy-debug|slurm-proxy:test.debug\n",
                     "bad job id", id="bad-job-id"),
        pytest.param("\x00\x01\xff garbage\n", "expected 8 fields", id="binary"),
    ],
)
def test_squeue_output_that_does_not_parse(fake_squeue: Path, squeue_output: str, problem: str) -> None:
    fake_squeue.write_text(squeue_output, errors="surrogateescape")
    proc = as_user([*SSH, "slurm-debug", "true"])
    assert proc.returncode != 0
    lines = [ln for ln in err(proc).splitlines() if ln.startswith("slurm-proxy:")]
    assert len(lines) == 1 and "cannot read squeue output" in lines[0] and problem in lines[0], err(proc)
    assert "Traceback" not in err(proc)
    assert jobs() == []  # nothing submitted on output it could not read


@pytest.fixture
def foreign_state() -> Iterator[Path]:
    path = STATE / "state.json"
    yield path
    if path.is_symlink() or path.exists():
        path.unlink()


@pytest.mark.parametrize("kind", ["owned-by-root", "symlink"])
def test_a_state_file_not_the_users_own_is_refused(foreign_state: Path, kind: str) -> None:
    as_user(["mkdir", "-p", str(STATE)], check=True)
    if kind == "symlink":
        target = Path("/tmp") / "sp-state-target.json"
        target.write_text('{"version": 1, "jobs": {}}')
        as_user(["ln", "-s", str(target), str(foreign_state)], check=True)
    else:
        foreign_state.write_text('{"version": 1, "jobs": {}}')
    proc = as_user([*SSH, "slurm-debug", "true"])
    assert proc.returncode != 0
    assert "Traceback" not in err(proc)
    assert f"{foreign_state}:" in err(proc)
    assert jobs() == []
    if kind == "symlink":
        assert target.read_text() == '{"version": 1, "jobs": {}}'  # never followed, never written
        target.unlink()


def test_a_corrupt_state_file_is_set_aside_and_rebuilt() -> None:
    as_user(["mkdir", "-p", str(STATE)], check=True)
    cluster.sh(f"printf '{{not json' > {STATE}/state.json", check=True)
    proc = as_user([*STRICT, "slurm-debug", "echo ok"])
    assert proc.returncode == 0, err(proc)
    assert text(proc).strip() == "ok"
    assert "state file was corrupt" in err(proc)
    assert [p.name for p in STATE.glob("state.json.corrupt-*")]
    for p in STATE.glob("state.json.corrupt-*"):
        p.unlink()


# --- host keys the login node does not know ----------------------------------------------------

@pytest.fixture
def login_knows_no_node_keys() -> Iterator[None]:
    known = cluster.cluster_path("/etc/ssh/ssh_known_hosts")
    original = known.read_bytes()
    known.write_bytes(b"")
    try:
        yield
    finally:
        known.write_bytes(original)


def keyscan_config(tmp: Path, keyscan: bool) -> dict[str, str]:
    path = tmp / "keyscan.toml"
    cluster.write_config(path, f"""
[clusters.test]
login = "testlogin"
keyscan = {str(keyscan).lower()}
[profiles.debug]
partition = "debug"
cpus = 1
""")
    return {"SLURM_PROXY_CONFIG": str(path)}


def test_without_keys_from_the_login_node_ssh_verifies_nothing_silently(
        login_knows_no_node_keys: None, user_tmp: Path) -> None:
    proc = as_user([*STRICT, "slurm-debug", "true"], env=keyscan_config(user_tmp, keyscan=False))
    assert proc.returncode != 0
    assert "knows no host key for node" in err(proc)
    assert "Host key verification failed" in err(proc)


def test_keyscan_from_the_login_node_is_an_opt_in_fallback(login_knows_no_node_keys: None,
                                                            user_tmp: Path) -> None:
    proc = as_user([*STRICT, "slurm-debug", "echo ok"], env=keyscan_config(user_tmp, keyscan=True))
    assert proc.returncode == 0, err(proc)
    assert text(proc).strip() == "ok"
    (_, _, _, node), = jobs()
    node_key = (cluster.CLUSTER_BASE / "keys" / f"{node}.pub").read_text().split()
    assert f"slurm-debug {node_key[0]} {node_key[1]}" in (STATE / "known_hosts").read_text()


@pytest.mark.parametrize("mode", [0o664, 0o646], ids=["group-writable", "world-writable"])
def test_a_config_others_can_change_runs_nothing(user_tmp: Path, mode: int) -> None:
    path = user_tmp / "config.toml"
    cluster.write_config(path, cluster.TEST_CONFIG)
    path.chmod(mode)
    proc = as_user([*SSH, "slurm-debug", "true"], env={"SLURM_PROXY_CONFIG": str(path)})
    assert proc.returncode != 0
    lines = [ln for ln in err(proc).splitlines() if ln.startswith("slurm-proxy:")]
    assert lines == [f"slurm-proxy: {path}: the config file {path} is writable by others; "
                     f"run: chmod go-w {path}"], err(proc)
    assert jobs() == []


def test_a_config_of_ones_own_in_a_sticky_shared_directory_works(user_tmp: Path) -> None:
    shared = Path(tempfile.mkdtemp(prefix="sp-shared-", dir="/tmp"))
    try:
        shared.chmod(0o1777)
        path = shared / "config.toml"
        cluster.write_config(path, cluster.TEST_CONFIG)
        shutil.chown(path, cluster.USER, cluster.USER)  # sptest's own file, 0644, in /tmp's like
        proc = as_user([*SSH, "slurm-debug", "echo ok"], env={"SLURM_PROXY_CONFIG": str(path)})
        assert (proc.returncode, text(proc)) == (0, "ok\n"), err(proc)
    finally:
        shutil.rmtree(shared)
