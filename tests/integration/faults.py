"""Faults for the loopback test cluster: stopping its daemons by pid file and bringing them back,
slurmctld's RPC counters, and what slurm-proxy left behind (its jobs, its state, its locks)."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from . import cluster
from .cluster import STATE, TESTCLUSTER, as_user, jobs

BASE = cluster.CLUSTER_BASE
DAEMONS = ("slurmctld", "slurmd-node1", "slurmd-node2", "sshd-login", "sshd-node1", "sshd-node2")
NODE_ADDRESS = {"node1": "127.0.1.1", "node2": "127.0.1.2"}
LOCKS = STATE / "locks"

# -- daemons ---------------------------------------------------------------------------------
def daemon_pid(name: str) -> int | None:
    """The live process the daemon's pid file names, if any."""
    try:
        pid = int((BASE / "run" / f"{name}.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    return pid


def stop_daemon(name: str) -> None:
    """Stop the one process the pid file names (SIGTERM, then SIGKILL after 10 s)."""
    pid = daemon_pid(name)
    assert pid is not None, f"{name} is not running"
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while _alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    (BASE / "run" / f"{name}.pid").unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie child of ours would still answer; the daemons are not our children
    return True


def start_stopped() -> None:
    """`contrib/testcluster/up` without reinstalling slurm-proxy: restarts what is not running."""
    up = [str(TESTCLUSTER / "up"), "--slurm", cluster.SLURM_VERSION]
    proc = subprocess.run(up, env={**os.environ, "SP_TC_NO_PROXY": "1"},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def restore_cluster() -> None:
    """Every daemon running again (and the nodes idle or allocated, not down)."""
    if any(daemon_pid(d) is None for d in DAEMONS):
        start_stopped()
    down = [d for d in DAEMONS if daemon_pid(d) is None]
    assert not down, f"not running after contrib/testcluster/up: {down}"


# -- ssh connection sharing --------------------------------------------------------------------
def close_masters() -> None:
    """End sptest's ssh control masters to the login node: the next connect starts a new one."""
    for sock in cluster.control_sockets():
        as_user(["ssh", "-O", "exit", "-o", f"ControlPath={sock}", "unused"])


# -- what slurm-proxy left behind ---------------------------------------------------------------
def state_jobs() -> dict[str, dict[str, object]]:
    """Profile key → the job record in sptest's state file (empty when there is none)."""
    try:
        data = json.loads((STATE / "state.json").read_text())
    except FileNotFoundError:
        return {}
    jobs_ = data.get("jobs", {})
    assert isinstance(jobs_, dict)
    return jobs_


def proxy_jobs() -> list[tuple[str, str, str, str]]:
    """sptest's live jobs named like slurm-proxy's, as (id, name, state, nodes)."""
    return [j for j in jobs() if j[1].startswith("slurm-proxy-") and j[2] != "COMPLETING"]


def assert_jobs_accounted(expected: set[str]) -> None:
    """slurm-proxy's live jobs are exactly ``expected``, at most one per profile, and each is
    the one the state file records for its profile (so connects reuse it and `down` cancels
    it): no job is left behind without a reason to exist."""
    live = proxy_jobs()
    assert {j[0] for j in live} == expected, f"expected {sorted(expected)}, queue: {jobs()}"
    names = [j[1] for j in live]
    assert len(names) == len(set(names)), f"two jobs for one profile: {live}"
    recorded = {str(rec.get("job_id")) for rec in state_jobs().values()}
    assert {j[0] for j in live} <= recorded, f"jobs the state does not record: {live} vs {recorded}"


def lock_held(path: Path) -> bool:
    """Does some process hold the flock on ``path`` (as filelock takes it)?"""
    if not path.exists():
        return False
    proc = as_user(["flock", "--nonblock", "--conflict-exit-code", "99", str(path), "true"])
    assert proc.returncode in (0, 99), cluster.err(proc)
    return proc.returncode == 99


def proxy_lines(stderr: str) -> list[str]:
    """slurm-proxy's own lines among ssh's."""
    return [ln for ln in stderr.splitlines() if ln.startswith("slurm-proxy: ")]


def wait_for(what: str, cond: Callable[[], object], timeout: float, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {jobs()}"
        time.sleep(interval)


def popen_as_user(argv: list[str], env: dict[str, str] | None = None,
                  pidfile: Path | None = None) -> tuple[subprocess.Popen[bytes], int | None]:
    """Start argv as sptest in the background. With ``pidfile``, argv is exec'd by a shell that
    writes its pid there first, so the returned pid is argv's own (for signals)."""
    if pidfile is not None:
        argv = ["sh", "-c", f"echo $$ > {shlex.quote(str(pidfile))}; exec \"$@\"", "sh", *argv]
    proc = subprocess.Popen(cluster.user_argv(argv, env), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if pidfile is None:
        return proc, None
    deadline = time.monotonic() + 10
    while not (pidfile.exists() and pidfile.read_text().strip()):
        assert time.monotonic() < deadline, "the process never started"
        time.sleep(0.02)
    return proc, int(pidfile.read_text())


# -- slurmctld's RPC statistics ---------------------------------------------------------------
def reset_rpc_counts() -> None:
    subprocess.run(cluster.on_cluster(["sdiag", "--reset"]), capture_output=True, check=True)


def rpc_count(user: str = cluster.USER) -> int:
    """RPCs slurmctld received from ``user`` since the last reset (`sdiag`, by user)."""
    out = subprocess.run(cluster.on_cluster(["sdiag"]), capture_output=True, text=True, check=True).stdout
    _, _, section = out.partition("Remote Procedure Call statistics by user")
    for line in section.splitlines()[1:]:
        m = re.match(r"\s+(\S+)\s+\(\s*\d+\)\s+count:(\d+)", line)
        if not m:
            if line.strip():
                break  # the next section
            continue
        if m.group(1) == user:
            return int(m.group(2))
    return 0
