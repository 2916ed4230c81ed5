"""What ``ssh slurm-<profile>`` runs: alias → profile → running job → stdio joined to its node.

This is the hot path: it imports only what it needs (no click; filelock only to submit).
"""

from __future__ import annotations

from pathlib import Path

from . import config, jobscript
from .manage import allocator
from .route import SSH_PORT


def connect(alias: str, config_path: Path | None = None) -> int:
    cfg = config.load(config_path)
    alloc = allocator(cfg, cfg.profile_for_alias(alias))
    got = alloc.ensure_running()
    alloc.state.sync_known_hosts()
    if got.mode == "srun":
        return alloc.login.forward_command(jobscript.srun_argv(got.job.job_id, got.neighbours))
    return alloc.login.forward_stdio(got.job.node, got.port or SSH_PORT)
