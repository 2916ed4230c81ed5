"""Installing the ``Host`` block that sends ``slurm-*`` aliases through slurm-proxy into the
user's ssh config (reading ssh config is ``login.ssh_config``'s job)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path, PurePath

from . import paths

BEGIN = "# >>> slurm-proxy >>>"
END = "# <<< slurm-proxy <<<"


def self_command() -> list[str]:
    """An absolute command line for this slurm-proxy (VS Code may run ssh with a minimal PATH)."""
    script = Path(sys.argv[0])
    if script.name.startswith("slurm-proxy") and script.is_file():
        return [os.path.abspath(script)]
    return [os.path.abspath(sys.executable), "-m", "slurm_proxy"]


def ephemeral(executable: str, env: dict[str, str] | None = None) -> str:
    """Why ``executable`` will not stay (a one-off run's cache: ``uvx``, ``pipx run``; a temporary
    directory), or "" for an installation that stays."""
    env = dict(os.environ) if env is None else env
    path = executable.replace("\\", "/")
    caches = [env.get("UV_CACHE_DIR", ""), env.get("PIPX_HOME", "") and env["PIPX_HOME"] + "/.cache"]
    if any(c and path.startswith(c.replace("\\", "/").rstrip("/") + "/") for c in caches) \
            or "/uv/archive-v" in path or "/.cache/uv/" in path or "/pipx/.cache/" in path:
        return "in a one-off run's cache (uvx or pipx run)"
    tmp = [env.get("TMPDIR", ""), "/tmp/", "/var/folders/"]  # noqa: S108 - only compared with
    if any(t and path.startswith(t.rstrip("/") + "/") for t in tmp):
        return "in a temporary directory"
    return ""


def command_line(command: list[str], windows: bool | None = None) -> str:
    """``command`` as ssh's ProxyCommand line: POSIX shell quoting (ssh runs it with the user's
    shell), or on Windows double quotes as CreateProcess splits them (Windows OpenSSH knows no
    single quotes); ``%`` doubled, since ssh expands ``%`` tokens there."""
    windows = os.name == "nt" if windows is None else windows
    line = subprocess.list2cmdline(command) if windows else shlex.join(command)
    return line.replace("%", "%%")


def host_block(prefix: str, command: list[str], known_hosts: PurePath, windows: bool | None = None) -> str:
    """The ``Host`` block sending ``{prefix}*`` through ``command``, quoted for the platform's ssh
    (``windows``: this one's unless told). ``known_hosts`` is written as it is, in double quotes
    (which both ssh's understand), so a Windows path keeps its backslashes."""
    cmd = command_line(command, windows)
    return "\n".join([
        BEGIN,
        f"Host {prefix}*",
        f"    ProxyCommand {cmd} %h",
        # Each job may land on another node: slurm-proxy keeps this file listing, under the alias,
        # the keys the login node trusts for the job's current node.
        f'    UserKnownHostsFile "{str(known_hosts).replace("%", "%%")}"',
        "    CheckHostIP no",
        "    ServerAliveInterval 30",
        "Match all",  # whatever follows in the file applies to every host again
        END,
    ]) + "\n"


def install(block: str, path: Path) -> bool:
    """Put ``block`` at the top of ``path`` (replacing an earlier one). False if unchanged.
    A symlinked config (dotfiles) is updated where it points, keeping the link."""
    path = Path(os.path.realpath(path))
    try:
        old = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        old = ""
    pattern = re.compile(rf"^{re.escape(BEGIN)}\n.*?^{re.escape(END)}\n?", re.M | re.S)
    new = pattern.sub(lambda _: block, old, count=1) if pattern.search(old) else block + old
    if new == old:
        return False
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if old:
        paths.write_private(path.with_name(path.name + ".slurm-proxy.bak"), old)
    paths.write_private(path, new)
    return True
