"""login/__init__.py: which backend open_login chooses."""

from __future__ import annotations

from pathlib import Path

import pytest

from slurm_proxy import login
from slurm_proxy.errors import LoginError

ED = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
ED2 = "AAAAC3NzaC1lZDI1NTE5AAAAIMCT6ebtbivVujCF5m9AbEkVzH/+CCcJgL5SXAtp0XcG"
RSA = "AAAAB3NzaC1yc2EAAAADAQABAAABAQC7"



@pytest.mark.parametrize(
    ("backend", "ssh_installed", "chosen"),
    [("", True, "OpenSSHLogin"), ("", False, "ParamikoLogin"), ("paramiko", True, "ParamikoLogin"),
     ("openssh", True, "OpenSSHLogin"), ("agent", True, "AgentLogin")],
)
def test_open_login_prefers_openssh_unless_told_or_missing(
        backend: str, ssh_installed: bool, chosen: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLURM_PROXY_SSH", raising=False)
    if ssh_installed:
        fake = tmp_path / "ssh"
        fake.write_text("#!/bin/sh\n")
        fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert type(login.open_login("hpc", backend)).__name__ == chosen


def test_open_login_with_openssh_asked_for_but_missing_says_so(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLURM_PROXY_SSH", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(LoginError, match="no `ssh` client found"):
        login.open_login("hpc", "openssh")


@pytest.mark.parametrize(("backend", "chosen"), [("", "AgentLogin"), ("openssh", "OpenSSHLogin"),
                                                 ("paramiko", "ParamikoLogin"), ("agent", "AgentLogin")])
def test_on_windows_the_default_is_the_agent(
        backend: str, chosen: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLURM_PROXY_SSH", raising=False)
    fake = tmp_path / "ssh"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(login, "windows", lambda: True)
    assert type(login.open_login("hpc", backend)).__name__ == chosen
