"""Node host keys: verified against what the login node trusts, on whichever node the job lands."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from . import cluster
from .cluster import SSH, as_user, err

pytestmark = pytest.mark.usefixtures("clean")
GLOBAL = cluster.cluster_path("/etc/ssh/ssh_known_hosts")
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
        login_key = ((cluster.CLUSTER_BASE / "keys" / "login.pub").read_text().split()[:2])
        with kh.open("a") as f:
            f.write(f"slurm-debug {' '.join(login_key)}\n")
        proc = as_user([*STRICT, "slurm-debug", "true"])
        assert proc.returncode == 0, err(proc)
    finally:
        kh.write_text(saved)


@pytest.fixture
def vouch() -> Iterator[Callable[[bool], None]]:
    """``vouch(swapped)``: the login node's known_hosts as it is, or with node1's and node2's keys
    exchanged; restored afterwards."""
    saved = GLOBAL.read_text()
    backup = GLOBAL.with_suffix(".sp-test-backup")
    shutil.copy2(GLOBAL, backup)
    swapped = re.sub(r"^node([12]) ", lambda m: f"node{3 - int(m.group(1))} ", saved, flags=re.M)

    def write(swap: bool) -> None:
        GLOBAL.write_text(swapped if swap else saved)

    try:
        yield write
    finally:
        GLOBAL.write_text(saved)
        backup.unlink()


@pytest.fixture
def swapped_node_keys(vouch: Callable[[bool], None]) -> None:
    vouch(True)


def test_a_key_the_login_node_does_not_trust_is_refused(swapped_node_keys: None) -> None:
    proc = as_user([*STRICT, "slurm-debug", "true"])
    assert proc.returncode == 255
    assert "Host key verification failed" in err(proc), err(proc)
    # also without strict checking: a changed key is never accepted
    proc = as_user([*SSH, "slurm-debug", "true"])
    assert proc.returncode == 255 and "Host key verification failed" in err(proc), err(proc)


# --- an alias trusts exactly its current job's node ---------------------------------------------

KEYS = cluster.CLUSTER_BASE / "keys"


def node_key(node: str) -> str:
    return " ".join((KEYS / f"{node}.pub").read_text().split()[:2])


def pinned(cluster_name: str, login: str, node: str) -> str:
    """A config whose one profile, debug, runs on ``node`` of cluster ``cluster_name``."""
    return (f'[clusters.{cluster_name}]\nlogin = "{login}"\n[profiles.debug]\npartition = "debug"\n'
            f'cpus = 1\ntime = "10:00"\nsbatch_args = ["--nodelist={node}"]\n')


def use(user_tmp: Path, name: str, body: str) -> dict[str, str]:
    path = user_tmp / f"{name}.toml"
    cluster.write_config(path, body)
    return {"SLURM_PROXY_CONFIG": str(path)}


def trusted_for(alias: str) -> list[str]:
    lines = (cluster.STATE / "known_hosts").read_text().splitlines()
    return [ln.split(" ", 1)[1] for ln in lines if ln.split(" ", 1)[0] == alias]


def test_a_stale_record_of_a_removed_cluster_vouches_for_nothing(
        user_tmp: Path, vouch: Callable[[bool], None]) -> None:
    # slurm-debug was used through a cluster entry that has since left the config (its job ended)
    removed = use(user_tmp, "removed", pinned("otp", "sptest@testlogin", "node1"))
    proc = as_user([*STRICT, "slurm-debug", "true"], env=removed)
    assert proc.returncode == 0, err(proc)
    cluster.cancel_all()
    # now the login node vouches for node2's key under node1's name: node1 must be refused
    vouch(True)
    current = use(user_tmp, "current", pinned("test", "testlogin", "node1"))
    proc = as_user([*SSH, "slurm-debug", "true"], env=current)
    assert proc.returncode == 255 and "Host key verification failed" in err(proc), err(proc)
    assert trusted_for("slurm-debug") == [node_key("node2")]


def test_a_new_node_replaces_the_old_ones_keys(user_tmp: Path) -> None:
    on1 = use(user_tmp, "on1", pinned("test", "testlogin", "node1"))
    assert as_user([*STRICT, "slurm-debug", "true"], env=on1).returncode == 0
    assert trusted_for("slurm-debug") == [node_key("node1")]
    cluster.cancel_all()  # the job ends; the next one lands on node2
    on2 = use(user_tmp, "on2", pinned("test", "testlogin", "node2"))
    proc = as_user([*STRICT, "slurm-debug", "true"], env=on2)
    assert proc.returncode == 0, err(proc)
    assert trusted_for("slurm-debug") == [node_key("node2")]


def test_trust_follows_the_config_in_use(user_tmp: Path) -> None:
    first = use(user_tmp, "first", pinned("first", "testlogin", "node1"))
    second = use(user_tmp, "second", pinned("second", "sptest@testlogin", "node2"))
    for env, node in ((first, "node1"), (second, "node2"), (first, "node1"), (second, "node2")):
        proc = as_user([*STRICT, "slurm-debug", "true"], env=env)
        assert proc.returncode == 0, err(proc)
        assert trusted_for("slurm-debug") == [node_key(node)], env
    assert len(cluster.jobs()) == 2  # each config kept its own job
