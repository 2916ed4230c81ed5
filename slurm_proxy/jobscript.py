"""The shell slurm-proxy runs on the cluster: the batch script of its jobs, the user's own sshd
(modes ``sshd`` and ``srun``), and the login node's one look at a new job's node.

The batch script holds the allocation for ssh sessions, leaves the job's ``SLURM_*`` variables
where sessions can load them, says when it is ready in ``~/.slurm-proxy/jobs/<jobid>`` (``ready``,
``port N`` in mode sshd, or ``error …``), and ends the job once no ssh session has used it for
``idle_timeout`` seconds. A session counts when an sshd process of the user's runs in one of the
job's steps other than the batch step (pam_slurm_adopt puts sessions in the extern step; ``srun``
makes a step per session) or is a child of the job's own sshd. A lingering VS Code server or tmux
is not an sshd, so it does not keep an idle job alive.

Every value reaches the shell as an argument or a checked number, never as script text.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

from . import session
from .config import MODES, Profile
from .node_keys import KNOWN_HOSTS_FILES
from .slurm import neutral, parse_duration

READY_WAIT = 60.0  # seconds the login node waits for the batch script to say it is ready
PROBE_WAIT = 15.0  # seconds it retries a node port that refuses connections

# ~/.slurm-proxy/env.sh, sourced from a session: loads the variables of the job this very session
# runs in (its cgroup path names the job), so several jobs on one node never mix.
ENV_LOADER = r"""# slurm-proxy: `. ~/.slurm-proxy/env.sh` loads the SLURM_* variables of this session's job,
# and runs its profile's setup lines
__sp_job=$(sed -n 's|.*/job_\([0-9][0-9]*\)/.*|\1|p' /proc/self/cgroup 2>/dev/null | head -n 1)
[ -n "$__sp_job" ] && [ -r "$HOME/.slurm-proxy/env/$__sp_job" ] && . "$HOME/.slurm-proxy/env/$__sp_job"
""" + session.RUN_SETUP + r"""[ -n "$__sp_job" ] && __sp_setup "$HOME/.slurm-proxy/session/$__sp_job"
unset -f __sp_setup
unset __sp_job
"""

# The user's host key for modes sshd and srun: made once, 0600, in the home the cluster shares; a
# whole directory is renamed into place, so concurrent jobs never see half a key.
HOST_KEY_DIR = "$HOME/.slurm-proxy/hostkey"
HOST_KEY = HOST_KEY_DIR + "/ssh_host_ed25519_key"
SP_HOSTKEY = 'sp_hostkey() {\n    local d="' + HOST_KEY_DIR + '" t\n' + r"""
    [ -s "$d/ssh_host_ed25519_key.pub" ] && return 0
    (umask 077 && mkdir -p "$HOME/.slurm-proxy") || return 1
    t=$(mktemp -d "$d.XXXXXX") || return 1
    if ssh-keygen -q -t ed25519 -N '' -C "slurm-proxy host key of $USER" \
            -f "$t/ssh_host_ed25519_key" </dev/null >/dev/null; then
        mv -T "$t" "$d" 2>/dev/null || rm -rf "$t"
    else
        rm -rf "$t"
    fi
    [ -s "$d/ssh_host_ed25519_key.pub" ] && return 0
    echo "cannot create $d (is ssh-keygen installed?)" >&2
    return 1
}
"""

# sp_probe HOST PORT: does HOST:PORT take a TCP connection (within 2 s)?
SP_PROBE = r"""sp_probe() { timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null; }
"""

# sp_sshd ARGS…: exec the user's own sshd with only public-key logins, the job's variables set in
# every session (sshd keeps the first SetEnv only, so all go on one line), and sftp for scp.
SP_SSHD = SP_HOSTKEY + r"""sp_sshd() {
    local sshd v val env=""
    if ! sshd=$(PATH="$PATH:/usr/sbin:/usr/local/sbin" command -v sshd); then
        echo "no sshd on $(hostname) (${sp_no_sshd:-install openssh-server there, or use mode adopt})" >&2
        return 127
    fi
    sp_hostkey || return 1
    for v in "${!SLURM_@}" CUDA_VISIBLE_DEVICES ROCR_VISIBLE_DEVICES GPU_DEVICE_ORDINAL; do
        [ -n "${!v+set}" ] || continue
        # the job's variables, not those of the step that runs this sshd (mode srun): a nested
        # srun in a session would take them for its own (its step, task ids, CPU binding)
        case $v in SLURM_STEP*|SLURM_PROCID|SLURM_LOCALID|SLURM_TASK_PID|SLURM_NODEID|SLURM_GTIDS|\
            SLURM_CPU_BIND*|SLURM_SRUN_COMM_*|SLURM_LAUNCH_NODE_IPADDR|SLURM_PTY_*|SLURM_UMASK|\
            SLURM_DISTRIBUTION) continue ;; esac
        val=${!v}
        case $val in *[\"\\]*|*$'\n'*) continue ;; esac
        env+=" \"$v=$val\""
    done
    local force=() run="$HOME/.slurm-proxy/session/run"
    # a profile with setup lines or a container: every session through the session runner
    [ -d "$HOME/.slurm-proxy/session/${SLURM_JOB_ID:-none}" ] && force=(-o "ForceCommand=$(printf %q "$run")")
    exec "$sshd" -f /dev/null -o "HostKey=""" + HOST_KEY + r"""" -o "AllowUsers=$(id -un)" \
        -o UsePAM=no -o PasswordAuthentication=no -o KbdInteractiveAuthentication=no \
        -o PubkeyAuthentication=yes -o PidFile=none -o PrintMotd=no -o LogLevel=ERROR \
        -o "Subsystem=sftp internal-sftp" ${env:+-o "SetEnv=${env# }"} "${force[@]}" "$@"
}
"""


def batch_script(profile: Profile) -> str:
    """The job's script: the profile's values, as checked numbers, then shell kept in data."""
    limit = parse_duration(profile.time) if profile.time else None
    values = f"""#!/bin/bash
# slurm-proxy: holds this allocation for ssh sessions (profile {profile.name}, mode {profile.mode}).
idle_timeout={int(profile.idle_timeout)}
idle_check={int(profile.idle_check)}
time_limit={int(limit or 0)}
warn_before={int(profile.warn_before)}

"""
    start = _SSHD_START if profile.mode == "sshd" else "say ready"
    return values + _SESSION_ENV + _session_files(profile) + _READY + start + _WATCHDOG


# The batch script after its values: the job's environment for sessions, then (after the
# session files) its cleanup and how it says it is ready, then (after it started) the watchdog.
_SESSION_ENV = r"""# The job's environment (and its GPUs), for sessions: . ~/.slurm-proxy/env.sh
umask 077
sp="$HOME/.slurm-proxy"
mkdir -p "$sp/env" "$sp/jobs"
for v in "${!SLURM_@}" CUDA_VISIBLE_DEVICES ROCR_VISIBLE_DEVICES GPU_DEVICE_ORDINAL; do
    [ -n "${!v+set}" ] && printf 'export %s=%q\n' "$v" "${!v}"
done > "$sp/env/$SLURM_JOB_ID"
cat > "$sp/env.sh.$SLURM_JOB_ID" <<'EOF'
""" + ENV_LOADER + r"""EOF
mv -f "$sp/env.sh.$SLURM_JOB_ID" "$sp/env.sh"
"""
_READY = r"""sshd_pid=
ready="$sp/jobs/$SLURM_JOB_ID"
# An error stays for the connect that waits for this job to read (`said_argv`); a day at most.
find "$sp/jobs" -type f -mmin +1440 -delete 2>/dev/null
cleanup() {
    rm -f "$sp/env/$SLURM_JOB_ID" "$ready".*
    rm -rf "$sp/session/$SLURM_JOB_ID"
    case $(head -c 6 "$ready" 2>/dev/null) in "error "|timeli) ;; *) rm -f "$ready" ;; esac
    [ -z "$sshd_pid" ] || kill "$sshd_pid"
}
trap cleanup EXIT
# Slurm's TERM at the time limit is said, for the connect that replaces this job.
trap '[ "$time_limit" -gt 0 ] && [ $(( $(date +%s) + 60 )) -ge "$ends" ] && say timelimit; exit 0' TERM

# Tell the login node this job is ready (or why it never will be).
say() { printf '%s\n' "$1" > "$ready.new" && mv -f "$ready.new" "$ready"; }
"""
_WATCHDOG = r"""
me=$(id -u)
sessions() {
    if [ -n "$sshd_pid" ] && pgrep -P "$sshd_pid" >/dev/null 2>&1; then echo "$sshd_pid"; return; fi
    scontrol listpids "$SLURM_JOB_ID" 2>/dev/null | while read -r pid _ step _; do
        [ "$step" != batch ] && [ "$pid" -gt 0 ] 2>/dev/null || continue
        [ "$(stat -c %u "/proc/$pid" 2>/dev/null)" = "$me" ] || continue
        case "$(cat "/proc/$pid/comm" 2>/dev/null)" in sshd*) echo "$pid"; return ;; esac
    done
}

# Sessions are told once when the time limit is near: on the terminals of this job's sessions.
ends=$(( $(date +%s) + time_limit )) warned=
tell_sessions() {
    scontrol listpids "$SLURM_JOB_ID" 2>/dev/null | while read -r pid _; do
        [ "$(stat -c %u "/proc/$pid" 2>/dev/null)" = "$me" ] && readlink "/proc/$pid/fd/0" 2>/dev/null
    done | grep '^/dev/pts/' | sort -u | while read -r tty; do
        printf '\r\nslurm-proxy: %s\r\n' "$1" > "$tty" 2>/dev/null
    done
}

last=$(date +%s)
while :; do
    sleep "$idle_check" & wait $!
    left=$(( ends - $(date +%s) ))
    if [ "$time_limit" -gt 0 ] && [ -z "$warned" ] && [ "$left" -le "$warn_before" ]; then
        warned=1
        tell_sessions "job $SLURM_JOB_ID ends in $(( (left + 59) / 60 )) min (its time limit); save your work"
    fi
    if [ -n "$sshd_pid" ] && ! kill -0 "$sshd_pid" 2>/dev/null; then
        echo "slurm-proxy: the job's sshd exited, ending the job"
        exit 1
    fi
    [ "$idle_timeout" -gt 0 ] || continue
    now=$(date +%s)
    if [ -n "$(sessions)" ]; then
        last=$now
    elif [ $((now - last)) -ge "$idle_timeout" ]; then
        echo "slurm-proxy: no ssh session for $idle_timeout s, ending the job"
        exit 0
    fi
done
"""


# Mode sshd: the user's sshd listens on a free port of the node's address, tried until one is free.
_SSHD_START = SP_SSHD + SP_PROBE + r"""started=
for try in 1 2 3 4 5 6 7 8 9 10; do
    port=$((20000 + RANDOM % 30000))
    sp_probe "$SLURMD_NODENAME" "$port" && continue
    sp_sshd -D -e -o "ListenAddress=$SLURMD_NODENAME:$port" 2>"$ready.log" &
    sshd_pid=$!
    for i in $(seq 50); do
        kill -0 "$sshd_pid" 2>/dev/null || break
        sp_probe "$SLURMD_NODENAME" "$port" && { started=$port; break 2; }
        sleep 0.1
    done
    kill "$sshd_pid" 2>/dev/null; wait "$sshd_pid" 2>/dev/null; sshd_pid=
    grep -q 'Address already in use' "$ready.log" 2>/dev/null || break
done
if [ -z "$started" ]; then
    say "error $(tail -n 1 "$ready.log" 2>/dev/null || echo "sshd did not start")"
    exit 1
fi
say "port $started"
"""


def _session_files(profile: Profile) -> str:
    """The profile's setup lines and container for the session runner, written as data."""
    if not session.needed(profile):
        return ""
    setup, container = session.files_b64(profile)
    runner = base64.b64encode(session.RUNNER.encode()).decode()
    return f"""# Setup lines and container for every session (the session runner reads them).
mkdir -p "$sp/session/$SLURM_JOB_ID"
printf %s '{setup}' | base64 -d > "$sp/session/$SLURM_JOB_ID/setup.sh"
printf %s '{container}' | base64 -d > "$sp/session/$SLURM_JOB_ID/container"
printf %s '{runner}' | base64 -d > "$sp/session/run.$SLURM_JOB_ID"
chmod 700 "$sp/session/run.$SLURM_JOB_ID" && mv -f "$sp/session/run.$SLURM_JOB_ID" "$sp/session/run"
"""


def srun_argv(job_id: str, neighbours: Sequence[str] = ()) -> list[str]:
    """On the login node, an sshd speaking on stdio inside a new step of the job: mode srun, and
    mode adopt's way into the right job on a node that also runs ``neighbours`` (the user's other
    jobs). ``-u`` matters: a buffered srun holds back the SSH handshake."""
    hint = ""
    if neighbours:
        hint = (f"needed to reach job {job_id} past your job{'s' if len(neighbours) > 1 else ''} "
                f"{', '.join(neighbours)} on this node: cancel those, or ask for openssh-server")
    sshd = SP_SSHD + 'sp_no_sshd=$1; shift; sp_sshd "$@"'
    return neutral(["srun", f"--jobid={job_id}", "--overlap", "--nodes=1", "--ntasks=1", "--quiet", "-u",
                    "bash", "-c", sshd, "sp_sshd", hint, "-i", "-e"])


def said_argv(job_id: str) -> list[str]:
    """On the login node: what the job's batch script last said (``error …`` outlives the job)."""
    return ["sh", "-c", 'head -n 1 "$HOME/.slurm-proxy/jobs/$1" 2>/dev/null; exit 0', "sh", job_id]


def node_check_argv(mode: str, node: str, job_id: str, keyscan: bool = False) -> list[str]:
    """On the login node, once per job and node: wait until the batch script says the job is
    ready, then until the node's port takes connections, and print what ssh must trust there.

    Output, for ``node_keys.parse_check``: known_hosts lines for the node (the
    login node's own for mode adopt, the user's host key otherwise), and ``#port N`` or
    ``#error …`` lines."""
    if mode not in MODES:
        raise ValueError(mode)
    lookup = "; ".join(f'ssh-keygen -F "$node" -f {f} 2>/dev/null' for f in KNOWN_HOSTS_FILES)
    script = SP_HOSTKEY + SP_PROBE + rf"""mode=$1 node=$2 job=$3 keyscan=$4
ready="$HOME/.slurm-proxy/jobs/$job" line= port=22
for i in $(seq {int(READY_WAIT * 20)}); do  # a file test: cheap enough every 50 ms
    [ -s "$ready" ] && line=$(head -n 1 "$ready") && break
    sleep 0.05
done
case $line in
    error*) echo "#$line"; exit 0 ;;
    "port "*) port=${{line#port }}; echo "#$line" ;;
    ready) ;;
    *) if [ "$mode" = sshd ]; then
           echo "#error the job's script never said it was ready (is your home shared with the nodes?)"
           exit 0
       fi ;;
esac
if [ "$mode" != srun ]; then
    for i in $(seq {int(PROBE_WAIT * 5)}); do
        sp_probe "$node" "$port" && break
        if [ "$i" -eq {int(PROBE_WAIT * 5)} ]; then
            echo "#error $node:$port refuses connections from the login node"
            exit 0
        fi
        sleep 0.2
    done
fi
if [ "$mode" = adopt ]; then
    keys=$({lookup})
    [ -z "$keys" ] && [ "$keyscan" = 1 ] && keys=$(ssh-keyscan -T 5 -p "$port" "$node" 2>/dev/null)
    printf '%s\n' "$keys"
else
    sp_hostkey && printf '%s %s\n' "$node" "$(cat "{HOST_KEY}.pub")"
fi
exit 0
"""
    return ["bash", "-c", script, "slurm-proxy", mode, node, job_id, "1" if keyscan else "0"]
