"""`slurm-proxy init`: ask the cluster what it has, propose a first config, and write it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

from . import config, paths, slurm
from .errors import SlurmError, SlurmProxyError
from .login import Login

SINFO_FORMAT = "%P|%G|%c|%l"
DEFAULT_TIME = 8 * 3600


class Partition:
    def __init__(self, line: str) -> None:
        name, gres, cpus, limit = line.split("|")
        self.default = name.endswith("*")
        self.name = name.rstrip("*")
        self.gpus = max((_gpu_count(g) for g in gres.split(",")), default=0)
        self.cpus = int(cpus.rstrip("+")) if cpus.rstrip("+").isdigit() else 1
        self.limit = slurm.parse_duration(limit)


def _gpu_count(gres: str) -> int:
    """``gpu:2``, ``gpu:a100:4(S:0-1)`` → the count; anything else → 0."""
    m = re.match(r"gpu(?::[^:(]+)?:(\d+)", gres)
    return int(m.group(1)) if m else 0


def partitions(login: Login) -> list[Partition]:
    res = login.run(["sinfo", "--noheader", f"--format={SINFO_FORMAT}"])
    if res.returncode != 0:
        raise SlurmError("sinfo", res.stderr.strip() or f"exit {res.returncode}")
    seen: dict[str, Partition] = {}
    for line in res.stdout.splitlines():
        if line.count("|") == 3:
            p = Partition(line.strip())
            old = seen.get(p.name)
            if old is None or p.gpus > old.gpus:
                seen[p.name] = p
    return sorted(seen.values(), key=lambda p: (not p.default, p.name))


def _toml_name(name: str) -> str:
    clean = re.sub(r"[^A-Za-z0-9_.-]", "-", name).strip("-.") or "p"
    return clean[: config.MAX_NAME]


def _key(name: str) -> str:
    """A TOML table key: quoted when it holds a dot, which would nest the table."""
    return f'"{name}"' if "." in name else name


class Proposal(NamedTuple):
    text: str
    profiles: list[str]


def cluster_name(login: str) -> str:
    """``me@hpc.example.org`` → ``hpc``: a name for the cluster's table."""
    return _toml_name(login.split("@")[-1].split(".")[0])


def propose(cluster: str, login: str, parts: list[Partition]) -> Proposal:
    """The config text: a CPU profile per partition, and a 1-GPU profile where there are GPUs
    (named after the partition alone when the partition is for GPUs, like ``gpu``)."""
    lines = [
        "# slurm-proxy configuration, proposed by `slurm-proxy init` from the cluster's sinfo.",
        "# Every key: see the README. `ssh slurm-<profile>` connects.",
        "",
        "[defaults]",
        f'time = "{slurm.format_duration(DEFAULT_TIME)}"',
        'idle_timeout = "30:00"   # end a job after 30 minutes without an ssh session',
        "",
        f"[clusters.{_key(_toml_name(cluster))}]",
        f'login = "{login}"',
    ]
    names: list[str] = []
    for p in parts:
        name = _toml_name(p.name)
        short = [f'time = "{slurm.format_duration(p.limit)}"'] \
            if p.limit is not None and p.limit < DEFAULT_TIME else []
        gpu_partition = p.gpus and "gpu" in name.lower()
        if not gpu_partition and name not in names:
            names.append(name)
            lines += ["", f"[profiles.{_key(name)}]", f'partition = "{p.name}"', f"cpus = {min(p.cpus, 4)}",
                      *short]
        gpu_name = name if gpu_partition else f"{name}-gpu"
        if p.gpus and gpu_name not in names:
            names.append(gpu_name)
            lines += ["", f"[profiles.{_key(gpu_name)}]", f'partition = "{p.name}"', 'gres = "gpu:1"',
                      f"cpus = {min(p.cpus, 8)}", *short]
    return Proposal("\n".join(lines) + "\n", names)


def write(path: Path, proposal: Proposal, force: bool) -> None:
    """Write the proposal 0600 from the start (atomically); an existing file only with ``force``."""
    if path.exists() and not force:
        raise SlurmProxyError(f"{path} exists; not overwritten (use --force)")
    paths.private_dir(path.parent)
    paths.write_private(path, proposal.text)
