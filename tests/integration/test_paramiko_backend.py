"""ParamikoLogin against the real login sshd (127.0.0.1:2222), as sptest, with sptest's own ssh
config, keys and known_hosts: commands, a TCP forward carrying real ssh and scp sessions, a
forwarded command's stdio, and the failures a user meets, each one line."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from . import cluster
from .cluster import SSH, as_user, err, text

PYTHON = str(cluster.VENV / "bin" / "python")

# The caller's side of the backend: one ParamikoLogin, its LoginError turned into one stderr line
# and exit status 255. Any other exception would show as a traceback.
DRIVER = """\
import json, sys
from slurm_proxy import log
from slurm_proxy.errors import LoginError
from slurm_proxy.login.paramiko_backend import ParamikoLogin

args = sys.argv[1:]
if args[0] == "-v":
    log.verbosity = 1
    args.pop(0)
config, what, destination, *rest = args
login = ParamikoLogin(destination) if config == "-" else ParamikoLogin(destination, ssh_config_files=[config])
try:
    if what == "run":  # each argument: JSON, an argv list or {"argv": [...], "stdin": "..."}
        for arg in rest:
            call = json.loads(arg)
            call = call if isinstance(call, dict) else {"argv": call}
            print(json.dumps(login.run(call["argv"], stdin=call.get("stdin"))._asdict()), flush=True)
        code = 0
    elif what == "stdio":
        code = login.forward_stdio(rest[0], int(rest[1]))
    elif what == "command":
        code = login.forward_command(rest)
except LoginError as e:
    log.error(str(e))
    code = 255
sys.exit(code)
"""


@pytest.fixture
def driver(user_tmp: Path) -> list[str]:
    path = user_tmp / "driver.py"
    cluster.write_config(path, DRIVER)
    return [PYTHON, str(path)]


def run(driver: list[str], *calls: object, config: str = "-") -> list[dict[str, object]]:
    proc = as_user([*driver, config, "run", "testlogin", *(json.dumps(c) for c in calls)])
    assert proc.returncode == 0, err(proc)
    assert "Traceback" not in err(proc)
    return [json.loads(line) for line in text(proc).splitlines()]


def proxy_command(driver: list[str], *args: str) -> str:
    return shlex.join([*driver, "-", "stdio", "testlogin", *args]).replace("%", "%%")


def one_line(proc: subprocess.CompletedProcess[bytes]) -> str:
    """The single stderr line of a failed call (never a traceback, nothing on stdout)."""
    assert proc.returncode == 255, (proc.returncode, err(proc))
    assert proc.stdout == b""
    lines = err(proc).splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("slurm-proxy: cannot reach login node 'testlogin': ")
    return lines[0]


def ssh_config(user_tmp: Path, body: str) -> str:
    path = user_tmp / "ssh_config"
    cluster.write_config(path, body)
    return str(path)


LOGIN_BLOCK = """\
Host testlogin
    HostName 127.0.0.1
    Port 2222
    User sptest
    IdentityFile ~/.ssh/id_ed25519
"""


# --- run --------------------------------------------------------------------------------------

def test_run_passes_each_word_literally(driver: list[str]) -> None:
    (result,) = run(driver, ["echo", "a b", "$HOME", "'quoted'", "x;y"])
    assert result == {"returncode": 0, "stdout": "a b $HOME 'quoted' x;y\n", "stderr": "", "chatter": ""}


def test_run_squeue(driver: list[str]) -> None:
    (result,) = run(driver, ["squeue", "--me"])
    assert result["returncode"] == 0, result
    assert str(result["stdout"]).split()[:4] == ["JOBID", "PARTITION", "NAME", "USER"]


def test_calls_share_one_connection_and_keep_status_stdin_stderr(driver: list[str]) -> None:
    where = ["sh", "-c", 'echo "$SSH_CONNECTION"']
    first, second, piped, failed = run(
        driver, where, where, {"argv": ["tr", "a-z", "A-Z"], "stdin": "hello\n"},
        ["sh", "-c", "echo oops >&2; exit 4"])
    # The same client port both times: one TCP connection, one transport.
    assert first["stdout"] == second["stdout"] and str(first["stdout"]).startswith("127.0.0.1 ")
    assert piped["stdout"] == "HELLO\n"
    assert (failed["returncode"], failed["stdout"], failed["stderr"]) == (4, "", "oops\n")


# --- forward_stdio ----------------------------------------------------------------------------

def test_ssh_session_through_forward_stdio(driver: list[str]) -> None:
    proc = as_user([*SSH, "-o", f"ProxyCommand={proxy_command(driver, '127.0.0.1', '2222')}",
                    "testlogin", "echo ok"])
    assert (proc.returncode, text(proc)) == (0, "ok\n"), err(proc)


def test_stdout_carries_only_tunnel_bytes(driver: list[str]) -> None:
    """Chatty (-v, paramiko's own log on): the first byte on stdout is the sshd banner."""
    proc = as_user([*driver[:2], "-v", "-", "stdio", "testlogin", "127.0.0.1", "2222"], input=b"")
    assert proc.returncode == 0, err(proc)
    assert text(proc).startswith("SSH-2.0-OpenSSH"), (proc.stdout[:200], err(proc))
    assert "slurm-proxy: paramiko:" in err(proc) and "Traceback" not in err(proc)


def test_scp_round_trip_through_forward_stdio(driver: list[str], user_tmp: Path) -> None:
    src = user_tmp / "payload.bin"
    src.write_bytes(os.urandom(50 * 1024 * 1024))
    os.chmod(src, 0o644)
    back = user_tmp / "back.bin"
    option = f"ProxyCommand={proxy_command(driver, '127.0.0.1', '2222')}"
    remote = f"testlogin:{user_tmp}/remote.bin"
    up = as_user(["scp", "-q", "-o", "BatchMode=yes", "-o", option, str(src), remote])
    assert up.returncode == 0, err(up)
    down = as_user(["scp", "-q", "-o", "BatchMode=yes", "-o", option, remote, str(back)])
    assert down.returncode == 0, err(down)
    assert hashlib.sha256(back.read_bytes()).hexdigest() == hashlib.sha256(src.read_bytes()).hexdigest()


def test_a_refused_port_is_one_line(driver: list[str]) -> None:
    proc = as_user([*driver, "-", "stdio", "testlogin", "127.0.0.1", "1"], input=b"")
    assert one_line(proc).endswith("the login node cannot connect to 127.0.0.1:1 (connect failed)")


# --- forward_command --------------------------------------------------------------------------

@pytest.mark.parametrize(("env", "path"), [({}, "polled"), ({"SLURM_PROXY_NO_EXEC": "1"}, "blocking reads")],
                         ids=["polled-stdin", "thread-stdin"])
def test_forward_command_round_trips_bytes_exactly(driver: list[str], env: dict[str, str], path: str) -> None:
    payload = os.urandom(10 * 1024 * 1024)
    proc = as_user([*driver[:2], "-v", "-", "command", "testlogin", "cat"], input=payload, env=env)
    assert proc.returncode == 0, err(proc)[-2000:]
    assert len(proc.stdout) == len(payload) and proc.stdout == payload
    assert f"slurm-proxy: stdin: {path}\n" in err(proc)


def test_forward_command_returns_the_exit_status_and_passes_stderr(driver: list[str]) -> None:
    proc = as_user([*driver, "-", "command", "testlogin", "sh", "-c", "echo to-stderr >&2; exit 3"],
                   input=b"")
    assert (proc.returncode, proc.stdout, err(proc)) == (3, b"", "to-stderr\n")


# --- the ssh config, host keys, authentication ------------------------------------------------

def test_an_unknown_host_key_is_refused(driver: list[str], user_tmp: Path) -> None:
    empty = user_tmp / "known_hosts"
    cluster.write_config(empty, "")
    config = ssh_config(user_tmp, LOGIN_BLOCK + f"    UserKnownHostsFile {empty}\n"
                                                f"    GlobalKnownHostsFile {empty}\n")
    proc = as_user([*driver, config, "run", "testlogin", '["true"]'])
    assert one_line(proc).endswith(
        "host key for [127.0.0.1]:2222 is not in your known_hosts: connect once with `ssh testlogin`")
    assert empty.read_text() == ""  # never learned on the fly


def test_a_changed_host_key_is_refused(driver: list[str], user_tmp: Path) -> None:
    other = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
    known = user_tmp / "known_hosts"
    cluster.write_config(known, f"[127.0.0.1]:2222 ssh-ed25519 {other}\n")
    config = ssh_config(user_tmp, LOGIN_BLOCK + f"    UserKnownHostsFile {known}\n")
    proc = as_user([*driver, config, "run", "testlogin", '["true"]'])
    assert "host key for [127.0.0.1]:2222 does not match your known_hosts" in one_line(proc)


def test_a_hashed_known_hosts_entry_is_accepted(driver: list[str], user_tmp: Path) -> None:
    known = user_tmp / "known_hosts"
    shutil.copy(cluster.HOME / ".ssh" / "known_hosts", known)
    subprocess.run(["ssh-keygen", "-H", "-f", str(known)], check=True, capture_output=True)
    assert known.read_text().startswith("|1|")
    os.chmod(known, 0o644)
    config = ssh_config(user_tmp, LOGIN_BLOCK + f"    UserKnownHostsFile {known}\n")
    (result,) = run(driver, ["echo", "hashed"], config=config)
    assert result["stdout"] == "hashed\n"


def test_proxy_jump_and_proxy_command(driver: list[str], user_tmp: Path) -> None:
    """Reach the login sshd through itself: a ProxyJump hop, and `ssh -W` as ProxyCommand."""
    config = ssh_config(user_tmp, LOGIN_BLOCK.replace("Host testlogin", "Host testlogin jumped piped") + """\
Host jumped
    ProxyJump testlogin
Host piped
    ProxyCommand ssh -o BatchMode=yes -W %h:%p testlogin
""")
    for name, how in (("jumped", "jump: testlogin → 127.0.0.1 port 2222"),
                      ("piped", "ProxyCommand: ssh -o BatchMode=yes -W 127.0.0.1:2222 testlogin")):
        proc = as_user([*driver[:2], "-v", config, "run", name, '["echo", "through"]'])
        assert proc.returncode == 0, err(proc)
        assert json.loads(text(proc))["stdout"] == "through\n"
        assert f"slurm-proxy: {how}\n" in err(proc)


def test_a_key_the_server_refuses_is_one_line(driver: list[str], user_tmp: Path) -> None:
    key = user_tmp / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    shutil.chown(key, cluster.USER, cluster.USER)
    block = LOGIN_BLOCK.replace("~/.ssh/id_ed25519", str(key))
    config = ssh_config(user_tmp, block + "    IdentitiesOnly yes\n")
    proc = as_user([*driver, config, "run", "testlogin", '["true"]'])
    assert "permission denied for sptest@127.0.0.1 (publickey)" in one_line(proc)
