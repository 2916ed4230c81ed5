"""What slurm-proxy needs of click, filelock and paramiko: below the floors in pyproject.toml
these fail, and contrib/testcluster/floors runs them on exactly those versions."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.shell_completion import ShellComplete
from click.testing import CliRunner

from slurm_proxy.cli import cli


def test_filelock_makes_a_private_lock_and_leaves_the_umask_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # filelock 3.10.0-3.10.1 set the process's umask to 0 while locking: any file another thread
    # made meanwhile was world-writable. Before 3.10 there is no mode= at all.
    from filelock import FileLock

    umasks: list[int] = []
    real_umask = os.umask

    def umask(mask: int) -> int:
        umasks.append(mask)
        return real_umask(mask)

    monkeypatch.setattr(os, "umask", umask)
    lock_file = tmp_path / "x.lock"
    with FileLock(str(lock_file), timeout=5, mode=0o600):
        if os.name != "nt":
            assert stat.S_IMODE(lock_file.stat().st_mode) == 0o600
    assert umasks == []


def test_paramiko_imports_without_a_warning() -> None:
    # paramiko before 3.4.1 warns about TripleDES on import with current cryptography; the
    # warning would reach the user on every paramiko connect.
    proc = subprocess.run([sys.executable, "-W", "error", "-c", "import paramiko"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.strip().splitlines()[-1:]


def test_click_completes_profile_names(tmp_path: Path) -> None:
    # shell_complete= on arguments is click 8.0.
    config = Path(os.environ["SLURM_PROXY_CONFIG"])
    config.write_text('[clusters.hpc]\nlogin = "hpc"\n[profiles.gpu]\n[profiles.debug]\n')
    complete = ShellComplete(cli, {}, "slurm-proxy", "_SLURM_PROXY_COMPLETE")
    assert [c.value for c in complete.get_completions(["up"], "g")] == ["gpu"]
    assert [c.value for c in complete.get_completions(["down", "gpu"], "")] == ["gpu", "debug"]


def test_click_gives_the_ssh_config_file_as_a_path(tmp_path: Path) -> None:
    # click.Path(path_type=Path) is click 8.0.
    target = tmp_path / "ssh_config"
    result = CliRunner().invoke(cli, ["ssh-config", "--install", "--file", str(target)])
    assert result.exit_code == 0, result.output
    assert "ProxyCommand" in target.read_text()
