"""`slurm-proxy doctor PROFILE --node`: what VS Code's server meets on the compute node, looked
at through the profile's own path (so through its job, allocated if needed).

Each finding is one line with its fix: output that shell startup files print in a
non-interactive session (it corrupts scp, sftp and VS Code's stream), a virtual-memory limit,
glibc older than VS Code's server needs, a home short of space or inodes for
``~/.vscode-server``, a node that cannot reach VS Code's download server, and a Slurm older
than 22.05, whose ``srun --overlap`` shares only CPUs (a nested srun in a session waits for GPUs
or memory another step holds) and whose pam_slurm_adopt applies the site's ``action_unknown``
even to the user's only job on the node (mode adopt lands outside the job, or is refused).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from typing import NamedTuple

from .login import remote

GLIBC_NEEDED = (2, 28)  # what current VS Code servers need
FREE_KB_NEEDED = 1024 * 1024  # ~/.vscode-server takes hundreds of MB per version
FREE_INODES_NEEDED = 50_000  # and tens of thousands of files
OVERLAP_SHARES_ALL = (22, 5)  # before 22.05, `srun --overlap` shares a step's CPUs only

# Prints "sp-doctor <key> <value>" lines; $1 is the first line of stray output, if any.
SCRIPT = r"""stray=$1
say() { printf 'sp-doctor %s %s\n' "$1" "$2"; }
if [ -n "$stray" ]; then
    for f in ~/.bashrc ~/.bash_profile ~/.bash_login ~/.profile ~/.zshenv ~/.cshrc; do
        [ -r "$f" ] || continue
        hit=$(grep -n -F -- "$stray" "$f" 2>/dev/null | head -n 1 | cut -d: -f1)
        [ -z "$hit" ] && hit=$(grep -n -E '^[[:space:]]*(echo|printf|cat|fortune|date)\b' "$f" 2>/dev/null \
            | head -n 1 | cut -d: -f1)
        [ -n "$hit" ] && { say stray-at "$f:$hit"; break; }
    done
fi
say ulimit-v "$(ulimit -v)"
say devpts "$(awk '$2 == "/dev/pts" { o = $4 } END { print o }' /proc/self/mounts 2>/dev/null)"
say tty-gid "$(getent group tty 2>/dev/null | cut -d: -f3)"
say slurm "$(srun --version 2>/dev/null | head -n 1)"
say glibc "$(ldd --version 2>/dev/null | head -n 1 | grep -oE '[0-9]+\.[0-9]+$')"
set -- $(df -Pk "$HOME" 2>/dev/null | tail -n 1)
say free-kb "${4:-}"
set -- $(df -Pi "$HOME" 2>/dev/null | tail -n 1)
say free-inodes "${4:-}"
if timeout 3 bash -c 'exec 3<>/dev/tcp/update.code.visualstudio.com/443' 2>/dev/null; then
    say internet yes
else
    say internet no
fi
"""


class Check(NamedTuple):
    """One line of doctor's report (doctor's own checks use it too)."""

    name: str
    ok: bool | None  # None: a warning
    detail: str
    fix: str = ""


def run(ssh: str, alias: str) -> Iterator[Check]:
    """Look at the node through ``ssh alias``."""
    base = [ssh, "-o", "BatchMode=yes", alias]
    quiet = subprocess.run([*base, "true"], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           errors="replace", timeout=600)
    if quiet.returncode != 0:
        said = [ln for ln in quiet.stderr.splitlines() if ln.strip()]
        ours = [ln for ln in said if ln.startswith("slurm-proxy:")]
        yield Check(f"ssh {alias}", False, (ours or said or ["failed"])[-1],
                      "run `slurm-proxy doctor` first; `slurm-proxy -v ALIAS` shows every step")
        return
    stray = next((ln.strip() for ln in quiet.stdout.splitlines() if ln.strip()), "")
    # The node's login shell may be tcsh or fish: the script crosses it as login/remote.py sends
    # any command.
    line = remote.Shell(alias, profile=False).line(["bash", "-c", SCRIPT, "sp-doctor", stray])
    proc = subprocess.run([*base, line],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace",
                          timeout=120)
    found = {}
    for line in proc.stdout.splitlines():
        words = line.split(" ", 2)
        if len(words) == 3 and words[0] == "sp-doctor":
            found[words[1]] = words[2].strip()
    yield from judge(stray, found)


def judge(stray: str, found: dict[str, str]) -> Iterator[Check]:
    """The findings from what the node said (pure, for tests)."""
    if stray:
        where = found.get("stray-at", "a shell startup file")
        yield Check("quiet sessions", False, f"a non-interactive session prints {stray[:60]!r} "
                      f"(from {where}): scp, sftp and VS Code break on it",
                      f"in {where}, print only when the shell is interactive (case $- in *i*)")
    else:
        yield Check("quiet sessions", True, "a non-interactive session prints nothing")
    devpts, tty = found.get("devpts", ""), found.get("tty-gid", "")
    if devpts and tty and f"gid={tty}" not in devpts.split(","):
        yield Check("terminals", None, f"/dev/pts is mounted without gid={tty} (the tty group): an sshd "
                    "of your own (modes sshd and srun, a node shared with your other jobs) cannot hand out "
                    "a terminal (ssh -t); VS Code and plain ssh commands are not affected",
                    "mode adopt on a node of its own, or ask the admins for the standard mount "
                    f"(devpts with gid={tty},mode=620)")
    elif devpts and tty:
        yield Check("terminals", True, "/dev/pts hands out terminals to an sshd of your own")
    limit = found.get("ulimit-v", "")
    if limit and limit != "unlimited":
        yield Check("virtual memory", False, f"ulimit -v is {limit} KB: VS Code's server (node) fails "
                      "under it", "remove `ulimit -v` from your startup files, or ask for a larger limit")
    elif limit:
        yield Check("virtual memory", True, "unlimited")
    glibc = found.get("glibc", "")
    if glibc:
        version = tuple(int(x) for x in glibc.split("."))
        needed = ".".join(map(str, GLIBC_NEEDED))
        yield Check("glibc", version >= GLIBC_NEEDED, f"{glibc}" + ("" if version >= GLIBC_NEEDED else
                      f": VS Code's server needs {needed} or newer"),
                      "" if version >= GLIBC_NEEDED else "run VS Code's server in a container "
                      "(container = …, mode sshd or srun)")
    free, inodes = found.get("free-kb", ""), found.get("free-inodes", "")
    if free.isdigit() and inodes.isdigit():
        short = int(free) < FREE_KB_NEEDED or int(inodes) < FREE_INODES_NEEDED
        yield Check("home directory", None if short else True,
                      f"{int(free) // 1024} MB and {inodes} inodes free",
                      '"remote.SSH.serverInstallPath": {"slurm-PROFILE": "/scratch/$USER"} in VS Code\'s '
                      "settings moves ~/.vscode-server off a small home" if short else "")
    yield from _nested_srun(found.get("slurm", ""))
    if found.get("internet") == "no":
        yield Check("internet", None, "the node cannot reach update.code.visualstudio.com",
                      '"remote.SSH.localServerDownload": "always" (the laptop downloads the server)')
    elif found.get("internet") == "yes":
        yield Check("internet", True, "the node reaches VS Code's download server")


def _nested_srun(said: str) -> Iterator[Check]:
    """What ``srun --overlap`` in a session can share, from ``srun --version`` ("slurm 20.11.4")."""
    found = re.search(r"(\d+)\.(\d+)[.\d]*", said)
    if not found:
        return
    version, name = (int(found.group(1)), int(found.group(2))), found.group(0)
    if version >= OVERLAP_SHARES_ALL:
        yield Check("nested srun", True, f"Slurm {name}: `srun --overlap` in a session shares the "
                    "job's CPUs, memory and GPUs")
    else:
        yield Check("pam_slurm_adopt", None, f"Slurm {name}: before 22.05 pam_slurm_adopt applies the "
                    "site's action_unknown even to your only job on a node: with allow a session of mode "
                    "adopt lands outside the job, with deny it is refused ('unable to determine source job')",
                    'mode = "srun" (or "sshd") for this cluster, unless its action_unknown is newest')
        yield Check("nested srun", None, f"Slurm {name}: `srun --overlap` shares only CPUs before 22.05: "
                    "a nested srun in a session waits while another step holds the job's GPUs or memory",
                    "`srun --overlap --gres=none --mem=0 …` for a step that needs no GPU; GPU steps one "
                    "at a time")
