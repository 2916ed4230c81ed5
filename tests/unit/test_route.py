"""route.py: how a session reaches its job, from the query's answer, the profile and the login."""

from __future__ import annotations

import pytest

from slurm_proxy import route, slurm
from slurm_proxy.config import Cluster, Profile

PROFILE = Profile(name="debug", cluster=Cluster(name="hpc", login="hpc"), partition="debug")


def job(job_id: str, state: str = "RUNNING", nodes: str = "node1") -> slurm.Job:
    line = "|".join([job_id, state, "None", nodes, "N/A", "1:00:00", "train", ""])
    return slurm.parse_squeue(line + "\n")[0]


@pytest.mark.parametrize(("others", "expected"), [
    ([job("40", nodes="node[1-2]")], ("40",)),
    ([job("40", "COMPLETING")], ("40",)),
    ([job("40", nodes="node2")], ()),
    ([job("40", "PENDING", nodes="")], ()),
    ([job("40", "COMPLETED")], ()),
], ids=["shares", "completing", "other-node", "pending", "ended"])
def test_neighbours(others: list[slurm.Job], expected: tuple[str, ...]) -> None:
    mine = job("42")
    assert route.neighbours(mine, [mine, *others]) == expected


@pytest.mark.parametrize(("mode", "container", "neighbours", "refused", "expected"), [
    ("adopt", "", (), False, "adopt"),
    ("adopt", "", ("40",), False, "srun"),
    ("adopt", "img.sif", (), False, "srun"),
    ("adopt", "", (), True, "srun"),
    ("sshd", "", ("40",), False, "sshd"),
    ("sshd", "", (), True, "srun"),
    ("srun", "", (), True, "srun"),
])
def test_choose(mode: str, container: str, neighbours: tuple[str, ...], refused: bool, expected: str) -> None:
    profile = PROFILE._replace(mode=mode, container=container)
    assert route.choose(profile, job("42"), neighbours, refused) == expected
