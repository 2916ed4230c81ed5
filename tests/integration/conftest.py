from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import cluster


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session", autouse=True)
def _cluster_is_up() -> Iterator[None]:
    if os.geteuid() != 0:
        pytest.fail("integration tests run as root (they act as the test user sptest): "
                    "use the README's test command")
    proc = subprocess.run(cluster.on_cluster(["sinfo", "-h", "-o", "%t"]), capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail("the loopback test cluster is not running: start it with contrib/testcluster/up")
    yield
    # Stop the agent and close the ssh control masters the tests caused: nothing is left running.
    cluster.stop_agent()
    for sock in cluster.control_sockets():
        cluster.as_user(["ssh", "-O", "exit", "-o", f"ControlPath={sock}", "unused"])


@pytest.fixture
def clean() -> Iterator[None]:
    """No sptest job and no slurm-proxy state before and after the test."""
    cluster.cancel_all()
    cluster.reset_state()
    yield
    cluster.cancel_all()
    cluster.reset_state()


@pytest.fixture
def cfg(user_tmp: Path) -> dict[str, str]:
    """The environment that points slurm-proxy at cluster.TEST_CONFIG."""
    path = user_tmp / "config.toml"
    cluster.write_config(path, cluster.TEST_CONFIG)
    return {"SLURM_PROXY_CONFIG": str(path)}


@pytest.fixture
def ssh_config_kept() -> Iterator[None]:
    """sptest's ~/.ssh/config comes back as it was (init refreshes the installed Host block)."""
    path = cluster.HOME / ".ssh" / "config"
    saved = path.read_bytes()
    yield
    path.write_bytes(saved)


@pytest.fixture
def user_tmp() -> Iterator[Path]:
    """A directory sptest may read and write (pytest's own tmp_path is root's, 0700)."""
    d = Path(tempfile.mkdtemp(prefix="sp-test-", dir="/tmp"))
    shutil.chown(d, cluster.USER, cluster.USER)
    yield d
    shutil.rmtree(d, ignore_errors=True)
