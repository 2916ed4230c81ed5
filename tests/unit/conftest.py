from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _private_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No unit test sees the real user's ~/.ssh: what a command says must not depend on it."""
    monkeypatch.setenv("HOME", str(tmp_path / "real-home"))
