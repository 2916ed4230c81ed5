"""Whatever alias ssh hands over, nothing runs until it names a configured profile."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slurm_proxy import config, proxy
from slurm_proxy.errors import BadAlias, UnknownProfile

CONFIG = '[clusters.c]\nlogin = "hpc"\n[profiles.gpu2]\ncpus = 1\n[profiles.debug]\ncpus = 1\n'


class Ran(Exception):
    pass


def _forbidden(*args: object, **kwargs: object) -> None:
    raise Ran(args)


@pytest.fixture
def no_processes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG)
    for name in ("run", "Popen", "call", "check_output"):
        monkeypatch.setattr(subprocess, name, _forbidden)
    for name in ("execv", "execvp", "system", "posix_spawn"):
        monkeypatch.setattr(os, name, _forbidden)
    return path


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=300)
@given(alias=st.one_of(
    st.text(max_size=300),
    st.text(alphabet="slurm-;$()`&|<>*?/. \n\\'\"gpu2debug", max_size=40),
    st.sampled_from(["slurm-a;b", "slurm-$(id)", "slurm-", "-oProxyCommand=x", "slurm-../../x",
                     "slurm-" + "a" * 300, "slurm-gpü", "", "slurm-gpu2\n", "slurm-gpu2 -x"]),
))
def test_any_alias_is_refused_before_anything_runs(no_processes: Path, alias: str) -> None:
    if alias in ("slurm-gpu2", "slurm-debug"):
        return  # the only two that may go on to run ssh
    with pytest.raises((BadAlias, UnknownProfile)):
        proxy.connect(alias, no_processes)


def test_a_valid_alias_does_reach_ssh(no_processes: Path) -> None:
    """The guard above is real: a configured alias goes on to start a process."""
    with pytest.raises(Ran):
        proxy.connect("slurm-gpu2", no_processes)
    assert config.load(no_processes).profile_for_alias("slurm-gpu2").name == "gpu2"
