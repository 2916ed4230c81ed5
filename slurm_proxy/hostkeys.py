"""Host keys of compute nodes, as the login node knows them.

``ssh slurm-gpu2`` lands on whichever node the job got, so a fixed known_hosts line cannot
verify it. ssh's ``KnownHostsCommand`` asks ``slurm-proxy known-hosts %H`` instead, which prints
the keys the login node trusts for the current node, relabelled with the alias.
"""

from __future__ import annotations

KNOWN_HOSTS_FILES = ("/etc/ssh/ssh_known_hosts", "~/.ssh/known_hosts")


def lookup_argv(node: str) -> list[str]:
    """On the login node: every key line it holds for ``node`` (the node name is an argument,
    never part of the script text)."""
    script = "; ".join(f'ssh-keygen -F "$1" -f {f} 2>/dev/null' for f in KNOWN_HOSTS_FILES)
    return ["sh", "-c", script + "; exit 0", "sh", node]


def relabel(output: str, alias: str) -> list[str]:
    """``node1 ssh-ed25519 AAAA…`` → ``slurm-gpu2 ssh-ed25519 AAAA…``; comments dropped."""
    lines = []
    for line in output.splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0].startswith("@"):  # @cert-authority / @revoked marker, then the host field
            if len(words) >= 4:
                lines.append(" ".join([words[0], alias, *words[2:4]]))
        elif len(words) >= 3:
            lines.append(" ".join([alias, *words[1:3]]))
    return list(dict.fromkeys(lines))
