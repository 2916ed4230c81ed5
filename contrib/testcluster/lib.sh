# Shared by up, down, status and install-proxy. Sourced, not run.
BASE=${SP_TC_BASE:-/var/lib/slurm-proxy-testcluster}
MARK="slurm-proxy-testcluster"
USER_NAME=sptest
OTHER_USER=sptest2
VENV=${SP_TC_VENV:-/opt/slurm-proxy/venv}

log() { printf 'testcluster: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

pidfile_of() {
    case "$1" in
        munged) echo /run/munge/munged.pid ;;
        *) echo "$BASE/run/$1.pid" ;;
    esac
}

# running NAME: the daemon NAME, started by `up`, is alive (its pid file names a live process).
running() {
    local f pid
    f=$(pidfile_of "$1")
    [ -s "$f" ] || return 1
    pid=$(cat "$f")
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

# stop_pidfile NAME FILE: stop the process a pid file names, and only that one; for an sshd, its
# sessions too (its children: they outlive it, and a client's ControlPersist master would go on
# talking to a cluster that is gone, e.g. after `up --slurm` switched versions).
stop_pidfile() {
    local name=$1 f=$2 pid i
    [ -s "$f" ] || return 0
    pid=$(cat "$f")
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        log "stopping $name (pid $pid)"
        case "$name" in
            sshd-*) for i in $(ps -o pid= --ppid "$pid"); do kill "$i" 2>/dev/null || true; done ;;
        esac
        kill "$pid" 2>/dev/null || true
        for i in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$f"
}

# wait_for WHAT CMD...: poll CMD for up to 60 s.
wait_for() {
    local what=$1 i
    shift
    for i in $(seq 300); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    die "$what did not come up (logs: $BASE/log)"
}

nodes_ready() {
    local states
    states=$(sinfo -h -N -p debug -o '%t' 2>/dev/null | sort -u | tr '\n' ' ')
    case "$states" in
        *down*|*drain*|*fail*|*inval*) scontrol update nodename=node1,node2 state=resume >/dev/null 2>&1 || true; return 1 ;;
        "") return 1 ;;
        *unk*|*"*"*) return 1 ;;
    esac
    return 0
}

DAEMONS=(munged slurmctld slurmd-node1 slurmd-node2 sshd-login sshd-login-otp sshd-login-nofwd sshd-login-nopath
         sshd-node1 sshd-node2)

status_line() {
    local d out=""
    for d in "${DAEMONS[@]}"; do
        if running "$d"; then out+="$d:up "; else out+="$d:DOWN "; fi
    done
    printf '%s' "$out"
}
