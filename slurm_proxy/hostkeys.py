"""Host keys of compute nodes, as the login node knows them.

``ssh slurm-gpu2`` lands on whichever node the job got, so no fixed known_hosts line can verify
it. When an alias resolves to a new node, slurm-proxy asks the login node which keys it trusts
for that node and lists them under the alias in its own known_hosts file, which the Host block
gives ssh as ``UserKnownHostsFile``: a node presenting any other key is refused.
"""

from __future__ import annotations

KNOWN_HOSTS_FILES = ("/etc/ssh/ssh_known_hosts", "~/.ssh/known_hosts")


def lookup_argv(node: str) -> list[str]:
    """On the login node: every key line it holds for ``node`` (the node name is an argument,
    never part of the script text)."""
    script = "; ".join(f'ssh-keygen -F "$1" -f {f} 2>/dev/null' for f in KNOWN_HOSTS_FILES)
    return ["sh", "-c", script + "; exit 0", "sh", node]


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
