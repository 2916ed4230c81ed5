from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _private_user_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads or writes the real user's config or state."""
    monkeypatch.setenv("SLURM_PROXY_HOME", str(tmp_path / "sp-home"))
    monkeypatch.setenv("SLURM_PROXY_CONFIG", str(tmp_path / "sp-config.toml"))


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home of its own for ssh config and key tests: ~/.ssh is empty."""
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".ssh").mkdir()
    return tmp_path
