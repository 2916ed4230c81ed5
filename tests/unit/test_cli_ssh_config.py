"""ssh-config --install, init, status and doctor keeping the Host block in step with the config's
profiles (issue #26), through the command line with a home of its own."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import test_cli
from test_cli import SINFO, Login, Run, out

from slurm_proxy import doctor, host_block

cfg_path, login, run = test_cli.cfg_path, test_cli.login, test_cli.run  # its fixtures, here too
USER = "Host hpc\n    HostName login.example.org\nHost slurm-gpu\n    User me\n"


def block_hosts(path: Path) -> list[str]:
    return host_block.host_names(host_block.split(host_block.read(path))[1] or "")


def test_install_lists_each_profile_and_follows_the_config(run: Run, cfg_path: Path, home: Path) -> None:
    ssh_config = home / ".ssh" / "config"
    ssh_config.write_text("Host hpc\n    HostName login.example.org\n")
    ssh_config.chmod(0o644)
    code, _, stderr = run("ssh-config", "--install", "--file", str(ssh_config))
    assert code == 0 and "listing slurm-debug, slurm-gpu" in stderr
    assert block_hosts(ssh_config) == ["slurm-debug", "slurm-gpu"]
    assert stat.S_IMODE(ssh_config.stat().st_mode) == 0o644

    cfg_path.write_text(cfg_path.read_text().replace("[profiles.gpu]", "[profiles.gpu2]")
                        + "[profiles.big]\ncpus = 8\n")
    assert host_block.drift("slurm-", ["debug", "gpu2", "big"], ssh_config).endswith(
        "lacks slurm-gpu2, slurm-big and still lists slurm-gpu")
    code, _, _ = run("ssh-config", "--install", "--file", str(ssh_config))
    assert code == 0 and block_hosts(ssh_config) == ["slurm-debug", "slurm-gpu2", "slurm-big"]
    text = ssh_config.read_text()
    assert text.count(host_block.BEGIN) == 1 and text.endswith("Host hpc\n    HostName login.example.org\n")


def test_an_alias_the_user_lists_is_left_to_them(run: Run, cfg_path: Path, home: Path) -> None:
    ssh_config = home / ".ssh" / "config"
    ssh_config.write_text(USER)
    code, _, stderr = run("ssh-config", "--install", "--file", str(ssh_config))
    assert code == 0 and block_hosts(ssh_config) == ["slurm-debug"]
    assert f"slurm-gpu has a Host line of yours in {ssh_config}: not listed again" in stderr
    assert ssh_config.read_text().endswith(USER)


def test_install_refuses_a_broken_config_rather_than_drop_its_profiles(
        run: Run, cfg_path: Path, home: Path) -> None:
    ssh_config = home / ".ssh" / "config"
    run("ssh-config", "--install", "--file", str(ssh_config))
    before = ssh_config.read_bytes()
    cfg_path.write_text("[profiles.x\n")
    code, _, stderr = run("ssh-config", "--install", "--file", str(ssh_config))
    assert code == 2 and "invalid TOML" in stderr
    assert ssh_config.read_bytes() == before


def test_print_lists_the_profiles_too(run: Run, cfg_path: Path) -> None:
    code, stdout, _ = run("ssh-config")
    assert code == 0 and "\nHost slurm-debug\n" in stdout and "\nHost slurm-* \"!*'*\"\n" in stdout


def test_status_says_when_the_block_is_out_of_step(run: Run, cfg_path: Path, home: Path,
                                                   login: Login) -> None:
    ssh_config = home / ".ssh" / "config"
    login(squeue=[out(), out(), out()])
    assert run("status")[2] == ""  # no block at all: the user's own Host lines may do
    run("ssh-config", "--install", "--file", str(ssh_config))
    assert run("status")[2] == ""
    cfg_path.write_text(cfg_path.read_text() + "[profiles.big]\ncpus = 8\n")
    code, _, stderr = run("status", "--json")
    assert code == 0
    assert stderr == (f"slurm-proxy: the slurm-proxy block in {ssh_config} lacks slurm-big: "
                      "run `slurm-proxy ssh-config --install`\n")


def test_init_lists_its_profiles_in_an_installed_block(run: Run, tmp_path: Path, home: Path,
                                                       login: Login) -> None:
    ssh_config = home / ".ssh" / "config"
    ssh_config.write_text(USER)
    login(sinfo=[SINFO, SINFO])
    code, _, stderr = run("init", "--login", "hpc", "--non-interactive")
    assert code == 0 and "next: slurm-proxy ssh-config --install" in stderr  # no block yet
    assert ssh_config.read_text() == USER
    run("ssh-config", "--install", "--file", str(ssh_config))
    code, _, stderr = run("init", "--login", "hpc", "--non-interactive", "--force")
    assert code == 0 and f"the slurm-proxy block in {ssh_config} lists them" in stderr
    # slurm-gpu is the user's own Host: left to them
    assert block_hosts(ssh_config) == ["slurm-debug", "slurm-debug-gpu", "slurm-cpu"]
    assert ssh_config.read_text().endswith(USER)


# --- doctor reads what ssh will do for the alias --------------------------------------------------

def fake_ssh(tmp_path: Path, options: str) -> str:
    """An ssh whose -G prints ``options`` (and -V a version)."""
    path = tmp_path / "ssh"
    path.write_text(f"#!/bin/sh\n[ \"$1\" = -V ] && {{ echo 'OpenSSH_9.9' >&2; exit 0; }}\n"
                    f"printf '%s\\n' 'host x' {options}\n")
    path.chmod(0o755)
    return str(path)


@pytest.mark.parametrize(
    ("options", "warned"),
    [
        ("'proxycommand /x/slurm-proxy slurm-debug' 'connecttimeout 5'", True),
        ("'proxycommand /x/slurm-proxy slurm-debug' 'connecttimeout none'", False),
        ("'proxycommand /x/slurm-proxy slurm-debug' 'connecttimeout 600'", False),
    ],
)
def test_doctor_warns_of_a_short_connect_timeout(run: Run, cfg_path: Path, home: Path, login: Login,
                                                 monkeypatch: pytest.MonkeyPatch, options: str,
                                                 warned: bool) -> None:
    monkeypatch.setattr(doctor, "find_ssh", lambda: fake_ssh(home, options))
    monkeypatch.setattr(doctor, "vscode_settings_files", lambda: [])
    login(sh=[out("/usr/bin/sbatch", "/usr/bin/squeue", "/usr/bin/scancel", "/usr/bin/scontrol")])
    code, stdout, _ = run("doctor", "debug")
    assert code == 0, stdout
    assert "✓ ssh -G slurm-debug: ProxyCommand /x/slurm-proxy slurm-debug" in stdout
    assert ("ConnectTimeout" in stdout) is warned
    if warned:
        assert ("! ConnectTimeout for slurm-debug: ssh -G slurm-debug says ConnectTimeout 5 s, shorter "
                "than a queue wait (60 s)") in stdout
        assert "fix: run `slurm-proxy up debug` before connecting" in stdout


def test_doctor_fails_an_alias_that_ssh_sends_elsewhere(
        run: Run, cfg_path: Path, home: Path, login: Login, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor, "find_ssh", lambda: fake_ssh(home, "'proxycommand none'"))
    monkeypatch.setattr(doctor, "vscode_settings_files", lambda: [])
    login(sh=[out("/usr/bin/sbatch", "/usr/bin/squeue", "/usr/bin/scancel", "/usr/bin/scontrol")])
    code, stdout, _ = run("doctor", "debug")
    assert code == 1
    assert "✗ ssh -G slurm-debug: ProxyCommand none" in stdout
    assert "fix: slurm-proxy ssh-config --install" in stdout
    assert f"! Host block: no slurm-proxy block in {home / '.ssh' / 'config'}" in stdout


def test_the_default_file_is_under_the_home(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USERPROFILE", str(home))  # what Path.home() reads on Windows
    assert host_block.default_path() == home / ".ssh" / "config"
    assert os.fspath(host_block.default_path()).endswith(os.path.join(".ssh", "config"))
