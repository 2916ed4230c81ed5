"""A login node that asks for a one-time code after the key: one prompt however many connects
start at once (through the real cluster's second login sshd, testlogin-otp, whose PAM records
every code it is given)."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from . import cluster
from .cluster import SSH, as_user, err, jobs, text
from .faults import close_masters

pytestmark = pytest.mark.usefixtures("clean")
ATTEMPTS = cluster.CLUSTER_BASE / "otp-attempts"
CODE = "424242"


def otp_config(user_tmp: Path, backend: str = "openssh") -> dict[str, str]:
    path = user_tmp / f"otp-{backend}.toml"
    cluster.write_config(path, f'[clusters.otp]\nlogin = "testlogin-otp"\nbackend = "{backend}"\n'
                               '[profiles.debug]\npartition = "debug"\ncpus = 1\ntime = "10:00"\n')
    return {"SLURM_PROXY_CONFIG": str(path)}


class Askpass:
    """VS Code's conditions: an askpass program that must be used. It records every prompt and
    answers with ``code``."""

    def __init__(self, directory: Path, code: str = CODE) -> None:
        self.asked = directory / "asked"
        self.program = directory / "askpass"
        (directory / "code").write_text(code)
        self.program.write_text(f'#!/bin/sh\nprintf "%s\\n" "$1" >> {self.asked}\ncat {directory}/code\n')
        self.program.chmod(0o755)
        self.asked.touch()
        os.chown(self.asked, cluster.HOME.stat().st_uid, cluster.HOME.stat().st_gid)
        self.env = {"SSH_ASKPASS": str(self.program), "SSH_ASKPASS_REQUIRE": "force"}

    @property
    def prompts(self) -> list[str]:
        return [ln for ln in self.asked.read_text().splitlines() if ln]


def no_tty(argv: list[str]) -> list[str]:
    """argv in a new session: no controlling terminal to prompt on, as under VS Code."""
    return ["setsid", "--wait", *argv]


@pytest.fixture
def codes_given() -> Callable[[], list[str]]:
    """The second factor's answers from here on, as the login node's PAM judged them."""
    ATTEMPTS.touch()
    start = len(ATTEMPTS.read_text().splitlines())
    return lambda: ATTEMPTS.read_text().splitlines()[start:]


def connect(env: dict[str, str]) -> tuple[int, str, str]:
    proc = as_user(no_tty([*SSH, "slurm-debug", "echo ok"]), env=env)
    return proc.returncode, text(proc), err(proc)


def connects_at_once(n: int, env: dict[str, str]) -> list[tuple[int, str, str]]:
    close_masters()
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda _: connect(env), range(n)))


def test_eight_concurrent_cold_connects_prompt_once(user_tmp: Path,
                                                    codes_given: Callable[[], list[str]]) -> None:
    askpass = Askpass(user_tmp)
    results = connects_at_once(8, {**otp_config(user_tmp), **askpass.env})
    assert [r[:2] for r in results] == [(0, "ok\n")] * 8, [r for r in results if r[:2] != (0, "ok\n")]
    assert len(askpass.prompts) == 1, askpass.prompts
    assert codes_given() == ["ok"]
    assert len(jobs("slurm-proxy-debug")) == 1
    assert any("another slurm-proxy is authenticating" in r[2] for r in results), results


def test_a_wrong_code_fails_every_connect_with_one_line_and_no_job(
        user_tmp: Path, codes_given: Callable[[], list[str]]) -> None:
    askpass = Askpass(user_tmp, code="000000")
    results = connects_at_once(8, {**otp_config(user_tmp), **askpass.env})
    assert all(r[0] == 255 for r in results), results
    last = {[ln for ln in r[2].splitlines() if ln.startswith("slurm-proxy:")][-1] for r in results}
    assert len(last) == 1 and "cannot reach login node 'testlogin-otp'" in last.pop(), results
    # one login's tries (ssh's NumberOfPasswordPrompts: 3), not one login per connect
    assert len(askpass.prompts) == len(codes_given()) == 3, (askpass.prompts, codes_given())
    assert jobs() == []


def test_a_dead_master_is_replaced_with_one_prompt(user_tmp: Path,
                                                   codes_given: Callable[[], list[str]]) -> None:
    askpass = Askpass(user_tmp)
    env = {**otp_config(user_tmp), **askpass.env}
    first = connect(env)
    assert first[:2] == (0, "ok\n"), first
    (sock,) = cluster.control_sockets()
    check = as_user(["ssh", "-O", "check", "-o", f"ControlPath={sock}", "unused"])
    found = re.search(r"pid=(\d+)", err(check))
    assert found, err(check)
    os.kill(int(found.group(1)), signal.SIGKILL)  # the laptop slept, the network dropped
    results = [connect(env) for _ in range(3)]
    assert [r[:2] for r in results] == [(0, "ok\n")] * 3, results
    assert len(askpass.prompts) == 2 and codes_given() == ["ok", "ok"]


def test_a_home_too_deep_for_a_socket_path_still_shares_one_login(
        user_tmp: Path, codes_given: Callable[[], list[str]]) -> None:
    """A home of 60+ characters (macOS's /Users/firstname.lastname is enough there): the control
    socket moves to a short private directory, and the second connect needs no code."""
    home = user_tmp / ("a-rather-long-home-directory-name-" + "x" * 30)
    home.mkdir()
    os.chown(home, cluster.HOME.stat().st_uid, cluster.HOME.stat().st_gid)
    assert len(str(home)) >= 60
    askpass = Askpass(user_tmp)
    known = home / ".local" / "state" / "slurm-proxy" / "known_hosts"
    env = {**otp_config(user_tmp), **askpass.env, "HOME": str(home)}
    close_masters()
    for _ in range(2):
        proc = as_user(no_tty([*SSH, "-o", f"UserKnownHostsFile={known}", "slurm-debug", "echo ok"]),
                       env=env)
        assert (proc.returncode, text(proc)) == (0, "ok\n"), err(proc)
    assert len(askpass.prompts) == 1 and codes_given() == ["ok"]
    uid = cluster.HOME.stat().st_uid
    assert [s for s in cluster.control_sockets() if s.startswith(f"/tmp/slurm-proxy-{uid}/")]


# --- the agent --------------------------------------------------------------------------------

def test_the_agent_asks_once_for_eight_concurrent_cold_connects(
        user_tmp: Path, codes_given: Callable[[], list[str]]) -> None:
    cluster.stop_agent()
    askpass = Askpass(user_tmp)
    results = connects_at_once(8, {**otp_config(user_tmp, "agent"), **askpass.env})
    assert [r[:2] for r in results] == [(0, "ok\n")] * 8, [r for r in results if r[:2] != (0, "ok\n")]
    assert len(askpass.prompts) == 1 and codes_given() == ["ok"]
    assert len(jobs("slurm-proxy-debug")) == 1
    cluster.stop_agent()
    written = [p for p in cluster.STATE.rglob("*") if p.is_file() and CODE.encode() in p.read_bytes()]
    assert written == []  # the code went to the login node, and nowhere else


def test_a_wrong_code_through_the_agent_fails_the_waiting_connects_without_asking_again(
        user_tmp: Path, codes_given: Callable[[], list[str]]) -> None:
    cluster.stop_agent()
    askpass = Askpass(user_tmp, code="000000")
    results = connects_at_once(4, {**otp_config(user_tmp, "agent"), **askpass.env})
    assert all(r[0] == 255 for r in results), results
    last = {[ln for ln in r[2].splitlines() if ln.startswith("slurm-proxy:")][-1] for r in results}
    assert len(last) == 1 and "cannot reach login node 'testlogin-otp'" in last.pop(), results
    assert len(askpass.prompts) == len(codes_given()) == 1, (askpass.prompts, codes_given())
    assert jobs() == []
    cluster.stop_agent()


# --- the paramiko backend ------------------------------------------------------------------------

def test_paramiko_answers_the_code_through_askpass(user_tmp: Path,
                                                   codes_given: Callable[[], list[str]]) -> None:
    askpass = Askpass(user_tmp)
    result = connect({**otp_config(user_tmp, "paramiko"), **askpass.env})
    assert result[:2] == (0, "ok\n"), result
    assert askpass.prompts == ["(sptest@127.0.0.1) Password: "] and codes_given() == ["ok"]


def test_paramiko_without_a_terminal_or_askpass_says_so_in_one_line(user_tmp: Path) -> None:
    proc = as_user(no_tty([cluster.PROXY, "up", "debug", "--no-wait"]), env=otp_config(user_tmp, "paramiko"))
    assert proc.returncode == 1, err(proc)
    (line,) = [ln for ln in err(proc).splitlines() if ln.strip()]
    assert "no terminal" in line and "SSH_ASKPASS" in line and "Traceback" not in err(proc), err(proc)
    assert jobs() == []


def test_paramiko_asks_an_encrypted_keys_passphrase_once(user_tmp: Path) -> None:
    """No agent, a key file with a passphrase: asked through askpass, once per connect."""
    home = user_tmp / "laptop"
    ssh_dir = home / ".ssh"
    ssh_dir.mkdir(parents=True)
    key = ssh_dir / "id_ed25519"
    key.write_bytes((cluster.HOME / ".ssh" / "id_ed25519").read_bytes())
    (ssh_dir / "id_ed25519.pub").write_bytes((cluster.HOME / ".ssh" / "id_ed25519.pub").read_bytes())
    (ssh_dir / "known_hosts").write_bytes((cluster.HOME / ".ssh" / "known_hosts").read_bytes())
    (ssh_dir / "config").write_text("Host testlogin\n    HostName 127.0.0.1\n    Port 2222\n"
                                    "    User sptest\n    IdentityFile ~/.ssh/id_ed25519\n")
    for p in (home, ssh_dir, *ssh_dir.iterdir()):
        os.chown(p, cluster.HOME.stat().st_uid, cluster.HOME.stat().st_gid)
    key.chmod(0o600)
    assert as_user(["ssh-keygen", "-q", "-p", "-N", "secret", "-f", str(key)]).returncode == 0
    askpass = Askpass(user_tmp, code="secret")
    path = user_tmp / "plain.toml"
    cluster.write_config(path, '[clusters.test]\nlogin = "testlogin"\nbackend = "paramiko"\n'
                               '[profiles.debug]\npartition = "debug"\ncpus = 1\ntime = "10:00"\n')
    env = {"SLURM_PROXY_CONFIG": str(path), "HOME": str(home), "SSH_AUTH_SOCK": "",
           "SLURM_PROXY_HOME": str(cluster.STATE), **askpass.env}
    proc = as_user(no_tty([cluster.PROXY, "up", "debug", "--no-wait"]), env=env)
    assert proc.returncode == 0, err(proc)
    assert askpass.prompts == [f"Enter passphrase for key '{key}': "]


def test_doctor_says_the_login_asks_for_a_second_factor(user_tmp: Path,
                                                        codes_given: Callable[[], list[str]]) -> None:
    askpass = Askpass(user_tmp)
    proc = as_user(no_tty([cluster.PROXY, "doctor"]),
                   env={**otp_config(user_tmp), **askpass.env, "XDG_CONFIG_HOME": str(user_tmp)})
    assert ("! two-factor login: testlogin-otp asks for keyboard-interactive after the key: the "
            "openssh backend asks once per login") in text(proc), text(proc) + err(proc)
    assert len(askpass.prompts) == len(codes_given()) <= 1  # the probe itself never prompts
