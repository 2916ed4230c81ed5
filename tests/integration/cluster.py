"""Driving the loopback test cluster (contrib/testcluster) as its unprivileged user, sptest."""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTCLUSTER = ROOT / "contrib" / "testcluster"
USER = "sptest"
OTHER_USER = "sptest2"  # another local user, who must never get at sptest's agent
HOME = Path("/home") / USER
VENV = Path(os.environ.get("SP_TC_VENV", "/opt/slurm-proxy/venv"))
PROXY = str(VENV / "bin" / "slurm-proxy")
STATE = HOME / ".local" / "state" / "slurm-proxy"
SSH = ["ssh", "-o", "BatchMode=yes"]
BASE = Path(os.environ.get("SP_TC_BASE", "/var/lib/slurm-proxy-testcluster"))


def _active() -> tuple[str, Path]:
    """The Slurm version that runs and the root of its cluster: / for the host's own Slurm, a
    Debian chroot for another (`up --slurm`, recorded in $SP_TC_BASE/active)."""
    try:
        version, root = (BASE / "active").read_text().split()
    except (OSError, ValueError):
        return "22.05", Path("/")
    return version, Path(root)


SLURM_VERSION, CLUSTER_ROOT = _active()


def version() -> tuple[int, int]:
    """The running Slurm's version, (22, 5) for 22.05."""
    major, minor = SLURM_VERSION.split(".")[:2]
    return int(major), int(minor)

# The cluster's own files (pid files, logs, host keys) as this machine sees them.
CLUSTER_BASE = CLUSTER_ROOT / "var/lib/slurm-proxy-testcluster" if Path("/") != CLUSTER_ROOT else BASE
# Commands of the cluster's Slurm: run inside its root (a client speaks only to its own version).
SLURM_COMMANDS = frozenset({"sbatch", "squeue", "scancel", "sinfo", "scontrol", "sdiag", "srun", "sacct"})


def on_cluster(argv: list[str]) -> list[str]:
    """argv run where the cluster's Slurm is (inside its chroot, if it has one)."""
    return argv if Path("/") == CLUSTER_ROOT else ["chroot", str(CLUSTER_ROOT), *argv]


def cluster_path(path: str) -> Path:
    """A path of the cluster's machine (/etc/hosts, /etc/pam.d/…) as this machine sees it."""
    return CLUSTER_ROOT / path.lstrip("/")


def user_argv(argv: list[str], env: dict[str, str] | None = None) -> list[str]:
    """argv run as sptest with a clean login-like environment (no root env leaks in); a Slurm
    command runs on the cluster's side."""
    base = {"HOME": str(HOME), "USER": USER, "LOGNAME": USER, "PATH": f"{VENV}/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8"}
    base.update(env or {})
    run = ["runuser", "-u", USER, "--", "env", "-i", *(f"{k}={v}" for k, v in base.items()), *argv]
    return on_cluster(run) if argv and argv[0] in SLURM_COMMANDS else run


def as_user(argv: list[str], *, env: dict[str, str] | None = None, input: bytes | None = None,
            timeout: float = 90, check: bool = False) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(user_argv(argv, env), input=input, capture_output=True, timeout=timeout,
                          check=check)


def sh(script: str, **kw: object) -> subprocess.CompletedProcess[bytes]:
    return as_user(["sh", "-c", script], **kw)  # type: ignore[arg-type]


def text(proc: subprocess.CompletedProcess[bytes]) -> str:
    return proc.stdout.decode(errors="replace")


def err(proc: subprocess.CompletedProcess[bytes]) -> str:
    return proc.stderr.decode(errors="replace")


def jobs(name: str | None = None) -> list[tuple[str, str, str, str]]:
    """sptest's jobs as (id, name, state, nodes)."""
    argv = ["squeue", "--me", "--noheader", "--format=%i|%j|%T|%N"]
    if name:
        argv.append(f"--name={name}")
    out = text(as_user(argv, check=True))
    return [tuple(line.split("|")) for line in out.splitlines() if line.strip()]  # type: ignore[misc]


def cancel_all() -> None:
    """Cancel every sptest job and wait until the queue is empty."""
    as_user(["scancel", "--user", USER])
    deadline = time.monotonic() + 60
    while jobs() and time.monotonic() < deadline:
        time.sleep(0.3)
    assert not jobs(), f"jobs would not go away: {jobs()}"


def control_sockets() -> list[str]:
    """sptest's ssh control sockets that slurm-proxy made (the state directory's, and /tmp's for
    a state directory too deep for a socket path), not its login agent's."""
    uid = text(as_user(["id", "-u"])).strip()
    dirs = " ".join(shlex.quote(d) for d in (str(STATE / "cm"), f"/tmp/slurm-proxy-{uid}"))
    found = text(sh(f"find {dirs} -maxdepth 1 -type s 2>/dev/null")).split()
    return [s for s in found if s not in agent_sockets()]


def agent_sockets() -> list[str]:
    """The socket file of sptest's login agent, if there is one (alive or left by a killed one)."""
    from slurm_proxy.login import wire

    path = wire.address(STATE, "linux", uid=HOME.stat().st_uid)
    return [path] if sh(f"test -S {shlex.quote(path)}").returncode == 0 else []


def stop_agent() -> None:
    """Stop sptest's login agent, if one runs (by asking it: it knows its own pid)."""
    as_user([PROXY, "agent", "--stop"], check=True)


def reset_state() -> None:
    """No job records, nothing learned about login hosts (login-hosts/), no warm memos (warm/)."""
    sh("rm -rf " + " ".join(shlex.quote(str(STATE / name)) for name in ("state.json", "login-hosts", "warm")),
       check=True)


def wait_state(job_id: str, state: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [j for j in jobs() if j[0] == job_id]
        if found and found[0][2] == state:
            return
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} never reached {state}: {jobs()}")


def wait_gone(job_id: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while any(j[0] == job_id for j in jobs()):
        assert time.monotonic() < deadline, f"job {job_id} still there: {jobs()}"
        time.sleep(0.3)


# The tests' own config: the cluster's login node and a few kinds of job.
TEST_CONFIG = """
[defaults]
partition = "debug"
time = "10:00"
[clusters.test]
login = "testlogin"
[profiles.debug]
cpus = 1
[profiles.idle]
cpus = 1
idle_timeout = 4
idle_check = 1
[profiles.idle-sshd]
cpus = 1
idle_timeout = 4
idle_check = 1
mode = "sshd"
[profiles.idle-srun]
cpus = 1
idle_timeout = 4
idle_check = 1
mode = "srun"
[profiles.patient]
cpus = 1
pending_timeout = 120
[profiles.short]
cpus = 1
time = "1"
[profiles.gpu1]
gres = "gpu:1"
[profiles.gpu2]
gres = "gpu:2"
[profiles.later]
cpus = 1
sbatch_args = ["--begin=now+120"]
pending_timeout = 120
"""


def config_env(tmp: Path, mode: str, backend: str, *extra: str) -> dict[str, str]:
    """The environment of a config with one profile, debug, in ``mode`` through ``backend``
    (and ``extra`` lines for the cluster)."""
    path = tmp / f"{mode}-{backend}.toml"
    lines = "".join(f"{line}\n" for line in extra)
    write_config(path, f"""
[defaults]
partition = "debug"
time = "1:00:00"
[clusters.test]
login = "testlogin"
mode = "{mode}"
backend = "{backend}"
{lines}[profiles.debug]
cpus = 1
""")
    return {"SLURM_PROXY_CONFIG": str(path)}


def fill_cluster() -> list[str]:
    """Occupy every CPU of both nodes with sptest jobs that are not slurm-proxy's."""
    ids = [text(as_user(["sbatch", "--parsable", "-w", node, "-c", "2", "--output=/dev/null",
                         "--wrap", "sleep 300"], check=True)).strip() for node in ("node1", "node2")]
    for i in ids:
        wait_state(i, "RUNNING")
    return ids


def write_config(path: Path, body: str) -> None:
    """A file sptest can read."""
    path.write_text(body)
    os.chmod(path, 0o644)
