"""The login agent (backend = "agent", the default on Windows), forced on Linux, through the real
cluster: one login for many connects, a killed agent replaced, idle exit, other users shut out,
and file transfers in every mode."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from slurm_proxy.login import wire

from . import cluster
from .cluster import PROXY, SSH, as_user, err, jobs, text
from .faults import popen_as_user, wait_for

pytestmark = pytest.mark.usefixtures("clean", "no_agent")

LOGIN_LOG = cluster.CLUSTER_BASE / "log" / "sshd-login.log"
AGENT_LOG = cluster.STATE / "agent.log"
STRICT = [*SSH, "-o", "StrictHostKeyChecking=yes"]


def agent_env(tmp: Path, mode: str = "adopt", idle: int = 600) -> dict[str, str]:
    return cluster.config_env(tmp, mode, "agent", f"agent_idle = {idle}")


def logins() -> int:
    """Logins of sptest to the login node so far, as its sshd logged them."""
    return len(re.findall(r"Accepted publickey for sptest ", LOGIN_LOG.read_text(errors="replace")))


def agent_pid() -> int | None:
    proc = as_user([PROXY, "agent", "--status"])
    assert proc.returncode == 0, err(proc)
    found = re.match(r"agent: pid (\d+),", text(proc))
    return int(found.group(1)) if found else None


@pytest.fixture
def no_agent() -> Iterator[None]:
    cluster.stop_agent()
    yield
    cluster.stop_agent()


def test_eight_concurrent_cold_connects_log_in_once(user_tmp: Path) -> None:
    env = agent_env(user_tmp)
    before = logins()
    with ThreadPoolExecutor(8) as pool:
        procs = list(pool.map(lambda _: as_user([*SSH, "slurm-debug", "echo ok"], env=env), range(8)))
    failed = [err(p) for p in procs if p.returncode != 0 or text(p) != "ok\n"]
    assert not failed, failed
    assert logins() - before == 1
    assert len(jobs("slurm-proxy-debug")) == 1
    assert sum("starting the slurm-proxy agent" in err(p) for p in procs) == 1
    # and later connects, queries and tunnels alike, ride the same login
    again = as_user([*SSH, "slurm-debug", "echo again"], env=env)
    assert text(again) == "again\n" and logins() - before == 1


def test_status_shows_the_login_and_stop_ends_the_agent(user_tmp: Path) -> None:
    env = agent_env(user_tmp)
    assert as_user([*SSH, "slurm-debug", "true"], env=env).returncode == 0
    shown = as_user([PROXY, "agent", "--status"], env=env)
    assert re.match(r"agent: pid \d+, up 0:00:\d\d, exits after 0:10:00 with no login and no connect\n"
                    r"  testlogin: logged in 0:00:\d\d ago, unused for 0:00:\d\d\n$", text(shown)), \
        text(shown)
    stopped = as_user([PROXY, "agent", "--stop"], env=env)
    assert re.fullmatch(r"stopped the agent \(pid \d+\)\n", text(stopped)), text(stopped) + err(stopped)
    assert text(as_user([PROXY, "agent", "--status"], env=env)) == "no agent is running\n"


def test_a_killed_agent_ends_its_sessions_and_the_next_connect_starts_another(user_tmp: Path) -> None:
    env = agent_env(user_tmp)
    session, _ = popen_as_user([*SSH, "slurm-debug", "echo started; sleep 60"], env=env)
    assert session.stdout is not None and session.stdout.readline() == b"started\n"
    pid = agent_pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    _, stderr = session.communicate(timeout=30)
    assert session.returncode == 255
    assert "the slurm-proxy agent went away" in stderr.decode(), stderr.decode()
    assert cluster.agent_sockets(), "a killed agent leaves its socket file behind"
    after = as_user([*SSH, "slurm-debug", "echo ok"], env=env)
    assert (after.returncode, text(after)) == (0, "ok\n"), err(after)
    assert agent_pid() not in (None, pid)
    assert len(jobs()) == 1  # the job outlived the agent, and was reused


def sshd_serving(pid: int) -> int:
    """The login sshd's process for the connection that process ``pid`` holds to it."""
    def established(flt: str) -> list[str]:
        return subprocess.run(["ss", "-tnpH", "state", "established", flt], capture_output=True,
                              text=True, check=True).stdout.splitlines()

    (mine,) = [ln for ln in established("( dport = :2222 )") if f"pid={pid}," in ln]
    port = mine.split()[2].rsplit(":", 1)[1]
    (theirs,) = established(f"( sport = :2222 and dport = :{port} )")
    return min(int(p) for p in re.findall(r"pid=(\d+)", theirs))


def test_a_dropped_login_is_made_again_by_the_next_connect(user_tmp: Path) -> None:
    """The laptop slept, the login node dropped the connection: the agent logs in again."""
    env = agent_env(user_tmp)
    assert as_user([*SSH, "slurm-debug", "true"], env=env).returncode == 0
    pid = agent_pid()
    assert pid is not None
    before = logins()
    os.kill(sshd_serving(pid), signal.SIGTERM)
    after = as_user([*SSH, "slurm-debug", "echo ok"], env=env)
    assert (after.returncode, text(after)) == (0, "ok\n"), err(after)
    assert logins() - before == 1 and agent_pid() == pid


def test_an_unused_agent_exits_after_agent_idle(user_tmp: Path) -> None:
    env = agent_env(user_tmp, idle=2)
    assert as_user([*SSH, "slurm-debug", "true"], env=env).returncode == 0
    assert agent_pid() is not None
    wait_for("the agent's idle exit", lambda: agent_pid() is None, timeout=20, interval=0.5)
    assert not cluster.agent_sockets()
    assert "agent: exiting (idle)" in AGENT_LOG.read_text()


def test_another_user_cannot_use_the_agent(user_tmp: Path) -> None:
    env = agent_env(user_tmp)
    assert as_user([*SSH, "slurm-debug", "true"], env=env).returncode == 0
    (sock,) = cluster.agent_sockets()
    key = cluster.STATE / "agent.key"
    assert key.stat().st_mode & 0o777 == 0o600 and Path(sock).parent.stat().st_mode & 0o777 == 0o700
    before = logins()
    probe = ["python3", "-c", "import socket, sys\ns = socket.socket(socket.AF_UNIX)\n"
             "s.settimeout(5)\ns.connect(sys.argv[1])\ns.sendall(b'x' * 64)\n"
             "print(repr(s.recv(100)))", sock]
    # The agent's directory is 0700: another user cannot even reach the socket.
    denied = subprocess.run(["runuser", "-u", cluster.OTHER_USER, "--", *probe], capture_output=True)
    assert denied.returncode != 0 and b"PermissionError" in denied.stderr, denied.stderr
    # Opened up by mistake, the agent still turns the other uid away before a word is said.
    opened = [str(p) for p in Path(sock).parents if cluster.HOME in (p, *p.parents)]
    modes = {p: os.stat(p).st_mode & 0o777 for p in [*opened, sock]}
    try:
        for p in opened:
            os.chmod(p, modes[p] | 0o011)  # noqa: S103 - opened on purpose, restored below
        os.chmod(sock, 0o777)  # noqa: S103 - opened on purpose, restored below
        refused = subprocess.run(["runuser", "-u", cluster.OTHER_USER, "--", *probe], capture_output=True)
    finally:
        for p, mode in modes.items():
            os.chmod(p, mode)
    other_uid = int(subprocess.run(["id", "-u", cluster.OTHER_USER], capture_output=True, text=True).stdout)
    assert f"agent: refused a connection from uid {other_uid}" in AGENT_LOG.read_text()
    # closed before or after the probe's bytes: an empty read, a reset, or a broken pipe
    assert (b"b''" in refused.stdout or b"Connection reset" in refused.stderr
            or b"Broken pipe" in refused.stderr), (refused.stdout, refused.stderr)
    assert logins() == before and len(jobs()) == 1


@pytest.mark.timeout(240)
@pytest.mark.parametrize("mode", ["adopt", "sshd", "srun"])
def test_transfers_through_the_agent_in_every_mode(mode: str, user_tmp: Path) -> None:
    env = agent_env(user_tmp, mode)
    payload = os.urandom(20 * 1024 * 1024)
    piped = as_user([*STRICT, "slurm-debug", "sha256sum"], env=env, input=payload)
    assert piped.returncode == 0, err(piped)
    assert text(piped).split()[0] == hashlib.sha256(payload).hexdigest()

    src = user_tmp / "payload.bin"
    src.write_bytes(payload)
    os.chmod(src, 0o644)
    remote = user_tmp / "remote"
    remote.mkdir()
    os.chown(remote, cluster.HOME.stat().st_uid, cluster.HOME.stat().st_gid)
    scp = as_user(["scp", "-q", "-o", "BatchMode=yes", str(src), f"slurm-debug:{remote}/scp.bin"], env=env)
    assert scp.returncode == 0, err(scp)
    sftp = as_user(["sftp", "-o", "BatchMode=yes", "-b", "-", "slurm-debug"], env=env,
                   input=f"get {remote}/scp.bin {remote}/sftp.bin\n".encode())
    assert sftp.returncode == 0, err(sftp)
    rsync = as_user(["rsync", "-a", "-e", "ssh -o BatchMode=yes", f"slurm-debug:{remote}/sftp.bin",
                     str(user_tmp / "rsync.bin")], env=env)
    assert rsync.returncode == 0, err(rsync)
    assert hashlib.sha256((user_tmp / "rsync.bin").read_bytes()).digest() == hashlib.sha256(payload).digest()
    assert len(jobs("slurm-proxy-debug")) == 1


def test_the_login_uses_the_ssh_agent_of_the_connect_that_logs_in(user_tmp: Path) -> None:
    """A laptop whose key lives only in ssh-agent, and an agent started without it: the login
    is made with the ssh-agent of the connect that needs it."""
    home = user_tmp / "laptop"
    ssh_dir = home / ".ssh"
    ssh_dir.mkdir(parents=True)
    (ssh_dir / "known_hosts").write_bytes((cluster.HOME / ".ssh" / "known_hosts").read_bytes())
    (ssh_dir / "config").write_text("Host testlogin\n    HostName 127.0.0.1\n    Port 2222\n"
                                    "    User sptest\n    IdentityFile ~/.ssh/no-such-key\n")
    for p in (home, ssh_dir, *ssh_dir.iterdir()):
        os.chown(p, cluster.HOME.stat().st_uid, cluster.HOME.stat().st_gid)
    sock = user_tmp / "ssh-agent.sock"
    state = user_tmp / ("a-state-directory-too-deep-for-a-socket-path-" + "x" * 40)  # and macOS's
    env = {**agent_env(user_tmp), "HOME": str(home), "SLURM_PROXY_HOME": str(state)}
    ssh_agent, pid = popen_as_user(["ssh-agent", "-D", "-a", str(sock)], pidfile=user_tmp / "ssh-agent.pid")
    try:
        wait_for("ssh-agent", sock.exists, timeout=10)
        added = as_user(["ssh-add", str(cluster.HOME / ".ssh" / "id_ed25519")],
                        env={"SSH_AUTH_SOCK": str(sock)})
        assert added.returncode == 0, err(added)
        started = as_user([PROXY, "agent"], env=env)  # with no SSH_AUTH_SOCK of its own
        assert started.returncode == 0 and text(started).startswith("agent: pid "), err(started)
        where = wire.address(state, "linux", uid=cluster.HOME.stat().st_uid)
        assert where.startswith(f"/tmp/slurm-proxy-{cluster.HOME.stat().st_uid}/")
        assert cluster.sh(f"test -S {where}").returncode == 0
        without = as_user([PROXY, "up", "debug", "--no-wait"], env=env)
        assert without.returncode != 0 and "no key from ssh-agent, ~/.ssh/no-such-key was accepted" \
            in err(without), err(without)
        up = as_user([PROXY, "up", "debug", "--no-wait"], env={**env, "SSH_AUTH_SOCK": str(sock)})
        assert up.returncode == 0, err(up)
        assert len(jobs("slurm-proxy-debug")) == 1
    finally:
        as_user([PROXY, "agent", "--stop"], env=env)
        assert pid is not None
        os.kill(pid, signal.SIGTERM)
        ssh_agent.communicate(timeout=10)
