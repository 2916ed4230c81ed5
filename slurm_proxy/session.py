"""What a session runs on the node before its own command: the profile's setup lines, and its
container (Apptainer, Singularity, or a runtime the profile names as an argv template).

Nothing here reaches a shell on the laptop or the login node as code: the setup lines and the
container's words travel inside the batch script as base64 data, which the job writes to
``~/.slurm-proxy/session/<jobid>/``. In modes sshd and srun the job's own sshd runs every session
through ``RUNNER`` (its ``ForceCommand``); in mode adopt, ``~/.slurm-proxy/env.sh`` runs the setup
lines (a container needs the job's own sshd: such a profile's connections go through srun).
"""

from __future__ import annotations

import base64

from .config import Profile

# Apptainer's (and Singularity's) argv; "{apptainer}" is whichever of the two the node has.
DEFAULT_RUNTIME = ("{apptainer}", "exec", "{args}", "{image}")

# run_setup DIR: each setup line in this shell (so `module load` and `source` take effect), its
# output on stderr (stdout may be scp's or VS Code's stream), its stdin empty; a failing line is
# said and the session goes on.
RUN_SETUP = r"""__sp_setup() {
    [ -r "$1/setup.sh" ] || return 0
    local __sp_line
    while IFS= read -r __sp_line <&3 || [ -n "$__sp_line" ]; do
        eval "$__sp_line" </dev/null >&2 ||
            echo "slurm-proxy: setup line failed (exit $?): $__sp_line" >&2
    done 3< "$1/setup.sh"
}
"""

# ~/.slurm-proxy/session/run: the job's sshd runs every session through it (ForceCommand).
RUNNER = "#!/bin/bash\n" + r"""# slurm-proxy: a session of a job with setup lines or a container: the setup,
# then the session's own command (or a login shell), inside the container. sftp (and scp) run
# as they are: the files are the same inside and out.
d="$HOME/.slurm-proxy/session/$SLURM_JOB_ID"
cmd=${SSH_ORIGINAL_COMMAND-}
case $cmd in
    internal-sftp|*sftp-server*)
        for s in /usr/lib/openssh/sftp-server /usr/libexec/openssh/sftp-server /usr/lib/ssh/sftp-server \
                 /usr/libexec/sftp-server; do
            [ -x "$s" ] && exec "$s"
        done
        echo "slurm-proxy: no sftp-server on $(hostname)" >&2
        exit 1 ;;
esac
""" + RUN_SETUP + r"""__sp_setup "$d"
shell=${SHELL:-/bin/bash}
if [ -s "$d/container" ]; then
    run=()
    while IFS= read -r w; do
        case $w in
            "{apptainer}")
                w=$(command -v apptainer || command -v singularity) || {
                    echo "slurm-proxy: neither apptainer nor singularity on $(hostname)" >&2; exit 127; } ;;
            "~/"*) w="$HOME/${w#"~/"}" ;;
        esac
        run+=("$w")
    done < "$d/container"
    [ -n "$cmd" ] && exec "${run[@]}" /bin/bash -c "$cmd"
    exec "${run[@]}" /bin/bash -l
fi
[ -n "$cmd" ] && exec "$shell" -c "$cmd"
exec -a "-${shell##*/}" "$shell"
"""


def container_words(profile: Profile) -> list[str]:
    """The argv before the session's command: the runtime template with ``{args}`` (the
    profile's container_args) and ``{image}`` filled in; ``~/`` is the node's home."""
    if not profile.container:
        return []
    words: list[str] = []
    for word in profile.container_runtime or DEFAULT_RUNTIME:
        if word == "{args}":
            words += profile.container_args
        else:
            words.append(word.replace("{image}", profile.container))
    return words


def needed(profile: Profile) -> bool:
    return bool(profile.setup or profile.container)


def files_b64(profile: Profile) -> tuple[str, str]:
    """(setup.sh, container) as base64: data for the batch script, never script text."""
    setup = "".join(line + "\n" for line in profile.setup)
    container = "".join(w + "\n" for w in container_words(profile))
    return (base64.b64encode(setup.encode()).decode(), base64.b64encode(container.encode()).decode())


def image_check_argv(image: str) -> list[str]:
    """On the login node: does the image exist (``~/`` is the home there)?"""
    return ["sh", "-c", 'case $1 in "~/"*) set -- "$HOME/${1#"~/"}" ;; esac; [ -e "$1" ]', "sh", image]
