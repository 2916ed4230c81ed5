"""Host keys of compute nodes, as the login node vouches for them (not the user's own
known_hosts for the login node: that is ``login.known_hosts``).

``ssh slurm-gpu2`` lands on whichever node the job got, so no fixed known_hosts line can verify
it. When an alias resolves to a new node, slurm-proxy asks the login node which keys it trusts
for that node and lists them under the alias in its own known_hosts file, which the Host block
gives ssh as ``UserKnownHostsFile``: a node presenting any other key is refused. In modes sshd
and srun the node's sshd is the user's own, so its key is the user's host key on every node.

The login node's look at a new job's node (``jobscript.node_check_argv``) prints those key lines
and ``#port N`` or ``#error …`` lines, which ``parse_check`` reads.
"""

from __future__ import annotations

from typing import NamedTuple

KNOWN_HOSTS_FILES = ("/etc/ssh/ssh_known_hosts", "~/.ssh/known_hosts")


def parse(output: str) -> list[str]:
    """``ssh-keygen -F`` output → ``["ssh-ed25519 AAAA…", …]`` (comments and certificate
    authorities dropped, a key the login node marks @revoked never trusted; duplicates once)."""
    keys, revoked = [], set()
    for line in output.splitlines():
        words = line.split()
        if len(words) >= 4 and words[0] == "@revoked":
            revoked.add(f"{words[2]} {words[3]}")
        elif len(words) >= 3 and not words[0].startswith(("#", "@")):
            keys.append(f"{words[1]} {words[2]}")
    return [k for k in dict.fromkeys(keys) if k not in revoked]


class NodeCheck(NamedTuple):
    keys: list[str]
    port: int = 0  # the job's own sshd (mode sshd); 0 = the node's sshd
    error: str = ""


def parse_check(output: str) -> NodeCheck:
    port, error = 0, ""
    for line in output.splitlines():
        if line.startswith("#port "):
            word = line[6:].strip()
            port = int(word) if word.isdigit() and 0 < int(word) < 65536 else 0
            error = error or ("" if port else f"bad port {word[:20]!r}")
        elif line.startswith("#error"):
            error = line[6:].strip() or "unknown error"
    return NodeCheck(parse(output), port, error)
