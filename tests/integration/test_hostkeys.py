"""Node host keys: verified against what the login node trusts, on whichever node the job lands."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import cluster
from .cluster import SSH, as_user, err

pytestmark = pytest.mark.usefixtures("clean")
GLOBAL = Path("/etc/ssh/ssh_known_hosts")
STRICT = [*SSH, "-o", "StrictHostKeyChecking=yes"]


def test_strict_checking_passes_on_either_node() -> None:
    # gpu2 takes all of one node's GPUs, so the gpu1 job must land on the other node.
    for alias in ("slurm-gpu2", "slurm-gpu1"):
        proc = as_user([*STRICT, alias, "true"])
        assert proc.returncode == 0, err(proc)
        assert "Permanently added" not in err(proc)  # nothing learned on the fly
    assert sorted(j[3] for j in cluster.jobs()) == ["node1", "node2"]


def test_a_stale_key_in_the_users_known_hosts_does_not_matter() -> None:
    kh = cluster.HOME / ".ssh" / "known_hosts"
    saved = kh.read_text()
    try:
        login_key = (Path("/var/lib/slurm-proxy-testcluster/keys/login.pub").read_text().split()[:2])
        with kh.open("a") as f:
            f.write(f"slurm-debug {' '.join(login_key)}\n")
        proc = as_user([*STRICT, "slurm-debug", "true"])
        assert proc.returncode == 0, err(proc)
    finally:
        kh.write_text(saved)


@pytest.fixture
def swapped_node_keys() -> Iterator[None]:
    """The login node's known_hosts with node1's and node2's keys exchanged."""
    saved = GLOBAL.read_text()
    backup = GLOBAL.with_suffix(".sp-test-backup")
    shutil.copy2(GLOBAL, backup)
    swapped = re.sub(r"^node([12]) ", lambda m: f"node{3 - int(m.group(1))} ", saved, flags=re.M)
    GLOBAL.write_text(swapped)
    try:
        yield
    finally:
        GLOBAL.write_text(saved)
        backup.unlink()


def test_a_key_the_login_node_does_not_trust_is_refused(swapped_node_keys: None) -> None:
    proc = as_user([*STRICT, "slurm-debug", "true"])
    assert proc.returncode == 255
    assert "Host key verification failed" in err(proc), err(proc)
    # also without strict checking: a changed key is never accepted
    proc = as_user([*SSH, "slurm-debug", "true"])
    assert proc.returncode == 255 and "Host key verification failed" in err(proc), err(proc)
