"""The batch script of a slurm-proxy job.

It holds the allocation for ssh sessions, leaves the job's ``SLURM_*`` variables where sessions
can load them, and ends the job once no ssh session has used it for ``idle_timeout`` seconds.

Sessions admitted by pam_slurm_adopt are adopted into the job's extern step, so
``scontrol listpids`` lists them; an open session shows there as an sshd process of the user's
(the step's own ``sleep`` belongs to root; a lingering VS Code server or tmux is not an sshd, so
it does not keep an idle job alive).
"""

from __future__ import annotations

from .config import Profile

# ~/.slurm-proxy/env.sh, sourced from a session: loads the variables of the job this very session
# was adopted into (its cgroup path names the job), so several jobs on one node never mix.
ENV_LOADER = r"""# slurm-proxy: `. ~/.slurm-proxy/env.sh` loads the SLURM_* variables of this session's job
__sp_job=$(sed -n 's|.*/job_\([0-9][0-9]*\)/.*|\1|p' /proc/self/cgroup 2>/dev/null | head -n 1)
[ -n "$__sp_job" ] && [ -r "$HOME/.slurm-proxy/env/$__sp_job" ] && . "$HOME/.slurm-proxy/env/$__sp_job"
unset __sp_job
"""


def batch_script(profile: Profile) -> str:
    return f"""#!/bin/bash
# slurm-proxy: holds this allocation for ssh sessions (profile {profile.name}).
idle_timeout={int(profile.idle_timeout)}
idle_check={int(profile.idle_check)}

# The job's environment (and its GPUs), for sessions: . ~/.slurm-proxy/env.sh
umask 077
envdir="$HOME/.slurm-proxy/env"
mkdir -p "$envdir"
for v in "${{!SLURM_@}}" CUDA_VISIBLE_DEVICES ROCR_VISIBLE_DEVICES GPU_DEVICE_ORDINAL; do
    [ -n "${{!v+set}}" ] && printf 'export %s=%q\\n' "$v" "${{!v}}"
done > "$envdir/$SLURM_JOB_ID"
cat > "$HOME/.slurm-proxy/env.sh.$SLURM_JOB_ID" <<'EOF'
{ENV_LOADER}EOF
mv -f "$HOME/.slurm-proxy/env.sh.$SLURM_JOB_ID" "$HOME/.slurm-proxy/env.sh"
trap 'rm -f "$envdir/$SLURM_JOB_ID"' EXIT
trap 'exit 0' TERM

me=$(id -u)
sessions() {{
    scontrol listpids "$SLURM_JOB_ID" 2>/dev/null | while read -r pid _ step _; do
        [ "$step" = extern ] && [ "$pid" -gt 0 ] 2>/dev/null || continue
        [ "$(stat -c %u "/proc/$pid" 2>/dev/null)" = "$me" ] || continue
        case "$(cat "/proc/$pid/comm" 2>/dev/null)" in sshd*) echo "$pid"; return ;; esac
    done
}}

last=$(date +%s)
while :; do
    sleep "$idle_check" & wait $!
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
