from __future__ import annotations

from pathlib import Path

import pytest

UNIT = Path(__file__).parent / "unit"


@pytest.fixture(autouse=True)
def _private_user_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                       request: pytest.FixtureRequest) -> None:
    """No test reads or writes the real user's config or state; no unit test sees the real
    ~/.ssh either (what a command says must not depend on it)."""
    monkeypatch.setenv("SLURM_PROXY_HOME", str(tmp_path / "sp-home"))
    monkeypatch.setenv("SLURM_PROXY_CONFIG", str(tmp_path / "sp-config.toml"))
    if UNIT in Path(request.path).parents:
        monkeypatch.setenv("HOME", str(tmp_path / "real-home"))


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home of its own for ssh config and key tests: ~/.ssh is empty."""
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".ssh").mkdir()
    return tmp_path
