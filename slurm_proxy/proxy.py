"""What ``ssh slurm-<profile>`` runs: alias → profile → running job → stdio joined to its node.

This is the full path of a connect (``warm`` replays one whose decision stands): it imports only
what it needs (no click; filelock only to submit).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from . import config, jobscript, log, paths, renewal, slurm, warm
from .allocate import Allocation
from .login import no_exec
from .login.openssh import WATCHED_CONFIG, OpenSSHLogin
from .manage import allocator
from .route import SSH_PORT
from .state import State


def connect(alias: str, config_path: Path | None = None, answer: warm.Answer | None = None) -> int:
    """``answer``: the queue as a warm connect's query just read it, to use instead of asking."""
    path = config_path or config.config_path()
    said, files = log.said, _read_files(path)
    before = warm.stamps(files)
    cfg = config.load(path)
    alloc = allocator(cfg, cfg.profile_for_alias(alias))
    if answer is not None and isinstance(alloc.login, OpenSSHLogin):
        alloc.login.shell.answered(slurm.squeue_argv(), answer)
    got = alloc.ensure_running()
    alloc.state.sync_known_hosts()
    srun = jobscript.srun_argv(got.job.job_id, got.neighbours) if got.mode == "srun" else None
    port = got.port or SSH_PORT
    if log.said == said and warm.stamps(files) == before:  # nothing said, nothing written
        _remember(alias, alloc.login, alloc.profile, got, srun, port, before)
    else:
        warm.forget(alias)
    if srun:
        return alloc.login.forward_command(srun)
    return alloc.login.forward_stdio(got.job.node, port)


def _read_files(config_path: Path) -> list[str]:
    """The files a connect's decision reads besides the queue: the config, the state and its
    known_hosts, what is known of login hosts, the ssh config files that choose the master."""
    state = State(paths.state_dir())
    return [str(config_path), str(state.path), str(state.known_hosts),
            str(paths.state_dir() / "login-hosts"), *(os.path.expanduser(p) for p in WATCHED_CONFIG)]


def _remember(alias: str, login: object, profile: config.Profile, got: Allocation, srun: list[str] | None,
              port: int, files: list[tuple[str, tuple[int, ...]]]) -> None:
    """Leave the memo that lets the next connect of ``alias`` replay this one (the session to
    ``srun`` on the login node, else to the job's node at ``port``): through slurm-proxy's own
    OpenSSH master only, and only from the queue's answer it was decided on."""
    if not isinstance(login, OpenSSHLogin) or login.control_path is None or no_exec():
        return
    query = slurm.squeue_argv()
    answer = login.shell.answers.get(tuple(query))
    if answer is None:
        return
    hop = login.command_argv(srun) if srun else login.stdio_argv(got.job.node, port)
    now = time.time()
    until = renewal.quiet_until(profile, got.job, now)
    if until > now:
        ask = login.loop_argv(query)
        memo = warm.memo(files, until, str(login.control_path), login.query_argv(query), answer, hop, ask)
        paths.write_private(paths.private_dir(paths.state_dir() / "warm") / warm.memo_name(alias), memo)
        warm.start_asker(str(login.control_path), ask)
