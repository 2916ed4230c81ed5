"""Installing the ``Host`` block that sends ``slurm-*`` aliases through slurm-proxy into the
user's ssh config, with a literal ``Host`` per profile, and telling when it is out of step with
the config (reading ssh config for a login is ``login.ssh_config``'s job)."""

from __future__ import annotations

import os
import re
import shlex
import stat
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePath
from typing import NamedTuple

from . import paths

BEGIN = "# >>> slurm-proxy >>>"
FIX = "slurm-proxy ssh-config --install"  # what brings the block in step with the config
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


# ssh puts the alias in place of %h as it is, into a command line that the user's shell parses
# (Windows' OpenSSH starts it directly, splitting words as CreateProcess does). OpenSSH 9.6
# refuses shell characters in a host name given on the command line; an older one does not, so
# %h stands in quotes of the platform's kind, and the one character that would end those quotes
# keeps a name out of the pattern altogether (a git submodule URL cannot bring one in).
HOST_ARG = {False: "'%h'", True: '"%h"'}
NOT_QUOTABLE = "\"!*'*\""  # a Host pattern: no name holding a single quote


def host_block(prefix: str, command: list[str], known_hosts: PurePath, windows: bool | None = None,
               aliases: Sequence[str] = ()) -> str:
    """The ``Host`` block sending ``{prefix}*`` through ``command``, quoted for the platform's ssh
    (``windows``: this one's unless told), with a ``Host`` of its own for each of ``aliases``
    (VS Code's Remote Explorer and shell completion list only literal names), which names its
    alias to slurm-proxy as written. ``known_hosts`` is written as it is, in double quotes
    (which both ssh's understand), so a Windows path keeps its backslashes."""
    windows = os.name == "nt" if windows is None else windows
    cmd = command_line(command, windows)
    lines = [BEGIN]
    for alias in aliases:
        lines += [f"Host {alias}", f"    ProxyCommand {command_line([*command, alias], windows)}"]
    return "\n".join([
        *lines,
        f"Host {prefix}* {NOT_QUOTABLE}",
        f"    ProxyCommand {cmd} {HOST_ARG[windows]}",
        # Each job may land on another node: slurm-proxy keeps this file listing, under the alias,
        # the keys the login node trusts for the job's current node.
        f'    UserKnownHostsFile "{str(known_hosts).replace("%", "%%")}"',
        "    CheckHostIP no",
        "    ServerAliveInterval 30",
        "Match all",  # whatever follows in the file applies to every host again
        END,
    ]) + "\n"


def default_path() -> Path:
    """The user's ssh config: ``~/.ssh/config``, ``%USERPROFILE%\\.ssh\\config`` on Windows."""
    return Path.home() / ".ssh" / "config"


_BLOCK = re.compile(rf"^{re.escape(BEGIN)}\r?\n.*?^{re.escape(END)}(?:\r?\n)?", re.M | re.S)
_HOST = re.compile(r"^[ \t]*host(?:[ \t]*=[ \t]*|[ \t]+)(.*?)\r?$", re.M | re.I)


def read(path: Path) -> str:
    """``path``'s text ("" if there is none), any byte kept: what is not UTF-8 comes back as it was."""
    try:
        return Path(os.path.realpath(path)).read_bytes().decode("utf-8", "surrogateescape")
    except FileNotFoundError:
        return ""


def split(text: str) -> tuple[str, str | None]:
    """(the text outside the managed block, the block) of an ssh config; None: no block."""
    m = _BLOCK.search(text)
    return (text[:m.start()] + text[m.end():], m.group(0)) if m else (text, None)


def _names(value: str) -> list[str]:
    try:
        return shlex.split(value, comments=True)
    except ValueError:  # an unbalanced quote: ssh refuses the file; read what is there
        return value.split()


def host_names(text: str) -> list[str]:
    """The literal names (no ``*``, ``?`` or ``!``) on the ``Host`` lines of ``text``."""
    return [n for m in _HOST.finditer(text) for n in _names(m.group(1))
            if not any(c in n for c in "*?!")]


def patterns(text: str) -> list[str]:
    """The ``{prefix}*`` patterns on the ``Host`` lines of ``text``."""
    return [n for m in _HOST.finditer(text) for n in _names(m.group(1))
            if n.endswith("*") and not any(c in n[:-1] for c in "*?!")]


class Listing(NamedTuple):
    """Which aliases the block lists: ``aliases``; ``own``: those the user's config outside the
    block names itself (left out, so that Remote Explorer shows each once; the pattern still
    sends them through slurm-proxy)."""

    aliases: list[str]
    own: list[str]


def listing(prefix: str, profiles: Iterable[str], text: str) -> Listing:
    outside = set(host_names(split(text)[0]))
    wanted = [prefix + name for name in profiles]
    return Listing([a for a in wanted if a not in outside], [a for a in wanted if a in outside])


def drift(prefix: str, profiles: Iterable[str], path: Path) -> str:
    """One line saying how the block installed in ``path`` differs from the config's profiles
    (with the command that brings it in step), or "" if it agrees. No block there: "" too, since
    the Host lines may be the user's own, elsewhere."""
    text = read(path)
    block = split(text)[1]
    if block is None:
        return ""
    want = listing(prefix, profiles, text).aliases
    have = host_names(block)
    missing = [a for a in want if a not in have]
    extra = [a for a in have if a not in want]
    parts = [f"lacks {', '.join(missing)}"] if missing else []
    parts += [f"still lists {', '.join(extra)}"] if extra else []
    if f"{prefix}*" not in patterns(block):
        parts.append(f"sends {' '.join(patterns(block)) or 'no pattern'}, not {prefix}*")
    return f"the slurm-proxy block in {path} {' and '.join(parts)}" if parts else ""


def install_listing(path: Path, prefix: str, profiles: Iterable[str], command: list[str],
                    known_hosts: PurePath) -> tuple[bool, Listing]:
    """Install the block for these profiles in ``path``: (changed?, what it lists)."""
    listed = listing(prefix, profiles, read(path))
    return install(host_block(prefix, command, known_hosts, aliases=listed.aliases), path), listed


def install(block: str, path: Path) -> bool:
    """Put ``block`` at the top of ``path`` (replacing an earlier one in place). False if
    unchanged. Every byte outside the block stays as it was (line ends too: the block takes the
    file's), the file keeps its mode, the write is atomic, and the previous file is kept beside it
    as ``<name>.slurm-proxy.bak`` (one, replaced each time). A symlinked config (dotfiles) is
    updated where it points, keeping the link."""
    path = Path(os.path.realpath(path))
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        mode = 0o600
    old = read(path)
    if old.count("\r\n") * 2 > old.count("\n"):
        block = block.replace("\n", "\r\n")
    new = _BLOCK.sub(lambda _: block, old, count=1) if _BLOCK.search(old) else block + old
    if new == old:
        return False
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if old:
        paths.write_private(path.with_name(path.name + ".slurm-proxy.bak"), _bytes(old))
    paths.write_private(path, _bytes(new), mode)
    return True


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")
